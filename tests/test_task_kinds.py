"""Every task kind (train.task) end to end on tiny generated data whose label is drawn in the image's colour
(tests/task_data.py): `kitpkg cv` beats a chance baseline computed here with reference metrics (scikit-learn, scipy,
numpy) and writes the OOF columns kitpkg/predictions.py documents; a fold killed mid-epoch resumes to the same OOF and
test bytes; 2 DDP processes on the CPU score every validation sample once; the submission follows a sample file.

One trained run per kind (2 folds, 2 epochs, 24 training images a fold: 6 steps of 4 an epoch) is shared by that kind's
tests; the kill and the DDP run train only fold FOLD."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pandas as pd
import pytest

pl = pytest.importorskip("pytorch_lightning")

from conftest import run_ddp_cv  # noqa: E402
from killhook.kill_at import kill_callbacks  # noqa: E402
from kitpkg.config import load_config  # noqa: E402
from kitpkg.train import cv  # noqa: E402
from kitpkg.train.inputs import load_inputs  # noqa: E402
from kitpkg.train.runstate import RunState  # noqa: E402
from task_data import COLOURS, ID, LABEL_COLUMNS, KindData, make_kind_data, sample_submission  # noqa: E402
from tiny_tables import tiny_config  # noqa: E402

KINDS = ["binary", "multiclass", "multilabel", "regression", "ordinal", "soft"]
FOLD = 1  # the fold the kill and the DDP run train
BUILD_TRAINER = cv.build_trainer
TRAIN = {"epochs": 2, "checkpoint_every_n_steps": 2, "keep_checkpoints": 2}


# --- what each kind's OOF holds (kitpkg/predictions.py's table), read back as arrays ------------------------------
def _per_label(prefix: str, kind: str) -> List[str]:
    return [f"{prefix}_{c}" for c in LABEL_COLUMNS[kind]]


OOF_COLUMNS = {
    "binary": ["target", "prediction"],
    "multiclass": ["target", "prediction", "prob_0", "prob_1", "prob_2"],
    "multilabel": [*_per_label("target", "multilabel"), *_per_label("pred", "multilabel")],
    "regression": ["target", "prediction"],
    "ordinal": ["target", "prediction", "prediction_class"],
    "soft": [*_per_label("target", "soft"), *_per_label("pred", "soft")],
}
METRIC = {"binary": "auc", "multiclass": "accuracy", "multilabel": "mean_auc", "regression": "rmse",
          "ordinal": "qwk", "soft": "kl"}  # train.metric auto of each kind (config.py's doc of the key)
HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "mean_auc": True, "qwk": True, "rmse": False, "kl": False}


def _target(kind: str, frame: pd.DataFrame) -> np.ndarray:
    columns = [c for c in OOF_COLUMNS[kind] if c.startswith("target")]
    values = frame[columns].to_numpy(np.float64)
    return values if len(columns) > 1 else values[:, 0]


def _pred(kind: str, frame: pd.DataFrame) -> np.ndarray:
    """What the kind's metric scores: P(positive), the class probabilities, the label probabilities, the value, the
    class an ordinal value was cut to, the distribution."""
    columns = {"binary": ["prediction"], "multiclass": ["prob_0", "prob_1", "prob_2"],
               "regression": ["prediction"], "ordinal": ["prediction_class"]}.get(kind)
    columns = columns or [c for c in OOF_COLUMNS[kind] if c.startswith("pred_")]
    values = frame[columns].to_numpy(np.float64)
    return values if len(columns) > 1 else values[:, 0]


def _cut(values: np.ndarray, cuts: Any) -> np.ndarray:
    """Ordinal classes by hand: how many of the increasing cuts each value reaches."""
    cuts = np.asarray(cuts, dtype=np.float64)
    assert cuts.shape == (3,) and np.all(np.diff(cuts) > 0), cuts
    return (np.asarray(values, dtype=np.float64)[:, None] >= cuts[None, :]).sum(1)


def _fitted(run_dir: Path) -> Dict[str, Any]:
    """thresholds.json: the decision thresholds / ordinal cuts the run fitted on its OOF (kitpkg/train/decisions.py)."""
    return json.loads((run_dir / "thresholds.json").read_text())


def _scored(kind: str, oof: pd.DataFrame, run_dir: Path) -> np.ndarray:
    """What the CV scores per row: the prediction (_pred), but for ordinal (QWK scores decided classes) the class
    fold k's values are cut to with the cuts the run fitted on the other folds (nested, recorded in thresholds.json)."""
    if kind != "ordinal":
        return _pred(kind, oof)
    cuts = {f["fold"]: f["params"] for f in _fitted(run_dir)["folds"]}
    assert sorted(cuts) == sorted(set(oof["fold"]))
    classes = np.zeros(len(oof), dtype=np.int64)
    for k, held in oof.groupby("fold").groups.items():
        rows = oof.index.get_indexer(held)
        classes[rows] = _cut(oof["prediction"].to_numpy()[rows], cuts[k])
    return classes


