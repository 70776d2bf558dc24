"""Pretrained weights without internet: a local .safetensors/.pth file or a folder (a Kaggle dataset); clear errors.
The hub is patched to fail, so these tests prove no download is attempted (and none can happen)."""
from __future__ import annotations

import pytest
import timm
import torch

from kitpkg.config import config_from_dict
from kitpkg.errors import KitError

from tiny_module import module_of

NAME = "test_resnet"


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Every timm download path raises, as on an offline Kaggle kernel."""
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("offline: no internet")

    for fn in ("load_state_dict_from_hf", "load_state_dict_from_url", "download_cached_file"):
        monkeypatch.setattr(builder, fn, offline, raising=False)


def _module(weights=None, pretrained=True):
    cfg = config_from_dict({"data": {"shards": "unused"}, "model": {"name": NAME, "pretrained": pretrained,
                                                                     "weights": weights}})
    module = module_of(cfg, 1, load_pretrained=True)
    assert module.hparams["config"]["model"]["weights"] is None  # the path stays out of checkpoints
    return module


@pytest.fixture(scope="module")
def source_model():
    torch.manual_seed(3)
    return timm.create_model(NAME, pretrained=False)  # 1000-class head: the classifier must be replaced


def _assert_backbone_loaded(module, source):
    ours, theirs = module.model.state_dict(), source.state_dict()
    conv = next(k for k in theirs if k.endswith("weight") and theirs[k].ndim == 4)
    assert torch.equal(ours[conv], theirs[conv])
    head = module.model.get_classifier()
    assert head.out_features == 1  # new head for our one-logit target


def test_safetensors_file(tmp_path, source_model):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source_model.state_dict().items()}, str(path))
    _assert_backbone_loaded(_module(str(path)), source_model)


def test_pth_file_and_dataset_folder(tmp_path, source_model):
    folder = tmp_path / "kaggle-input" / "timm-test-resnet"
    folder.mkdir(parents=True)
    torch.save(source_model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{}")
    _assert_backbone_loaded(_module(str(folder)), source_model)
    _assert_backbone_loaded(_module(str(folder / "pytorch_model.bin")), source_model)


def test_missing_weights_name_the_expected_file(tmp_path):
    with pytest.raises(KitError, match=r"model.weights: .*nowhere\.safetensors not found; expected a "
                                       r"\.safetensors/\.pth/\.bin file"):
        _module(str(tmp_path / "nowhere.safetensors"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KitError, match="holds no single weights file"):
        _module(str(empty))


def test_pretrained_without_weights_offline_is_a_clear_error():
    with pytest.raises(KitError, match="model.pretrained: could not fetch test_resnet weights .*set model.weights"):
        _module(None)
    assert _module(None, pretrained=False).num_classes == 1  # random init needs nothing


def test_wrong_weights_file_is_named(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), path)
    with pytest.raises(KitError, match=r"other\.pth does not fit test_resnet"):
        _module(str(path))


class _Trap:
    """A pickled object that creates a file when unpickled: what a hostile .pth can do to a plain torch.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_downloaded_pth_is_never_unpickled(tmp_path, source_model, monkeypatch):
    import timm.models._builder as builder

    # timm < 1.0 (allowed by setup.py) on torch < 2.6 loads a `file` override with a plain, unpickling torch.load
    monkeypatch.setattr(builder, "load_state_dict",
                        lambda path, *a, **k: torch.load(path, map_location="cpu", weights_only=False))
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pth"
    torch.save({"state_dict": source_model.state_dict(), "extra": _Trap(marker)}, hostile)
    with pytest.raises(KitError, match=r"model.weights: .*hostile\.pth is not a plain tensor file.*safetensors"):
        _module(str(hostile))
    assert not marker.exists()
    # a training checkpoint ({"state_dict": ...}, DataParallel's "module." prefix) of plain tensors still loads
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source_model.state_dict().items()}}, wrapped)
    _assert_backbone_loaded(_module(str(wrapped)), source_model)
