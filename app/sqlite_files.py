"""SQLite files in the state directory (catalog, policy, tokens): opened the one safe way.

gunicorn starts its workers together, and switching a new database to WAL or creating
its tables answers "database is locked" at once, without waiting, to a second process
doing the same: a worker then fails to boot. So the set-up of a connection runs under a
lock file in the state directory, one process at a time, and WAL is switched on only if
the file is not in WAL mode already.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

SETUP_LOCK = "setup.lock"


def open_sqlite(path: Path, *, schema: str = "", synchronous: str = "NORMAL", mode: int | None = None,
                shared: bool = False, timeout: float = 60) -> sqlite3.Connection:
    """A connection in WAL mode to ``path`` with ``schema`` in place.

    ``mode`` creates a new file with those permissions (0600 for secrets); ``shared``
    lets the connection be used from several threads (the caller serialises its use).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / SETUP_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if mode is not None:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, mode))
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=not shared)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if schema:
            conn.executescript(schema)
    finally:
        os.close(fd)
    return conn
