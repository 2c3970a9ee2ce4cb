"""Several trials at once on one machine (`search.n_workers`, `sweep --workers N`).

The study already runs with any number of workers sharing its storage (each loops "is a trial
still needed? run one"); here the sweep process starts N - 1 more of them as child processes,
runs the N-th itself (with the live display), and waits for them. Each worker gets its share
of the cores (`trainer.threads`, unless set) and, on a GPU, memory growth so that their
trials share it. Ctrl-C in a terminal reaches every worker, a SIGTERM to the sweep is passed
on, and a worker whose sweep process died (SIGKILL) stops at once, so none is left behind; a
stopped study resumes as any other. Only the sweep process registers the champion.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cifar_exp import interrupts
from cifar_exp.config import Config, to_dict, validate, with_overrides
from cifar_exp.study import trial_process
from cifar_exp.study.progress import NullReporter, Reporter
from cifar_exp.study.sweep import SweepSummary, conclude, sweep

log = logging.getLogger(__name__)


def cores() -> int:
    """The CPU cores this process may use (its affinity, not the host's count)."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _gpus() -> int:
    """Visible NVIDIA GPUs, counted without importing TensorFlow (which would hold them)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # what this process may use, not what the host has
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(list(Path("/proc/driver/nvidia/gpus").glob("*")))


def auto_workers() -> int:
    """`search.n_workers: auto`. On CPU one worker per 2 cores: measured on 2 cores, two
    workers of one thread each finished trials no faster than one worker of two threads
    (docs/benchmarks.md), so only machines with cores to spare gain. On a GPU two workers per
    GPU, so that one trial's input pipeline and logging overlap another's kernels."""
    gpus = _gpus()
    return 2 * gpus if gpus else max(1, cores() // 2)


def n_workers(cfg: Config) -> int:
    return auto_workers() if cfg.search.n_workers == "auto" else int(cfg.search.n_workers)


def run_study(cfg: Config, reporter: Reporter | None = None) -> SweepSummary:
    """`sweep(cfg)` with `search.n_workers` workers; returns the study's summary, taken and
    its best model registered once every worker has stopped."""
    n = n_workers(cfg)
    if n == 1:
        return sweep(cfg, reporter)
    threads = cfg.trainer.threads or max(1, cores() // n)
    cfg = with_overrides(cfg, {"trainer.threads": threads, "search.n_workers": 1})
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # inherited by every trial
    logs = Path(cfg.tracking.dir) / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    procs = []
    for k in range(1, n):
        lifeline, keep = ctx.Pipe(duplex=False)
        log_file = logs / f"{cfg.search.study_name}-{k}.log"
        proc = ctx.Process(
            target=_worker_main,
            args=(to_dict(cfg), k, lifeline, str(log_file), os.getcwd()),
            name=f"worker-{k}",
        )
        proc.start()
        lifeline.close()
        procs.append((proc, keep))
    log.info("%d workers of %d thread(s) each (this one and %d more; their logs: %s)", n, threads,
             n - 1, logs)  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _passing_on(procs))
    try:
        out = sweep(cfg, reporter, register=False)
        _join(procs)
    except BaseException as e:  # Ctrl-C, SIGTERM, or a failure here: no worker goes on alone
        _stop(procs, signal.SIGINT if type(e) is KeyboardInterrupt else signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return conclude(cfg, out.stopped)


def _passing_on(procs: list[tuple[Any, Any]]) -> Any:
    """A SIGTERM handler: the workers get it at once too (a terminal's Ctrl-C reaches them by
    itself; a service manager's SIGTERM is sent to this process only), then this process
    stops as on Ctrl-C."""

    def handler(signum: int, frame: Any) -> None:
        _signal_all(procs, signal.SIGTERM)
        interrupts.stop_on(signum, frame)

    return handler


def _signal_all(procs: list[tuple[Any, Any]], sig: int) -> None:
    for proc, _ in procs:
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)


def _join(procs: list[tuple[Any, Any]]) -> None:
    for proc, _ in procs:
        proc.join()
        if proc.exitcode:
            log.warning("%s ended with exit code %s; see its log", proc.name, proc.exitcode)


def _stop(procs: list[tuple[Any, Any]], sig: int) -> None:
    """Every worker gets `sig` (one that had it already ignores a second: see _first_only),
    fails its trial and closes its run; after a shared grace period the rest are killed."""
    _signal_all(procs, sig)
    deadline = time.monotonic() + 3 * trial_process.STOP_GRACE_S  # its trial's grace first
    for proc, _ in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# --------------------------------------------------------------------------- worker side


def _first_only(signum: int, frame: Any) -> None:
    """In a worker: the first SIGINT or SIGTERM stops it as Ctrl-C does; any later one is
    ignored, so that it cannot cut short the clean-up the first one started (failing its
    trial, closing its runs, queueing the trial again)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    interrupts.stop_on(signum, frame)


def _worker_main(
    cfg_tree: dict[str, Any], index: int, lifeline: Any, log_file: str, cwd: str
) -> None:
    threading.Thread(target=trial_process.watch_lifeline, args=(lifeline,), daemon=True).start()
    interrupts.terminate_as_interrupt()
    signal.signal(signal.SIGINT, _first_only)
    signal.signal(signal.SIGTERM, _first_only)
    os.chdir(cwd)
    # the terminal belongs to the sweep process's live display: a worker writes to its log
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        sweep(validate(cfg_tree), NullReporter(), register=False, worker=index)
    except KeyboardInterrupt as e:
        sys.exit(interrupts.exit_code(e))
