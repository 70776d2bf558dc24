"""The tests' crash injector: kills a fold of `kitpkg cv` at a chosen point of its life, from outside the product.

A spec "[fold:]point" names the point: `<n>` after optimizer step n; `step-ckpt:<n>`, `epoch-ckpt:<e>`, `best:<e>`
right after the checkpoint of step n, the end-of-epoch checkpoint of epoch e, or epoch e's best.ckpt is in the run
directory; `before-trained` after fit, before the fold is recorded as trained; `predict-oof` / `predict-test` after the
first batch of the fold's OOF / test prediction. The kill is a real SIGKILL unless a test passes its own `crash`.

In-process tests add `kill_callbacks(...)` to the trainer's callbacks; a `kitpkg cv` subprocess or a notebook kernel
started with `kill_environ(spec, env)` loads this folder's sitecustomize.py, which does the same in that process.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import pytorch_lightning as pl

from kitpkg.train.checkpoint import BEST, RunCheckpoints, ckpt_name

KILL_VAR = "KITPKG_TEST_KILL_AT"  # read only by this folder's sitecustomize.py, never by kitpkg
HOOK_DIR = Path(__file__).resolve().parent


def sigkill() -> None:
    """A real crash: nothing after it runs, no handler, no cleanup."""
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(pl.Callback):
    """Crashes fold `fold` at `point` (see the module docstring); inert for other folds or an empty spec."""

    def __init__(self, spec: str, fold: Optional[int], crash: Callable[[], None] = sigkill):
        head, _, rest = spec.partition(":")
        if head.isdigit() and rest:  # "fold:point"
            spec = rest if int(head) == fold else ""
        self.point, self.crash = spec, crash
        self._predictions = 0
        self._writers: List[RunCheckpoints] = []

    def _at(self, point: str) -> None:
        if point == self.point:
            self.crash()

    def watch(self, writer: RunCheckpoints) -> None:
        """Be told of each checkpoint once `writer` has put it into the run directory (and pruned the old ones).

        The writer copies into the run directory in a background thread (checkpoint.py): a test's kill point means
        "with what was saved up to here published", so the kill waits for the copies (a real kill may come before
        them; the newest published checkpoint is then an older one, tests/test_checkpoint_async.py)."""
        save = writer._save
        self._writers.append(writer)

        def saved(trainer: pl.Trainer, name: str, prune: bool = True) -> None:
            save(trainer, name, prune)
            if trainer.is_global_zero:
                writer.flush()
                self.published(name, trainer)

        writer._save = saved

    def published(self, name: str, trainer: pl.Trainer) -> None:
        if name == BEST:
            self._at(f"best:{trainer.current_epoch}")
        elif name == ckpt_name(trainer.global_step, after_validation=True):
            self._at(f"epoch-ckpt:{trainer.current_epoch}")
        else:
            self._at(f"step-ckpt:{trainer.global_step}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.point.isdigit() and trainer.global_step >= int(self.point):
            for writer in self._writers:
                writer.flush()
            self.crash()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._at("before-trained")

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions += 1

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0:  # a fold predicts its OOF split first, then the test split (cv.predict_fold)
            self._at({1: "predict-oof", 2: "predict-test"}.get(self._predictions, ""))


def kill_callbacks(callbacks: List[Any], spec: str, fold: Optional[int],
                   crash: Callable[[], None] = sigkill) -> List[Any]:
    """`callbacks` with a KillAt put right after the checkpoint writer (where the product's own callbacks run first,
    a crash leaves what a real one at that point leaves)."""
    kill = KillAt(spec, fold, crash)
    writers = [c for c in callbacks if isinstance(c, RunCheckpoints)]
    for writer in writers:
        kill.watch(writer)
    at = callbacks.index(writers[0]) + 1 if writers else len(callbacks)
    return [*callbacks[:at], kill, *callbacks[at:]]


def install(cv: Any, spec: str, crash: Callable[[], None] = sigkill) -> None:
    """Make every fold trainer that kitpkg.train.cv builds carry the KillAt of `spec`."""
    build = cv.build_trainer

    def build_trainer(recipe: Any, callbacks: Any = (), **kwargs: Any) -> Any:
        return build(recipe, kill_callbacks(list(callbacks), spec, recipe.fold, crash), **kwargs)

    cv.build_trainer = build_trainer


def kill_environ(spec: str, env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """`env` (default os.environ) for a subprocess whose fold is killed at `spec` (this folder first on PYTHONPATH)."""
    env = dict(os.environ if env is None else env)
    path = [str(HOOK_DIR), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**env, KILL_VAR: spec, "PYTHONPATH": os.pathsep.join(path)}
