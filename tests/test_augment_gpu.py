"""data.aug.gpu: per-sample batch augmentations in torch ops, reproducible from the step's generator."""
import pytest
import torch

from kitpkg.augment import build_gpu_stage, load_preset
from kitpkg.errors import KitError

ALL_OPS = [{"name": "hflip"}, {"name": "vflip"}, {"name": "transpose"}, {"name": "random_resized_crop"},
           {"name": "affine"}, {"name": "distort"}, {"name": "color"}, {"name": "noise"}, {"name": "cutout"}]


def _batch(n=6, h=32, w=32, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _run(spec, x, seed=0):
    return build_gpu_stage(spec)(x, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_every_op_keeps_the_shape_and_returns_float_in_0_1(dtype):
    x = _batch(h=32, w=40)
    x = x if dtype == torch.uint8 else x.float() / 255
    y = _run([{**op, "p": 1.0} for op in ALL_OPS], x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert 0 <= float(y.min()) and float(y.max()) <= 1


def test_the_same_generator_seed_draws_the_same_batch_another_seed_another():
    x = _batch()
    first = _run(ALL_OPS, x, seed=3)
    assert torch.equal(first, _run(ALL_OPS, x, seed=3))  # a resumed step draws the same
    assert not torch.equal(first, _run(ALL_OPS, x, seed=4))


def test_samples_are_augmented_differently():
    x = _batch(n=1).repeat(8, 1, 1, 1)  # eight copies of one image
    for op in ALL_OPS[3:]:
        y = _run([{**op, "p": 1.0}], x)
        assert len({tuple(s.flatten().tolist()) for s in y}) == 8, op["name"]


def test_p_zero_is_the_identity_and_leaves_unchosen_samples_untouched():
    x = _batch()
    assert torch.equal(_run([{**op, "p": 0.0} for op in ALL_OPS], x), x.float() / 255)
    y = _run([{"name": "affine", "p": 0.5}], x, seed=1)
    same = [torch.equal(a, b) for a, b in zip(y, x.float() / 255)]
    assert any(same) and not all(same)


@pytest.mark.parametrize("name, view", [("hflip", lambda t: t.flip(-1)), ("vflip", lambda t: t.flip(-2)),
                                        ("transpose", lambda t: t.transpose(-1, -2))])
def test_dihedral_ops_are_exact_permutations(name, view):
    x = _batch(n=16)
    ref = x.float() / 255
    assert torch.equal(_run([{"name": name, "p": 1.0}], x), view(ref))
    y = _run([{"name": name, "p": 0.5}], x)
    flipped = [torch.equal(a, view(b)) for a, b in zip(y, ref)]
    kept = [torch.equal(a, b) for a, b in zip(y, ref)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_transpose_skips_non_square_batches():
    x = _batch(h=32, w=40)
    assert torch.equal(_run([{"name": "transpose", "p": 1.0}], x), x.float() / 255)


def test_cutout_blanks_one_square_of_the_requested_side():
    x = torch.ones(5, 3, 40, 40)
    y = _run([{"name": "cutout", "p": 1.0, "size": 0.25, "fill": 0.0}], x)
    assert [int((s == 0).sum()) for s in y] == [3 * 10 * 10] * 5
    assert len({tuple((s[0] == 0).nonzero()[0].tolist()) for s in y}) > 1  # the hole moves between samples


def test_a_zero_affine_is_the_identity_up_to_rounding_and_noise_has_the_asked_std():
    x = _batch().float() / 255
    y = _run([{"name": "affine", "p": 1.0, "shift": 0, "scale": 0, "rotate": 0}], x)
    assert torch.allclose(y, x, atol=1e-5)
    flat = torch.full((4, 3, 64, 64), 0.5)
    noisy = _run([{"name": "noise", "p": 1.0, "std": 0.05}], flat)
    assert abs(float((noisy - flat).std()) - 0.05) < 0.005


def test_presets_gpu_stages_build():
    for name in ("light", "isic"):
        assert build_gpu_stage(load_preset(name).gpu) is not None


@pytest.mark.parametrize("spec, words", [
    ({"name": "hflip"}, ["data.aug.gpu", "expected a list"]),
    ([{"name": "elastic"}], ["data.aug.gpu[0]", "unknown GPU augmentation 'elastic'", "distort"]),
    ([{"p": 0.5}], ["data.aug.gpu[0]", "expected a mapping with a name"]),
    ([{"name": "hflip"}, {"name": "cutout", "holes": 2}], ["data.aug.gpu[1] (cutout)", "'holes'", "accepted: p"]),
    ([{"name": "color", "p": 1.5}], ["data.aug.gpu[0] (color)", "p=1.5"]),
    ([{"name": "noise", "std": [0.2, 0.1]}], ["(noise)", "std=", "low <= high"]),
    ([{"name": "affine", "padding": "wrap"}], ["(affine)", "padding='wrap'", "reflection"]),
    ([{"name": "affine", "rotate": "lots"}], ["(affine)", "rotate='lots'"]),
    ([{"name": "cutout", "size": 2}], ["(cutout)", "size=2"]),
    ([{"name": "affine", "shift": float("nan")}], ["data.aug.gpu[0] (affine)", "shift=nan", "must be in [0, 1]"]),
    ([{"name": "affine", "rotate": float("inf")}], ["(affine)", "rotate=inf", "must be in [0, 180]"]),
    ([{"name": "noise", "std": [0.01, float("nan")]}], ["(noise)", "std[1]=nan", "must be in [0, 1]"]),
    ([{"name": "color", "hue": 0.8}], ["(color)", "hue=0.8", "must be in [0, 0.5]"]),
    ([{"name": "cutout", "fill": -1}], ["(cutout)", "fill=-1", "must be in [0, 1]"]),
    ([{"name": "distort", "magnitude": float("-inf")}], ["(distort)", "magnitude=-inf", "must be in [0, 1]"]),
    ([{"name": "affine", "shift": None}], ["(affine)", "shift=None", "expected a number"]),
])
def test_a_wrong_spec_is_one_line_naming_the_key(spec, words):
    with pytest.raises(KitError) as err:
        build_gpu_stage(spec)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_parameters_match_the_cpu_draws():
    x = _batch()
    spec = [op for op in ALL_OPS if op["name"] != "noise"]  # noise is drawn on the device (its seed is not)
    assert torch.allclose(_run(spec, x.cuda()).cpu(), _run(spec, x), atol=1e-4)


def test_color_brightness_shifts_each_sample_by_one_amount_and_grey_stays_grey():
    x = torch.rand(6, 3, 16, 16) * 0.5 + 0.25  # no clipping at +-0.2
    y = _run([{"name": "color", "p": 1.0, "brightness": 0.2, "contrast": 0, "saturation": 0, "hue": 0}], x)
    shift = (y - x).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5) and float(shift[:, 0].std()) > 0.01
    grey = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    z = _run([{"name": "color", "p": 1.0, "brightness": 0, "contrast": 0.3, "saturation": 0.5, "hue": 0.5}], grey)
    assert torch.allclose(z, z[:, :1].expand_as(z), atol=1e-5) and not torch.allclose(z, grey)


def test_fused_flips_draw_and_give_exactly_what_the_ops_one_by_one_give():
    from kitpkg.augment.gpu import GpuStage, Flip

    x = _batch(n=32)
    spec = [{"name": "transpose"}, {"name": "vflip", "p": 0.3}, {"name": "hflip"}, {"name": "cutout", "p": 1.0}]
    ops = [Flip("transpose"), Flip("vflip", p=0.3), Flip("hflip")] + build_gpu_stage(spec[3:]).ops
    one_by_one = GpuStage(ops)(x, torch.Generator().manual_seed(5))
    assert torch.equal(_run(spec, x, seed=5), one_by_one)


def test_affine_then_distort_is_one_warp_that_reduces_to_either_op_alone():
    from kitpkg.augment.gpu import Warp

    x = _batch()
    still = {"name": "distort", "p": 1.0, "magnitude": 0.0}
    affine = {"name": "affine", "p": 1.0, "padding": "zeros"}
    fused = build_gpu_stage([affine, still])
    assert isinstance(fused.ops[0], Warp)
    gen = torch.Generator().manual_seed(2)
    alone = build_gpu_stage([affine])(x, gen)  # the affine op's draws come first: the same matrices
    assert torch.allclose(fused(x, torch.Generator().manual_seed(2)), alone, atol=1e-5)
    zero = {"name": "affine", "p": 1.0, "shift": 0, "scale": 0, "rotate": 0}
    wave = {"name": "distort", "p": 1.0}
    y_fused = build_gpu_stage([zero, wave])(x, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    build_gpu_stage([zero]).ops[0].draw(x, gen)  # skip the affine draws, then distort alone from the same stream
    y_alone = build_gpu_stage([wave])(x, gen)
    assert torch.allclose(y_fused, y_alone, atol=1e-4) and not torch.allclose(y_fused, x.float() / 255, atol=1e-2)
