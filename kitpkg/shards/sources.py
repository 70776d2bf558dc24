"""Where the original images come from: a folder (nested OK) or a .zip read in place (never extracted)."""
from __future__ import annotations

import hashlib
import os
import zipfile
from typing import Dict, List, Tuple

from ..errors import KitError
from .imaging import HEAD_BYTES, check_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _skip(rel: str) -> bool:
    """macOS and editor litter that is never data."""
    parts = rel.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


class ImageSource:
    """Lists the files of a folder or zip once and reads members by their relative path (one per process)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(str(path))
        self.is_zip = os.path.isfile(self.path) and zipfile.is_zipfile(self.path)
        if not self.is_zip and not os.path.isdir(self.path):
            raise KitError(f"{path}: no such folder or .zip of images")
        self._zip = None

    def list_files(self) -> List[Tuple[str, int]]:
        """Sorted (relative path, size in bytes) of every file, skipping hidden files and __MACOSX."""
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                files = [(i.filename, i.file_size) for i in zf.infolist() if not i.is_dir()]
        else:
            files = []
            for root, dirs, names in os.walk(self.path):
                dirs.sort()
                for name in names:
                    full = os.path.join(root, name)
                    files.append((os.path.relpath(full, self.path).replace(os.sep, "/"), os.path.getsize(full)))
        return sorted(f for f in files if not _skip(f[0]))

    def list_images(self) -> List[Tuple[str, int]]:
        """`list_files()`, refusing (KitError) a source that holds no image file at all."""
        files = self.list_files()
        if not any(rel.lower().endswith(IMAGE_SUFFIXES) for rel, _ in files):
            kind = ".zip" if self.is_zip else "folder (subfolders included)"
            raise KitError(f"{self.path}: no image files ({' '.join(IMAGE_SUFFIXES)}) in this {kind}; give the folder "
                           "or .zip that holds the images")
        return files

    def read(self, rel: str) -> bytes:
        """The bytes of one file (the zip is opened once per process and kept open); BadImage, before reading it
        whole, when its size rules it out as an image (imaging.check_file: bounded memory on hostile archives)."""
        if self.is_zip:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.path)
            # zipfile inflates at most the declared file_size (and fails the CRC if the data says otherwise)
            info = self._zip.getinfo(rel)
            size, f = info.file_size, self._zip.open(info)
        else:
            f = open(os.path.join(self.path, rel), "rb")
            size = os.fstat(f.fileno()).st_size
        with f:
            head = f.read(HEAD_BYTES)
            check_file(head, size)
            return head + f.read()

    def close(self) -> None:
        """Close the zip if this process opened it (reading again reopens it)."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __getstate__(self):  # an open ZipFile cannot be pickled into worker processes; each worker reopens it
        return {"path": self.path, "is_zip": self.is_zip, "_zip": None}


def stem_of(name: str) -> str:
    """A file's id: its base name without an image extension (`jpeg/train/ISIC_1.jpg` → `ISIC_1`)."""
    base = name.rsplit("/", 1)[-1]
    root, ext = os.path.splitext(base)
    return root if ext.lower() in IMAGE_SUFFIXES else base


def index_by_id(files: List[Tuple[str, int]]) -> Tuple[Dict[str, str], List[Tuple[str, str]]]:
    """({id: relative path}, [(path, reason)] for ambiguous duplicates); image files win over other files."""
    chosen: Dict[str, str] = {}
    dupes: List[Tuple[str, str]] = []
    # image extensions first so `x.jpg` beats `x.txt` for id `x`; then path order, so the choice is stable
    for rel, _ in sorted(files, key=lambda f: (not f[0].lower().endswith(IMAGE_SUFFIXES), f[0])):
        key = stem_of(rel)
        if key in chosen:
            if rel.lower().endswith(IMAGE_SUFFIXES):
                dupes.append((rel, f"duplicate id: same name as {chosen[key]} (kept that one)"))
            continue
        chosen[key] = rel
    return chosen, dupes


def listing_sha256(files: List[Tuple[str, int]]) -> str:
    """A fingerprint of the file list (names and sizes) so a resumed conversion knows the source is unchanged."""
    digest = hashlib.sha256()
    for rel, size in files:
        digest.update(f"{rel}\0{size}\n".encode())
    return digest.hexdigest()
