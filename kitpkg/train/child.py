"""Work that needs a GPU, run from a notebook in a fresh process, so the notebook's own process never initialises CUDA.

Lightning's `ddp_notebook` forks the notebook's process and refuses to once CUDA was initialised there ("Lightning
can't create new processes if CUDA is already initialized"); CUDA cannot be de-initialised short of restarting the
kernel. A spawned child (a new interpreter, not a fork) can use the GPU and exit; the notebook keeps a clean process.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


def call_in_child(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`func(*args, **kwargs)` in a spawned interpreter: its result (or its exception, raised here). `func` and its
    arguments must pickle: a module-level function of the kit and plain values such as a Config."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(func, *args, **kwargs).result()
