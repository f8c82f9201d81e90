"""The catalog in PostgreSQL: one database that any number of app nodes share.

Each node keeps serving from its workers' in-memory views; what changes reaches them
through the ``changes`` journal, which every worker polls each ``scan_interval`` (an
index range read that returns nothing most of the time). A worker that writes touches a
stamp file in its node's state directory, so the node's other workers sync before their
next request without asking the database. One process among all nodes scans the storage:
the holder of a session-level advisory lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ..databases import DatabaseUnavailable, PgConnection
from .database import CatalogDatabase

log = logging.getLogger("wharf.catalog")

STAMP = "catalog.changed"
# pg_advisory_lock keys: the scanner's, the one that serializes schema creation, and the
# one every catalog write holds until it commits (the journal's order).
SCANNER_LOCK = 0x77686172
SCHEMA_LOCK = 0x77686173
JOURNAL_LOCK = 0x77686174

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    root TEXT NOT NULL, relpath TEXT NOT NULL, dir TEXT NOT NULL, filename TEXT NOT NULL,
    project TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, packagetype TEXT NOT NULL,
    size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL, inode BIGINT NOT NULL,
    upload_time DOUBLE PRECISION NOT NULL, hashes TEXT NOT NULL, requires_python TEXT,
    metadata_sha256 TEXT, summary TEXT,
    PRIMARY KEY (root, relpath));
CREATE INDEX IF NOT EXISTS files_project ON files(project);
CREATE INDEX IF NOT EXISTS files_dir ON files(root, dir);
CREATE INDEX IF NOT EXISTS files_filename ON files(filename);
CREATE INDEX IF NOT EXISTS files_upload_time ON files(upload_time);
CREATE TABLE IF NOT EXISTS changes(seq BIGSERIAL PRIMARY KEY, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS yanks(filename TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads(
    filename TEXT PRIMARY KEY, sha256 TEXT NOT NULL, uploaded_by TEXT NOT NULL,
    uploaded_at DOUBLE PRECISION NOT NULL);
"""


def create_schema(conn: PgConnection, schema: str) -> None:
    """CREATE ... IF NOT EXISTS, one process at a time (concurrent ones can collide)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
        conn.executescript(schema)


class PostgresCatalogDatabase(CatalogDatabase):
    """The catalog and the durable records in one PostgreSQL database."""

    name = "PostgreSQL"
    shared = True

    def __init__(self, url: str, state_dir: Path):
        self.url = url
        self.stamp = state_dir / STAMP
        self._lock_conn: PgConnection | None = None

    def connect(self) -> PgConnection:
        conn = PgConnection(self.url)
        try:
            create_schema(conn, SCHEMA)
        except Exception as exc:
            conn.close()
            raise DatabaseUnavailable(f"cannot set up the catalog in PostgreSQL: {exc}") from exc
        return conn

    @contextlib.contextmanager
    def transaction(self, conn: PgConnection):
        # A journal entry's seq is taken when it is inserted, not when it commits: two
        # nodes writing at once could commit 11 before 10, and a worker that read 11
        # would never look below it again. Holding one lock from the first write to the
        # commit makes seq order the commit order (writes are short: hashing and storing
        # happen before the transaction).
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(?)", (JOURNAL_LOCK,))
            yield conn

    def usable(self, conn: PgConnection) -> bool:
        return conn.usable

    def shared_secret(self, conn: PgConnection, name: str) -> str:
        key = f"secret:{name}"
        with conn.transaction():
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                         (key, secrets.token_hex(32)))
        return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def summaries(self, conn, roots_sql: str, roots) -> Iterator[tuple[str, str, str]]:
        yield from conn.execute(
            f"SELECT DISTINCT ON (project) project, name, coalesce(summary, '') FROM files f WHERE {roots_sql}"
            " ORDER BY project, upload_time DESC", roots)

    def try_lock_scanner(self) -> bool:
        if self._lock_conn is not None:
            return True
        conn = PgConnection(self.url)
        try:
            locked = conn.execute("SELECT pg_try_advisory_lock(?)", (SCANNER_LOCK,)).fetchone()[0]
        except Exception:
            conn.close()
            raise
        if not locked:
            conn.close()
            return False
        self._lock_conn = conn
        return True

    def holds_scanner_lock(self) -> bool:
        """The lock lives as long as its session: ask that session it is still there."""
        if self._lock_conn is None:
            return False
        try:
            self._lock_conn.execute("SELECT 1")
            return True
        except Exception:
            log.warning("lost the scanner lock (the PostgreSQL session ended); another node may take over")
            self.release_scanner()
            return False

    def release_scanner(self) -> None:
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                self._lock_conn.close()
            self._lock_conn = None

    def changed(self, conn: PgConnection, seen):
        # A stat of this node's stamp file: no database round trip per request.
        try:
            mark = os.stat(self.stamp).st_mtime_ns
        except FileNotFoundError:
            mark = 0
        return mark != seen, mark

    def announce(self) -> None:
        with contextlib.suppress(OSError):
            with open(self.stamp, "a"):
                pass
            os.utime(self.stamp)

    def close(self) -> None:
        self.release_scanner()
