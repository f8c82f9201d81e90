"""The catalog's SQLite database: its schema, connections and transactions.

What is costly to learn from a file (hashes, core metadata) is kept here, keyed by
(size, mtime, inode), with the yanks and a ``changes`` journal every worker follows.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from ..sqlite_files import open_sqlite

# How many journal entries to keep; a worker further behind reloads everything.
JOURNAL_KEEP = 100_000

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
CREATE TABLE IF NOT EXISTS yanks(filename TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

FILE_COLUMNS = (
    "f.root, f.relpath, f.filename, f.project, f.name, f.version, f.packagetype, f.size,"
    " f.upload_time, f.hashes, f.requires_python, f.metadata_sha256, f.summary, y.reason"
)

def connect(state_dir: Path, db_path: Path) -> sqlite3.Connection:
    """A connection in WAL mode to a database with the schema in place (app/sqlite_files.py)."""
    return open_sqlite(db_path, schema=SCHEMA)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection):
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


def like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
