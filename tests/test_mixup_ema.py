"""train.mixup (timm Mixup, reproducible per step) and train.ema (timm ModelEmaV3, in every checkpoint): unit checks,
and a mixup + EMA run killed mid-epoch that resumes to the same OOF as an uninterrupted run (CPU, deterministic)."""
from __future__ import annotations

import signal

import numpy as np
import pandas as pd
import pytest
import torch

from kitpkg.config import EmaConfig, MixupConfig, config_from_dict
from kitpkg.errors import KitError
from kitpkg.task import task_of_outputs
from kitpkg.train.ema import CKPT_KEY, KitEma, prediction_state
from kitpkg.train.mixing import MixBatch, Mixing, soft_cross_entropy

from test_cv_resume import _cv
from tiny_module import module_of, recipe_of


def _batch(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=gen)
    return images, torch.tensor([1, 0] * (n // 2) + [1] * (n % 2), dtype=torch.float32)


def test_mixing_is_a_function_of_the_seed_and_leaves_numpy_alone():
    mixing = Mixing(MixupConfig(mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.5), task_of_outputs(1))
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    runs = [mixing(*_batch(), seed=s) for s in (3, 3, 4)]  # (images, targets, meta)
    assert np.array_equal(np.random.get_state()[1], before)  # numpy's global stream untouched
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_binary_mixup_mixes_images_and_targets_with_one_lambda():
    images, target = _batch()
    x, soft, _ = Mixing(MixupConfig(mixup_alpha=0.4), task_of_outputs(1))(images, target, seed=5)
    assert soft.shape == (8,) and soft.dtype == torch.float32  # BCE's soft target: the positive column
    lam = float(soft[0])  # target [1, 0, 1, 0 ...] flipped is [0, 1, ...]: sample 0 gets lam * 1 + (1 - lam) * 0
    assert 0 < lam < 1
    expected = lam * images.float() / 255 + (1 - lam) * images.flip(0).float() / 255
    assert torch.allclose(x, expected, atol=1e-6)
    assert torch.allclose(soft, lam * target + (1 - lam) * target.flip(0))


def test_odd_batch_mixes_all_but_the_last_sample():
    images, target = _batch(7)
    x, soft, _ = Mixing(MixupConfig(mixup_alpha=0.4, label_smoothing=0.1), task_of_outputs(1))(images, target, seed=5)
    assert x.shape == (7, 3, 16, 16) and soft.shape == (7,)
    assert torch.equal(x[6], images[6].float() / 255)
    assert float(soft[6]) == pytest.approx(1 - 0.05)  # its own label, smoothed as BCE's smoothing would


def test_multiclass_mixup_gives_soft_targets_and_soft_cross_entropy():
    images = torch.rand(4, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 1])
    _, soft, _ = Mixing(MixupConfig(mixup_alpha=0.4), task_of_outputs(3))(images, target, seed=1)
    assert soft.shape == (4, 3) and torch.allclose(soft.sum(1), torch.ones(4))
    logits = torch.randn(4, 3)
    hard = torch.nn.functional.one_hot(target, 3).float()
    assert soft_cross_entropy(logits, hard) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, target)))


def test_mixup_switches_off_at_off_epoch():
    mixing = Mixing(MixupConfig(off_epoch=2), task_of_outputs(1))
    assert [mixing.active(e) for e in range(4)] == [True, True, False, False]


@pytest.mark.parametrize("train, match", [
    ({"mixup": {"mode": "rows"}}, r"train\.mixup\.mode"),
    ({"mixup": {"mixup_alpha": 0.0}}, r"train\.mixup: mixup_alpha and cutmix_alpha are both 0"),
    ({"mixup": {}, "label_smoothing": 0.1}, r"train\.label_smoothing: with train\.mixup"),
    ({"ema": {"decay": 1.0}}, r"train\.ema\.decay"),
    ({"early_stopping": {"patience": 0}}, r"train\.early_stopping"),
])
def test_recipe_keys_are_validated(train, match):
    with pytest.raises(KitError, match=match):
        config_from_dict({"data": {"shards": "x"}, "train": train})


def test_recipe_keys_are_in_the_config_hash():
    from kitpkg.config import config_hash

    base = {"data": {"shards": "x"}}
    hashes = {config_hash(config_from_dict({**base, "train": t})) for t in
              ({}, {"mixup": {}}, {"mixup": {"off_epoch": 3}}, {"ema": {}}, {"early_stopping": {}})}
    assert len(hashes) == 5


def test_ema_swap_is_exact_and_its_state_replaces_the_weights_for_prediction():
    config = config_from_dict({"data": {"shards": "x"}, "model": {"name": "test_resnet"}, "train": {"ema": {}}})
    module = module_of(config, 1)
    ema = KitEma(EmaConfig(decay=0.5))
    ema.start(module)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    ema.update(module, step=10)  # average = (w + w + 1) / 2
    trained = {k: v.clone() for k, v in module.state_dict().items()}
    ema.swap(module)
    name = next(k for k, v in before.items() if v.is_floating_point() and k.endswith("weight"))
    assert torch.allclose(module.state_dict()[name], before[name] + 0.5)
    ema.swap(module)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in trained.items())  # twice = back
    state = ema.state()
    weights = prediction_state({"state_dict": trained, CKPT_KEY: state})
    assert torch.allclose(weights[name], before[name] + 0.5) and set(weights) == set(trained)


