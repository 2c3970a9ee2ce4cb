"""One study trial trained in a child process, so a long sweep's memory stays flat.

Keras and TensorFlow keep memory from every model built in a process even after
`clear_session()` (about 45 MiB per trial here; keras-team/keras#17458, #20552), so a sweep
that trains every trial in its own process grows without bound. With `search.isolate_trials`
the sweep process keeps everything Optuna (the trial, its heartbeat, pruning decisions) and a
child process does the training and its MLflow run. They talk over a pipe:

    child -> parent   ("run", run_id)          the MLflow run exists (the trial links to it)
                      ("epoch", n, logs)       an epoch ended; the parent answers prune or not
                      ("batch", n, done, total) batches done in epoch n (a few a second)
                      ("log", level, name, msg) a log record, shown by the sweep's handler
                      ("done", result)         the TrainResult, without the model
                      ("error", "Type: msg")   the training raised

The child dies with its parent: a thread blocks on a lifeline pipe whose other end only the
parent holds, and exits the child at once when the parent is gone (even after a SIGKILL), so
no orphan keeps training a trial that the study has already failed and re-queued.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cifar_exp import interrupts
from cifar_exp.interrupts import Terminated

if TYPE_CHECKING:
    from cifar_exp.train import TrainResult

log = logging.getLogger(__name__)

# modules a fresh trial process needs; a forkserver imports them once for all trials
PRELOAD = ["cifar_exp._preload"]
STOP_GRACE_S = 20.0  # a child interrupted (Ctrl-C, SIGTERM) gets this long to close its run


class TrialError(RuntimeError):
    """The training in the trial process raised; the message is the child's `Type: message`."""


def _context() -> Any:
    """forkserver where the platform has it (each trial forks from a process that has already
    imported TensorFlow, saving seconds per trial), else spawn. Never plain fork: the sweep
    process runs threads (Optuna's heartbeat, TensorFlow's pools)."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


def run_trial(
    cfg_tree: dict[str, Any],
    on_epoch: Callable[[int, dict[str, float]], bool],
    *,
    on_run: Callable[[str], None],
    close_run: Callable[[str, str, str], None],
    on_batch: Callable[[int, int, int], None] | None = None,
    **train_kwargs: Any,
) -> TrainResult:
    """Train `cfg_tree` (a plain config) with `runs.train_tracked(**train_kwargs)` in a
    child process; returns its `TrainResult` (with `model` None: the model stays there).

    `on_epoch(epoch, logs)` runs here for every epoch and returns True to prune; `on_run` gets
    the MLflow run id as soon as it exists; `close_run(run_id, status, reason)` ends a run the
    child could not end itself (it crashed or had to be killed); `on_batch(epoch, done,
    batches)` hears of the progress within an epoch. The child's log records are logged here,
    so that they appear above the sweep's live display rather than through it.
    """
    ctx = _context()
    conn, child_conn = ctx.Pipe()
    lifeline_r, lifeline_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child_main,
        args=(
            child_conn,
            lifeline_r,
            cfg_tree,
            train_kwargs,
            os.getcwd(),
            dict(os.environ),
            on_batch is not None,
        ),
        name="cifar-exp-trial",
    )
    proc.start()
    child_conn.close()
    lifeline_r.close()
    run_id: str | None = None
    finished = False
    try:
        while True:
            interrupts.checkpoint()  # one swallowed while waiting: the child is stopped too
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # closed, or reset by a killed child
                proc.join(10)
                interrupts.checkpoint()  # a Ctrl-C stopped the child: interrupted, not failed
                raise TrialError(
                    f"trial process died (exit code {proc.exitcode}) before finishing"
                ) from None
            kind = msg[0]
            if kind == "run":
                run_id = msg[1]
                on_run(run_id)
            elif kind == "epoch":
                prune = bool(on_epoch(msg[1], msg[2]))
                with contextlib.suppress(OSError):  # it died meanwhile: recv will say so
                    conn.send(prune)
            elif kind == "batch":
                if on_batch is not None:
                    on_batch(msg[1], msg[2], msg[3])
            elif kind == "log":
                logging.getLogger(msg[2]).log(msg[1], "%s", msg[3])
            elif kind == "done":
                finished = True
                return msg[1]
            elif kind == "error":
                finished = True
                raise TrialError(msg[1])
    except KeyboardInterrupt as e:
        stop(proc, interrupt=signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
        if run_id:
            close_run(run_id, "KILLED", interrupts.reason(e))
        raise
    except BaseException as e:
        stop(proc)
        if run_id and not finished:
            close_run(run_id, "FAILED", str(e)[:5000])
        raise
    finally:
        proc.join(STOP_GRACE_S)
        stop(proc)
        conn.close()
        lifeline_w.close()


def stop(proc: Any, interrupt: int | None = None, grace: float = STOP_GRACE_S) -> None:
    """Pass an interruption (SIGINT or SIGTERM) on to the child, let it close its run, then
    make sure it is gone."""
    if not proc.is_alive():
        return
    if interrupt is not None:
        try:  # Ctrl-C in a terminal already reached it; a signal sent to the sweep alone not
            os.kill(proc.pid, interrupt)
        except ProcessLookupError:
            return
        proc.join(grace)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


# --------------------------------------------------------------------------- child side


def watch_lifeline(lifeline: Any) -> None:
    """In a child process: exit at once when the process that started it is gone (even killed
    with SIGKILL), which closes the write end of `lifeline`, so no orphan trains on."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()  # nothing is ever sent: this returns only with EOF
    os._exit(137)


