"""The run directory has one owner (kitpkg/rundir.py): its names are spelled nowhere else, and its typed records read
every record an older release (or a foreign tool) wrote, keeping what they do not name."""
import json
import math
import re
from pathlib import Path

import kitpkg
from kitpkg.rundir import CVSummary, FoldRecord, RunDir
from kitpkg.train.runstate import RunState


def test_no_module_but_rundir_spells_a_run_directory_name():
    """`grep -rn '"state.json"\\|oof_fold\\|test_fold\\|"ckpt"' kitpkg` finds kitpkg/rundir.py alone."""
    pattern = re.compile(r'"state\.json"|oof_fold|test_fold|"ckpt"')
    package = Path(kitpkg.__file__).parent
    hits = [f"{path.relative_to(package.parent)}:{n}: {line.strip()}"
            for path in sorted(package.rglob("*.py")) if path != package / "rundir.py"
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_fold_record_of_an_older_release_reads_and_writes_back_unchanged():
    old = {"status": "done", "score": 0.91, "best_epoch": 3, "samples": 40, "step": 12, "gpu_hours": {"a": 1}}
    record = FoldRecord.from_json(old)
    assert record.is_done and record.score == 0.91 and record.best_epoch == 3 and record.samples == 40
    assert record.last_score is None and record.wall_s is None and record.device is None  # keys it never wrote
    assert record.extra == {"step": 12, "gpu_hours": {"a": 1}}  # keys this release does not name, kept
    assert record.to_json() == old


def test_fold_record_scores_null_text_and_missing():
    """null: a fold without a score (one class), left out of the mean; text or no key: a problem named by `runs`."""
    null = FoldRecord.from_json({"status": "done", "score": None})
    assert math.isnan(null.score) and not null.scored and null.score_problem() is None
    assert null.to_json() == {"status": "done", "score": None}
    text = FoldRecord.from_json({"status": "done", "score": "0.9", "wall_s": True})
    assert text.score is None and text.wall_s is None
    assert text.score_problem() == "score '0.9' is not a number"
    assert text.to_json() == {"status": "done", "score": "0.9", "wall_s": True}  # written back as it was read
    assert FoldRecord.from_json({"status": "done"}).score_problem() == "no score in its record"


def test_cv_summary_of_an_older_release():
    old = {"metric": "auc", "mean": 0.8, "std": 0.01, "oof": None, "folds": [0, 1], "note": "hand-added"}
    summary = CVSummary.from_json(old)
    assert (summary.metric, summary.mean, summary.folds) == ("auc", 0.8, [0, 1])
    assert summary.last_mean is None and summary.left_out is None and summary.extra == {"note": "hand-added"}
    assert CVSummary.from_json("not an object") is None
    assert summary.to_json() == {**old, "last_mean": None, "left_out": None}


def test_run_state_reads_an_old_run_directory_as_typed_records(tmp_path):
    """A version-1 run (fold records inside state.json, with keys of its own) reads as typed records, unchanged."""
    record = {"status": "done", "score": 0.7, "loader_img_s": 850.0, "old_figure": 1}
    (tmp_path / "state.json").write_text(json.dumps(
        {"kitpkg_state": 1, "config_hash": "x", "config": {}, "data": {}, "folds": {"0": record},
         "cv": {"metric": "auc", "mean": 0.7, "std": 0.0, "oof": 0.7, "folds": [0]}}))
    state = RunState.read(tmp_path)  # read as it is: nothing migrated, nothing written
    assert state.done_folds() == [0] and state.fold(0).loader_img_s == 850.0
    assert state.fold(0).to_json() == record
    assert state.cv.oof == 0.7 and state.cv.folds == [0]
    assert not RunDir(tmp_path).fold_record(0).exists()
