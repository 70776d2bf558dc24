"""Local shard cache: verified against the manifest (bytes + sha256), atomic, reused, usable in the background."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading

import pytest

from kitpkg.data.cache import ShardCache
from kitpkg.data.dataset import ShardDataset
from kitpkg.data.loader import ShardLoader
from kitpkg.errors import KitError
from kitpkg.fsutil import sha256_file
from kitpkg.shards.manifest import load_manifest


def test_copies_are_verified_reused_and_content_addressed(any_manifest, tmp_path):
    cache = ShardCache(tmp_path / "cache")
    path = cache.fetch(any_manifest, 0)
    shard = any_manifest.shards[0]
    assert os.path.getsize(path) == shard.bytes and sha256_file(path) == shard.sha256
    assert cache.resolve(any_manifest, 0) == path and cache.resolve(any_manifest, 1) == any_manifest.path(
        any_manifest.shards[1])
    mtime = os.stat(path).st_mtime_ns
    assert cache.fetch(any_manifest, 0) == path and os.stat(path).st_mtime_ns == mtime, "a valid copy is reused"
    assert os.listdir(tmp_path / "cache") == [os.path.basename(path)], "no temp files left behind"


def test_a_shard_that_differs_from_the_manifest_never_appears_in_the_cache(tfrecord_manifest, tmp_path):
    shutil.copytree(tfrecord_manifest.root, tmp_path / "src")
    m = load_manifest(str(tmp_path / "src"))
    with open(m.path(m.shards[2]), "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 1]))
    cache = ShardCache(tmp_path / "cache")
    with pytest.raises(KitError, match="sha256 differs from the manifest"):
        cache.fetch(m, 2)
    with open(m.path(m.shards[3]), "ab") as f:
        f.write(b"x")
    with pytest.raises(KitError, match="bytes but the manifest says"):
        cache.fetch(m, 3)
    assert os.listdir(tmp_path / "cache") == []


def test_background_cache_from_http_feeds_the_loader_with_the_same_samples(tfrecord_manifest, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tfrecord_manifest.root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        remote = ShardDataset(url, "train", 0, batch_size=4, seed=9, cache_dir=str(tmp_path / "cache"))
        remote.cache_shards(background=True)  # copies while the loader starts reading (originals until ready)
        got = [b["id"] for b in ShardLoader(remote, num_workers=2)]
        remote.cache.wait()
        assert not remote.cache.errors
        assert all(remote.cache.is_ready(s.shard) for s in remote.sources)
        cached = [b["id"] for b in ShardLoader(remote)]  # now read from local copies
        local = [b["id"] for b in ShardLoader(ShardDataset(tfrecord_manifest, "train", 0, batch_size=4, seed=9))]
        assert got == local and cached[:len(local)] != [] and sorted(map(tuple, cached)) == sorted(map(tuple, local))
    finally:
        server.shutdown()
        server.server_close()


def test_not_enough_space_is_a_clear_error(tfrecord_manifest, tmp_path, monkeypatch):
    import shutil as sh

    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10, 10, 0))
    with pytest.raises(KitError, match="cache_dir .* only 0.0 GiB free"):
        ShardCache(tmp_path / "c").fetch_all([(tfrecord_manifest, 0)])