# --- end to end: the whole recipe (augmentation stages, oversampling, metadata, mixup + EMA), killed mid-epoch ------
RECIPE = """\
data: {{shards: {shards}, image_size: 64, batch_size: 8, num_workers: 0, folds: [1],
       aug: {{preset: isic}}, sampling: {{class_weights: {{1: 3}}}}}}
model: {{name: test_resnet, pretrained: false, meta: [sex, age_approx, anatom_site_general_challenge]}}
optim: {{name: adamw, lr: 0.003}}
sched: {{name: cosine, warmup_epochs: 0}}
train: {{epochs: 2, seed: 1, deterministic: true, checkpoint_every_n_steps: 2, keep_checkpoints: 2,
        mixup: {{mixup_alpha: 0.4, cutmix_alpha: 1.0, label_smoothing: 0.1}}, ema: {{decay: 0.9}}}}
output: {{id_col: image_name, pred_col: target}}
"""


@pytest.mark.slow
def test_recipe_run_killed_mid_epoch_gives_the_same_oof(tmp_path, tfrecord_manifest):
    """isic preset (CPU + GPU stages) + positive oversampling + metadata branch + mixup/cutmix + EMA: a kill -9
    mid-epoch and a re-run give the uninterrupted run's OOF."""
    from kitpkg.config import load_config
    from kitpkg.train.checkpoint import load_checkpoint
    from kitpkg.train.cv import run_cv

    config_path = tmp_path / "recipe.yaml"
    config_path.write_text(RECIPE.format(shards=tfrecord_manifest.root))
    reference = tmp_path / "reference"
    run_cv(load_config(config_path), reference)
    best = load_checkpoint(reference / "fold1" / "ckpt" / "best.ckpt")
    assert set(best[CKPT_KEY]) <= set(best["state_dict"])  # plain tensors under the module's names
    assert any(not torch.equal(best[CKPT_KEY][k], best["state_dict"][k]) for k in best[CKPT_KEY])

    killed = tmp_path / "killed"
    first = _cv(config_path, killed, kill_at="1:7")  # mid-epoch 2 (checkpoints every 2 steps)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    second = _cv(config_path, killed)
    assert second.returncode == 0, second.stderr[-3000:]
    ours, theirs = (pd.read_csv(d / "oof.csv", dtype={"id": str}) for d in (killed, reference))
    assert list(ours["id"]) == list(theirs["id"])
    assert (ours["prediction"] - theirs["prediction"]).abs().max() <= 1e-6


@pytest.mark.parametrize("num_classes, target, expected", [
    (1, torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.95, 0.05, 0.95, 0.05])),
    (3, torch.tensor([0, 2, 1, 0]), 0.9 * torch.eye(3)[[0, 2, 1, 0]] + 0.1 / 3),
])
def test_label_smoothing_stays_after_mixing_stops(num_classes, target, expected):
    """As timm: from off_epoch on the batches are not mixed, but the targets keep train.mixup.label_smoothing."""
    config = config_from_dict({"data": {"shards": "x"}, "model": {"name": "test_resnet"},
                               "train": {"mixup": {"off_epoch": 0, "label_smoothing": 0.1}}})
    recipe = recipe_of(config, num_classes)
    batch = {"image": torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), "target": target}
    assert not recipe.mixing.active(0)
    MixBatch(recipe.mixing, recipe.seed).mix(batch, epoch=0, batch_idx=0)
    soft = batch["target"]
    assert torch.allclose(soft.float(), expected.view(soft.shape).float(), atol=1e-6)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_mixup_mixes_the_metadata_with_the_images_pairing(mode):
    """Sample i is mixed with sample n-1-i by lam_i: its metadata row must be mixed the same way (a mixed image with
    one sample's metadata is noise). Each image is one flat value v_i, its metadata [v_i, -v_i]: both must mix alike."""
    n = 7  # odd: the last sample keeps its own image and metadata
    values = torch.linspace(0.1, 0.9, n)
    images = values.view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    meta = torch.stack([values, -values], dim=1)
    mixing = Mixing(MixupConfig(mixup_alpha=0.4, mode=mode), task_of_outputs(1))
    x, _, mixed_meta = mixing(images, torch.zeros(n), seed=3, meta=meta)
    assert mixed_meta.shape == (n, 2)
    assert torch.allclose(mixed_meta[:, 0], x[:, 0, 0, 0], atol=1e-6)
    assert torch.allclose(mixed_meta[:, 1], -x[:, 0, 0, 0], atol=1e-6)
    assert not torch.allclose(mixed_meta, meta) and torch.equal(mixed_meta[-1], meta[-1])
