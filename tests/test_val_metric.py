"""The validation metric of a fold accumulates every batch and scores all of them at the end: one process or a real
2-process gloo run (each rank a part of the fold, one rank possibly none) give the metric of all the fold's samples,
and a fold that cannot be scored is NaN, not 0 and not an error."""
from __future__ import annotations

import json
import math
import os
import socket
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fakes.user_metric import MAE_METRIC_FILE
from kitpkg.metrics import metric_from_spec
from kitpkg.train.val_metric import ValMetric

N = 13


# case -> (spec, kind, which samples rank 0 gets; rank 1 the rest)
CASES = {
    "auc": ("auc", "binary", 7),
    "auc_one_class": ("auc", "binary", 7),
    "pauc": ({"name": "pauc", "min_tpr": 0.5}, "binary", 6),
    "qwk": ("qwk", "ordinal", 7),
    "kl": ("kl", "soft", 5),
    "mean_auc": ("mean_auc", "multilabel", 7),
    "rmse": ("rmse", "regression", 8),
    "accuracy_rank1_empty": ("accuracy", "multiclass", N),
    "user_file": ("my_metric.py:score", "binary", 7),
}


def case_data(case: str, kind: str):
    """The fold's (target, prediction) of a case, float32 as the metric keeps them; the same in every process."""
    rng = np.random.default_rng(sorted(CASES).index(case))
    if kind == "binary":
        target = np.zeros(N) if case == "auc_one_class" else (np.arange(N) % 3 == 0) * 1.0
        pred = rng.random(N)
    elif kind == "ordinal":
        target = rng.integers(0, 4, N)
        pred = target + rng.normal(0, 0.8, N)
    elif kind in ("soft", "multiclass"):
        target, pred = rng.dirichlet(np.ones(3), N), rng.dirichlet(np.ones(3), N)
        target = target.argmax(1) if kind == "multiclass" else target
    elif kind == "multilabel":
        target, pred = rng.integers(0, 2, (N, 3)), rng.random((N, 3))
    else:
        target, pred = rng.normal(0, 1, (N, 2)), rng.normal(0, 1, (N, 2))
    return target.astype(np.float32), pred.astype(np.float32)


def _expected(case: str, folder: str) -> float:
    spec, kind, _ = CASES[case]
    target, pred = case_data(case, kind)
    target = target.astype(np.int64) if kind in ("multiclass", "ordinal") else target.astype(np.float64)
    return metric_from_spec(spec, folder, kind).compute(target, pred.astype(np.float64))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, folder):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        scores = {}
        for case, (spec, kind, cut) in CASES.items():
            target, pred = case_data(case, kind)
            mine = slice(0, cut) if rank == 0 else slice(cut, N)
            metric = ValMetric(metric_from_spec(spec, folder, kind))
            for start in range(mine.start, mine.stop, 3):  # batches of 3
                batch = slice(start, min(start + 3, mine.stop))
                target_batch = target[batch].astype(np.int64) if kind in ("multiclass", "ordinal") else target[batch]
                metric.update(torch.as_tensor(pred[batch]), torch.as_tensor(target_batch))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rank 1 of accuracy_rank1_empty: "compute before update"
                scores[case] = float(metric.compute())
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump(scores, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_each_score_all_the_folds_samples(tmp_path):
    (tmp_path / "my_metric.py").write_text(MAE_METRIC_FILE)
    mp.start_processes(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for case in CASES:
        expected = _expected(case, str(tmp_path))
        if case == "auc_one_class":
            assert math.isnan(expected) and all(math.isnan(r[case]) for r in ranks), "one class: NaN on every rank"
        else:
            assert ranks[0][case] == pytest.approx(expected, rel=1e-6), case
            assert ranks[1][case] == pytest.approx(expected, rel=1e-6), case


@pytest.mark.parametrize("case", [c for c in CASES if c != "user_file"])
def test_batches_accumulate_to_the_metric_of_all_samples(case):
    spec, kind, _ = CASES[case]
    target, pred = case_data(case, kind)
    metric = ValMetric(metric_from_spec(spec, ".", kind))
    for start in range(0, N, 4):
        target_batch = target[start:start + 4]
        metric.update(torch.as_tensor(pred[start:start + 4]),
                      torch.as_tensor(target_batch.astype(np.int64) if kind in ("multiclass", "ordinal")
                                      else target_batch))
    value, expected = float(metric.compute()), _expected(case, ".")
    assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected, rel=1e-6)


def test_a_fold_with_no_samples_is_nan_and_the_direction_is_the_metrics():
    metric = ValMetric(metric_from_spec("logloss", ".", "binary"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics: compute before update
        assert math.isnan(float(metric.compute()))
    assert metric.higher_is_better is False
    assert ValMetric(metric_from_spec("auc", ".", "binary")).higher_is_better is True


def test_half_precision_predictions_are_scored_as_floats():
    metric = ValMetric(metric_from_spec("accuracy", ".", "multiclass"))
    metric.update(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.bfloat16), torch.tensor([0, 1, 1]))
    assert float(metric.compute()) == pytest.approx(2 / 3)
