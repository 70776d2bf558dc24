"""The level-2 features of `kitpkg stack` (stack.py), for the OOF rows and the test rows alike.

  run outputs    every output column of each run's OOF (oof.csv) and test predictions (test_predictions.csv):
                 predictions.probability_columns of its task (a score_class run: every class's probability)
  --columns      per-sample columns of the first run's manifest, read from its shards: numbers as floats, text as a
                 category (the categories are the values seen on the OOF rows, in sorted order: a test value not seen
                 there is missing); refused as `model.meta` refuses them (data/meta.py check_meta_inputs: the label,
                 fold, id and group columns, a relabelling of the label, a column with no value in the test split)
  group          over --group-col (default: the manifest's group column, e.g. patient_id), for each run output: the
                 value minus the group's mean, its rank within the group (0..1) and its z-score within the group;
                 and the group's size. OOF rows are compared with the group's OOF rows, test rows with its test rows;
                 a row without a group value is a group of its own.

None of them reads a label, so a fold's features are the same whichever labels the other folds hold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import KitError
from ..predictions import probability_columns

if TYPE_CHECKING:
    import pandas as pd

    from .blend import Member

AUTO = "auto"  # --group-col: the manifest's group column
NO_GROUP = ("", "none")  # --group-col values that turn the group features off


@dataclass
class Features:
    """The level-2 inputs: one frame of the OOF rows (the first run's OOF order) and one of the test rows (its test
    order; None without test predictions), with the same columns; `categorical` the text columns among them."""

    oof: "pd.DataFrame"
    test: Optional["pd.DataFrame"]
    categorical: List[str] = field(default_factory=list)
    columns: List[str] = field(default_factory=list)  # the manifest columns used (--columns)
    group_col: Optional[str] = None  # the group column of the group features (None: none)

    @property
    def names(self) -> List[str]:
        """Every feature, in order."""
        return list(self.oof.columns)


def safe_name(text: str) -> str:
    """A feature name LightGBM accepts (letters, digits, `_` and `.`)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", text)


def run_labels(members: Sequence["Member"]) -> List[str]:
    """Each run's name in feature names: its directory name (its position added when two share one)."""
    names = [safe_name(m.run.name) for m in members]
    return [f"{n}.{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def output_features(members: Sequence["Member"], test: bool) -> "pd.DataFrame":
    """Every output column of each run (`run.column`), rows in the first run's OOF (or test) order."""
    import pandas as pd

    frame_of = (lambda m: m.test) if test else (lambda m: m.oof)
    ids = frame_of(members[0])["id"]
    parts = []
    for label, m in zip(run_labels(members), members):
        cols = probability_columns(m.run.task)
        part = frame_of(m).set_index("id").loc[ids, cols].astype(np.float64).reset_index(drop=True)
        parts.append(part.rename(columns={c: f"{label}.{safe_name(c)}" for c in cols}))
    return pd.concat(parts, axis=1)


def group_features(outputs: "pd.DataFrame", groups: "pd.Series") -> "pd.DataFrame":
    """For each output column: minus the group's mean, rank in the group (0..1), z-score in the group; the group's
    size (`groups`: one group value per row, NaN: a group of its own)."""
    import pandas as pd

    key = groups.astype(object).where(groups.notna(), pd.Series([f"\0row{i}" for i in range(len(groups))]))
    key = key.reset_index(drop=True)
    grouped = outputs.groupby(key)
    mean, std = grouped.transform("mean"), grouped.transform("std", ddof=0)
    size = key.map(key.value_counts())
    rank = grouped.rank(method="average")
    out = {}
    for c in outputs.columns:
        out[f"{c}.minus_group_mean"] = outputs[c] - mean[c]
        out[f"{c}.rank_in_group"] = ((rank[c] - 1) / (size - 1).clip(lower=1)).where(size > 1, 0.5)
        out[f"{c}.z_in_group"] = ((outputs[c] - mean[c]) / std[c].where(std[c] > 0)).fillna(0.0)
    out["group_size"] = size.astype(np.float64)
    return pd.DataFrame(out)


def run_manifest(member: "Member", why: str):
    """The manifest the first run was trained on (KitError naming the run when it is not where state.json says)."""
    manifest = member.run.manifest()
    if manifest is None:
        raise KitError(f"{member.run.path}: its manifest is not at the recorded shards path "
                       f"({member.run.state.shards or 'none recorded'}) or is not the one it trained on; {why} "
                       f"read the manifest's columns: keep the shard folder beside the run, or drop {why}")
    return manifest


def _as_columns_error(err: KitError) -> KitError:
    """model.meta's refusal of a column, said of --columns."""
    return KitError(str(err).replace("model.meta column", "--columns column").replace("model.meta", "--columns"))


def check_columns(names: Sequence[str], manifest) -> None:
    """Refuse --columns that leak the answer or are absent at test time, by model.meta's rule (check_meta_inputs)."""
    from ..data.meta import check_meta_inputs

    try:
        check_meta_inputs(names, manifest)
    except KitError as err:
        raise _as_columns_error(err) from None


def read_columns(manifest, names: Sequence[str], split: str, ids: Sequence[str]) -> "pd.DataFrame":
    """The `names` fields of the samples `ids` of a split, read from the shards (a sample not found: missing)."""
    import pandas as pd

    from ..data.dataset import ShardDataset

    folds = manifest.folds() if split == "train" else None
    dataset = ShardDataset(manifest, split, folds=folds, world_size=1, rank=0)
    rows = {str(r.pop(manifest.id_col)): r for r in dataset.rows([manifest.id_col, *names])}
    missing = [i for i in ids if str(i) not in rows]
    if split == "test" and len(missing) == len(ids):
        raise KitError(f"{manifest.root}: none of the runs' test ids (e.g. {ids[0]}) is in the manifest's test split; "
                       f"stack runs predicted on this shard set's test split")
    return pd.DataFrame([rows.get(str(i), {}) for i in ids], columns=list(names))


def encode_columns(oof: "pd.DataFrame", test: Optional["pd.DataFrame"]
                   ) -> Tuple["pd.DataFrame", Optional["pd.DataFrame"], List[str]]:
    """Numbers as floats, text as categories of the values the OOF rows hold (model.meta's MetaEncoder decides which
    is which and fits the categories); (oof, test, the categorical columns)."""
    import pandas as pd

    from ..data.meta import MetaEncoder

    try:
        encoder = MetaEncoder.fit(list(oof.columns), oof.to_dict("records"))
    except KitError as err:
        raise _as_columns_error(err) from None
    categorical = []
    frames = [oof, test]
    for spec in encoder.columns:
        name = safe_name(spec["name"])
        for frame in (f for f in frames if f is not None):
            values = frame.pop(spec["name"])
            if spec["kind"] == "number":
                frame[name] = pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan)
            else:
                text = values.map(lambda v: None if v is None or v != v else str(v))
                frame[name] = pd.Categorical(text, categories=spec["values"])
        if spec["kind"] != "number":
            categorical.append(name)
    return oof, test, categorical


