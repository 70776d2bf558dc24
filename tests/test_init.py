"""`kitpkg init`: a commented experiment YAML next to the user's shards, loading to the template's values."""
from __future__ import annotations

import dataclasses
import shutil
import typing
from pathlib import Path

import pytest

from kitpkg.cli import main
from kitpkg.config import PATH_KEYS, Config, config_keys, load_config, to_dict
from kitpkg.configs import template_path
from kitpkg.ranges import doc_of
from kitpkg.shards.manifest import load_manifest, resolve_manifest_path

TEMPLATES = ["demo", "effnet_b4_384"]


def _keys(cls=Config, prefix=""):
    """Every dotted key of the Config dataclasses, sections included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        yield prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _keys(hints[f.name], f"{prefix}{f.name}.")


def _commented_keys(text):
    """{dotted key: its comment} of a YAML file written one key per line (two-space indents)."""
    found, stack = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        key = line.strip().split(":", 1)[0]
        stack[depth:] = [key]
        found[".".join(stack)] = line.split(" # ", 1)[1].strip() if " # " in line else ""
    return found


def _comparable(config):
    data = to_dict(config)
    for key in (*PATH_KEYS, "name"):  # paths resolve against each file's own folder
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(last)
    return data


@pytest.mark.parametrize("template", TEMPLATES)
def test_init_writes_every_key_with_a_comment_and_the_templates_values(tmp_path, template, capsys):
    assert main(["init", "mel", "--from", template, "--dir", str(tmp_path)]) == 0
    path = tmp_path / "mel.yaml"
    comments = _commented_keys(path.read_text())
    missing = [k for k in _keys() if not comments.get(k)]
    assert not missing, f"keys without a line and a comment in {path.name}: {missing}"
    docs = {key: doc_of(f) for key, f, _ in config_keys()}  # the one doc of each key, in its field's metadata
    drifted = {k: comments[k] for k in _keys() if not comments[k].startswith(docs[k])}
    assert not drifted, f"comments that are not the key's doc: {drifted}"
    written, shipped = load_config(path), load_config(template_path(template))
    assert _comparable(written) == _comparable(shipped)
    assert written.name == "mel" and Path(written.output.run_dir) == tmp_path / "runs" / "mel"
    assert "set data.shards" in capsys.readouterr().out  # no shards here: the user is told what to fill in


def test_init_points_data_shards_at_the_convert_output_beside_it(tmp_path, tfrecord_manifest):
    out = Path(tfrecord_manifest.root).parent  # OUT of `kitpkg convert` (OUT/64/manifest.json)
    shutil.copytree(out, tmp_path / "melanoma-shards")
    assert main(["init", "--dir", str(tmp_path)]) == 0  # default name exp, default template
    config = load_config(tmp_path / "exp.yaml")
    assert Path(config.data.shards) == tmp_path / "melanoma-shards"
    assert config.data.image_size == 64  # the size that was converted, not the template's 384
    manifest = load_manifest(resolve_manifest_path(config.data.shards, config.data.image_size))
    assert manifest.num_samples("train") == tfrecord_manifest.num_samples("train")
    assert "shards: melanoma-shards " in (tmp_path / "exp.yaml").read_text()  # relative: the folder can move


def test_init_never_overwrites(tmp_path, capsys):
    mine = tmp_path / "exp.yaml"
    mine.write_text("# my tuned experiment\n")
    assert main(["init", "--dir", str(tmp_path)]) == 2
    assert f"{mine}: already exists" in capsys.readouterr().err
    assert mine.read_text() == "# my tuned experiment\n"
