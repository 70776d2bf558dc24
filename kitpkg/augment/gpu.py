"""The GPU stage (`data.aug.gpu`): per-sample random batch augmentations on the device, in plain torch ops.

A 2-vCPU notebook cannot afford elastic/grid distortions or noise per image in the loader workers (their cost per
image on one core is in the README's benchmark table); on the device they are one `grid_sample` or one add over the
whole batch. The spec is a
list of ``{name: …, p: …, <arguments>}`` dicts, applied in order; every op decides per sample (probability ``p``)
and draws its parameters per sample.

Randomness: every number is drawn from the CPU `torch.Generator` the caller passes (the training module seeds one per
step from (seed, epoch, batch, rank)), so a resumed step draws the same augmentations on any device. Full-size noise is
the one exception: its seed comes from that generator and the noise itself is drawn on the batch's device (the same on
one device type; drawing 28 M numbers on the CPU would cost more than the whole stage).

Images: uint8 (0..255) or float (0..1) B×3×H×W in, float 0..1 of the same shape out (what `KitModule.preprocess`
takes). Samples an op does not choose are left bit-for-bit unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..errors import KitError
from ..ranges import out_of_range, ranged

Range = Tuple[float, float]


# --- the ops --------------------------------------------------------------------------------------------------------
@dataclass
class Flip:
    """Flip along one axis (hflip: width, vflip: height) or transpose H and W (square images only; else skipped)."""

    axis: str
    p: float = ranged(0.5, ge=0, le=1)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        chosen = _chosen(x, self.p, gen)
        if self.axis == "transpose" and x.shape[-1] != x.shape[-2]:
            return x  # as the training module did before: a transpose of a non-square batch changes its shape
        return _on_chosen(x, chosen, lambda t, i: _FLIPS[self.axis](t))


_FLIPS = {"hflip": lambda t: t.flip(-1), "vflip": lambda t: t.flip(-2), "transpose": lambda t: t.transpose(-1, -2)}


@dataclass
class Dihedral:
    """Consecutive flips fused: the same draws and the same exact result as the Flip ops one by one, but each sample
    is gathered and scattered once (one group per combination) instead of once per flip: a third of the memory
    traffic, which is what these ops cost on a GPU."""

    flips: List[Flip]

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        square = x.shape[-1] == x.shape[-2]
        code = torch.zeros(x.shape[0], dtype=torch.long)
        for bit, flip in enumerate(self.flips):  # drawn in order, as the separate ops would: the same stream
            chosen = _chosen(x, flip.p, gen)
            if flip.axis != "transpose" or square:
                code |= chosen.long() << bit
        for value in [v for v in code.unique().tolist() if v]:
            x = _on_chosen(x, code == value, lambda t, i, v=value: self._apply(t, v))
        return x

    def _apply(self, t: torch.Tensor, value: int) -> torch.Tensor:
        for bit, flip in enumerate(self.flips):
            if value >> bit & 1:
                t = _FLIPS[flip.axis](t)
        return t


@dataclass
class Affine:
    """Random-resized crop, then shift / scale / rotate, as one affine_grid + grid_sample per batch."""

    p: float = ranged(0.5, ge=0, le=1)
    shift: float = ranged(0.1, ge=0, le=1)  # max shift, fraction of the side
    scale: Any = ranged(0.1, ge=0)  # zoom factor range: s -> (1-s, 1+s), or [lo, hi]
    rotate: float = ranged(15.0, ge=0, le=180)  # max rotation, degrees
    crop_area: Any = ranged(None, gt=0, le=1)  # [lo, hi] area fraction of a random-resized crop; None: no crop
    crop_ratio: Any = ranged((3 / 4, 4 / 3), gt=0)  # aspect ratio range of the crop (width / height)
    padding: str = "reflection"  # grid_sample padding_mode: reflection, border, zeros

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """(chosen samples, B×3×3 output->input maps in normalised coordinates)."""
        b, _, h, w = x.shape
        chosen = _chosen(x, self.p, gen)
        theta = _crop_matrix(b, self.crop_area, self.crop_ratio, gen) @ _ssr_matrix(
            b, h, w, self.shift, _as_range(self.scale, 1.0), self.rotate, gen)
        return chosen, theta

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        chosen, theta = self.draw(x, gen)
        return _on_chosen(x, chosen, lambda t, i: _sample(t, theta[i], None, self.padding))


@dataclass
class Distort:
    """Grid/optical-like distortion: a smooth random displacement field (a coarse grid, upsampled) + grid_sample."""

    p: float = ranged(0.5, ge=0, le=1)
    magnitude: float = ranged(0.05, ge=0, le=1)  # max displacement of a control point, fraction of the half-side
    grid: int = ranged(5, ge=2)  # control points per side (fewer: smoother, larger waves)
    padding: str = "reflection"

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """(chosen samples, B×2×grid×grid control-point displacements)."""
        chosen = _chosen(x, self.p, gen)
        return chosen, (torch.rand(x.shape[0], 2, self.grid, self.grid, generator=gen) * 2 - 1) * self.magnitude

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        chosen, coarse = self.draw(x, gen)
        return _on_chosen(x, chosen, lambda t, i: _sample(t, None, coarse[i], self.padding))


@dataclass
class Warp:
    """An `affine` op directly followed by a `distort` op, fused: the same draws, one grid_sample (one interpolation,
    one gather/scatter) for both. Pixels sampled at A·(u + d(u)), with the affine op's padding."""

    affine: Affine
    distort: Distort

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        a_chosen, theta = self.affine.draw(x, gen)
        d_chosen, coarse = self.distort.draw(x, gen)
        theta[~a_chosen] = torch.eye(3, dtype=theta.dtype)  # a sample chosen by one op only gets that op alone
        coarse[~d_chosen] = 0
        return _on_chosen(x, a_chosen | d_chosen, lambda t, i: _sample(t, theta[i], coarse[i], self.affine.padding))


