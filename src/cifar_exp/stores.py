"""The databases the tool opens, Optuna's study storage and MLflow's store, checked before
anything opens them: a URL that is not a database URL, a driver that is not installed, or a
file that is not a SQLite database (SQLAlchemy would fail deep inside, and a migration tool
might try to "upgrade" it) is refused with one line, and the file is never touched."""

from __future__ import annotations

from pathlib import Path

from cifar_exp.config import mask
from cifar_exp.errors import UserError

SQLITE_HEADER = b"SQLite format 3\x00"
# the packages SQLAlchemy's dialects import, and what to install for them
DRIVERS = {"postgresql": ("psycopg2", "psycopg"), "mysql": ("pymysql",)}


class StoreError(UserError):
    """A store that cannot be opened; the message is one line naming it."""


def check_sqlite_file(path: str | Path, what: str) -> None:
    """A SQLite file that exists must be a SQLite database (an empty file is a new one)."""
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


def check_url(url: str, what: str) -> str:
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
        if parsed.database and parsed.database != ":memory:":
            check_sqlite_file(parsed.database, what)
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
