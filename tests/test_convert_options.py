"""ConvertOptions is the one home of convert's options: the CLI's defaults, `kitpkg.convert()`'s keywords, the resume
state and the manifest's `options` all come from it."""
from __future__ import annotations

import dataclasses

import pytest

import kitpkg
from kitpkg.cli import build_parser
from kitpkg.errors import KitError
from kitpkg.shards.options import ConvertOptions
from test_convert_inputs import _tiny_source

# CLI flag dest → ConvertOptions field, where the two differ
_CLI_NAMES = {"format": "fmt", "size": "sizes", "no_progress": "progress"}


def test_the_cli_defaults_are_the_dataclass_defaults():
    """`kitpkg convert` with no flags and `kitpkg.convert()` with no keywords make the same shards."""
    args = vars(build_parser().parse_args(["convert", "SRC", "CSV", "OUT"]))
    defaults = ConvertOptions()
    for f in dataclasses.fields(ConvertOptions):
        dest = next((d for d, name in _CLI_NAMES.items() if name == f.name), f.name)
        cli = args[dest]
        if dest == "no_progress":
            cli = not cli
        assert cli == getattr(defaults, f.name), f.name
    index = vars(build_parser().parse_args(["index", "P"]))
    assert index["id_col"] == defaults.id_col


def test_options_object_and_keywords_make_the_same_shards(tmp_path):
    _tiny_source(tmp_path, n=10, csv="t.csv")
    args = (kitpkg.convert, tmp_path / "src", tmp_path / "t.csv")
    opts = ConvertOptions(fmt="wds", sizes=(16, 24), group_col=None, folds=2, shard_samples=4, workers=1,
                          progress=False)
    by_object = args[0](*args[1:], tmp_path / "a", opts)
    by_keywords = args[0](*args[1:], tmp_path / "b", fmt="wds", sizes=[16, 24], group_col="", folds=2,
                          shard_samples=4, workers=1, progress=False)
    overridden = args[0](*args[1:], tmp_path / "c", dataclasses.replace(opts, sizes=(8,)), sizes=(16, 24))
    for size in (16, 24):
        a, b, c = by_object[size], by_keywords[size], overridden[size]
        assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards] == [s.sha256 for s in c.shards]
        assert a.options == b.options == {**opts.manifest_options(), "test_csv_sha256": None}
        assert a.group_col is None and a.format == "wds"


def test_bad_options_are_refused_when_made_naming_the_flag():
    with pytest.raises(KitError, match="--quality must be 1…100, not 0"):
        ConvertOptions(quality=0)
    with pytest.raises(KitError, match="--format must be one of tfrecord, wds, not 'parquet'"):
        ConvertOptions.of(fmt="parquet")
    with pytest.raises(TypeError, match="unknown option.*qualty"):
        kitpkg.convert("src", "t.csv", "out", qualty=80)


def test_options_normalise_what_the_cli_and_notebooks_pass():
    opts = ConvertOptions(sizes=["64", 96], label_col="", group_col="", quality="80")
    assert (opts.sizes, opts.label_col, opts.group_col, opts.quality) == ((64, 96), None, None, 80)
    assert opts.state()["format"] == opts.fmt  # the resume state keeps its key name (state files stay valid)
