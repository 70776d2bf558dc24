"""kitpkg/configs/isic_b4_384.yaml: the whole recipe loads, and `kitpkg init --from isic_b4_384` writes it out."""
from __future__ import annotations

from kitpkg.cli import main
from kitpkg.config import load_config
from kitpkg.configs import template_names, template_path


def _check(config):
    assert config.data.aug.preset == "isic"
    assert config.data.sampling.class_weights == {"1": 4.0}
    assert config.model.meta == ["sex", "age_approx", "anatom_site_general_challenge"]
    assert config.train.ema is not None and config.train.ema.decay == 0.999
    assert len(config.predict.tta) == 7


def test_recipe_loads():
    assert "isic_b4_384" in template_names()
    _check(load_config(template_path("isic_b4_384")))


def test_init_writes_the_recipe(tmp_path):
    assert main(["init", "mel", "--from", "isic_b4_384", "--dir", str(tmp_path)]) == 0
    _check(load_config(tmp_path / "mel.yaml"))