class _PipeHandler(logging.Handler):
    """Sends each log record's level, logger name and message to the sweep process."""

    def __init__(self, send: Callable[[tuple], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(("log", record.levelno, record.name, self.format(record)))
        except Exception:
            self.handleError(record)


def _child_main(
    conn: Any,
    lifeline: Any,
    cfg_tree: dict[str, Any],
    kwargs: dict,
    cwd: str,
    env: dict,
    batches: bool = False,
) -> None:
    threading.Thread(target=watch_lifeline, args=(lifeline,), daemon=True).start()
    from cifar_exp.interrupts import terminate_as_interrupt

    terminate_as_interrupt()  # SIGTERM from the sweep: close the run KILLED, as on Ctrl-C
    # a forkserver child starts with the server's cwd and environment, not the sweep's today
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    from cifar_exp import logs

    logs.import_tensorflow_quietly()
    lock = threading.Lock()  # batch ends and log records may come from Keras's threads

    def send(msg: tuple) -> None:
        with lock:
            conn.send(msg)

    logs.setup(logging.WARNING, rich=False)
    logging.getLogger().handlers = [_PipeHandler(send)]
    try:
        from cifar_exp import runs
        from cifar_exp.config import validate
        from cifar_exp.train import EpochHook

        def ask_the_sweep(epoch: int, epoch_logs: dict[str, float]) -> bool:
            """Send the epoch's logs to the sweep process; it answers whether to prune."""
            send(("epoch", epoch, epoch_logs))
            return bool(conn.recv())

        def tell_batch(epoch: int, done: int, total: int) -> None:
            send(("batch", epoch, done, total))

        result = runs.train_tracked(
            validate(cfg_tree),
            callbacks=[EpochHook(ask_the_sweep, tell_batch if batches else None)],
            on_run=lambda run_id: send(("run", run_id)),
            **kwargs,
        )
        send(("done", dataclasses.replace(result, model=None)))
    except KeyboardInterrupt as e:  # the run is already marked KILLED; the sweep reports it
        sys.exit(interrupts.exit_code(e))
    except Exception as e:
        send(("error", f"{type(e).__name__}: {e}"[:2000]))
    finally:
        conn.close()
