"""Pseudo-labels per fold: a student's fold k trains only on test samples labelled by the teacher's fold k model, which
never saw fold k's labels. The set is chosen by the provenance its manifest records (teacher fold, folds it trained
on, the teacher's split), never by folder names, and refused when the student's folds are not the teacher's."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kitpkg.config import config_from_dict, load_config
from kitpkg.errors import KitError
from kitpkg.task import task_of_outputs
from kitpkg.shards.reader import iter_manifest_shard
from kitpkg.train.pseudo import make_pseudo_labels
from kitpkg.train.runstate import RunState


def _fold_scores(run_dir):
    """{fold: {test id: P(positive)}} from the teacher's test_fold{k}.csv (probability space: predict.average prob)."""
    scores = {}
    for path in sorted(Path(run_dir).glob("test_fold*.csv")):
        frame = pd.read_csv(path, dtype={"id": str})
        scores[int(path.stem[len("test_fold"):])] = dict(zip(frame["id"], frame["s0"]))
    return scores


def _labels(scores, high, low):
    return {i: int(p >= high) for i, p in scores.items() if p >= high or p <= low}


def _student(config_path, out):
    config = load_config(config_path)
    config.data.extra_train = [str(out)]
    return config


def _pseudo_targets(config, data, k, test_ids):
    from kitpkg.train.cv import make_datamodule
    from kitpkg.train.recipe import build_recipe

    seen = [(i, int(t)) for b in make_datamodule(build_recipe(config, data, k), data).train_dataloader()
            for i, t in zip(b["id"], b["target"]) if i in test_ids]
    assert len(seen) == len({i for i, _ in seen})  # each pseudo-labelled sample once: one set, not one per fold
    return dict(seen)


def test_student_fold_k_trains_only_on_the_set_its_teacher_fold_k_labelled(finished_run, tmp_path):
    from kitpkg.train.inputs import load_inputs

    config_path, run_dir, _ = finished_run
    scores = _fold_scores(run_dir)
    high = float(np.median([p for s in scores.values() for p in s.values()]))
    low = high - 1e-9  # every sample labelled, by its own fold's model: the folds' labels differ
    expected = {k: _labels(s, high, low) for k, s in scores.items()}
    assert len({tuple(sorted(e.items())) for e in expected.values()}) > 1  # the check below can tell folds apart
    out = tmp_path / "pseudo"
    make_pseudo_labels(str(out), run_dir=str(run_dir), high=high, low=low)
    make_pseudo_labels(str(out), run_dir=str(run_dir), high=high, low=low)  # a re-run replaces the whole set
    os.rename(out / "fold0", out / "x")  # names must not matter: the manifests' provenance decides
    os.rename(out / "fold1", out / "fold0")
    os.rename(out / "x", out / "fold1")

    config = _student(config_path, out)
    data = load_inputs(config)
    teacher = RunState.read(run_dir).get("config_hash")
    test_ids = set(scores[0])
    for k in sorted(scores):
        (pseudo,) = data.extras_for(k)
        provenance = pseudo.options["pseudo"]
        assert provenance["teacher_run"] == teacher and provenance["teacher_fold"] == k
        assert k not in provenance["trained_on_folds"] and sorted(provenance["trained_on_folds"]) == \
            sorted(set(scores) - {k})
        assert _pseudo_targets(config, data, k, test_ids) == expected[k]


