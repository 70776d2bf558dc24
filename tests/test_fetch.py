"""`kitpkg fetch`: Drive links and ids, retries with backoff and resume, gdown 4/5/6 signatures, the quota fix."""
from __future__ import annotations

from pathlib import Path

import gdown
import pytest
import requests

from kitpkg.cli import main
from kitpkg.errors import KitError
from kitpkg.notebook import fetch as kfetch

FILE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
FOLDER_ID = "1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2"


@pytest.fixture(autouse=True)
def no_real_sleep(monkeypatch):
    """A test that retries must pass its own `sleep`; a real back-off would only slow the suite."""
    monkeypatch.setattr(kfetch.time, "sleep", lambda s: pytest.fail(f"slept {s} s"))


@pytest.mark.parametrize("text, kind, ident", [
    (f"https://drive.google.com/file/d/{FILE_ID}/view?usp=sharing", "file", FILE_ID),
    (f"https://drive.google.com/uc?id={FILE_ID}&export=download", "file", FILE_ID),
    (f"https://drive.google.com/open?id={FILE_ID}", "file", FILE_ID),
    (f"https://drive.google.com/drive/folders/{FOLDER_ID}?usp=sharing", "folder", FOLDER_ID),
    (f"https://drive.google.com/drive/u/0/folders/{FOLDER_ID}", "folder", FOLDER_ID),
    (FILE_ID, "file", FILE_ID),
])
def test_parse_source(text, kind, ident):
    source = kfetch.parse_source(text)
    assert (source.kind, source.id) == (kind, ident)


def test_parse_source_other_urls_and_bad_input():
    assert kfetch.parse_source("https://example.com/a.zip") == kfetch.Source("url", url="https://example.com/a.zip")
    assert kfetch.parse_source(FOLDER_ID, folder=True).kind == "folder"
    with pytest.raises(KitError, match="not a Google Drive id"):
        kfetch.parse_source("my file.zip")


def gdown6_download(url=None, output=None, quiet=False, proxy=None, speed=None, use_cookies=True, verify=True,
                    id=None, resume=False, format=None, user_agent=None, log_messages=None, progress=None,
                    skip_download=False, cookies_file=None, hasher=None, timeout=None, retries=0, cancel=None):
    """gdown 6.x's signature: no `fuzzy` (passing it raises TypeError)."""


def gdown4_download(url=None, output=None, quiet=False, proxy=None, speed=None, use_cookies=True, verify=True,
                    id=None, fuzzy=False, resume=False, format=None):
    """gdown 4.x's signature."""


class FakeGdown:
    """Stands in for gdown's functions with a version's signature; scripted failures, then a real file written."""

    def __init__(self, signature, failures=()):
        self.signature, self.failures, self.calls = signature, list(failures), []
        self.__signature__ = __import__("inspect").signature(signature)

    def __call__(self, **kwargs):
        import inspect

        inspect.signature(self.signature).bind(**kwargs)  # TypeError, as gdown would, on an unknown keyword
        self.calls.append(kwargs)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, BaseException):
                raise failure
            return failure
        out = kwargs["output"]
        path = Path(out + "remote.bin") if out.endswith("/") else Path(out)
        path.write_bytes(b"payload")
        return str(path)


@pytest.mark.parametrize("signature", [gdown6_download, gdown4_download])
def test_fetch_file_passes_only_accepted_keywords(tmp_path, monkeypatch, signature):
    fake = FakeGdown(signature)
    monkeypatch.setattr(gdown, "download", fake)
    got = kfetch.fetch(f"https://drive.google.com/file/d/{FILE_ID}/view", tmp_path / "sub" / "x.zip", quiet=True)
    assert got == [tmp_path / "sub" / "x.zip"] and got[0].read_bytes() == b"payload"
    (call,) = fake.calls
    assert call["id"] == FILE_ID and call["resume"] is True and "fuzzy" not in call


def test_fetch_into_folder_keeps_the_remote_name(tmp_path, monkeypatch):
    monkeypatch.setattr(gdown, "download", FakeGdown(gdown6_download))
    (tmp_path / "dl").mkdir()
    assert kfetch.fetch(FILE_ID, tmp_path / "dl", quiet=True) == [tmp_path / "dl" / "remote.bin"]


