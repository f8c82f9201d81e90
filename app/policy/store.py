"""The durable policy records: project statuses (PEP 792) and the removals of published files.

Unlike the catalog database, nothing here can be derived from the package files, so it
lives in a file of its own (``policy.sqlite3`` in the state directory) that survives a
catalog rebuild. ``PolicyStore`` is the interface the app uses; ``SQLitePolicyStore`` and
``PostgresPolicyStore`` (with ``database_url``: the database every node shares) implement it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..settings import Settings
from ..sqlite_files import open_sqlite

FILENAME = "policy.sqlite3"
STATUSES = ("active", "archived", "deprecated", "quarantined")

SCHEMA = """
CREATE TABLE IF NOT EXISTS project_status(
    project TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT NOT NULL,
    changed_by TEXT NOT NULL, changed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS removals(
    filename TEXT NOT NULL, sha256 TEXT NOT NULL, removed_by TEXT NOT NULL, removed_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS removals_filename ON removals(filename);
"""


@dataclass(frozen=True, slots=True)
class ProjectStatus:
    """A project's PEP 792 status marker and its free-text reason ("" for none)."""

    status: str = "active"
    reason: str = ""

    @property
    def refuses_uploads(self) -> bool:
        return self.status in ("archived", "quarantined")

    @property
    def hides_files(self) -> bool:
        return self.status == "quarantined"


ACTIVE = ProjectStatus()


@dataclass(frozen=True, slots=True)
class Removal:
    """A published file that was removed: its name, the sha256 it had, who removed it and when."""

    filename: str
    sha256: str
    removed_by: str
    removed_at: float


class PolicyStore(Protocol):
    """What the app asks of the durable policy records."""

    def status(self, project: str) -> ProjectStatus: ...

    def set_status(self, project: str, status: ProjectStatus, by: str) -> None: ...

    def record_removal(self, filename: str, sha256: str, by: str) -> None: ...

    def removals(self, filename: str) -> list[Removal]: ...

    def close(self) -> None: ...


# The statements both engines run (SQLite and PostgreSQL take the same SQL here).
SET_STATUS = ("INSERT INTO project_status VALUES (?, ?, ?, ?, ?) ON CONFLICT(project) DO UPDATE SET "
              "status=excluded.status, reason=excluded.reason, changed_by=excluded.changed_by, "
              "changed_at=excluded.changed_at")
SELECT_STATUSES = "SELECT project, status, reason FROM project_status"


def check_status(status: ProjectStatus) -> None:
    if status.status not in STATUSES:
        raise ValueError(f"unknown status {status.status!r}: use {', '.join(STATUSES)}")


def statuses_of(rows) -> dict[str, ProjectStatus]:
    """The statuses worth keeping: anything but a plain "active" without a reason."""
    return {p: ProjectStatus(s, r) for p, s, r in rows if s != "active" or r}


class StatusesInMemory:
    """Statuses are read on every page and upload: each store keeps them in memory."""

    def _fresh_statuses(self) -> dict[str, ProjectStatus]:
        raise NotImplementedError

    def status(self, project: str) -> ProjectStatus:
        return self._fresh_statuses().get(project, ACTIVE)


class SQLitePolicyStore(StatusesInMemory):
    """The policy records in a small SQLite file every worker shares.

    Statuses are read on every page and upload, so they are kept in memory and reloaded
    only when another connection changed the file (SQLite's ``data_version``).
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # Statuses and removals cannot be learnt again from the files: each write survives a crash.
        self._db = open_sqlite(path, schema=SCHEMA, synchronous="FULL", shared=True, timeout=30)
        self._version: int | None = None
        self._statuses: dict[str, ProjectStatus] = {}

    def _fresh_statuses(self) -> dict[str, ProjectStatus]:
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._statuses = statuses_of(self._db.execute(SELECT_STATUSES).fetchall())
                self._version = version
            return self._statuses

    def set_status(self, project: str, status: ProjectStatus, by: str) -> None:
        check_status(status)
        with self._lock:
            self._db.execute(
                SET_STATUS, (project, status.status, status.reason, by, time.time()))
            self._version = None  # our own writes do not move data_version for this connection

    def record_removal(self, filename: str, sha256: str, by: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO removals VALUES (?, ?, ?, ?)", (filename, sha256, by, time.time()))

    def removals(self, filename: str) -> list[Removal]:
        with self._lock:
            rows = self._db.execute("SELECT filename, sha256, removed_by, removed_at FROM removals "
                                    "WHERE filename = ? ORDER BY removed_at", (filename,)).fetchall()
        return [Removal(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresPolicyStore(StatusesInMemory):
    """The policy records in the PostgreSQL database every node shares.

    Statuses are read on every page: they are kept in memory and reloaded at most every
    ``REFRESH`` seconds (and at once after this process's own change), so pages never
    wait for the database, and keep answering while it is down.
    """

    REFRESH = 1.0

    def __init__(self, url: str):
        from ..catalog.postgres import create_schema

        self.url = url
        self._lock = threading.Lock()
        self._conn = None
        self._loaded = 0.0
        self._statuses: dict[str, ProjectStatus] = {}
        create_schema(self._connection(), SCHEMA.replace(" REAL", " DOUBLE PRECISION"))

    def _connection(self):
        from ..databases import PgConnection

        if self._conn is None or not self._conn.usable:
            self._conn = PgConnection(self.url)
        return self._conn

    def _fresh_statuses(self) -> dict[str, ProjectStatus]:
        if time.monotonic() - self._loaded > self.REFRESH and self._lock.acquire(blocking=False):
            try:
                self._statuses = statuses_of(self._connection().execute(SELECT_STATUSES).fetchall())
            except Exception:  # the database is down: the statuses we had stand
                pass
            finally:
                self._loaded = time.monotonic()
                self._lock.release()
        return self._statuses

    def set_status(self, project: str, status: ProjectStatus, by: str) -> None:
        check_status(status)
        with self._lock:
            self._connection().execute(
                SET_STATUS, (project, status.status, status.reason, by, time.time()))
            self._loaded = 0.0

    def record_removal(self, filename: str, sha256: str, by: str) -> None:
        with self._lock:
            self._connection().execute("INSERT INTO removals VALUES (?, ?, ?, ?)", (filename, sha256, by, time.time()))

    def removals(self, filename: str) -> list[Removal]:
        with self._lock:
            rows = self._connection().execute("SELECT filename, sha256, removed_by, removed_at FROM removals "
                                              "WHERE filename = ? ORDER BY removed_at", (filename,)).fetchall()
        return [Removal(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def policy_store_for(settings: Settings) -> PolicyStore:
    """The policy store of an index: its PostgreSQL database, or ``policy.sqlite3`` in its state directory."""
    from ..databases import uses_postgres

    if uses_postgres(settings):
        return PostgresPolicyStore(settings.database_url)
    return SQLitePolicyStore(Path(settings.state_path) / FILENAME)
