"""`kitpkg plan`'s printed figures: a block per image size, then one line per size when several were planned."""
from __future__ import annotations

import math
from typing import Any, List, Optional

from .projection import duration, size_text


def plan_lines(plan: Any) -> List[str]:
    """The lines `kitpkg plan` and `nb.plan` print for a plan.Plan."""
    lines: List[str] = []
    for size_plan in plan.sizes.values():
        lines += size_lines(plan, size_plan)
    if len(plan.sizes) > 1:
        lines += ["", f"{'size':<6}{'batch':<7}{'img/s':<9}{'fold':<9}{'CV (session)':<22}output (limit)"]
        for size, sp in plan.sizes.items():
            rate = "–" if sp.measured is None else f"{sp.measured.train_img_s:.1f}"
            lines.append(f"{size:<6}{plan.config.data.batch_size:<7}{rate:<9}{duration(sp.fold_s):<9}"
                         f"{_fits_word(sp.cv_s, plan.session_limit_s):<22}"
                         f"{_fits_word(sp.output_bytes, plan.output_limit_bytes, size_text)}")
    return lines


def size_lines(plan: Any, sp: Any) -> List[str]:
    """One size's block: rates, memory, batch size, the fold and CV projection, the budget."""
    config, m = plan.config, sp.measured
    if m is None:
        return [f"kitpkg plan: {sp.image_size} px: {sp.skipped}",
                f"  largest batch that fits: {sp.largest_batch} ({sp.batch_search})"]
    total = f" of {size_text(m.device_bytes)}" if m.device_bytes else ""
    largest = f"{sp.largest_batch} ({sp.batch_search})" if sp.largest_batch else sp.batch_search
    lines = [f"kitpkg plan: {m.image_size} px, batch {m.batch_size}, {m.device} {m.precision} "
             f"({m.steps} timed training steps)",
             f"  train: {m.train_img_s:.1f} img/s; the loader alone: "
             + ("–" if m.loader_img_s is None else f"{m.loader_img_s:.1f} img/s")
             + f"; waiting for batches: {100 * m.loader_wait:.0f}% of training time; validation: "
             f"{m.eval_img_s:.1f} img/s",
             f"  peak memory: {size_text(m.peak_bytes)} ({m.peak_of}{total}); largest batch that fits: {largest}"]
    first = sp.shapes[0]
    parts = sp.folds[first.fold]
    oversampled = (f" (oversampled from {first.shard_images} by data.sampling.class_weights)"
                   if first.epoch_images != first.shard_images else "")
    views = 1 + len(config.predict.tta)
    lines.append(f"  fold {first.fold}: {config.train.epochs} epochs × {first.epoch_images} images{oversampled} = "
                 f"start-up {duration(parts['start-up'])} + train {duration(parts['train'])} + validation {duration(parts['validation'])} "
                 f"({first.val_images} images/epoch) + checkpoints {duration(parts['checkpoints'])} "
                 f"({size_text(m.ckpt_bytes)}, {m.ckpt_s:.2f} s each) + OOF/test predictions "
                 f"{duration(parts['predictions'])} ({views} view{'s' if views > 1 else ''}) = "
                 f"{duration(parts['total'])}")
    at_once = "one after the other" if sp.workers == 1 else f"{sp.workers} at a time, one per GPU"
    lines.append(f"  CV ({len(sp.folds)} folds, {at_once}): {duration(sp.cv_s)}; "
                 + session_verdict(sp.cv_s, sp.fold_s, plan.session_limit_s, sp.workers))
    count = round(sp.output_bytes / m.ckpt_bytes) if m.ckpt_bytes else 0
    lines.append(f"  output: {count} checkpoints × {size_text(m.ckpt_bytes)} = {size_text(sp.output_bytes)} (a "
                 f"best.ckpt per fold + the training fold's last {count - len(sp.folds)}); "
                 + output_verdict(sp.output_bytes, plan.output_limit_bytes))
    return lines


def session_verdict(cv_s: Optional[float], fold_s: Optional[float], limit_s: Optional[float], workers: int = 1
                    ) -> str:
    """Whether the CV fits the session's time left, and if not how many folds one session holds (`workers` at once)."""
    if limit_s is None:
        return "no session limit here (train.time_limit sets one)"
    if cv_s is not None and cv_s <= limit_s:
        return f"fits the {duration(limit_s)} left in this session"
    per_session = int(limit_s // fold_s) * workers if fold_s else 0
    sessions = math.ceil(cv_s / limit_s) if cv_s and limit_s > 0 else "?"
    return (f"does NOT fit the {duration(limit_s)} left in this session: about {per_session} folds per session, "
            f"{sessions} sessions (the run pauses at the limit and continues in the next)")


def output_verdict(total: Optional[int], limit: Optional[int]) -> str:
    """Whether the run directory's checkpoints fit the platform's output limit."""
    if limit is None:
        return "no output limit here"
    word = "fits" if total is not None and total <= limit else "does NOT fit"
    return f"{word} the {size_text(limit)} output limit (fewer with a lower train.keep_checkpoints)"


def _fits_word(value: Optional[float], limit: Optional[float], show=duration) -> str:
    if value is None:
        return "–"
    if limit is None:
        return show(value)
    return f"{show(value)} {'fits' if value <= limit else 'too much'}"
