"""`kitpkg runs`: one table of runs, best first, with the config keys that differ and the runs on other folds marked.

Run directories are written by tests/fakes/fake_runs.py through the kit's own writers (no training).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from fakes.fake_runs import FakeData, fake_data, make_run
from kitpkg.cli import main
from kitpkg.experiments.runs import compare, find_runs, load_run
from kitpkg.experiments.table import print_table


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.fixture()
def runs_dir(tmp_path):
    """runs/: a baseline, a better run with another lr, the same split at another image size, a run on another
    split, and a run with 2 of its 5 folds finished."""
    data = fake_data(200, seed=0)
    rng = np.random.default_rng(0)
    y = data.targets

    def preds(noise):
        return _sigmoid(2 * y - 1 + rng.normal(0, noise, len(y)))

    runs = tmp_path / "runs"
    make_run(runs / "base", data, preds(1.5))
    make_run(runs / "lr", data, preds(0.8), config={"optim.lr": 0.01})
    bigger = FakeData(data.ids, data.folds, y, image_size=128)  # another manifest, same folds
    make_run(runs / "size128", bigger, preds(1.2), config={"data.image_size": 128})
    other = FakeData(data.ids, np.roll(data.folds, 3), y)
    make_run(runs / "resplit", other, preds(0.5))
    make_run(runs / "partial", data, preds(1.0), config={"train.epochs": 10}, done=[0, 1],
             shards_dir=tmp_path / "shards")
    return runs


def test_table_lists_differing_keys_and_marks_other_folds(runs_dir):
    rows = compare(find_runs([runs_dir / "base", runs_dir]))  # the first given is the reference
    by_name = {row.run.name: row for row in rows}
    assert set(by_name) == {"base", "lr", "size128", "resplit", "partial"}  # base given twice: listed once
    assert [r.run.mean for r in rows if r.run.name != "partial"] == sorted(
        (r.run.mean for r in rows if r.run.name != "partial"), reverse=True)
    assert by_name["lr"].notes == ["optim.lr: 0.001 -> 0.01"]
    assert by_name["size128"].comparable and by_name["size128"].notes == ["data.image_size: 64 -> 128"]
    assert not by_name["resplit"].comparable
    assert by_name["resplit"].notes[0].startswith("other folds: ") and "samples in other folds" in \
        by_name["resplit"].notes[0]
    assert by_name["partial"].cells()["folds"] == "2/5" and by_name["partial"].comparable
    assert by_name["base"].cells()["folds"] == "5/5" and by_name["base"].cells()["wall"] == "–"


def test_cli_writes_runs_md_and_plot(runs_dir, capsys, monkeypatch):
    monkeypatch.chdir(runs_dir.parent)
    assert main(["runs"]) == 0  # default: every run under runs/
    out = capsys.readouterr().out
    assert "optim.lr: 0.001 -> 0.01" in out and "NO" in out
    text = (runs_dir / "runs.md").read_text()
    assert "| resplit |" in text and "| NO |" in text and "train.epochs: 3 -> 10" in text
    with Image.open(runs_dir / "runs.png") as img:
        img.verify()
    lines = [line for line in text.splitlines() if line.startswith("| ") and "run |" not in line]
    assert lines[0].startswith("| resplit |")  # best first (comparable or not: it is marked)


def test_plain_text_without_rich(runs_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    print_table(compare(find_runs([runs_dir])), "base")
    out = capsys.readouterr().out
    assert "┃" not in out and "optim.lr: 0.001 -> 0.01" in out
    header = out.splitlines()[1]
    assert header.split()[:3] == ["run", "model", "size"]


def test_wall_time_shown_when_the_folds_record_it(tmp_path):
    from kitpkg.experiments.runs import load_run

    run_dir = make_run(tmp_path / "timed", fake_data(50, k=2), np.random.default_rng(0).random(50))
    run = load_run(run_dir)
    for k in (0, 1):
        run.state.update_fold(k, wall_s=1800.4)
    assert compare([load_run(run_dir)])[0].cells()["wall"] == "1:00:01"


def test_where_the_time_goes_is_shown_per_run(tmp_path):
    run_dir = make_run(tmp_path / "timed", fake_data(50, k=2), np.random.default_rng(0).random(50))
    state = load_run(run_dir).state
    for k, (rate, loader) in enumerate(((100.0, 400.0), (120.0, 420.0))):
        state.update_fold(k, train_img_s=rate, loader_img_s=loader, loader_wait=0.05, device="T4 (sm 7.5)",
                          precision="16-mixed + channels_last")
    cells = compare([load_run(run_dir)])[0].cells()
    assert (cells["img/s"], cells["loader img/s"], cells["wait"]) == ("110", "410", "5%")
    assert cells["device"] == "T4 (sm 7.5) 16-mixed + channels_last"


def test_refuses_a_folder_without_runs(tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 2
    assert "no run directory here" in capsys.readouterr().err


def test_a_run_on_another_label_column_is_not_comparable(tmp_path):
    # `--label-col sex` vs `target`: the same ids in the same folds, but another thing predicted
    data = fake_data(120, k=3, seed=1)
    rng = np.random.default_rng(1)
    sex = FakeData(data.ids, data.folds, rng.integers(0, 2, 120), label_col="sex")
    base = make_run(tmp_path / "target", data, rng.random(120), shards_dir=tmp_path / "shards_target")
    other = make_run(tmp_path / "sex", sex, rng.random(120), shards_dir=tmp_path / "shards_sex")
    row = {r.run.name: r for r in compare(find_runs([base, other]))}["sex"]
    assert not row.comparable
    assert row.notes[0].startswith("another target: label column target vs sex (")
    assert "samples labelled differently" in row.notes[0]
    # the same labels under another column name are the same target
    same = FakeData(data.ids, data.folds, data.targets, label_col="label")
    again = make_run(tmp_path / "same", same, rng.random(120), shards_dir=tmp_path / "shards_same")
    assert {r.run.name: r for r in compare(find_runs([base, again]))}["same"].comparable


def _edit_record(run_dir, k, **fields):
    import json

    path = run_dir / "folds" / f"fold{k}.json"
    record = {**json.loads(path.read_text()), **fields}
    path.write_text(json.dumps({key: value for key, value in record.items() if value != "<drop>"}))


def test_bad_scores_and_an_unreadable_run_do_not_hide_the_table(runs_dir, capsys):
    _edit_record(runs_dir / "lr", 0, score=None)  # a one-class fold: no AUC, recorded as null
    _edit_record(runs_dir / "size128", 1, score="0.9")  # hand-edited
    _edit_record(runs_dir / "partial", 0, score="<drop>")
    (runs_dir / "resplit" / "state.json").write_text("{cut")
    assert main(["runs", str(runs_dir / "base"), str(runs_dir)]) == 0
    captured = capsys.readouterr()
    for name in ("base", "lr", "size128", "partial"):
        assert name in captured.out
    assert "resplit" in captured.err and "state.json: unreadable run state" in captured.err
    assert "size128: fold 1: score '0.9' is not a number" in captured.err
    assert "partial: fold 0: no score in its record" in captured.err
    rows = {row.run.name: row for row in compare(find_runs([runs_dir / "base", runs_dir / "lr"]))}
    assert rows["lr"].cells()["folds"] == "5/5 (1 unscored)"  # null is shown as such, the mean is over 4 folds
    text = (runs_dir / "runs.md").read_text()
    assert "resplit" in text and "unreadable" in text


def test_last_epoch_cv_is_shown_beside_the_best_epoch_cv(runs_dir):
    from kitpkg.experiments.runs import load_run

    state = load_run(runs_dir / "base").state
    for k, record in state.folds().items():
        state.update_fold(k, last_score=record.score - 0.02)
    cells = {r.run.name: r.cells() for r in compare(find_runs([runs_dir / "base", runs_dir / "lr"]))}
    base = load_run(runs_dir / "base")
    assert cells["base"]["last-epoch CV"] == f"{base.mean - 0.02:.4f}"
    assert cells["lr"]["last-epoch CV"] == "–"  # not recorded by that run


def test_a_done_fold_whose_best_weights_are_gone_is_named(runs_dir, capsys):
    (runs_dir / "base" / "fold2" / "ckpt" / "best.ckpt").unlink()
    assert main(["runs", str(runs_dir / "base")]) == 0
    err = capsys.readouterr().err
    assert "base: fold 2: its best weights are gone (" in err and "`kitpkg cv` trains it again" in err