def _reference_score(kind: str, target: np.ndarray, pred: np.ndarray) -> float:
    """The kind's metric by a reference implementation (NaN where it cannot be scored)."""
    metrics = pytest.importorskip("sklearn.metrics")
    if kind == "binary":
        return metrics.roc_auc_score(target, pred) if len(set(target)) == 2 else float("nan")
    if kind == "multiclass":
        return metrics.accuracy_score(target, pred.argmax(1))
    if kind == "multilabel":  # labels with one class in these rows have no AUC and are left out of the mean
        return float(np.mean([metrics.roc_auc_score(target[:, j], pred[:, j]) for j in range(target.shape[1])
                              if len(set(target[:, j])) == 2]))
    if kind == "regression":
        return float(np.sqrt(np.mean((pred - target) ** 2)))
    if kind == "ordinal":
        return metrics.cohen_kappa_score(target.astype(int), pred.astype(int), weights="quadratic")
    from scipy.special import rel_entr

    return float(rel_entr(target, pred).sum(1).mean())  # HMS 2024's KL(target || prediction)


def _chance(kind: str, target: np.ndarray) -> float:
    """The score of a prediction that ignores the image: a constant score (AUC 0.5; ordinal: one grade, kappa 0), the
    most frequent class, the mean value, the mean distribution."""
    if kind in ("binary", "multilabel"):
        return 0.5
    if kind == "multiclass":
        return float(np.bincount(target.astype(int)).max() / len(target))
    if kind == "ordinal":
        return 0.0
    if kind == "regression":
        return _reference_score(kind, target, np.full_like(target, target.mean()))
    return _reference_score(kind, target, np.tile(target.mean(0), (len(target), 1)))


def _check_values(kind: str, oof: pd.DataFrame) -> None:
    """Predictions are what the kind promises: probabilities in [0, 1], class rows and distributions summing to 1,
    the predicted class their argmax, an ordinal value cut at k - 0.5 and clipped to the grades."""
    if kind in ("binary", "multiclass", "multilabel", "soft"):
        probs = _pred(kind, oof)
        assert ((probs >= 0) & (probs <= 1)).all()
    if kind in ("multiclass", "soft"):
        assert np.allclose(probs.sum(1), 1, atol=1e-5)
    if kind == "multiclass":
        assert (oof["prediction"] == _pred(kind, oof).argmax(1)).all()
    if kind == "ordinal":
        assert (oof["prediction_class"] == np.clip(np.floor(oof["prediction"] + 0.5), 0, 3)).all()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Train with one intra-op thread while this module runs: on a small shared CPU two threads spin waiting for each
    other and a tiny model's step takes many times longer. Every run compared here is made under this setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- one generated data set and one finished run per kind ---------------------------------------------------------
@dataclass
class KindRun:
    data: KindData
    config_path: Path
    run_dir: Path
    result: Any


def _cached(make: Callable[[str], Any]) -> Callable[[str], Any]:
    """make(kind), computed once per kind (a failure too: it is raised again, not retrained)."""
    done: Dict[str, Any] = {}

    def get(kind: str) -> Any:
        if kind not in done:
            try:
                done[kind] = make(kind)
            except Exception as err:  # noqa: BLE001 - kept to raise in every test of the kind
                done[kind] = err
        if isinstance(done[kind], Exception):
            raise done[kind]
        return done[kind]
    return get


@pytest.fixture(scope="module")
def kind_data(tmp_path_factory):
    """kind -> KindData: the kind's images, CSVs and TFRecord shards (2 folds, a test split)."""
    return _cached(lambda kind: make_kind_data(tmp_path_factory.mktemp(f"kind_{kind}"), kind))


def _config_path(data: KindData, task: str, name: str = "exp") -> Path:
    folder = Path(data.manifest.root).parent.parent
    return tiny_config(folder, data.manifest.root, name=name, data={"batch_size": 4}, train={**TRAIN, "task": task},
                       optim={"name": "adamw", "lr": 0.01})


@pytest.fixture(scope="module")
def kind_run(kind_data):
    """kind -> KindRun: an uninterrupted in-process `run_cv` of the kind (train.task set to it)."""
    def make(kind: str) -> KindRun:
        data = kind_data(kind)
        path = _config_path(data, kind)
        run_dir = path.parent / "run"
        return KindRun(data, path, run_dir, cv.run_cv(load_config(path), run_dir))
    return _cached(make)


