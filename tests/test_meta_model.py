"""model.meta, model side: an MLP on batch["meta"] joined to the image features; the fold's encoding stored in the run
directory and the checkpoint. Done means: where only a metadata column predicts the label (the images are noise), the
CV AUC is high with model.meta and about 0.5 without."""
from __future__ import annotations

import json

import pytest
import torch

from kitpkg.config import load_config
from kitpkg.data.meta import MetaEncoder
from kitpkg.train.checkpoint import load_checkpoint
from kitpkg.train.cv import run_cv
from kitpkg.train.meta_head import MetaNet

from tiny_tables import noise_shards, tiny_config

N = 160


@pytest.fixture(scope="module")
def meta_shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meta_data")
    rng = __import__("numpy").random.default_rng(3)
    rows = []
    for i in range(N):
        target = int(i % 4 == 0)  # 25 % positives
        rows.append({"image_name": f"img{i:04d}", "target": target, "sex": "male" if target else "female",
                     "age_approx": float(rng.integers(20, 80))})  # age: noise too
    for i in (1, 4):  # one negative, one positive: sex predicts the label without being a relabelling of it (refused)
        rows[i]["sex"] = "other"
    return folder, noise_shards(folder, rows)[32].root


def _run(folder, shards, name, meta):
    config = load_config(tiny_config(folder, shards, name, data={"folds": [0]}, model={"meta": meta},
                                     optim={"lr": 0.01}))
    return run_cv(config, folder / name)


@pytest.mark.slow
def test_only_the_meta_column_predicts_the_label(meta_shards):
    folder, shards = meta_shards
    with_meta = _run(folder, shards, "with_meta", ["sex", "age_approx"])
    without = _run(folder, shards, "without", [])
    assert with_meta.oof_score > 0.9, with_meta.summary()
    assert abs(without.oof_score - 0.5) < 0.25, without.summary()  # 80 val samples: chance AUC sd ~0.075

    run = folder / "with_meta"
    stored = MetaEncoder.from_state(json.loads((run / "fold0" / "meta.json").read_text()))
    assert stored.names == ["sex", "age_approx"] and stored.width == 4 + 2  # female, male, other, missing | age
    ckpt = load_checkpoint(run / "fold0" / "ckpt" / "best.ckpt")  # weights_only: the encoding is plain data
    assert MetaEncoder.from_state(ckpt["hyper_parameters"]["meta"]) == stored
    assert any(k.startswith("model.meta.") for k in ckpt["state_dict"])


def test_meta_branch_joins_pooled_features():
    import timm

    net = MetaNet(timm.create_model("test_resnet", num_classes=0), meta_width=5, num_classes=3).eval()
    out = net(torch.zeros(2, 3, 32, 32), torch.zeros(2, 5))
    assert out.shape == (2, 3)
    assert net.head.in_features == net.backbone.num_features + 128


def test_meta_net_keeps_the_backbones_no_weight_decay():
    """With model.meta a ViT's pos_embed and cls_token stay out of weight decay, as without it."""
    import timm

    from kitpkg.config import config_from_dict
    from kitpkg.train.model import build_optimizer

    net = MetaNet(timm.create_model("test_vit", num_classes=0), meta_width=5, num_classes=1)
    assert {"backbone.pos_embed", "backbone.cls_token"} <= set(net.no_weight_decay())
    config = config_from_dict({"data": {"shards": "x"}, "optim": {"weight_decay": 0.05}})
    optimizer = build_optimizer(net, config)
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decay_of[id(net.backbone.pos_embed)] == 0.0 and decay_of[id(net.backbone.cls_token)] == 0.0
    assert decay_of[id(net.head.weight)] == 0.05


@pytest.mark.parametrize("meta_width", [0, 5])
def test_logits_are_float32_under_bf16_autocast(meta_width):
    """bf16 logits have 8 significant bits: an 11k-sample fold got 391 distinct scores. The head (and the metadata
    branch's last layer) run in fp32 whatever the autocast."""
    from kitpkg.config import config_from_dict
    from kitpkg.train.model import create_classifier
    from tiny_module import module_of

    config = config_from_dict({"data": {"shards": "x"}, "model": {"name": "test_resnet"}})
    module = module_of(config, 1)
    if meta_width:  # the module with a metadata branch, as KitModule builds it from a fitted encoder
        module.model = create_classifier(config.model, 1, load_pretrained=False, meta_width=meta_width)
        module.meta_width = meta_width
    module.eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = module(images, torch.randn(64, meta_width, generator=gen) if meta_width else None)
    assert logits.dtype == torch.float32
    assert len(torch.unique(logits)) == 64
