"""`sched.*`: timm's LR schedules laid over exactly the steps of `train.epochs`, warmup included.

A step is one optimizer update (`sched.per_update`; updates per epoch counted after oversampling, accumulation and
the split over DDP ranks) or one epoch. A run of N steps whose warmup covers Wn of them (`sched.warmup_epochs`):
  steps 0 .. Wn-1   linear warmup, step i at warmup_lr + (lr - warmup_lr) * (i + 1) / (Wn + 1): no step (and with
                    per-epoch steps no whole epoch) trains at warmup_lr itself
  steps Wn .. N-1   the decay: optim.lr at step Wn, min_lr exactly at step N-1, the last update of the last epoch
                    (cosine, tanh, poly; step/multistep keep timm's decay interval / milestones, counted in epochs
                    after the warmup)
A warmup as long as the run is cut to N-1 steps (the last step at optim.lr: there is no room for a decay).

timm's schedulers count from position 0 with the warmup as a prefix (positions 0..warmup_t-1); step i sits at
position i + offset (offset 1 with a warmup, so its first step is already above warmup_lr), and the decay of
`decay_t` positions ends exactly at step N-1. The scheduler is always stepped with `step(position)` (positions are
steps, whatever a step is), so one call serves both modes; where it stands is a function of the update (or epoch)
count that Lightning restores on resume.
"""
from __future__ import annotations

from typing import Any, List, NamedTuple

import torch

from ..config import Config
from ..errors import KitError

OFFSET_KEY = "kitpkg_offset"  # attribute of a kitpkg-built timm scheduler: in its state_dict, so checkpoints hold it
# timm's defaults for the schedules without an end, in epochs (kitpkg has no keys for them)
STEP_DECAY_EPOCHS = 90
MULTISTEP_MILESTONES = (90, 180, 270)


class ScheduleSpan(NamedTuple):
    """Where the steps of a run sit on a timm schedule (see the module docstring)."""

    steps: int  # N: optimizer updates (or epochs) of the whole run
    warmup_t: int  # timm's warmup_t (positions of the warmup)
    decay_t: int  # timm's t_initial after the warmup prefix (positions of the decay)
    offset: int  # timm position of step 0

    def position(self, step: int) -> int:
        """The timm position of step `step` (0-based: update or epoch index)."""
        return step + self.offset


def schedule_span(epochs: int, warmup_epochs: int, steps_per_epoch: int) -> ScheduleSpan:
    """The span of `epochs` × `steps_per_epoch` steps with a warmup of `warmup_epochs` epochs; pure."""
    steps = max(1, int(epochs) * int(steps_per_epoch))
    warmup = min(max(0, int(warmup_epochs)) * int(steps_per_epoch), steps - 1)
    offset = 1 if warmup else 0
    decay = steps - 1 - warmup  # positions from optim.lr (step `warmup`) to min_lr (step N-1)
    return ScheduleSpan(steps, warmup + offset, max(1, decay), offset)


def build_scheduler(optimizer: torch.optim.Optimizer, config: Config, updates_per_epoch: int) -> Any:
    """timm's LR schedule named by sched.*, over `train.epochs` epochs of `updates_per_epoch` updates (0: stepped per
    epoch), positioned at step 0; KitError for an unknown name."""
    from timm.scheduler import create_scheduler_v2

    s = config.sched
    per_epoch = max(1, int(updates_per_epoch))  # steps per epoch: updates, or 1 when stepped per epoch
    span = schedule_span(config.train.epochs, s.warmup_epochs, per_epoch)
    extra = {"decay_epochs": STEP_DECAY_EPOCHS * per_epoch} if s.name == "step" else \
        {"decay_milestones": [m * per_epoch for m in MULTISTEP_MILESTONES]} if s.name == "multistep" else {}
    try:
        # timm "epochs" are kitpkg steps here (step_on_epochs): the lengths are counted in steps already
        scheduler, _ = create_scheduler_v2(optimizer, sched=s.name, num_epochs=span.decay_t,
                                           warmup_epochs=span.warmup_t, warmup_lr=s.warmup_lr, min_lr=s.min_lr,
                                           warmup_prefix=True, step_on_epochs=True, **extra)
    except (AssertionError, ValueError, KeyError) as err:
        scheduler = None
        reason = f" ({err})"
    else:
        reason = ""
    if scheduler is None:
        raise KitError(f"sched.name: timm has no scheduler {s.name!r}{reason}; use cosine, step, multistep, poly, "
                       f"tanh or none")
    setattr(scheduler, OFFSET_KEY, span.offset)
    advance(scheduler, 0)
    return scheduler


def advance(scheduler: Any, step: int) -> None:
    """Set the LR of step `step` (0-based update or epoch index: what Lightning's count of finished steps is)."""
    scheduler.step(step + getattr(scheduler, OFFSET_KEY, 0))


def stale(states: List[Any]) -> bool:
    """Whether a checkpoint's scheduler states come from a timm schedule laid out before this module (another span:
    the cosine ran past the last epoch); resuming such a run continues on today's span from its update count."""
    return any(isinstance(s, dict) and "t_in_epochs" in s and OFFSET_KEY not in s for s in states)


def schedule_lrs(config: Config, updates_per_epoch: int) -> List[float]:
    """The LR of every step of a run (per update, or per epoch when `updates_per_epoch` is 0), stepped as the
    trainer steps it."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.optim.lr)
    scheduler = build_scheduler(optimizer, config, updates_per_epoch)
    lrs = []
    for step in range(config.train.epochs * max(1, int(updates_per_epoch))):
        advance(scheduler, step)
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs
