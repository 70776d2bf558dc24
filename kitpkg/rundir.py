"""The run directory of `kitpkg cv`: where each of its files lives, and the typed records it holds.

This module is the one place that spells the run directory's names; every other module asks it (`RunDir(root)`),
and reads fold records and the CV summary as `FoldRecord` / `CVSummary`. RunState (train/runstate.py) is its state
part: it reads and writes state.json and the fold records. Layout (relative paths only, so it moves between Colab
and Kaggle; `k` is a fold):
  state.json              config hash + result keys, shard fingerprints, the CV summary (runstate.py)
  folds/fold{k}.json      fold k's record (FoldRecord), written only by the process training it
  folds/fold{k}.lease     which live process trains fold k (lease.py)
  folds/.fold{k}.merging  a merge putting fold k in place holds it (merge.py: made by an atomic mkdir)
  fold{k}/ckpt/           ckpt-<step>-<n>.ckpt (full Lightning state, resumable), best.ckpt (checkpoint.py)
  fold{k}/metrics.csv     per-epoch history (train loss, val loss/metric, lr)
  fold{k}/meta.json       fold k's metadata encoding (meta_head.py, with model.meta)
  fold{k}/parts/          per-rank prediction parts (predict.py; never copied by a merge)
  oof_fold{k}.csv         OOF rows of fold k (id, fold, target, prediction)  -> oof.csv when all folds are done
  test_fold{k}.csv        fold k's test scores                                -> submission.csv, test_predictions.csv
  thresholds.json         decision thresholds / ordinal cuts fitted on the OOF (train/decisions.py): the test's,
                          fitted on all OOF, and each fold's, fitted on the other folds (the nested CV's)
  report.md + *.png       report.py;  lr_find.json + .png: `kitpkg lr-find`;  augment_preview.png (its default place)
  lr_suggestion.json      the notebook's LR cache (notebook/steps.py)
  plan.json               `kitpkg plan`'s measured rates and projected fold/CV times (train/plan.py)
  logs/                   train.logger's logs: csv/fold{k}/, tensorboard/fold{k}/, wandb/ (train/loggers.py)
  .merge-<owner>/         a merge's staging folder, laid out like a run directory (merge.py)
A new file of the run directory: one name and one `RunDir` member here, used where it is read and written.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, get_args, get_origin, get_type_hints

STATE_NAME = "state.json"
FOLDS_DIR = "folds"
FOLD_OOF = "oof_fold{k}.csv"
FOLD_TEST = "test_fold{k}.csv"
BEST = "best.ckpt"
RESUMABLE = re.compile(r"^ckpt-(\d{8})-([01])\.ckpt$")  # ckpt-<global step>-<0 mid-epoch, 1 after validation>
MERGE_STAGE = ".merge-"
_PARTS = "parts"


def ckpt_name(step: int, after_validation: bool) -> str:
    """The name of a resumable checkpoint: names sort in the order they were written."""
    return f"ckpt-{step:08d}-{int(after_validation)}.ckpt"


def metrics_beside(ckpt_dir: Path) -> Path:
    """A fold's metrics.csv, beside its checkpoint folder (what RunCheckpoints is given)."""
    return Path(ckpt_dir).parent / "metrics.csv"


