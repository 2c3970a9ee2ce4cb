"""The study storage: its URL, heartbeats and re-queuing of dead workers' trials, a lock
for study set-up shared by workers, and retries while the database is unreachable.

It knows Optuna and the database, not MLflow: what else must happen to a dead worker's trial
(closing its MLflow run) comes in as a callback."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

from cifar_exp import interrupts
from cifar_exp.config import Config, SearchConfig, mask
from cifar_exp.errors import UserError
from cifar_exp.stores import StoreError, check_url

log = logging.getLogger(__name__)


def storage_url(cfg: Config, *, existing: bool = False) -> str:
    """`search.storage`, else an embedded SQLite file beside the MLflow store; checked before
    anything opens it (see `stores.check_url`: the form, the driver, a SQLite file's header).
    With `existing` (a command that reads a study), a SQLite file that is not there is an
    error, and neither it nor its folder is made."""
    root = Path(cfg.tracking.dir).resolve()
    url = str(cfg.search.storage or f"sqlite:///{root / 'optuna.db'}")
    try:
        url = check_url(url, "study storage", "studies")
    except StoreError as e:
        raise StorageUnavailable(str(e)) from None
    from sqlalchemy.engine import make_url

    path = Path(make_url(url).database or "") if url.startswith("sqlite:///") else None
    if existing and path is not None and not path.is_file():
        raise StorageUnavailable(f"study storage {path}: no such file; run `sweep` first")
    if not cfg.search.storage:
        root.mkdir(parents=True, exist_ok=True)
    return url


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int | None) -> bool:
    """Queue a trial that did not finish (its worker died, or it was interrupted) to run
    again with its parameters, up to `max_retry` times, None for no limit (Optuna's retry
    callback, which records `retry_history`); returns whether it was queued. What the failed
    attempt recorded (its run, its failure reason) is not carried over to the retry; where
    its parameters came from (a warm start) is."""
    before = len(study.get_trials(deepcopy=False))
    fresh = copy.copy(trial)
    fresh.user_attrs = {k: v for k, v in trial.user_attrs.items() if k == "warm_start_from"}
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, fresh)
    return len(study.get_trials(deepcopy=False)) > before


def requeue_interrupted(study: optuna.Study, number: int | None) -> None:
    """The trial a Ctrl-C (or SIGTERM) stopped runs again, first, when the study resumes,
    however often it was stopped before: its parameters are queued as a dead worker's are, so
    its minutes are not lost to a new draw of the sampler."""
    if number is None:
        return
    with contextlib.suppress(Exception):  # the interrupt must not be lost to a storage error
        trial = study.trials[number]
        # only a trial the interrupt failed: not one that failed on its own before it
        stopped = trial.user_attrs.get("fail_reason") in interrupts.REASONS
        # every time: a stop the user asked for is not the configuration's failure
        if trial.state == optuna.trial.TrialState.FAIL and stopped and requeue(study, trial, None):
            log.warning(
                "trial %d was interrupted; its parameters run first when the study resumes",
                number,
            )


def make_storage(
    search: SearchConfig,
    url: str,
    on_stale: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """RDB storage with heartbeats: a trial whose process died is failed, `on_stale(trial)`
    is called (the sweep closes its MLflow run there), and the trial is re-queued (up to
    `search.max_retry` times)."""

    def stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(trial)
        # attempts an interrupt stopped (`requeue_interrupted`) do not count against the limit
        history = trial.system_attrs.get("retry_history", [])  # what Optuna's callback keeps
        trials = study.get_trials(deepcopy=False)
        stopped = sum(
            trials[n].user_attrs.get("fail_reason") in interrupts.REASONS
            for n in history
            if n < len(trials)
        )
        if requeue(study, trial, search.max_retry + stopped):
            log.warning("trial %d lost its worker; failed and re-queued", trial.number)
        else:
            log.warning(
                "trial %d lost its worker; failed, not re-queued (search.max_retry=%d)",
                trial.number,
                search.max_retry,
            )

    # SQLite waits for the other processes' locks; a server database drops dead connections
    # (a restarted server) instead of failing on them
    engine_kwargs = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    return retrying(
        lambda: optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=search.heartbeat_interval,
            heartbeat_stale_trial_callback=stale,
        ),
        url,
    )


LOCK_KEY = 0x0C1FA5  # advisory lock id for "this tool's study set-up" on a server database


@contextmanager
def study_lock(url: str) -> Iterator[None]:
    """Serializes study set-up (Optuna's tables, the study, its MLflow parent run) between
    workers that start together: an advisory lock on PostgreSQL or MySQL, a file lock on
    SQLite, nothing for other storages."""
    if url.startswith("sqlite:///"):
        import fcntl

        with _open_lock_file(url) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say_waiting(f"{fh.name}, held by another process")
                fcntl.flock(fh, fcntl.LOCK_EX)
            yield
        return
    if not url.startswith(("postgresql", "mysql")):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try_take, take, give = (
        ("SELECT pg_try_advisory_lock(:k)", "SELECT pg_advisory_lock(:k)",
         "SELECT pg_advisory_unlock(:k)")
        if url.startswith("postgresql")
        else ("SELECT GET_LOCK(CAST(:k AS CHAR), 0)", "SELECT GET_LOCK(CAST(:k AS CHAR), 600)",
              "SELECT RELEASE_LOCK(CAST(:k AS CHAR))")
    )  # fmt: skip
    conn = retrying(engine.connect, url)
    try:
        if not conn.execute(sqlalchemy.text(try_take), {"k": LOCK_KEY}).scalar():
            _say_waiting(f"database advisory lock {LOCK_KEY}, held by another worker")
            conn.execute(sqlalchemy.text(take), {"k": LOCK_KEY})
        yield
        conn.execute(sqlalchemy.text(give), {"k": LOCK_KEY})
    finally:
        conn.close()
        engine.dispose()


def _say_waiting(lock: str) -> None:
    log.info(
        "waiting for the study lock (%s: setting up, confirming or registering a study)",
        lock,
    )


def _open_lock_file(url: str) -> Any:
    """The set-up lock file beside a SQLite study file, its folder created as the default
    location's is; a folder that cannot be made or written is one clear error."""
    path = Path(url.removeprefix("sqlite:///"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(f"{path}.lock", "w")  # the caller's `with` closes it
    except OSError as e:
        raise StorageUnavailable(
            f"study storage {mask(url)}: cannot write in {path.parent} ({e.strerror})"
        ) from None


class StorageUnavailable(UserError):
    """The study storage could not be reached, even after retries."""


RETRY_DELAYS = (1, 2, 4, 8, 16, 30)  # seconds between tries: about a minute in all


def retrying(action: Callable[[], Any], url: str) -> Any:
    """`action()`, retried with backoff while the storage database is unreachable."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    env = os.environ.get("CIFAR_EXP_RETRY_DELAYS")  # e.g. "0.5,1" (tests, impatient users)
    delays = tuple(float(d) for d in env.split(",")) if env else RETRY_DELAYS
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            return action()
        except (
            OperationalError,
            DBAPIError,
            optuna.exceptions.StorageInternalError,
            RuntimeError,
        ) as e:
            # workers starting together race to create Optuna's tables: the losers see a
            # half-made schema for a moment, which a retry resolves
            if isinstance(e, RuntimeError) and "table schema" not in str(e):
                raise
            cause = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) else e
            reason = str(getattr(cause, "orig", cause) or cause).strip().splitlines()[0]
            if delay is None:
                raise StorageUnavailable(
                    f"study storage {mask(url)} unreachable after {attempt} tries ({reason})"
                ) from None
            log.warning("study storage unreachable (%s); retrying in %g s", reason, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
