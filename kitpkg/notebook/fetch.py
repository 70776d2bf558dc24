"""`kitpkg fetch`: download a file or folder from Google Drive with gdown, retrying and resuming, on gdown 4, 5 or 6."""
from __future__ import annotations

import inspect
import os
import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

from ..errors import KitError

_ID = r"[-\w]{10,}"
QUOTA_FIX = ("Google Drive's download quota for this file is used up (\"Too many users have viewed or downloaded this "
             "file recently\"). The known fix: open the link in a browser, 'Make a copy' into your own Drive, share "
             "the copy as 'Anyone with the link', and fetch the copy's id")
PERMISSION_FIX = ("gdown cannot read this file: share it as 'Anyone with the link' (Share → General access), or copy "
                  "it into your own Drive and share the copy")


@dataclass(frozen=True)
class Source:
    """What to download: a Drive file or folder id, or a plain URL (id None)."""

    kind: str  # "file", "folder" or "url"
    id: Optional[str] = None
    url: Optional[str] = None


def parse_source(url_or_id: str, folder: Optional[bool] = None) -> Source:
    """Classify a Drive share link, a bare id or any other URL; `folder` forces the kind of a bare id."""
    text = url_or_id.strip()
    parsed = urllib.parse.urlparse(text)
    if not parsed.scheme:
        if not re.fullmatch(_ID, text):
            raise KitError(f"{url_or_id!r}: not a Google Drive id or URL; pass a share link or the id in it")
        return Source("folder" if folder else "file", id=text)
    if parsed.hostname in ("drive.google.com", "docs.google.com"):
        match = re.search(rf"/folders/({_ID})", parsed.path)
        if match:
            return Source("folder", id=match.group(1))
        match = re.search(rf"/d/({_ID})", parsed.path)
        query_id = urllib.parse.parse_qs(parsed.query).get("id", [None])[0]
        file_id = match.group(1) if match else query_id
        if file_id:
            return Source("folder" if folder else "file", id=file_id)
        raise KitError(f"{url_or_id!r}: a Google Drive URL without a file or folder id; copy the share link again")
    return Source("url", url=text)


def _call(func: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a gdown function with only the keyword arguments its version accepts (6.x removed fuzzy/remaining_ok)."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return func(**kwargs)
    return func(**{k: v for k, v in kwargs.items() if k in params})


def _classify(err: BaseException) -> Optional[KitError]:
    """A KitError for failures retrying cannot fix (quota, permissions), else None."""
    text = str(err)
    if "too many users" in text.lower() or "quota" in text.lower():
        return KitError(QUOTA_FIX)
    if "permission" in text.lower() or "cannot retrieve the public link" in text.lower():
        return KitError(PERMISSION_FIX + f" ({text.splitlines()[0] if text else type(err).__name__})")
    return None


def fetch(url_or_id: str, dest: os.PathLike, *, folder: Optional[bool] = None, retries: int = 3,
          backoff_s: float = 5.0, quiet: bool = False, sleep: Callable[[float], None] = time.sleep) -> List[Path]:
    """Download a Drive file or folder (or any URL) into `dest`; re-running resumes and skips finished files."""
    import gdown  # lazy: only this command needs it

    source = parse_source(url_or_id, folder)
    dest = Path(dest)
    if source.kind == "folder":
        dest.mkdir(parents=True, exist_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
    # gdown appends the remote file name only when the output ends with a separator
    output = str(dest) + os.sep if dest.is_dir() or source.kind == "folder" else str(dest)
    last: Optional[BaseException] = None
    for attempt in range(retries + 1):
        try:
            if source.kind == "folder":
                got = _call(gdown.download_folder, id=source.id, output=output, quiet=quiet, resume=True,
                            remaining_ok=True)
            else:
                got = _call(gdown.download, id=source.id, url=source.url, output=output, quiet=quiet, resume=True)
            if got is None or got == []:  # gdown 4.x prints the error and returns None
                raise RuntimeError("gdown returned no file (gdown 4.x prints the reason above)")
            return [Path(p) for p in (got if isinstance(got, list) else [got])]
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 -- gdown raises many types across versions; sort them below
            fatal = _classify(err)
            if fatal is not None:
                raise fatal from None
            last = err
            if attempt < retries:
                delay = backoff_s * 2**attempt
                print(f"kitpkg fetch: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; "
                      f"retry {attempt + 1}/{retries} in {delay:.0f} s", flush=True)
                sleep(delay)
    raise KitError(f"fetching {url_or_id} into {dest} failed after {retries + 1} attempts ({type(last).__name__}: "
                   f"{last}); re-run the same command to resume; if gdown printed a quota message, make a copy in "
                   "your own Drive and fetch the copy's id")
