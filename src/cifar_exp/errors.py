"""The failures a user can act on: a bad input, a store or server that cannot be used, a
missing display. Every module raises its own subclass with a one-line message that names the
thing; the CLI prints it as one `error:` line and exits 2."""

import re


class UserError(Exception):
    """A failure the user can act on; the message is one line naming the thing."""


def first_line(e: BaseException) -> str:
    """An error's first line that says something: SQLAlchemy puts "(raised as a result of
    Query-invoked autoflush ...)" before the database's own words, and "(sqlite3.Operational
    Error) " in front of them."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("(raised as a result of")] or lines
    return re.sub(r"^\([\w.]+Error\) ", "", lines[0]) if lines else type(e).__name__