# --- 1. auto names the kind it infers ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regression"])
def test_auto_infers_the_kind_from_the_label_columns(kind_data, kind, capsys):
    """train.task auto resolves to the same Task as the kind set explicitly; a kind beyond binary/multiclass is said
    in one printed line naming the label columns (ordinal and soft are explicit only)."""
    data = kind_data(kind)
    explicit = load_inputs(load_config(_config_path(data, kind, name="explicit"))).task
    capsys.readouterr()
    auto = load_inputs(load_config(_config_path(data, "auto", name="auto"))).task
    printed = capsys.readouterr().out
    assert auto == explicit and auto.kind == kind
    said = [line for line in printed.splitlines() if "train.task auto" in line]
    assert said or kind in ("binary", "multiclass")
    assert all(f"-> {kind}" in line and all(c in line for c in data.labels) for line in said), said


# --- 2. end to end: learns, scores as the reference does, writes the documented OOF --------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_trains_end_to_end_and_beats_chance(kind_run, kind):
    run = kind_run(kind)
    result = run.result
    assert result.metric == METRIC[kind] and not result.pending and sorted(result.scores) == [0, 1]
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    assert list(oof.columns) == ["id", "fold", *OOF_COLUMNS[kind]]
    assert oof["id"].is_unique and dict(zip(oof["id"], oof["fold"])) == run.data.manifest.fold_of()
    truth = run.data.truth()
    target = _target(kind, oof)
    assert np.allclose(target.reshape(len(oof), -1), [truth[i] for i in oof["id"]], atol=1e-6)
    _check_values(kind, oof)
    scored = _scored(kind, oof, run.run_dir)
    for k in sorted(result.scores):
        held = (oof["fold"] == k).to_numpy()
        assert result.scores[k] == pytest.approx(_reference_score(kind, target[held], scored[held]),
                                                 rel=1e-5, abs=1e-7), f"fold {k}"
    pooled, chance = _reference_score(kind, target, scored), _chance(kind, target)
    assert result.oof_score == pytest.approx(pooled, rel=1e-5, abs=1e-7)
    best = 1.0 if HIGHER_IS_BETTER[METRIC[kind]] else 0.0
    # the model closes at least 30 % of the way from chance to a perfect score on images it never trained on
    assert abs(best - pooled) <= 0.7 * abs(best - chance), f"{METRIC[kind]} {pooled:.4f}, chance {chance:.4f}"
    assert RunState.read(run.run_dir).task.kind == kind


# --- 3. a kill mid-epoch resumes exactly -------------------------------------------------------------------------
class Killed(BaseException):
    """Stands for the SIGKILL (a BaseException, so no `except Exception` on the way swallows it)."""


def _crash() -> None:
    raise Killed()


class StepLog(pl.Callback):
    """Appends (global step, epoch, batch ids) of every optimizer step to `steps`."""

    def __init__(self, steps: list):
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.global_step, trainer.current_epoch, tuple(batch["id"])))


def _run_fold(monkeypatch, config, run_dir: Path, kill_at: str = ""):
    """Run (or resume) fold FOLD in this process with the step log; killed at `kill_at` -> (steps, killed?)."""
    steps: list = []
    spec = f"{FOLD}:{kill_at}" if kill_at else ""

    def build_trainer(recipe, callbacks=(), **kw):
        return BUILD_TRAINER(recipe, kill_callbacks([StepLog(steps), *callbacks], spec, recipe.fold, _crash), **kw)

    monkeypatch.setattr(cv, "build_trainer", build_trainer)
    try:
        cv.run_cv(config, run_dir, folds=[FOLD])
    except Killed:
        return steps, True
    return steps, False


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_fold_killed_mid_epoch_resumes_to_the_same_predictions(kind_run, kind, tmp_path, monkeypatch):
    run = kind_run(kind)
    config, run_dir = load_config(run.config_path), tmp_path / "run"
    before, killed = _run_fold(monkeypatch, config, run_dir, "step-ckpt:2")
    assert killed and [s[:2] for s in before] == [(1, 0), (2, 0)]
    assert RunState.read(run_dir).fold(FOLD).status == "running"
    after, killed = _run_fold(monkeypatch, config, run_dir)
    assert not killed and after[0][:2] == (3, 0), "resumed after step 2, in epoch 0"
    epoch0 = sorted(i for s in before + after if s[1] == 0 for i in s[2])
    assert epoch0 == sorted(i for i, k in run.data.manifest.fold_of().items() if k != FOLD), \
        "the interrupted epoch saw every training sample once"
    for name in (f"oof_fold{FOLD}.csv", f"test_fold{FOLD}.csv"):
        assert (run_dir / name).read_bytes() == (run.run_dir / name).read_bytes(), name