def _legacy(folder):
    """`folder`'s manifest as kitpkg wrote pseudo sets before per-fold sets: no teacher provenance."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["options"]["pseudo"] = {k: v for k, v in data["options"]["pseudo"].items()
                                 if k in ("threshold", "low", "source_predictions")}
    path.write_text(json.dumps(data))


def test_sets_that_could_carry_fold_labels_are_refused(finished_run, tmp_path):
    from kitpkg.train import extras
    from kitpkg.train.cv import make_datamodule
    from kitpkg.train.inputs import load_inputs
    from kitpkg.train.recipe import build_recipe

    config_path, run_dir, _ = finished_run
    out = tmp_path / "pseudo"
    make_pseudo_labels(str(out), run_dir=str(run_dir), high=0.01, low=0.0)  # every sample
    config = _student(config_path, out)
    data = load_inputs(config)

    # the student splits the same samples into other folds: teacher fold k trained on some of its fold k
    rotated = dataclasses.replace(data.manifest, shards=[
        dataclasses.replace(s, fold=(s.fold + 1) % 3) if s.split == "train" else s for s in data.manifest.shards])
    with pytest.raises(KitError, match=r"data.extra_train: .*pseudo.* other folds"):
        extras.load_extras([str(out)], 64, rotated)

    # one fold's set named alone would train every fold on teacher fold 0's labels
    alone = _student(config_path, out / "fold0")
    with pytest.raises(KitError, match=r"teacher fold 0 alone; name its folder .*pseudo"):
        load_inputs(alone)

    # a set whose provenance says its teacher fold trained on that fold
    path = out / "fold2" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["options"]["pseudo"]["trained_on_folds"].append(manifest["options"]["pseudo"]["teacher_fold"])
    path.write_text(json.dumps(manifest))
    with pytest.raises(KitError, match=r"trained on fold \d"):
        load_inputs(config)

    # no set for a fold: that fold is refused, the others train
    import shutil

    shutil.rmtree(out / "fold2")
    data = load_inputs(config)
    make_datamodule(build_recipe(config, data, 0), data)
    with pytest.raises(KitError, match=r"no pseudo-label set for fold 2"):
        make_datamodule(build_recipe(config, data, 2), data)

    # a set an earlier kitpkg made from the fold-averaged predictions (every fold's labels in it)
    csv = tmp_path / "preds.csv"
    test = pd.read_csv(run_dir / "test_predictions.csv", dtype={"id": str})
    test.to_csv(csv, index=False)
    single = tmp_path / "single"
    make_pseudo_labels(str(single), predictions=str(csv), shards=data.manifest.root, high=0.01, low=0.0)
    _legacy(single)
    with pytest.raises(KitError, match=r"fold-averaged .*; re-make it with `kitpkg pseudo --run"):
        load_inputs(_student(config_path, single))


def _teacher_with_score_class(run_dir, manifest, probs):
    """A finished 3-class teacher run scored on class 2 (train.score_class) over `manifest`: every fold's test
    probabilities are `probs` (rows in test id order), written as `kitpkg cv` writes them."""
    from kitpkg.train import predict as P
    from kitpkg.train.inputs import RunInputs
    from kitpkg.train.runstate import relpath

    config = config_from_dict({"data": {"shards": manifest.root, "image_size": 64},
                               "model": {"name": "test_resnet", "num_classes": 3}, "train": {"score_class": 2}})
    state = RunState.open(run_dir, config, RunInputs(manifest, [], 3, 2).fingerprints())
    state.set("shards", relpath(Path(manifest.root), run_dir))
    ids = P.fold_ids(manifest, "test")
    frame = pd.DataFrame(np.asarray(probs, dtype=float), columns=P.score_columns(3))
    frame.insert(0, "id", ids)
    for k in manifest.folds():
        P.write_csv(frame, run_dir / f"test_fold{k}.csv")
        state.update_fold(k, status="done", score=0.5)
    P.write_csv(P.average_test([frame], task_of_outputs(3, 2, 2), "prob"), run_dir / "test_predictions.csv")
    return ids


def test_pseudo_labels_follow_the_teachers_scored_class(tfrecord_manifest, tmp_path):
    # (p0, p1, p2), scored class 2: p2 >= 0.9 -> class 2; p2 <= 0.05 -> the likeliest other class; else left out
    probs = [[0.05, 0.03, 0.92], [0.50, 0.46, 0.04], [0.91, 0.00, 0.09], [0.30, 0.20, 0.50], [0.02, 0.95, 0.03],
             [0.01, 0.01, 0.98], [0.41, 0.55, 0.04], [0.97, 0.02, 0.01], [0.20, 0.10, 0.70], [0.33, 0.33, 0.34]]
    ids = _teacher_with_score_class(tmp_path / "teacher", tfrecord_manifest, probs)
    expected = {ids[0]: 2, ids[1]: 0, ids[4]: 1, ids[5]: 2, ids[6]: 1, ids[7]: 0}
    out = tmp_path / "pseudo"
    make_pseudo_labels(str(out), run_dir=str(tmp_path / "teacher"), high=0.9, low=0.05)
    from kitpkg.shards.manifest import load_manifest

    for k in tfrecord_manifest.folds():
        pseudo = load_manifest(str(out / f"fold{k}"))
        labels = {r.id: int(r.fields[pseudo.label_col]) for i in range(len(pseudo.shards))
                  for r in iter_manifest_shard(pseudo, i)}
        assert labels == expected


@pytest.mark.slow
def test_a_student_on_per_fold_sets_resumes_compares_and_blends_with_its_teacher(finished_run, tmp_path,
                                                                                  monkeypatch):
    from kitpkg.experiments.blend import run_blend
    from kitpkg.experiments.runs import compare, find_runs
    from kitpkg.train import cv

    config_path, run_dir, _ = finished_run
    out = tmp_path / "pseudo"
    make_pseudo_labels(str(out), run_dir=str(run_dir), high=0.01, low=0.0)
    config = _student(config_path, out)
    config.train.epochs = 1
    student = tmp_path / "student"
    monkeypatch.setattr("kitpkg.train.report.write_report", lambda run_dir: None)  # plots: seconds, not tested here
    cv.run_cv(config, student)
    monkeypatch.setattr(cv, "fit_fold", lambda *a: pytest.fail("a finished fold was trained again"))
    cv.run_cv(config, student)  # the same per-fold sets are recognised: the run continues, nothing is refused
    rows = {row.run.path: row for row in compare(find_runs([run_dir, student]))}
    assert rows[student].comparable and "data.extra_train: other shard sets" in rows[student].notes
    run_blend([run_dir, student], tmp_path / "blend", method="mean")
    assert len(pd.read_csv(tmp_path / "blend" / "submission.csv")) == 10


def test_per_fold_sets_moved_aside_by_a_kill_are_put_back_whole(finished_run, tmp_path, monkeypatch):
    from kitpkg.shards import pseudo

    _, run_dir, _ = finished_run
    out = tmp_path / "pseudo"
    make_pseudo_labels(str(out), run_dir=str(run_dir), high=0.01, low=0.0)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    os.rename(out, tmp_path / ".pseudo.kitpkg-old-abc123")  # a kill between the two renames of a later run
    monkeypatch.setattr(pseudo, "_copy_shard", lambda *a, **k: (_ for _ in ()).throw(OSError("No space left")))
    with pytest.raises(OSError, match="No space left"):
        make_pseudo_labels(str(out), run_dir=str(run_dir), high=0.01, low=0.0)
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".pseudo.kitpkg-*"))