@dataclass
class Color:
    """Brightness (additive), contrast (around the image mean), saturation (towards grey), hue (a YIQ rotation)."""

    p: float = ranged(0.5, ge=0, le=1)
    brightness: float = ranged(0.2, ge=0, le=1)  # max offset, 0..1 pixel units
    contrast: float = ranged(0.2, ge=0, le=1)  # factor range 1 -/+ contrast
    saturation: float = ranged(0.2, ge=0, le=1)  # factor range 1 -/+ saturation
    hue: float = ranged(0.05, ge=0, le=0.5)  # max hue rotation, fraction of a full turn

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        chosen = _chosen(x, self.p, gen)
        u = torch.rand(b, 4, generator=gen) * 2 - 1
        factors = torch.stack([u[:, 0] * self.brightness, 1 + u[:, 1] * self.contrast, 1 + u[:, 2] * self.saturation,
                               u[:, 3] * self.hue * 2 * math.pi], 1)

        def jitter(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            # all four are affine in colour: one per-sample 3×3 matrix and offset, one pass over the pixels
            # y = H·S·(c·(x + b) + (1 - c)·mean(x + b)), S = s·I + (1 - s)·1·luma, H the hue rotation
            f = factors[i]
            b, c, s = f[:, 0].view(-1, 1, 1), f[:, 1].view(-1, 1, 1), f[:, 2].view(-1, 1, 1)
            sat = s * torch.eye(3) + (1 - s) * torch.ones(3, 1) * _LUMA.view(1, 3)
            hs = _hue_matrix(f[:, 3]) @ sat
            m, hs1, b, c = ((c * hs).to(t.device), hs.sum(-1, keepdim=True).to(t.device), b.to(t.device),
                            c.to(t.device))
            mean = t.mean(dim=(1, 2, 3)).view(-1, 1, 1) + b  # on the device: no sync in the training step
            offset = (hs1 * (c * b + (1 - c) * mean)).view(-1, 3, 1, 1)
            return torch.einsum("bij,bjhw->bihw", m, t).add_(offset).clamp_(0, 1)

        return _on_chosen(x, chosen, jitter)


@dataclass
class Noise:
    """Additive gaussian noise with a per-sample standard deviation (0..1 pixel units)."""

    p: float = ranged(0.5, ge=0, le=1)
    std: Any = ranged((0.01, 0.03), ge=0, le=1)  # a number or a [low, high] range, 0..1 pixel units

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        chosen = _chosen(x, self.p, gen)
        lo, hi = _as_range(self.std, None)
        std = lo + torch.rand(b, generator=gen) * (hi - lo)
        device_gen = torch.Generator(device=x.device)
        device_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))

        def add(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            noise = torch.randn(t.shape, generator=device_gen, device=t.device, dtype=t.dtype)
            return (t + noise * std[i].to(t.device).view(-1, 1, 1, 1)).clamp_(0, 1)

        return _on_chosen(x, chosen, add)


@dataclass
class Cutout:
    """One square hole of `size` × the shorter side, placed uniformly inside the image, filled with `fill`."""

    p: float = ranged(0.5, ge=0, le=1)
    size: float = ranged(0.375, gt=0, le=1)  # fraction of the shorter side
    fill: float = ranged(0.0, ge=0, le=1)  # 0..1 pixel value

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        chosen = _chosen(x, self.p, gen)
        side = max(1, round(self.size * min(h, w)))
        top = (torch.rand(b, generator=gen) * (h - side + 1)).long().clamp_(max=h - side)
        left = (torch.rand(b, generator=gen) * (w - side + 1)).long().clamp_(max=w - side)

        def cut(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            ys = torch.arange(h, device=t.device).view(1, 1, h, 1)
            xs = torch.arange(w, device=t.device).view(1, 1, 1, w)
            y0, x0 = top[i].to(t.device).view(-1, 1, 1, 1), left[i].to(t.device).view(-1, 1, 1, 1)
            hole = (ys >= y0) & (ys < y0 + side) & (xs >= x0) & (xs < x0 + side)
            return t.masked_fill(hole, float(self.fill))

        return _on_chosen(x, chosen, cut)


# name -> (op class, defaults of that name); a spec item's own arguments override the defaults
OPS: Dict[str, Tuple[type, Dict[str, Any]]] = {
    "hflip": (Flip, {"axis": "hflip"}),
    "vflip": (Flip, {"axis": "vflip"}),
    "transpose": (Flip, {"axis": "transpose"}),
    "affine": (Affine, {}),
    "random_resized_crop": (Affine, {"shift": 0.0, "scale": 0.0, "rotate": 0.0, "crop_area": (0.08, 1.0)}),
    "distort": (Distort, {}),
    "color": (Color, {}),
    "noise": (Noise, {}),
    "cutout": (Cutout, {}),
}
_PADDING = ("reflection", "border", "zeros")


class GpuStage:
    """A built `data.aug.gpu` list: call it on a B×3×H×W batch with the step's CPU generator."""

    def __init__(self, ops: Sequence[Any]):
        self.ops = list(ops)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The augmented batch, float 0..1, same shape; uint8 input is scaled from 0..255."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise KitError(f"data.aug.gpu: expected a B×3×H×W batch, got shape {tuple(images.shape)}")
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float().clone()
        for op in self.ops:
            x = op(x, generator)
        return x

    def __repr__(self) -> str:
        return f"GpuStage({self.ops})"


def build_gpu_stage(spec: Optional[Sequence[Mapping[str, Any]]], key: str = "data.aug.gpu") -> Optional[GpuStage]:
    """A GpuStage from a list of ``{name, p, …}`` dicts; None/empty -> None; a mistake: a KitError naming the key."""
    if not spec:
        return None
    if not isinstance(spec, (list, tuple)):
        raise KitError(f"{key}: expected a list of {{name: …, p: …}} ops, got {type(spec).__name__}")
    return GpuStage(_fuse([_build_op(item, f"{key}[{i}]") for i, item in enumerate(spec)]))


def _fuse(ops: Sequence[Any]) -> list:
    """Fewer passes over the batch, the same draws: runs of flips as one Dihedral, affine + distort as one Warp."""
    out: list = []
    for op in ops:
        last = out[-1] if out else None
        if isinstance(op, Flip) and isinstance(last, Dihedral):
            last.flips.append(op)
        elif isinstance(op, Flip):
            out.append(Dihedral([op]))
        elif isinstance(op, Distort) and isinstance(last, Affine):
            out[-1] = Warp(last, op)
        else:
            out.append(op)
    return out


def _build_op(item: Any, key: str) -> Any:
    if not isinstance(item, Mapping) or "name" not in item:
        raise KitError(f"{key}: expected a mapping with a name (one of {', '.join(OPS)}), got {item!r}")
    name = item["name"]
    if name not in OPS:
        raise KitError(f"{key}: unknown GPU augmentation {name!r}; known: {', '.join(OPS)}")
    cls, defaults = OPS[name]
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in item.items() if k != "name"}
    accepted = [f.name for f in fields(cls) if f.name != "axis"]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise KitError(f"{key} ({name}): unknown argument(s) {', '.join(map(repr, unknown))}; "
                       f"accepted: {', '.join(accepted)}")
    op = cls(**{**defaults, **args})
    _validate(op, key, name)
    return op


def _validate(op: Any, key: str, name: str) -> None:
    """Numbers or [low, high] pairs, each in the range its field declares (ranged(...) above), a known padding."""
    where = f"{key} ({name})"
    for f in fields(op):
        value = getattr(op, f.name)
        if f.name == "padding" and value not in _PADDING:
            raise KitError(f"{where}: padding={value!r}; expected one of {', '.join(_PADDING)}")
        if f.name in ("axis", "padding") or (f.name == "crop_area" and value is None):  # None: no crop
            continue
        pair = value if isinstance(value, tuple) else (value,)
        if len(pair) not in (1, 2) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in pair):
            raise KitError(f"{where}: {f.name}={value!r}; expected a number or a [low, high] pair")
        if len(pair) == 2 and pair[0] > pair[1]:
            raise KitError(f"{where}: {f.name}={value!r}; expected low <= high")
    if isinstance(op, Distort) and not isinstance(op.grid, int):
        raise KitError(f"{where}: grid={op.grid!r}; expected an integer >= 2 (control points per side)")
    bad = out_of_range(op)
    if bad:
        path, value, rng = bad
        raise KitError(f"{where}: {path}={value!r}; must be {rng.describe(value)}")