def is_run_dir(folder: Path) -> bool:
    """Whether `folder` holds a run of `kitpkg cv` (its state.json)."""
    return (Path(folder) / STATE_NAME).is_file()


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (or of a folder laid out like one: a merge's staging folder)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- run level ----------------------------------------------------------------------------------------------------
    @property
    def state(self) -> Path:
        """state.json: what identifies the run, and its CV summary."""
        return self.root / STATE_NAME

    @property
    def oof(self) -> Path:
        """oof.csv: every fold's OOF rows."""
        return self.root / "oof.csv"

    @property
    def submission(self) -> Path:
        """submission.csv: the competition's file (fold average)."""
        return self.root / "submission.csv"

    @property
    def test_predictions(self) -> Path:
        """test_predictions.csv: the fold-averaged test predictions, every column."""
        return self.root / "test_predictions.csv"

    @property
    def thresholds(self) -> Path:
        """thresholds.json: thresholds or ordinal cuts fitted on the OOF (all OOF: the test's; per fold: nested)."""
        return self.root / "thresholds.json"

    @property
    def report(self) -> Path:
        """report.md."""
        return self.root / "report.md"

    def figure(self, name: str) -> Path:
        """A PNG (`name` without its suffix): the report's scores, roc, curves; lr_find; augment_preview."""
        return self.root / f"{name}.png"

    @property
    def lr_find(self) -> Path:
        """lr_find.json: the LR finder's curve and suggestion."""
        return self.root / "lr_find.json"

    @property
    def lr_cache(self) -> Path:
        """lr_suggestion.json: {config hash: suggestion} of the notebook's LR finder runs."""
        return self.root / "lr_suggestion.json"

    @property
    def plan(self) -> Path:
        """plan.json: `kitpkg plan`'s measured rates and projected times (shown by `kitpkg runs` beside the actual)."""
        return self.root / "plan.json"

    @property
    def logs(self) -> Path:
        """logs/: train.logger's CSV, TensorBoard and W&B logs, a folder per kind (train/loggers.py)."""
        return self.root / "logs"

    def merge_stage(self, owner: str) -> Path:
        """The staging folder of the merge `owner` (<host>-<pid>-<token>)."""
        return self.root / f"{MERGE_STAGE}{owner}"

    def merge_stages(self) -> Iterator[Tuple[Path, str]]:
        """(folder, owner) of every merge staging folder in the run directory."""
        for folder in self.root.glob(f"{MERGE_STAGE}*"):
            yield folder, folder.name[len(MERGE_STAGE):]

    # -- per fold -----------------------------------------------------------------------------------------------------
    def fold_record(self, k: int) -> Path:
        """folds/fold{k}.json: fold k's record."""
        return self.root / FOLDS_DIR / f"fold{int(k)}.json"

    def lease(self, k: int) -> Path:
        """folds/fold{k}.lease: the live process training fold k."""
        return self.root / FOLDS_DIR / f"fold{int(k)}.lease"

    def merge_claim(self, k: int) -> Path:
        """folds/.fold{k}.merging: held by the merge putting fold k in place."""
        return self.root / FOLDS_DIR / f".fold{int(k)}.merging"

    def fold_dir(self, k: int) -> Path:
        """fold{k}/: the fold's checkpoints, history, metadata encoding and prediction parts."""
        return self.root / f"fold{int(k)}"

    def ckpt_dir(self, k: int) -> Path:
        """fold{k}/ckpt/: the fold's checkpoints."""
        return self.fold_dir(k) / "ckpt"

    def metrics(self, k: int) -> Path:
        """fold{k}/metrics.csv: the fold's per-epoch history."""
        return metrics_beside(self.ckpt_dir(k))

    def meta(self, k: int) -> Path:
        """fold{k}/meta.json: the fold's metadata encoding."""
        return self.fold_dir(k) / "meta.json"

    def parts(self, k: int) -> Path:
        """fold{k}/parts/: per-rank prediction parts."""
        return self.fold_dir(k) / _PARTS

    def fold_oof(self, k: int) -> Path:
        """The fold's OOF predictions."""
        return self.root / FOLD_OOF.format(k=int(k))

    def fold_test(self, k: int) -> Path:
        """The fold's test scores."""
        return self.root / FOLD_TEST.format(k=int(k))

    def fold_predictions(self, k: int) -> Tuple[Path, Path]:
        """(OOF, test) prediction files of fold k."""
        return self.fold_oof(k), self.fold_test(k)

    def fold_files(self, k: int) -> List[Path]:
        """Every file that makes fold k (what a merge copies): fold{k}/ but its per-rank parts and hidden temp files,
        and its prediction files that exist."""
        folder = self.fold_dir(k)
        kept = [] if not folder.is_dir() else [
            path for path in sorted(folder.rglob("*"))
            if path.is_file() and _PARTS not in path.relative_to(self.root).parts and not path.name.startswith(".")]
        return kept + [path for path in self.fold_predictions(k) if path.is_file()]

    def recorded_folds(self) -> List[int]:
        """Sorted folds that have a record file."""
        folder = self.root / FOLDS_DIR
        if not folder.is_dir():
            return []
        return sorted(int(p.stem[4:]) for p in folder.glob("fold*.json") if p.stem[4:].isdigit())

    def histories(self) -> Dict[int, Path]:
        """{fold: metrics.csv} of every fold that has one."""
        found = {}
        for folder in self.root.glob("fold*"):
            if folder.name[4:].isdigit() and self.metrics(int(folder.name[4:])).is_file():
                found[int(folder.name[4:])] = self.metrics(int(folder.name[4:]))
        return dict(sorted(found.items()))

    def holds_fold_work(self) -> bool:
        """Whether a fold left a checkpoint or OOF predictions here."""
        return any(self.root.glob("fold*/ckpt/*.ckpt")) or any(self.root.glob(FOLD_OOF.format(k="*")))


# -- records ----------------------------------------------------------------------------------------------------------
def _typed(value: Any, kind: type) -> bool:
    """Whether a JSON value is of `kind` (a float field takes any number; true/false are no numbers)."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _kind(hint: Any) -> type:
    """The JSON type of a record field: str, float, int or list (Optional[...] unwrapped)."""
    inner = [arg for arg in get_args(hint) if arg is not type(None)] or [hint]
    return get_origin(inner[0]) or inner[0]


def _from_json(cls, data: Mapping[str, Any]):
    """A record from its JSON object: each named key that holds a value of its type (null counts as absent) goes to
    its field, every other key -- unknown, or holding a value of another type -- to `extra`, kept as written."""
    hints = get_type_hints(cls)
    named = {f.name: _kind(hints[f.name]) for f in fields(cls) if f.name != "extra"}
    values, extra = {}, {}
    for key, value in dict(data).items():
        if key in named and (value is None or _typed(value, named[key])):
            if value is not None:
                values[key] = float(value) if named[key] is float else value
        else:
            extra[key] = value
    return cls(**values, extra=extra)


def _to_json(record: Any, always: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """The record's JSON object: its set fields (NaN as null: NaN is no JSON), the `always` ones even when unset,
    and its extra keys as they were read."""
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if f.name != "extra" and (value is not None or f.name in always):
            out[f.name] = None if isinstance(value, float) and math.isnan(value) else value
    return {**out, **record.extra}


@dataclass(frozen=True)
class FoldRecord:
    """One fold's record (folds/fold{k}.json). Every key is optional: records of older releases lack some, and keys
    this release does not name (and a named key holding a value of another type) are kept in `extra`, written back
    as they were read. A null reads as an absent key, but for `score`: null there is NaN, a fold without a score."""

    status: Optional[str] = None  # running, trained, done, or lost (foldcheck.LOST)
    score: Optional[float] = None  # the fold's CV metric; NaN: recorded null (one class in its validation split)
    last_score: Optional[float] = None  # the validation metric at the fold's last epoch (no TTA)
    best_val_score: Optional[float] = None  # the same metric at the picked epoch
    best_epoch: Optional[int] = None
    samples: Optional[int] = None  # OOF rows
    wall_s: Optional[float] = None  # timing.py's figures: where the fold's time went
    train_img_s: Optional[float] = None
    loader_img_s: Optional[float] = None
    loader_wait: Optional[float] = None
    device: Optional[str] = None
    precision: Optional[str] = None
    reason: Optional[str] = None  # why a lost fold must be trained again
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FoldRecord":
        """The record of a JSON object as any release wrote it (null score: NaN)."""
        null_score = "score" in data and data["score"] is None
        return _from_json(cls, {**data, "score": math.nan} if null_score else data)

    def to_json(self) -> Dict[str, Any]:
        """The JSON object written to folds/fold{k}.json."""
        return _to_json(self)

    @property
    def is_done(self) -> bool:
        """Finished training, its predictions written."""
        return self.status == "done"

    @property
    def scored(self) -> bool:
        """Whether the record holds a score (a number, not NaN)."""
        return self.score is not None and not math.isnan(self.score)

    def score_problem(self) -> Optional[str]:
        """Why a finished fold's score cannot be read (None: a number, or null for a fold without one)."""
        if "score" in self.extra:
            return f"score {self.extra['score']!r} is not a number"
        return "no score in its record" if self.score is None else None


@dataclass(frozen=True)
class CVSummary:
    """The CV summary in state.json ("cv"), written when every fold of the run is done."""

    metric: Optional[str] = None
    mean: Optional[float] = None
    std: Optional[float] = None
    oof: Optional[float] = None  # the pooled OOF score (null: one class in every fold)
    folds: Optional[List[int]] = None
    last_mean: Optional[float] = None
    left_out: Optional[List[int]] = None  # finished folds without a score, left out of the mean
    # label decisions fitted on the OOF: how (e.g. "ordinal cuts fitted on the other folds (nested)"), and the file
    # holding them (thresholds.json); the mean, std and oof above are then those of the nested decisions
    decisions: Optional[str] = None
    thresholds: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    KEY = "cv"  # its key in state.json
    _OPTIONAL = ("decisions", "thresholds")  # written only when set: a run without fitted decisions reads as before

    @classmethod
    def from_json(cls, data: Any) -> Optional["CVSummary"]:
        """The summary of state.json's "cv" entry as any release wrote it; None when it is not a JSON object."""
        return _from_json(cls, data) if isinstance(data, Mapping) else None

    def to_json(self) -> Dict[str, Any]:
        """The JSON object written as state.json's "cv" (every named key, null when unknown)."""
        return _to_json(self, always=tuple(f.name for f in fields(self) if f.name not in self._OPTIONAL))
