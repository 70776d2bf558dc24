"""`kitpkg init`: an experiment YAML to start from, with every key and a one-line comment, written next to the data.

The values are a shipped template's (kitpkg/configs/NAME.yaml) on top of the Config defaults; `data.shards` and
`data.image_size` point at a shard set found in the target folder (as `kitpkg convert` lays it out: OUT/<size>/).
Each comment is the key's one doc, declared beside its default in kitpkg/config.py (kitpkg.ranges.doc_of); the same
docs make the README's "Config keys" table (`key_table()`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import KitError
from .ranges import doc_of

DEFAULT_TEMPLATE = "effnet_b4_384"
_PLAIN = re.compile(r"[A-Za-z0-9_./-]+")


def find_shard_set(folder: Path, image_size: int) -> Optional[Tuple[Path, int]]:
    """(OUT, size) of a `kitpkg convert` output in `folder` or one of its children; `image_size` if converted."""
    for out in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if folder.is_dir() else []:
        sizes = sorted(int(m.parent.name) for m in out.glob("*/manifest.json") if m.parent.name.isdigit())
        if sizes:
            return out, min(sizes, key=lambda s: (abs(s - image_size), -s))  # the template's size, else the nearest
    return None


def starter_values(template: str, folder: Path) -> Tuple[Dict[str, Any], Optional[Path]]:
    """The config values for a new experiment in `folder`, and the shard set they point at (None: none found)."""
    import yaml

    from .config import Config, config_from_dict, to_dict
    from .configs import template_path

    raw = yaml.safe_load(template_path(template).read_text()) or {}
    config_from_dict(raw)  # a template that does not validate is a bug here, not in the user's file
    values = _merged(to_dict(Config()), raw)  # every key; the template's values as written (paths not resolved)
    found = find_shard_set(folder, values["data"]["image_size"])
    if found is None:
        values["data"]["shards"] = "shards"
        return values, None
    out, size = found
    values["data"].update(shards=os.path.relpath(out, folder), image_size=size)
    return values, out / str(size)


def write_starter(name: str = "exp", template: str = DEFAULT_TEMPLATE, folder: os.PathLike = ".") -> Path:
    """Write `folder/name.yaml` from `template` (KitError if it exists); return its path."""
    from .config import Config
    from .fsutil import atomic_write_text

    folder = Path(folder)
    path = folder / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if path.exists():
        raise KitError(f"{path}: already exists; kitpkg init never overwrites: pick another NAME or delete the file")
    values, found = starter_values(template, folder)
    header = [f"# {path.name}: written by `kitpkg init --from {template}`; every key, one comment each.",
              f"# Train: kitpkg cv --config {path.name}"]
    atomic_write_text(path, "\n".join(header + _lines(Config, values, "")) + "\n")
    where = (f"data.shards = {values['data']['shards']} ({found.name} px)" if found else
             f"no `kitpkg convert` output found in {folder}: set data.shards to its OUT folder")
    print(f"kitpkg init: wrote {path} from {template}; {where}", flush=True)
    return path


def _merged(defaults: Dict[str, Any], raw: Dict[str, Any]) -> Dict[str, Any]:
    # sections (non-empty dicts of defaults) merge key by key; a free-form mapping (class_weights: {}) is a value
    return {k: _merged(v, raw.get(k) or {}) if isinstance(v, dict) and v else raw.get(k, v)
            for k, v in defaults.items()}


def _lines(cls: type, values: Dict[str, Any], prefix: str) -> List[str]:
    from .config import section_of

    hints = typing.get_type_hints(cls)
    indent = "  " * prefix.count(".")
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        key, value, tp = prefix + f.name, values[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.append(_commented(f"{indent}{f.name}:", doc_of(f)))
            out += _lines(tp, value, key + ".")
        elif section_of(tp) is not None:  # an optional section (train.mixup: null): say how to switch it on
            out.append(_commented(f"{indent}{f.name}: {_scalar(value)}", f"{doc_of(f)}; on: {_flow(section_of(tp))}"))
        else:
            out.append(_commented(f"{indent}{f.name}: {_scalar(value)}", doc_of(f)))
    return out


def _flow(section: type) -> str:
    """A section's defaults as a YAML flow mapping: {decay: 0.999, warmup: false}."""
    return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in dataclasses.asdict(section()).items()) + "}"


def key_table() -> str:
    """The README's "Config keys" table (Markdown): every key with its default, accepted values and its one doc."""
    from .config import accepted, config_keys

    rows = ["| key | default | accepts | what it does |", "|---|---|---|---|"]
    for key, f, section in config_keys():
        always = section is not None and f.default_factory is section  # a section that is always there: no value
        cells = [f"`{key}`", "" if always else f"`{_scalar(_default(f))}`", accepted(key, f), doc_of(f)]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    # a table cell: | would end it, <name> would be read as an HTML tag
    return text.replace("|", "\\|").replace("<", "\\<")


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _commented(text: str, doc: str) -> str:
    return f"{text:<40} # {doc}"


def _scalar(value: Any) -> str:
    """A YAML scalar/flow list that reads back as `value` (floats keep a dot: PyYAML reads 1e-05 as a string)."""
    import yaml

    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str) and _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # JSON is YAML: null, true, numbers, quoted strings


def _init(args: argparse.Namespace) -> int:
    write_starter(args.name, args.template, args.dir)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `kitpkg init` to the CLI."""
    from .configs import template_names

    p = sub.add_parser("init", help="write an experiment YAML (every key, commented) next to your shards")
    p.add_argument("name", nargs="?", default="exp", help="file name of the config (default: exp -> exp.yaml)")
    p.add_argument("--from", dest="template", default=DEFAULT_TEMPLATE, choices=template_names(),
                   help=f"template to start from (default: {DEFAULT_TEMPLATE}; demo is CPU-sized)")
    p.add_argument("--dir", default=".", help="folder to write into and to look for `kitpkg convert` output in")
    p.set_defaults(func=_init)
