"""Pseudo-labels: confident test predictions -> a train-only shard set (both formats) that the loader adds to
training through extra_train and that is refused as validation data."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kitpkg.config import config_from_dict
from kitpkg.errors import KitError
from kitpkg.shards.reader import iter_manifest_shard
from kitpkg.train.pseudo import make_pseudo_labels


def _predictions(manifest, tmp_path):
    ids = [i for s in manifest.select("test") for i in s.ids]
    probs = [0.97, 0.02, 0.5, 0.93, 0.08, 0.6, 0.99, 0.3, 0.01, 0.5][:len(ids)]
    path = tmp_path / "preds.csv"
    pd.DataFrame({"id": ids, "prediction": probs}).to_csv(path, index=False)
    return path, dict(zip(ids, probs))


def _records(manifest, split):
    return {r.id: r for i, s in enumerate(manifest.shards) if s.split == split
            for r in iter_manifest_shard(manifest, i)}


def test_confident_predictions_become_training_only_shards(any_manifest, tmp_path):
    preds, probs = _predictions(any_manifest, tmp_path)
    pseudo = make_pseudo_labels(str(tmp_path / "pseudo"), predictions=str(preds), shards=any_manifest.root,
                                high=0.9)[None]  # a CSV's set: one, trained on by every fold
    expected = {i: int(p >= 0.9) for i, p in probs.items() if p >= 0.9 or p <= 0.1}
    assert pseudo.format == any_manifest.format and pseudo.options["pseudo"]["threshold"] == 0.9
    assert {s.split for s in pseudo.shards} == {"train"} and {s.fold for s in pseudo.shards} == {-1}
    copied, source = _records(pseudo, "train"), _records(any_manifest, "test")
    assert set(copied) == set(expected)
    for i, record in copied.items():
        assert record.image == source[i].image  # the same JPEG bytes, not re-encoded
        label = record.fields.get(pseudo.label_col, record.fields.get("cls"))
        assert int(label) == expected[i]
    assert pseudo.class_counts == {"0": list(expected.values()).count(0), "1": list(expected.values()).count(1)}

    from kitpkg.data.datamodule import ShardDataModule

    dm = ShardDataModule(any_manifest, fold=0, batch_size=8, num_workers=0, extra_train=[pseudo])
    train_ids = {i for b in dm.train_dataloader() for i in b["id"]}
    val_ids = {i for b in dm.val_dataloader() for i in b["id"]}
    assert set(expected) <= train_ids and not set(expected) & val_ids
    pseudo_targets = {i: int(t) for b in dm.train_dataloader() for i, t in zip(b["id"], b["target"]) if i in expected}
    assert pseudo_targets == expected


def test_pseudo_set_is_refused_as_validation_data(tfrecord_manifest, tmp_path):
    preds, _ = _predictions(tfrecord_manifest, tmp_path)
    make_pseudo_labels(str(tmp_path / "pseudo"), predictions=str(preds), shards=tfrecord_manifest.root)
    from kitpkg.train.inputs import load_inputs

    config = config_from_dict({"data": {"shards": str(tmp_path / "pseudo"), "image_size": 64}})
    with pytest.raises(KitError, match="pseudo-label set; add it under data.extra_train"):
        load_inputs(config)
    ok = config_from_dict({"data": {"shards": tfrecord_manifest.root, "image_size": 64,
                                    "extra_train": [str(tmp_path / "pseudo")]}})
    assert len(load_inputs(ok).extras) == 1


def test_nothing_confident_is_an_error(tfrecord_manifest, tmp_path):
    preds, _ = _predictions(tfrecord_manifest, tmp_path)
    with pytest.raises(KitError, match="no test prediction is confident"):
        make_pseudo_labels(str(tmp_path / "p"), predictions=str(preds), shards=tfrecord_manifest.root, high=0.999,
                           low=0.0)


@pytest.mark.slow
def test_pseudo_cli_from_a_run(finished_run, tmp_path, capsys):
    _, run_dir, _ = finished_run
    from kitpkg.cli import main

    folds = sorted(run_dir.glob("test_fold*.csv"))
    # the model is weak: pick a threshold every fold's model reaches
    threshold = min(float(pd.read_csv(p)["s0"].quantile(0.7)) for p in folds)
    assert main(["pseudo", "--run", str(run_dir), "--threshold", f"{threshold:.6f}", "--low", "0",
                 "--out", str(tmp_path / "pl")]) == 0
    out = capsys.readouterr().out
    assert out.count("pseudo-labels:") == len(folds) == 3 and "labelled by fold 2's model" in out
    assert all((tmp_path / "pl" / f"fold{k}" / "manifest.json").exists() for k in range(3))


def _set_files(folder):
    return sorted(p.name for p in folder.iterdir())


def _intact(folder):
    from kitpkg.shards.manifest import load_manifest

    manifest = load_manifest(str(folder))
    for i, shard in enumerate(manifest.shards):  # every record where the manifest says, CRCs checked by the reader
        assert [r.id for r in iter_manifest_shard(manifest, i)] == list(shard.ids)
    return manifest


def test_out_holding_another_shard_set_is_refused(tfrecord_manifest, tmp_path):
    from kitpkg.cli import main

    preds, _ = _predictions(tfrecord_manifest, tmp_path)
    shards_root = tfrecord_manifest.root
    before = _set_files(Path(shards_root))
    for out in (shards_root, str(Path(shards_root).parent)):  # the set itself, convert's OUT
        with pytest.raises(KitError, match="holds another shard set"):
            make_pseudo_labels(out, predictions=str(preds), shards=shards_root)
    assert _set_files(Path(shards_root)) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert main(["pseudo", "--predictions", str(preds), "--shards", shards_root, "--out",
                 str(tmp_path / "notes")]) == 2
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


_KILL_ON_SECOND_SHARD = """
import os, signal, sys
from kitpkg.shards import pseudo
real, calls = pseudo._copy_shard, []
def copy(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill between two shard writes
    return real(*args, **kwargs)
pseudo._copy_shard = copy
from kitpkg.train.pseudo import make_pseudo_labels
make_pseudo_labels(sys.argv[1], predictions=sys.argv[2], shards=sys.argv[3], high=0.55)
"""


def test_killed_rerun_leaves_the_old_set_whole_and_the_next_run_cleans_up(tfrecord_manifest, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    preds, _ = _predictions(tfrecord_manifest, tmp_path)
    out = tmp_path / "pseudo"
    old = make_pseudo_labels(str(out), predictions=str(preds), shards=tfrecord_manifest.root, high=0.9)[None]
    old_files = {p.name: p.read_bytes() for p in out.iterdir()}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    killed = subprocess.run([sys.executable, "-c", _KILL_ON_SECOND_SHARD, str(out), str(preds),
                             tfrecord_manifest.root], env={**os.environ, "PYTHONPATH": repo}, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old_files  # the old set, untouched and whole
    assert _intact(out).num_samples("train") == old.num_samples("train")
    assert [p.name for p in tmp_path.glob(".pseudo.kitpkg-*")]  # the killed run's staging folder is left behind

    new = make_pseudo_labels(str(out), predictions=str(preds), shards=tfrecord_manifest.root, high=0.55)[None]
    assert _intact(out).num_samples("train") == new.num_samples("train") > old.num_samples("train")
    assert not list(tmp_path.glob(".pseudo.kitpkg-*"))  # cleaned: nothing of ours is left beside it
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_failure_between_shard_writes_changes_nothing(tfrecord_manifest, tmp_path, monkeypatch):
    from kitpkg.shards import pseudo

    preds, _ = _predictions(tfrecord_manifest, tmp_path)
    out = tmp_path / "pseudo"
    make_pseudo_labels(str(out), predictions=str(preds), shards=tfrecord_manifest.root, high=0.9)
    (out / ".pseudo-00001.tar.abc123.tmp").write_bytes(b"left by a killed run of an earlier version")
    before = _set_files(out)
    real, calls = pseudo._copy_shard, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(pseudo, "_copy_shard", failing)
    with pytest.raises(OSError, match="No space left"):
        make_pseudo_labels(str(out), predictions=str(preds), shards=tfrecord_manifest.root, high=0.55)
    assert _set_files(out) == before and not list(tmp_path.glob(".pseudo.kitpkg-*"))
    monkeypatch.setattr(pseudo, "_copy_shard", real)
    make_pseudo_labels(str(out), predictions=str(preds), shards=tfrecord_manifest.root, high=0.55)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the stale temp file went with the old set


def test_predictions_matching_no_test_id_are_refused(tfrecord_manifest, tmp_path, capsys):
    from kitpkg.cli import main

    preds = tmp_path / "other.csv"
    pd.DataFrame({"id": [f"other_{i}" for i in range(5)], "prediction": [0.99, 0.01, 0.98, 0.97, 0.02]}).to_csv(
        preds, index=False)
    with pytest.raises(KitError, match=r"none of its 5 ids is a test id of .*\(e.g. 'other_0'"):
        make_pseudo_labels(str(tmp_path / "p"), predictions=str(preds), shards=tfrecord_manifest.root)
    assert main(["pseudo", "--predictions", str(preds), "--shards", tfrecord_manifest.root, "--out",
                 str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none of its 5 ids" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p").exists()


def _run_on(run_dir, manifest, done=()):
    """A run directory of `kitpkg cv` on `manifest` (its manifest saved at run_dir/../shards) with folds `done`."""
    from kitpkg.train.inputs import RunInputs
    from kitpkg.train.runstate import RunState, relpath

    shards = run_dir.parent / "shards"
    shards.mkdir(parents=True)
    manifest.save(str(shards))
    config = config_from_dict({"data": {"shards": str(shards), "image_size": 64}, "model": {"name": "test_resnet"}})
    state = RunState.open(run_dir, config, RunInputs(manifest, [], 1).fingerprints())
    state.set("shards", relpath(shards, run_dir))
    for k in done:
        state.update_fold(k, status="done", score=0.5)
    return run_dir


def test_run_without_test_predictions_says_why_and_what_to_do(tfrecord_manifest, tmp_path):
    import dataclasses

    no_test = dataclasses.replace(tfrecord_manifest, shards=tfrecord_manifest.select("train"))
    run = _run_on(tmp_path / "a" / "run", no_test, done=no_test.folds())
    with pytest.raises(KitError, match=r"shards .* have no test split, so no fold wrote test_fold\{k\}.csv.*"
                                       r"--test-csv"):
        make_pseudo_labels(str(tmp_path / "p"), run_dir=str(run))
    run = _run_on(tmp_path / "b" / "run", tfrecord_manifest)
    with pytest.raises(KitError, match=r"no finished fold has test predictions \(test_fold\{k\}.csv\); finish "
                                       r"its folds with `kitpkg cv`"):
        make_pseudo_labels(str(tmp_path / "p"), run_dir=str(run))