# --- 4. DDP: two processes, every validation sample scored once -----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_two_ddp_processes_score_every_validation_sample_once(kind_run, kind, tmp_path):
    run = kind_run(kind)
    run_dir = tmp_path / "ddp"
    proc = run_ddp_cv(run.config_path, run_dir, "train.epochs=1", f"data.folds=[{FOLD}]", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"CV {METRIC[kind]}:") == 1  # only rank 0 reports
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    reference = pd.read_csv(run.run_dir / f"oof_fold{FOLD}.csv", dtype={"id": str})
    assert list(oof.columns) == list(reference.columns)
    assert oof["id"].is_unique and list(oof["id"]) == list(reference["id"])  # the fold's samples, each once
    assert np.allclose(_target(kind, oof), _target(kind, reference))
    _check_values(kind, oof)
    test = pd.read_csv(run_dir / "test_predictions.csv", dtype={"id": str})
    assert list(test["id"]) == run.data.test_ids
    assert not list(run_dir.glob("fold*/parts/*.csv"))  # the ranks' parts merged and removed


@pytest.mark.slow
def test_an_ordinal_cv_of_one_fold_finishes_with_the_default_cuts(kind_data, tmp_path):
    """data.folds: [k] (one fold, e.g. a quick look): no other fold to fit cuts on honestly, so the CV and the
    submission use the k - 0.5 cuts, said in a warning, instead of failing after the fold has trained."""
    data = kind_data("ordinal")
    config = load_config(_config_path(data, "ordinal"), overrides=["train.epochs=1", f"data.folds=[{FOLD}]"])
    with pytest.warns(RuntimeWarning):
        result = cv.run_cv(config, tmp_path / "run")
    oof = pd.read_csv(result.oof_path, dtype={"id": str})
    assert set(oof["fold"]) == {FOLD} and result.submission_path.is_file()
    assert result.scores[FOLD] == pytest.approx(_reference_score("ordinal", _target("ordinal", oof),
                                                                 _pred("ordinal", oof)), rel=1e-5, abs=1e-7)


# --- 5. the submission follows the competition's sample file -------------------------------------------------------
def _expected_submission(kind: str, test: pd.DataFrame, run_dir: Path) -> Dict[str, np.ndarray]:
    """The sample's prediction columns as the test predictions fill them (tests/task_data.py's layouts); decisions
    with the thresholds or cuts the run fitted on all its OOF (thresholds.json)."""
    if kind == "binary":
        return {"target": test["prediction"].to_numpy()}
    if kind == "multiclass":  # one probability per class, the columns named as the (sorted) text classes
        return {name: test[f"prob_{c}"].to_numpy() for c, name in enumerate(sorted(COLOURS))}
    if kind == "multilabel":  # Planet's tags: the labels at or above their thresholds fitted on all OOF, in order
        labels, thresholds = LABEL_COLUMNS[kind], _fitted(run_dir)["params"]
        assert len(thresholds) == len(labels)
        return {"tags": np.array([" ".join(lab for lab, t in zip(labels, thresholds) if row[f"pred_{lab}"] >= t)
                                  for _, row in test.iterrows()], dtype=object)}
    if kind == "regression":
        return {"size": test["prediction"].to_numpy()}
    if kind == "ordinal":  # cut by the cuts fitted on all OOF
        return {"grade": _cut(test["prediction"].to_numpy(), _fitted(run_dir)["params"])}
    return {c: test[f"pred_{c}"].to_numpy() for c in LABEL_COLUMNS[kind]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_submission_has_the_sample_s_columns_ids_and_row_order(kind_run, kind, tmp_path):
    run = kind_run(kind)
    sample = sample_submission(tmp_path / "sample_submission.csv", kind, run.data.test_ids)
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)  # the shared run stays as it was; output.* keys do not change results
    config = load_config(run.config_path, overrides=[f"output.sample_submission={sample}"])
    result = cv.run_cv(config, copy)
    sub = pd.read_csv(result.submission_path, dtype=str, keep_default_na=False)
    expected = pd.read_csv(sample, dtype=str, keep_default_na=False)
    assert list(sub.columns) == list(expected.columns)
    assert list(sub[ID]) == list(expected[ID]) and list(sub[ID]) != run.data.test_ids  # the sample's order
    test = pd.read_csv(copy / "test_predictions.csv", dtype={"id": str}).set_index("id").loc[list(sub[ID])]
    for column, values in _expected_submission(kind, test, copy).items():
        if values.dtype == object:
            assert list(sub[column]) == list(values), column
        else:
            assert np.allclose(sub[column].astype(float), values, atol=1e-6), column
