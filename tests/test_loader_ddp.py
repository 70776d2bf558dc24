"""A real 2-process gloo run: equal batch counts per rank in training (uneven shards, a truncated one too) and every
eval sample exactly once across ranks and DataLoader workers."""
from __future__ import annotations

import json
import os
import shutil
import socket

import pytest
import torch.multiprocessing as mp

from kitpkg.shards.manifest import load_manifest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, root, out):
    import torch
    import torch.distributed as dist

    from kitpkg.data.dataset import ShardDataset
    from kitpkg.data.loader import ShardLoader

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        report = {}
        for name, ds in (("train", ShardDataset(root, "train", None, batch_size=4, seed=1)),
                         ("val", ShardDataset(root, "val", 1, batch_size=4, training=False))):
            ids, steps = [], 0
            loader = ShardLoader(ds, num_workers=2, persistent_workers=True)
            for epoch in range(2 if name == "train" else 1):
                for batch in loader:
                    ids += batch["id"]
                    steps += 1
                    if name == "train":  # a collective per step, like DDP's gradient all-reduce
                        dist.all_reduce(torch.ones(1))
            report[name] = {"ids": ids, "steps": steps, "len": len(ds), "world": ds.partition.world_size}
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(report, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("fmt, truncate", [("tfrecord", False), ("wds", True)])
def test_two_gloo_ranks_equal_train_batches_and_exactly_once_eval(request, tmp_path, fmt, truncate):
    root = tmp_path / "shards"
    shutil.copytree(request.getfixturevalue(f"{fmt}_manifest").root, root)
    m = load_manifest(str(root))
    if truncate:  # lose the tail of one shard: ranks must still agree on the number of steps
        shard = m.shards[1]
        with open(m.path(shard), "r+b") as f:
            f.truncate(shard.offsets[3] + 600)
    mp.start_processes(_rank_main, args=(2, _free_port(), str(root), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    reports = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert all(r["train"]["world"] == 2 for r in reports), "world size comes from torch.distributed"
    assert reports[0]["train"]["steps"] == reports[1]["train"]["steps"] == 2 * reports[0]["train"]["len"]
    first_epoch = [i for r in reports for i in r["train"]["ids"][:reports[0]["train"]["len"] * 4]]
    if not truncate:
        assert len(first_epoch) == len(set(first_epoch)) == 48, "48 samples, 2 ranks: nothing dropped or repeated"
    val = [i for r in reports for i in r["val"]["ids"]]
    expected = [i for s in m.select("train", [1]) for i in s.ids]
    if truncate and m.shards[1].fold == 1:
        expected = [i for i in expected if i not in m.shards[1].ids[3:]]
    assert val == expected, "eval: every sample once across ranks, in manifest order"
    assert sum(r["val"]["steps"] for r in reports) >= -(-len(expected) // 4)
