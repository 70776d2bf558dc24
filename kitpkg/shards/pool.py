"""A crash-tolerant, order-keeping process pool: `ordered_map(work, items, …)` yields `work(item)` in input order.

A worker that dies (a decoder crash, the OOM killer) costs only the item that killed it: the next unfinished item is
retried alone, reported as `died(item)` if it kills its process too, and the pool restarts after it. Deaths of one
item after another mean the machine is at fault, not the items: the run stops with a KitError. (multiprocessing.Pool
would wait forever for a dead worker's result; Executor.map would submit every item at once.)
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

from ..errors import KitError

DEATHS_IN_A_ROW = 3  # items that each killed their own process, one after another: blame the machine, not them
_TASK: Dict[str, Callable[[Any], Any]] = {}  # in each worker process: the `work` function


def start_context() -> Any:
    """fork where there is one, as torch's DataLoader does: spawn/forkserver re-import the caller's __main__, which
    breaks plain scripts without an `if __name__ == "__main__":` guard."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def ordered_map(work: Callable[[Any], Any], items: Sequence[Any], workers: int, died: Callable[[Any], Any],
                initializer: Callable[..., None], initargs: tuple = (), ctx: Any = None) -> Iterator[Any]:
    """`work(item)` for every item, in order, from `workers` processes (each set up by `initializer(*initargs)`), with
    a bounded window of tasks in flight; `died(item)` stands in for the result of an item that killed its process."""
    setup = (os.getpid(), work, initializer, initargs)
    ctx = ctx or start_context()
    chunksize = max(1, min(16, len(items) // (workers * 8)))
    done, deaths = 0, 0
    while done < len(items):
        pool = _pool(workers, ctx, setup)
        broken = False
        try:
            for results in _in_order(pool, items, done, chunksize, window=4 * workers):
                for result in results:
                    yield result
                    done += 1
                deaths = 0
        except BrokenProcessPool:
            broken = True
        finally:
            # a broken pool has failed every future itself: cancelling them too races its manager thread, which then
            # never stops the other workers (CPython gh-107219, Python <= 3.11) and the process cannot exit
            pool.shutdown(wait=True, cancel_futures=not broken)
        if broken:
            result, killed = _alone(items[done], ctx, setup)
            deaths = deaths + 1 if killed else 0
            if deaths >= DEATHS_IN_A_ROW:
                raise KitError(f"{deaths} images in a row each killed their worker process (last: {items[done]}); "
                               "that is the machine (out of memory? a broken install?), not the images: fix it and "
                               "re-run the same command, which continues where this run stopped")
            yield died(items[done]) if killed else result
            done += 1
            chunksize = 1  # a chunk fails as a whole: one item per task from now on finds the culprit quickly


def _pool(workers: int, ctx: Any, setup: tuple) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=setup)


def _start_worker(parent: int, work: Callable[[Any], Any], initializer: Callable[..., None], initargs: tuple) -> None:
    _die_with_parent(parent)
    _TASK["work"] = work
    initializer(*initargs)


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this worker when the parent process dies (a SIGKILL, a crashed notebook kernel);
    an orphaned pool worker would otherwise wait for work forever."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux/glibc
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _in_order(pool: ProcessPoolExecutor, items: Sequence[Any], start: int, chunksize: int,
              window: int) -> Iterator[List[Any]]:
    """Results of `items[start:]` chunk by chunk, in order, with at most `window` chunks submitted ahead."""
    pending: "deque[Future]" = deque()
    nxt = start
    while pending or nxt < len(items):
        while nxt < len(items) and len(pending) < window:
            pending.append(pool.submit(_work_chunk, items[nxt:nxt + chunksize]))
            nxt += chunksize
        yield pending.popleft().result()


def _work_chunk(items: Sequence[Any]) -> List[Any]:
    work = _TASK["work"]
    return [work(item) for item in items]


def _alone(item: Any, ctx: Any, setup: tuple) -> Tuple[Any, bool]:
    """(`work(item)`, False) from a process of its own; (None, True) when that process dies."""
    pool = _pool(1, ctx, setup)
    try:
        return pool.submit(_work_chunk, [item]).result()[0], False
    except BrokenProcessPool:
        return None, True
    finally:
        pool.shutdown(wait=True)
