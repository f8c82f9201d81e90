"""The catalog in SQLite files in the state directory (the default: one machine, no setup).

``catalog.sqlite3`` holds what can be derived from the files; it is rebuilt by a sweep if
deleted, and a corrupt one is moved aside (``catalog.sqlite3.corrupt-<time>``) and
rebuilt, loudly, instead of failing every start. ``durable.sqlite3`` holds the yanks and
upload records, written with ``synchronous=FULL``; it is attached to every catalog
connection as ``durable`` so that one query joins files and yanks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from .database import CatalogDatabase

log = logging.getLogger("wharf.catalog")

FILENAME = "catalog.sqlite3"
DURABLE_FILENAME = "durable.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    root TEXT NOT NULL, relpath TEXT NOT NULL, dir TEXT NOT NULL, filename TEXT NOT NULL,
    project TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, packagetype TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    upload_time REAL NOT NULL, hashes TEXT NOT NULL, requires_python TEXT,
    metadata_sha256 TEXT, summary TEXT,
    PRIMARY KEY (root, relpath));
CREATE INDEX IF NOT EXISTS files_project ON files(project);
CREATE INDEX IF NOT EXISTS files_dir ON files(root, dir);
CREATE INDEX IF NOT EXISTS files_filename ON files(filename);
CREATE INDEX IF NOT EXISTS files_upload_time ON files(upload_time);
CREATE TABLE IF NOT EXISTS changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

DURABLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS durable.yanks(filename TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS durable.uploads(
    filename TEXT PRIMARY KEY, sha256 TEXT NOT NULL, uploaded_by TEXT NOT NULL, uploaded_at REAL NOT NULL);
"""

# SQLite's words for a file that is not (or no longer) a database.
CORRUPT = ("file is not a database", "database disk image is malformed")


def is_corrupt(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(words in str(exc) for words in CORRUPT)


class _Connection(sqlite3.Connection):
    """A connection that remembers which file (inode) it opened."""

    inode = 0


class SQLiteCatalogDatabase(CatalogDatabase):
    """The catalog in ``catalog.sqlite3``, the durable records in ``durable.sqlite3``."""

    name = FILENAME

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.path = state_dir / FILENAME
        self.durable_path = state_dir / DURABLE_FILENAME
        self._lock_fd: int | None = None

    @contextlib.contextmanager
    def _setup_lock(self):
        # Switching a new database to WAL and creating its tables can answer "database is
        # locked" at once, without waiting, while another process does the same (gunicorn
        # starts its workers together): one at a time.
        fd = os.open(self.state_dir / "setup.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, factory=_Connection)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            conn.execute("ATTACH DATABASE ? AS durable", (str(self.durable_path),))
            if conn.execute("PRAGMA durable.journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA durable.journal_mode=WAL")
            conn.execute("PRAGMA durable.synchronous=FULL")  # a yank survives a power cut
            conn.executescript(DURABLE_SCHEMA)
            self._adopt_old_yanks(conn)
        except BaseException:
            conn.close()
            raise
        conn.inode = os.stat(self.path).st_ino
        return conn

    @staticmethod
    def _adopt_old_yanks(conn: sqlite3.Connection) -> None:
        """Catalogs before the split kept yanks in ``main``: move them to the durable file."""
        if conn.execute("SELECT 1 FROM main.sqlite_master WHERE name = 'yanks'").fetchone():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR IGNORE INTO durable.yanks SELECT filename, reason FROM main.yanks")
            conn.execute("DROP TABLE main.yanks")
            conn.execute("COMMIT")
            log.info("moved the yanks from %s into %s", FILENAME, DURABLE_FILENAME)

    def connect(self) -> sqlite3.Connection:
        with self._setup_lock():
            try:
                return self._open()
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc) or not self._move_aside(exc):
                    raise
            return self._open()

    def _move_aside(self, exc: BaseException, inode: int | None = None) -> bool:
        """Rename a corrupt catalog file (the one of ``inode``, if given) out of the way."""
        try:
            if inode is not None and os.stat(self.path).st_ino != inode:
                return True  # another process moved it already
        except FileNotFoundError:
            return True
        aside = self.path.with_name(f"{FILENAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
        log.error("the catalog database %s was unreadable (%s): moved it to %s and rebuilding it from the "
                  "packages; yanks and upload records are kept in %s", self.path, exc, aside.name, DURABLE_FILENAME)
        return True

    def recover(self, exc: BaseException) -> bool:
        if not is_corrupt(exc):
            return False
        with self._setup_lock():
            inode = None
            with contextlib.suppress(OSError):
                inode = os.stat(self.path).st_ino
            return self._move_aside(exc, inode)

    @contextlib.contextmanager
    def transaction(self, conn: sqlite3.Connection):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (a full disk) may leave the transaction open; the next BEGIN
            # on this connection would then fail for good.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def usable(self, conn: sqlite3.Connection) -> bool:
        """False once the file was deleted or replaced under the connection."""
        try:
            return os.stat(self.path).st_ino == conn.inode
        except FileNotFoundError:
            return False

    def summaries(self, conn, roots_sql: str, roots) -> Iterator[tuple[str, str, str]]:
        # SQLite takes the bare columns from the row that holds the max().
        for project, name, summary, _newest in conn.execute(
                f"SELECT project, name, coalesce(summary, ''), max(upload_time) FROM files f WHERE {roots_sql}"
                " GROUP BY project ORDER BY project", roots):
            yield project, name, summary

    def try_lock_scanner(self) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(self.state_dir / "scan.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def holds_scanner_lock(self) -> bool:
        return self._lock_fd is not None

    def release_scanner(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def changed(self, conn: sqlite3.Connection, seen):
        # PRAGMA data_version changes only when another connection commits, and costs no
        # table read.
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        return version != seen, version

    def close(self) -> None:
        self.release_scanner()
