"""One doc per config key: the field's metadata feeds `kitpkg init`'s comments and the README's key table."""
from __future__ import annotations

from pathlib import Path

from kitpkg.config import config_keys
from kitpkg.ranges import doc_of
from kitpkg.starter import key_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_config_key_has_a_one_line_doc():
    keys = {key: f for key, f, _ in config_keys()}
    # sections, plain keys and the keys inside an optional section (train.mixup) alike
    assert {"data", "data.aug.hflip", "optim.lr", "train.mixup", "train.mixup.prob", "train.ema.decay",
            "train.early_stopping.patience", "output.pred_col"} <= set(keys)
    assert [k for k, f in keys.items() if not doc_of(f)] == [], "keys without a doc (keyed/ranged(..., doc=...))"
    assert [k for k, f in keys.items() if "\n" in doc_of(f)] == []  # a YAML comment and a table cell: one line


def test_readme_config_keys_table_is_the_generated_one():
    text = README.read_text()
    assert "\n## Config keys\n" in text
    section = text.split("\n## Config keys\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == key_table(), ("README's config key table drifted from the field docs: paste the output of "
                                  "python -c 'from kitpkg.starter import key_table; print(key_table())'")
