"""The manifest: JSON round trip, fold/split selection, clear errors for missing or too-new manifests."""
import json

import pytest

from kitpkg.errors import KitError
from kitpkg.shards.manifest import FORMAT_VERSION, Manifest, ShardInfo, load_manifest


def _manifest():
    shards = [ShardInfo("train-f0-00000.tfrec", "train", 0, 2, 100, "aa", [0, 50], ["a", "b"], [0, 1], [1, 2]),
              ShardInfo("train-f1-00000.tfrec", "train", 1, 1, 60, "bb", [0], ["c"], [0]),
              ShardInfo("test-00000.tfrec", "test", None, 1, 40, "cc", [0], ["t"])]
    return Manifest("tfrecord", {"image": "bytes", "target": "int64"}, shards, label_col="target", num_folds=2,
                    class_counts={"0": 2, "1": 1}, rejected=[{"id": "x", "file": "x.jpg", "reason": "empty file"}])


def test_save_load_round_trip_sets_root(tmp_path):
    m = _manifest()
    path = m.save(str(tmp_path))
    loaded = load_manifest(str(tmp_path))
    assert loaded == m and loaded.root == str(tmp_path)
    assert load_manifest(path) == m
    assert loaded.path(loaded.shards[0]) == str(tmp_path / "train-f0-00000.tfrec")
    assert json.loads((tmp_path / "manifest.json").read_text())["format_version"] == FORMAT_VERSION


def test_selection_by_split_and_fold():
    m = _manifest()
    assert m.folds() == [0, 1]
    assert [s.file for s in m.select("train", [1])] == ["train-f1-00000.tfrec"]
    assert [s.file for s in m.select("test")] == ["test-00000.tfrec"]
    assert m.fold_of() == {"a": 0, "b": 0, "c": 1}
    assert m.num_samples("train") == 3 and m.num_samples("test") == 1


def test_missing_and_newer_manifests_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="kitpkg convert"):
        load_manifest(str(tmp_path))
    data = json.loads(_manifest().to_json())
    data["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(KitError, match="upgrade kitpkg"):  # the one user-facing error type (a ValueError too)
        load_manifest(str(tmp_path))


@pytest.mark.parametrize("key, value, needle", [("fold", True, "'fold' must be an integer or null"),
                                                ("ids", ["a", 2], "'ids' must be a list of strings"),
                                                ("split", "val", "'split' is 'val'"),
                                                ("offsets", [0, -5], "negative")])
def test_wrong_values_name_the_shard_and_key(tmp_path, key, value, needle):
    data = json.loads(_manifest().to_json())
    data["shards"][0][key] = value
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(KitError, match="shards\\[0\\] \\(train-f0-00000.tfrec\\)") as err:
        load_manifest(str(tmp_path))
    assert needle in str(err.value) and str(tmp_path / "manifest.json") in str(err.value)


def test_converted_manifest_describes_its_shards(any_manifest):
    m = any_manifest
    assert m.image_size == 64 and m.num_folds == 3 and m.label_col == "target" and m.aspect == "crop"
    assert m.source_csv_sha256 and m.kitpkg_version and m.rejected == []
    for s in m.shards:
        assert s.samples == len(s.ids) == len(s.offsets) == len(s.checksums) and s.bytes > 0 and len(s.sha256) == 64
    assert sum(m.class_counts.values()) == m.num_samples("train") == 48 and m.num_samples("test") == 10
