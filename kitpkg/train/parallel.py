"""`kitpkg cv --parallel-folds N`: folds trained side by side, one run directory.

The parent checks the config and writes state.json once, then starts up to N workers -- each a
`kitpkg cv --folds k --train-only` process, `CUDA_VISIBLE_DEVICES` set to one GPU when there are GPUs (on the CPU,
with `train.accelerator: cpu`, they share the cores, each with a sequential run's thread count) -- and hands the next
fold to whichever worker is free. Each fold writes only its own files (runstate.py), so the workers never collide;
the parent then writes OOF, CV score, submission and report from all folds, as a sequential run would. The workers
read the parent's config, written to a temporary YAML, so overrides and resolved paths are the same in every process.

Workers never outlive the parent: each runs in its own process group, which the parent kills when it stops early
(Ctrl-C, an error), and on Linux each gets a parent-death signal (prctl PR_SET_PDEATHSIG), so a SIGKILLed parent
(a notebook interrupted hard, an OOM kill) takes its workers with it instead of leaving them training. A fold that a
live process holds (its lease, lease.py: here or on another machine sharing the run directory) is refused before any
worker starts.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from ..config import AUTO, Config, to_yaml
from ..errors import KitError
from .cv import finish, fold_selection, open_run, paused
from .decisions import check_sample
from .inputs import load_inputs
from .lease import check_free
from .predict import fold_ids
from .results import CVResult

POLL_S = 0.2  # how often a free worker is looked for
STOP_GRACE_S = 10.0  # a worker stopped early gets this long to end (Lightning's KeyboardInterrupt path) before SIGKILL
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_parallel_cv(config: Config, workers: int, run_dir: Optional[os.PathLike] = None,
                    folds: Optional[Sequence[int]] = None) -> CVResult:
    """Train the folds not yet done in up to `workers` processes at once, then finish the run here."""
    started = time.time()
    envs = worker_environments(config, workers, visible_gpus(config))
    for environ in envs:  # a train.time_limit counts from the parent's start in every worker (budget.py)
        environ["KITPKG_RUN_START"] = repr(started)
    inputs = load_inputs(config)
    check_sample(config, inputs.task, fold_ids(inputs.manifest, "test"))  # refused before anything is written
    # state.json is written here, once, before any worker starts
    inputs, state = open_run(config, run_dir, inputs=inputs)
    all_folds, selected = fold_selection(config, inputs, folds)
    todo = [k for k in selected if not state.is_done(k)]
    check_free(state, todo)  # a fold a live process trains (e.g. a killed run's worker elsewhere): refused now
    with tempfile.TemporaryDirectory(prefix="kitpkg-parallel-") as tmp:
        config_path = Path(tmp) / f"{config.name or 'experiment'}.yaml"
        config_path.write_text(to_yaml(config))
        failed = run_workers(todo, envs, lambda k: worker_argv(config_path, state.run_dir, k))
    if failed:
        listed = ", ".join(f"{k} (exit {rc})" for k, rc in sorted(failed.items()))
        raise KitError(f"--parallel-folds: folds {listed} failed in their workers (their messages are above); re-run "
                       f"the same command to resume them")
    if any(not state.is_done(k) for k in todo):  # workers that paused at the session budget (budget.py), exit 0
        return paused(inputs, state, all_folds)
    return finish(config, inputs, state, all_folds)


def visible_gpus(config: Config) -> List[str]:
    """The GPUs the workers may use (CUDA_VISIBLE_DEVICES entries, or indices); none with train.accelerator: cpu.
    Counted without a CUDA context (gpus.py), so a notebook can still fork ddp_notebook workers afterwards."""
    if config.train.accelerator not in (AUTO, "gpu", "cuda"):
        return []
    from .gpus import visible_count

    count = visible_count()
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return (listed or [str(i) for i in range(count)])[:count]


def gpus_for_folds(config: Config) -> int:
    """How many folds to train side by side when nothing asks otherwise: one per visible GPU when there are 2+ and
    train.devices/strategy are auto (a single-device run would leave the others idle; DDP only when asked); else 0."""
    train = config.train
    if train.devices != AUTO or train.strategy != AUTO:
        return 0
    count = len(visible_gpus(config))
    return count if count >= 2 else 0


def worker_environments(config: Config, workers: int, gpus: Sequence[str],
                        environ: Optional[Mapping[str, str]] = None) -> List[Dict[str, str]]:
    """One environment per worker: its own GPU, or (on the CPU) the parent's; KitError for a bad N."""
    environ = dict(os.environ if environ is None else environ)
    if workers < 1:
        raise KitError(f"--parallel-folds: must be >= 1, got {workers}")
    if config.train.devices not in (AUTO, 1):
        raise KitError(f"--parallel-folds: one device per fold, but train.devices is {config.train.devices} (DDP); "
                       f"set train.devices=1, or drop --parallel-folds to train one fold at a time on all devices")
    environ.setdefault("KITPKG_NO_PROGRESS", "1")  # N progress bars in one terminal are unreadable
    if gpus:
        if workers > len(gpus):
            raise KitError(f"--parallel-folds {workers}: only {len(gpus)} GPUs visible here ({', '.join(gpus)}); "
                           f"use at most {len(gpus)}, one fold per GPU")
        return [{**environ, "CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus[:workers]]
    # On the CPU every worker keeps the thread count a sequential run has: torch's CPU kernels sum in another order
    # with fewer threads (OOF differences of ~1e-3 measured with 1 thread against 2), and the point of the CPU path is
    # the same OOF as folds one after another, not speed (the cores are shared either way).
    return [dict(environ) for _ in range(workers)]


def worker_argv(config_path: Path, run_dir: Path, k: int) -> List[str]:
    """The command of a worker training fold k of the run (and nothing else: the parent finishes)."""
    return [sys.executable, "-m", "kitpkg", "cv", "--config", str(config_path), "--run-dir", str(run_dir),
            "--folds", str(k), "--train-only"]


def run_workers(todo: Sequence[int], envs: Sequence[Dict[str, str]], argv_of) -> Dict[int, int]:
    """Run `argv_of(k)` for every fold in `todo`, at most one per environment at a time; {fold: exit code} of the
    folds that failed (the others go on). Each worker's output is printed here line by line, `[fold k]` first: a
    notebook cell shows what this process prints, not what its subprocesses write. Interrupted: the workers are
    stopped (a re-run resumes them)."""
    queue, running, failed = list(todo), {}, {}
    try:
        while queue or running:
            for slot, env in enumerate(envs):
                if slot not in running and queue:
                    k = queue.pop(0)
                    gpu = f" (GPU {env['CUDA_VISIBLE_DEVICES']})" if "CUDA_VISIBLE_DEVICES" in env else ""
                    print(f"kitpkg: fold {k} -> worker {slot}{gpu}", flush=True)
                    proc = subprocess.Popen(argv_of(k), env=env, start_new_session=True, preexec_fn=die_with_parent(),
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                    running[slot] = (k, proc, WorkerOutput(k, proc.stdout))
            time.sleep(POLL_S)
            for slot, (k, proc, output) in list(running.items()):
                done = proc.poll() is not None
                output.relay(final=done)
                if done:
                    del running[slot]
                    if proc.returncode:
                        failed[k] = proc.returncode
    finally:
        stop_workers([proc for _, proc, _ in running.values()])
        for _, _, output in running.values():
            output.relay(final=True)
    return failed


class WorkerOutput:
    """A worker's stdout+stderr pipe, read without blocking and printed here as whole lines, `[fold k]` first."""

    def __init__(self, fold: int, pipe) -> None:
        self.prefix, self.pipe, self.partial = f"[fold {fold}] ", pipe, b""
        os.set_blocking(pipe.fileno(), False)

    def relay(self, final: bool = False) -> None:
        """Print the complete lines read so far (final: everything, the pipe then closed)."""
        if self.pipe.closed:
            return
        while True:
            try:
                chunk = self.pipe.read()
            except (BlockingIOError, ValueError):
                chunk = None
            if not chunk:
                break
            self.partial += chunk
        *lines, self.partial = self.partial.replace(b"\r", b"\n").split(b"\n")
        if final:
            lines, self.partial = lines + [self.partial], b""
            self.pipe.close()
        text = "".join(f"{self.prefix}{line.decode(errors='replace')}\n" for line in lines if line.strip())
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()


def die_with_parent() -> Optional[Callable[[], None]]:
    """A Popen `preexec_fn` that makes the child get SIGKILL when this process dies (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before the line above: nobody would send the signal
            os._exit(1)

    return preexec


def stop_workers(procs: Sequence[subprocess.Popen]) -> None:
    """Stop workers and everything they started (each leads its own process group): SIGINT, then SIGKILL after
    STOP_GRACE_S. Their checkpoints are crash-safe, so a re-run resumes them."""
    for sig, wait_s in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGKILL, None)):
        alive = [p for p in procs if p.poll() is None]
        # SIGKILL goes to every group: a worker that ended on SIGINT may leave children that ignore it (loader workers)
        for proc in alive if sig == signal.SIGINT else procs:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (wait_s or 0)
        for proc in alive:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()) if wait_s else None)
            except subprocess.TimeoutExpired:
                pass