# --- helpers --------------------------------------------------------------------------------------------------------
_LUMA = torch.tensor([0.299, 0.587, 0.114])
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _chosen(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Which samples an op touches (drawn for every op, even p=0 or 1: the stream stays aligned across configs)."""
    return torch.rand(x.shape[0], generator=gen) < p


def _on_chosen(x: torch.Tensor, chosen: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """Apply fn(subset, indices) to the chosen samples only, in place (GpuStage owns x); the others stay unchanged."""
    idx = chosen.nonzero().view(-1)
    if len(idx) == 0:
        return x
    if len(idx) == x.shape[0]:
        return fn(x, idx)
    dev_idx = idx.to(x.device)
    x[dev_idx] = fn(x[dev_idx], idx)
    return x


def _as_range(value: Any, center: Optional[float]) -> Range:
    """A number v as (center - v, center + v) (or (v, v) without a center); a pair as it is."""
    if isinstance(value, (tuple, list)):
        return (float(value[0]), float(value[-1]))
    return (center - value, center + value) if center is not None else (float(value), float(value))


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + torch.rand(n, generator=gen, dtype=torch.float64) * (hi - lo)


def _ssr_matrix(b: int, h: int, w: int, shift: float, scale: Range, rotate: float,
                gen: torch.Generator) -> torch.Tensor:
    """B×3×3 output->input maps in normalised coordinates: rotate (in pixel space) / zoom / shift."""
    angle = _uniform(b, -rotate, rotate, gen) * math.pi / 180
    zoom = _uniform(b, max(scale[0], 1e-3), max(scale[1], 1e-3), gen)
    tx, ty = _uniform(b, -shift, shift, gen) * 2, _uniform(b, -shift, shift, gen) * 2  # normalised side = 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    m = torch.zeros(b, 3, 3, dtype=torch.float64)
    # rotation in pixels = S^-1 R S with S = diag(w, h): keeps angles right on non-square images
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = cos, -sin * h / w, tx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = sin * w / h, cos, ty
    m[:, 2, 2] = 1
    return m


def _crop_matrix(b: int, area: Any, ratio: Any, gen: torch.Generator) -> torch.Tensor:
    """B×3×3 maps of the output onto a random crop (area fraction, aspect ratio) of the input; identity without."""
    m = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    if area is None:
        return m
    a = _uniform(b, *_as_range(area, None), gen)
    lr = _as_range(ratio, None)
    r = torch.exp(_uniform(b, math.log(lr[0]), math.log(lr[1]), gen))
    cw, ch = torch.sqrt(a * r).clamp(max=1), torch.sqrt(a / r).clamp(max=1)
    cx, cy = (_uniform(b, -1, 1, gen) * (1 - cw)), (_uniform(b, -1, 1, gen) * (1 - ch))
    m[:, 0, 0], m[:, 0, 2], m[:, 1, 1], m[:, 1, 2] = cw, cx, ch, cy
    return m


def _sample(x: torch.Tensor, theta: Optional[torch.Tensor], coarse: Optional[torch.Tensor],
            padding: str) -> torch.Tensor:
    """Bilinear resampling of x at theta·(u + field(u)): theta B×3×3 maps (None: identity), field upsampled from
    the B×2×g×g `coarse` displacements (None: no field)."""
    n, _, h, w = x.shape
    eye = torch.eye(2, 3, dtype=x.dtype, device=x.device).expand(n, 2, 3)
    if coarse is None:
        grid = F.affine_grid(theta[:, :2].to(x), [n, 3, h, w], align_corners=False)
    else:
        grid = F.affine_grid(eye, [n, 3, h, w], align_corners=False)
        field = F.interpolate(coarse.to(x), size=(h, w), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1)
        if theta is not None:
            th = theta[:, :2].to(x)
            grid = grid @ th[:, None, :, :2].transpose(-1, -2) + th[:, None, None, :, 2]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _hue_matrix(angle: torch.Tensor) -> torch.Tensor:
    """B×3×3 RGB->RGB hue rotations: rotate the chroma plane (I, Q) of YIQ by `angle`."""
    yiq = _RGB2YIQ
    rot = torch.zeros(len(angle), 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    return torch.linalg.inv(yiq) @ rot @ yiq
