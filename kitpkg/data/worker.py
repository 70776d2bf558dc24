"""What a DataLoader worker process sets up when it starts reading: one thread per library and a malloc that keeps
freed image memory for the next image.

`start_worker` runs in each worker at the start of a dataset iteration (`ShardDataset`), whatever loader started the
worker (a ShardLoader or a plain DataLoader); outside a worker nothing is changed.
"""
from __future__ import annotations

import torch


def start_worker() -> None:
    """In a loader worker: one thread per library (the workers are the parallelism) and `keep_freed_memory`."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(0)  # 0 = sequential; 1 can deadlock in a fork of a process that used the pool
    keep_freed_memory()


def keep_freed_memory() -> None:
    """Tune glibc's malloc so that freed image-sized blocks stay in the heap (nothing to do on other C libraries)."""
    # Every decoded image is a fresh array of a few hundred KiB; above its mmap threshold glibc returns such a block to
    # the OS on free and page-faults it back on the next image, so a worker spends its CPU in the kernel. Raising the
    # mmap and trim thresholds keeps them in the heap; memory stays flat (benchmarks/loader.py prints images/s and the
    # peak RSS of every epoch).
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): nothing to tune