def test_transient_errors_retry_with_backoff_and_resume(tmp_path, monkeypatch):
    fake = FakeGdown(gdown6_download, failures=[requests.exceptions.ConnectionError("reset by peer"),
                                                gdown.exceptions.DownloadError("body ended early")])
    monkeypatch.setattr(gdown, "download", fake)
    slept = []
    got = kfetch.fetch(FILE_ID, tmp_path / "x.bin", retries=3, backoff_s=2, sleep=slept.append, quiet=True)
    assert got[0].read_bytes() == b"payload" and slept == [2, 4]
    assert len(fake.calls) == 3 and all(c["resume"] for c in fake.calls)


def test_gdown4_returning_none_is_retried_then_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(gdown, "download", FakeGdown(gdown4_download, failures=[None, None, None]))
    slept = []
    with pytest.raises(KitError, match="after 3 attempts.*re-run the same command"):
        kfetch.fetch(FILE_ID, tmp_path / "x.bin", retries=2, backoff_s=1, sleep=slept.append, quiet=True)
    assert slept == [1, 2]


def test_quota_error_gives_the_known_fix_without_retrying(tmp_path, monkeypatch):
    message = ("Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently. "
               "Please try accessing the file again later.")
    fake = FakeGdown(gdown6_download, failures=[gdown.exceptions.FileURLRetrievalError(message)])
    monkeypatch.setattr(gdown, "download", fake)
    with pytest.raises(KitError, match="Make a copy.*own Drive.*copy's id"):
        kfetch.fetch(FILE_ID, tmp_path / "x.bin", sleep=lambda s: pytest.fail("must not retry"), quiet=True)
    assert len(fake.calls) == 1


def gdown6_folder(url=None, id=None, output=None, quiet=False, proxy=None, speed=None, use_cookies=True,
                  verify=True, user_agent=None, skip_download=False, resume=False, cookies_file=None, timeout=None,
                  retries=0):
    """gdown 6.x: no `remaining_ok`."""


def gdown5_folder(url=None, id=None, output=None, quiet=False, proxy=None, speed=None, use_cookies=True,
                  remaining_ok=False, verify=True, user_agent=None, skip_download=False, resume=False):
    """gdown 5.x: 50-file limit unless remaining_ok."""


@pytest.mark.parametrize("signature", [gdown6_folder, gdown5_folder])
def test_fetch_folder(tmp_path, monkeypatch, signature):
    seen = []

    def fake(**kwargs):
        import inspect

        inspect.signature(signature).bind(**kwargs)
        seen.append(kwargs)
        out = Path(kwargs["output"])
        files = [out / "a.tfrec", out / "sub" / "b.tfrec"]
        for f in files:
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"x")
        return [str(f) for f in files]

    fake.__signature__ = __import__("inspect").signature(signature)
    monkeypatch.setattr(gdown, "download_folder", fake)
    got = kfetch.fetch(f"https://drive.google.com/drive/folders/{FOLDER_ID}", tmp_path / "shards", quiet=True)
    assert got == [tmp_path / "shards/a.tfrec", tmp_path / "shards/sub/b.tfrec"]
    assert seen[0]["id"] == FOLDER_ID and seen[0]["resume"] is True
    assert ("remaining_ok" in seen[0]) == (signature is gdown5_folder)


def test_cli_fetch_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gdown, "download", FakeGdown(gdown6_download, failures=[
        gdown.exceptions.FileURLRetrievalError("Too many users have viewed or downloaded this file recently")]))
    assert main(["fetch", FILE_ID, str(tmp_path / "x.bin"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kitpkg fetch: error: Google Drive's download quota") and err.count("\n") == 1
    monkeypatch.setattr(gdown, "download", FakeGdown(gdown6_download))
    assert main(["fetch", FILE_ID, str(tmp_path / "y.bin"), "--quiet"]) == 0
    assert (tmp_path / "y.bin").read_bytes() == b"payload"
