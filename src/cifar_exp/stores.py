"""The databases the tool opens, Optuna's study storage and MLflow's store, checked before
anything opens them: a URL that is not a database URL, a driver that is not installed, or a
file that is not a SQLite database (SQLAlchemy would fail deep inside, and a migration tool
might try to "upgrade" it) is refused with one line, and the file is never touched. A
tracking server must answer its health check within seconds. Workers writing the same record
at once are told apart from a broken store (`created_elsewhere`)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path

from cifar_exp.config import mask
from cifar_exp.errors import UserError

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
# the packages SQLAlchemy's dialects import, and what to install for them
DRIVERS = {"postgresql": ("psycopg2", "psycopg"), "mysql": ("pymysql",)}


class StoreError(UserError):
    """A store that cannot be opened; the message is one line naming it."""


def check_sqlite_file(path: str | Path, what: str, table: str | None = None) -> None:
    """A SQLite file that exists must be a SQLite database (an empty file is a new one), and
    one with tables must hold `table` (Optuna's `studies`, MLflow's `experiments`): MLflow and
    Optuna would add theirs to any database they are given."""
    path = Path(path).expanduser()
    if not path.exists():
        return
    if not path.is_file():
        raise StoreError(f"{what} {path}: not a file")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as e:
        raise StoreError(f"{what} {path}: cannot read it ({e.strerror})") from None
    if head and head != SQLITE_HEADER:
        raise StoreError(
            f"{what} {path}: not a SQLite database; refused and left as it is (move it "
            "away, or point the tool at another store)"
        )
    if head and table and (tables := _tables(path)) and table not in tables:
        raise StoreError(
            f"{what} {path}: another program's database (tables {', '.join(tables[:5])}); "
            "refused and left as it is"
        )


def _tables(path: Path) -> list[str]:
    """The tables of a SQLite database, read without writing (empty where unreadable)."""
    import sqlite3

    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error:
        return []
    return sorted(name for (name,) in rows)


def check_url(url: str, what: str, table: str | None = None) -> str:
    """A database URL checked for its form, its driver and (SQLite) its file; returns the URL
    to use: where the URL names no driver and SQLAlchemy's default for it is not installed, an
    installed one (psycopg2 for postgresql://, as the `postgres` extra installs)."""
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except NoSuchModuleError:  # (an ArgumentError too)
        raise StoreError(
            f"{what} {mask(url)}: unknown database kind {url.split(':')[0]!r}"
        ) from None
    except (ArgumentError, ValueError):
        raise StoreError(
            f"{what} {mask(url)}: not a database URL (e.g. sqlite:///mlruns/optuna.db or "
            "postgresql+psycopg2://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):  # `sqlite://`, `sqlite:///`
            raise StoreError(
                f"{what} {url}: an in-memory database, gone when the process ends; name a "
                "file (sqlite:///path/to/file.db)"
            )
        check_sqlite_file(parsed.database, what, table)
        return url
    try:
        dialect.import_dbapi()
        return url
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
    if "+" not in parsed.drivername:
        for module in DRIVERS.get(backend, ()):
            if importlib.util.find_spec(module) is not None:
                return parsed.set(drivername=f"{backend}+{module}").render_as_string(
                    hide_password=False
                )
    extra = " (pip install 'cifar-exp[postgres]')" if backend == "postgresql" else ""
    raise StoreError(f"{what} {mask(url)}: needs the Python package {missing!r}{extra}")


# MLflow retries an unreachable server 7 times with backoff factor 2 (minutes of silence);
# a user waits this long at most, and is told what for.
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_ANSWERED: set[str] = set()  # tracking servers that answered their health check here
PROBE_DELAYS = (1, 2, 4)  # seconds between tries of a tracking server that does not answer


class TrackingUnavailable(UserError):
    """The MLflow store or server cannot be used; the message is one line naming it."""


def check_tracking(uri: str) -> str:
    """The tracking URI, checked before MLflow opens it: a SQLite store must be a database
    (never migrated or "repaired" if it is not), a server must answer within seconds."""
    if uri.startswith(("http://", "https://")):
        for key, value in HTTP_RETRIES.items():
            os.environ.setdefault(key, value)
        if uri not in _ANSWERED:  # once per process: every run's set-up passes here
            _probe(uri)
            _ANSWERED.add(uri)
        return uri
    database = uri.split(":", 1)[0].split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql")
    try:
        return check_url(uri, "MLflow store", "experiments") if database else uri
    except StoreError as e:
        raise TrackingUnavailable(str(e)) from None


def _probe(uri: str) -> None:
    """Wait (a bounded, announced wait) for the tracking server to answer its health check."""
    import requests

    reason = ""
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or (
        os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
    )
    for delay in (*PROBE_DELAYS, None):
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5, verify=verify)
            return
        except requests.exceptions.SSLError:
            return  # it answered: TLS is MLflow's to settle, with its own settings
        except (requests.ConnectionError, requests.Timeout) as e:
            errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(e))
            reason = errno.group(1).strip() if errno else type(e).__name__
        if delay is not None:
            log.warning(
                "waiting for the MLflow server at %s (%s); retrying in %d s",
                mask(uri),
                reason,
                delay,
            )
            time.sleep(delay)
    raise TrackingUnavailable(
        f"MLflow server {mask(uri)} unreachable after {len(PROBE_DELAYS) + 1} tries ({reason})"
    )


def created_elsewhere(e: Exception) -> bool:
    """Whether a store refused a write because another process had just made the same record.
    MLflow looks a record up and then inserts it (an experiment by name, a registered model,
    an experiment's datasets), so of workers doing so at the same moment all but one get a
    unique-key error: RESOURCE_ALREADY_EXISTS, or BAD_REQUEST quoting the database."""
    if getattr(e, "error_code", None) == "RESOURCE_ALREADY_EXISTS":
        return True
    text = str(e).lower()  # PostgreSQL, SQLite, MySQL
    return any(s in text for s in ("duplicate key", "unique constraint", "duplicate entry"))
