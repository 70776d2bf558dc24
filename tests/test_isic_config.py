"""kitpkg/configs/isic_b4_384.yaml: the whole recipe loads, and `kitpkg init --from isic_b4_384` writes it out."""
from __future__ import annotations

from kitpkg.cli import main
from kitpkg.config import load_config
from kitpkg.configs import template_names, template_path


def _check(config):
    assert config.data.aug.preset == "isic"
    assert config.model.name == "tf_efficientnet_b4.ns_jft_in1k", "the 1st place's noisy-student B4"
    assert config.optim.lr * 64 / (config.data.batch_size * 1) == 3e-4, "the 1st place's peak, per sample"
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


def test_templates_say_what_their_weight_decay_and_flips_are():
    """effnet_b4_384 states that timm >= 1.0's radam couples its weight decay (torch.optim.RAdam); every template that
    flips says so itself (the dataclass default is no flips)."""
    import torch
    from timm.optim import create_optimizer_v2

    config = load_config(template_path("effnet_b4_384"))
    assert config.optim.name == "radam" and config.optim.weight_decay > 0
    inner = create_optimizer_v2(torch.nn.Linear(2, 2), opt="radam", lr=1e-3, weight_decay=0.01)
    if isinstance(inner, torch.optim.RAdam):  # timm >= 1.0 (0.9 has its own RAdam, decoupled)
        assert not inner.defaults["decoupled_weight_decay"]
    assert "COUPLED L2" in template_path("effnet_b4_384").read_text()
    for name in ("demo", "effnet_b4_384"):
        aug = load_config(template_path(name)).data.aug
        assert (aug.hflip, aug.vflip, aug.transpose) == (True, True, True)
