"""Which engine keeps the index's state, and how Wharf talks to PostgreSQL when it is that one.

``database_url`` empty: SQLite files in the state directory (the zero-setup default).
``postgresql://...``: one PostgreSQL database that any number of app nodes share; the
catalog, the durable records (yanks, uploads, statuses, removals) and the tokens all live
there. ``PgConnection`` lets the same SQL (``?`` placeholders) run on both engines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from .settings import Settings

# Seconds to wait for PostgreSQL to accept a connection before a write is refused (503).
CONNECT_TIMEOUT = 3


class DatabaseUnavailable(Exception):
    """The database refused a write or could not be reached: answer 503, try again later."""


def uses_postgres(settings: Settings) -> bool:
    return settings.database_url.startswith(("postgresql://", "postgres://"))


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the database is not there right now" (not a bug)."""
    import sqlite3

    errors: list[type[BaseException]] = [sqlite3.OperationalError, DatabaseUnavailable]
    with contextlib.suppress(ImportError):
        import psycopg

        errors.append(psycopg.OperationalError)
    return tuple(errors)


class PgConnection:
    """A psycopg connection that takes SQLite's ``?`` placeholders (autocommit outside ``transaction``)."""

    def __init__(self, url: str):
        import psycopg

        try:
            self.raw = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot reach PostgreSQL: {exc}") from exc

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    @contextlib.contextmanager
    def _gone(self) -> Iterator[None]:
        """A connection PostgreSQL dropped (a restart, a failover) is an outage, not a bug."""
        import psycopg

        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise DatabaseUnavailable(f"PostgreSQL went away: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()):
        with self._gone():
            return self.raw.execute(self._sql(sql), tuple(params) or None)

    def executemany(self, sql: str, rows) -> None:
        rows = list(rows)
        if not rows:
            return
        with self._gone(), self.raw.cursor() as cursor:
            cursor.executemany(self._sql(sql), [tuple(r) for r in rows])

    def executescript(self, script: str) -> None:
        with self._gone():
            self.raw.execute(script)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        with self._gone(), self.raw.transaction():
            yield self

    @property
    def usable(self) -> bool:
        return not self.raw.closed and not self.raw.broken

    def close(self) -> None:
        self.raw.close()