def build_features(members: Sequence["Member"], columns: Sequence[str] = (), group_col: Optional[str] = AUTO
                   ) -> Features:
    """The level-2 features of the members' OOF and test rows (module docstring)."""
    import pandas as pd

    has_test = members[0].test is not None
    oof_ids = members[0].oof["id"].astype(str).tolist()
    test_ids = members[0].test["id"].astype(str).tolist() if has_test else []
    outputs = {"oof": output_features(members, False), "test": output_features(members, True) if has_test else None}
    group = None if group_col is None or str(group_col).strip().lower() in NO_GROUP else group_col
    manifest = None
    if columns or group == AUTO:
        manifest = run_manifest(members[0], "--columns and the group features" if columns else "the group features")
    if group == AUTO:
        group = manifest.group_col
    parts: Dict[str, List["pd.DataFrame"]] = {"oof": [outputs["oof"]], "test": [outputs["test"]]}
    categorical: List[str] = []
    if columns:
        check_columns(columns, manifest)
    if group:
        manifest = manifest or run_manifest(members[0], "--group-col")
        if group not in manifest.schema:
            raise KitError(f"--group-col {group}: not a column of the shards {manifest.root} (columns: "
                           f"{', '.join(sorted(manifest.schema))}); name one, or --group-col none")
    wanted = list(dict.fromkeys([*columns, *([group] if group else [])]))  # one pass over the shards per split
    oof_read = test_read = None
    if wanted:
        oof_read = read_columns(manifest, wanted, "train", oof_ids)
        test_read = read_columns(manifest, wanted, "test", test_ids) if has_test else None
    if group and has_test and test_read[group].isna().all():  # every test row its own group: never seen in training
        raise KitError(f"--group-col {group} has no value in the test split of {manifest.root}; name a column the "
                       f"test CSV holds, or --group-col none")
    if columns:
        oof_cols, test_cols, categorical = encode_columns(oof_read[list(columns)].copy(),
                                                          None if test_read is None else test_read[list(columns)].copy())
        parts["oof"].append(oof_cols)
        parts["test"].append(test_cols)
    if group:
        parts["oof"].append(group_features(outputs["oof"], oof_read[group]))
        if has_test:
            parts["test"].append(group_features(outputs["test"], test_read[group]))
    oof = pd.concat([p.reset_index(drop=True) for p in parts["oof"]], axis=1)
    test = pd.concat([p.reset_index(drop=True) for p in parts["test"]], axis=1) if has_test else None
    return Features(oof, test, categorical, list(columns), group)
