"""`data.extra_train`: shard sets that only ever train, and which of them each fold trains on.

A plain extra set (external data; pseudo-labels from `kitpkg pseudo --predictions`) trains every fold. A per-fold
pseudo-label set (`kitpkg pseudo --run`) is a folder of sets, one per fold of the teacher run: fold k here trains only
on the set labelled by the teacher's fold k model, which never saw fold k's labels. Trained on the fold-averaged
predictions instead, fold k would learn from teachers that did (4 of 5 with 5 folds): CV would look better than it is.

Which set is fold k's is read from the provenance its manifest records (`options["pseudo"]`, see `Provenance`), never
from folder names; and the teacher's fold numbers mean the same samples here only when it split the same samples into
the same folds, so its split fingerprint must equal this run's manifest's (another --size of one `kitpkg convert`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import fsutil
from ..errors import KitError
from ..shards.manifest import MANIFEST_NAME, Manifest, load_manifest, manifest_paths, resolve_manifest_path
from ..shards.pseudo import PSEUDO_KEY
from .runstate import manifest_fingerprint



@dataclass(frozen=True)
class Provenance:
    """Where a pseudo-label set's labels come from (its manifest's `options["pseudo"]`)."""

    threshold: Optional[float]  # None: a --soft set (every test sample, the teacher's values)
    low: Optional[float]
    source_predictions: int  # prediction rows the labels were chosen from
    teacher_run: Optional[str] = None  # config hash of the CV run whose fold model labelled the set
    teacher_fold: Optional[int] = None  # that fold model (None: predictions from outside a CV run, every fold trains)
    trained_on_folds: Optional[List[int]] = None  # the folds whose labels that model trained on
    split: Optional[str] = None  # split_fingerprint of the teacher's shards: which samples those folds are
    score_class: Optional[int] = None  # the teacher's train.score_class as a class index
    soft_kind: Optional[str] = None  # --soft: the teacher's task kind whose values the label columns hold

    def options(self) -> Dict[str, Any]:
        """The manifest options that record this provenance (soft_kind only for a --soft set: a hard set's
        manifest is written as before it existed)."""
        record = asdict(self)
        if self.soft_kind is None:
            del record["soft_kind"]
        return {PSEUDO_KEY: record}

    @classmethod
    def of(cls, manifest: Manifest) -> Optional["Provenance"]:
        """The provenance of a pseudo-label set (None for other shard sets); KitError for a set an earlier kitpkg made
        from fold-averaged predictions, which records no teacher fold."""
        record = manifest.options.get(PSEUDO_KEY)
        if not record:
            return None
        if "teacher_fold" not in record:
            raise KitError(f"data.extra_train: {manifest.root} holds pseudo-labels an earlier kitpkg made from the "
                           f"fold-averaged test predictions, whose models saw every fold's labels (CV would look "
                           f"better than it is); re-make it with `kitpkg pseudo --run RUN --out {manifest.root}`")
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        return cls(**known)


def split_fingerprint(manifest: Manifest) -> str:
    """sha256 over the train split's (id, fold) pairs: equal for shard sets that put the same samples into the same
    folds (e.g. two sizes of one `kitpkg convert`)."""
    pairs = sorted(manifest.fold_of().items())
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


@dataclass
class FoldSets:
    """A per-fold pseudo-label set: {teacher fold: the shard set that fold's model labelled}."""

    root: str
    by_fold: Dict[int, Manifest]

    def for_fold(self, k: int) -> Manifest:
        """The set fold k trains on: labelled by a teacher model that never trained on fold k."""
        if k not in self.by_fold:
            raise KitError(f"data.extra_train: {self.root} has no pseudo-label set for fold {k} (teacher folds "
                           f"{sorted(self.by_fold)}); finish fold {k} of the teacher run and re-run `kitpkg pseudo`, "
                           f"or leave fold {k} out of data.folds")
        return self.by_fold[k]

    def fingerprint(self) -> str:
        """What state.json records of these sets (one value for the folder: its fold sets' fingerprints)."""
        prints = sorted((k, manifest_fingerprint(m)) for k, m in self.by_fold.items())
        return hashlib.sha256(json.dumps(prints).encode()).hexdigest()


def check_soft_sets(kind: str, every: Sequence[Manifest], per_fold: Sequence["FoldSets"]) -> None:
    """KitError naming the set when a `kitpkg pseudo --soft` set (values of a teacher's task kind) is added to a
    student of another kind: an ordinal teacher's floats in a multiclass student's class column would reach the loss
    as class indices."""
    sets = list(every) + [m for fold_sets in per_fold for m in fold_sets.by_fold.values()]
    for manifest in sets:
        soft_kind = (manifest.options.get("pseudo") or {}).get("soft_kind")
        if soft_kind is not None and soft_kind != kind:
            raise KitError(f"data.extra_train: {manifest.root} holds the soft values (kitpkg pseudo --soft) of a "
                           f"teacher of kind {soft_kind}, not labels a student of kind {kind} trains on; add it to a "
                           f"train.task: {soft_kind} run, or make hard labels from a {kind} teacher")


def load_extras(paths: Sequence[str], image_size: int, manifest: Manifest) -> Tuple[List[Manifest], List[FoldSets]]:
    """The `data.extra_train` sets: (those every fold trains on, the per-fold pseudo-label sets), the per-fold ones
    checked against `manifest`'s folds (KitError naming the set when a fold could learn its own labels from them)."""
    every: List[Manifest] = []
    per_fold: List[FoldSets] = []
    split = None
    for path in paths:
        sets = _fold_set_manifests(str(path), image_size)
        if sets is None:
            every.append(_every_fold_set(str(path), image_size))
            continue
        split = split or split_fingerprint(manifest)
        per_fold.append(_checked(str(path), sets, split, manifest.root))
    return every, per_fold


def is_fold_sets(path: str, image_size: int) -> bool:
    """Whether `path` is a folder of per-fold pseudo-label sets (what `kitpkg pseudo --run` writes)."""
    return _fold_set_manifests(path, image_size) is not None


def _fold_set_manifests(path: str, image_size: int) -> Optional[List[Manifest]]:
    """The manifests of the subfolders of `path` when every one is a per-fold pseudo-label set; else None (then
    `path` is read as one shard set)."""
    if fsutil.is_url(path) or not os.path.isdir(path) or os.path.exists(os.path.join(path, MANIFEST_NAME)) \
            or os.path.exists(os.path.join(path, str(image_size), MANIFEST_NAME)):
        return None
    found = [load_manifest(p) for p in manifest_paths(path) if p != path]
    provenances = [Provenance.of(m) for m in found]
    if not found or any(p is None or p.teacher_fold is None for p in provenances):
        return None
    return found


def _every_fold_set(path: str, image_size: int) -> Manifest:
    """One shard set that every fold trains on (refused when it is one teacher fold's pseudo-labels)."""
    manifest = load_manifest(resolve_manifest_path(path, image_size))
    provenance = Provenance.of(manifest)
    if provenance is not None and provenance.teacher_fold is not None:
        raise KitError(f"data.extra_train: {manifest.root} holds the pseudo-labels of teacher fold "
                       f"{provenance.teacher_fold} alone; name its folder {os.path.dirname(manifest.root)} instead, so "
                       f"each fold trains only on the set of its own teacher fold")
    return manifest


def _checked(path: str, sets: Sequence[Manifest], split: str, main_root: str) -> FoldSets:
    """The per-fold sets of `path` by teacher fold, each refused unless its teacher never trained on that fold."""
    by_fold: Dict[int, Manifest] = {}
    for manifest in sets:
        provenance = Provenance.of(manifest)
        k = provenance.teacher_fold
        if provenance.split != split:
            raise KitError(f"data.extra_train: {path} holds pseudo-labels of a run that split the samples into other "
                           f"folds than {main_root}, so its fold models saw labels of folds here; make them from a "
                           f"run on these shards (`kitpkg pseudo --run RUN`)")
        if k in (provenance.trained_on_folds or []):
            raise KitError(f"data.extra_train: {manifest.root}: its teacher fold {k} trained on fold {k}, by its "
                           f"provenance (options.pseudo); re-make it with `kitpkg pseudo --run RUN`")
        if k in by_fold:
            raise KitError(f"data.extra_train: {path} holds two sets of teacher fold {k} ({by_fold[k].root}, "
                           f"{manifest.root}); re-make it with `kitpkg pseudo --run RUN --out {path}`")
        by_fold[k] = manifest
    return FoldSets(path, by_fold)
