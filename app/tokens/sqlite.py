"""The token store in SQLite: ``tokens.sqlite3`` in the state directory, shared by every worker.

WAL mode, so readers (every authenticated request looks its token up) never wait for the
rare writer; one connection per thread, because gunicorn's threads and the CLI each
need their own.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..sqlite_files import open_sqlite
from .sql import SQLTokenStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens(
    id TEXT PRIMARY KEY, digest TEXT NOT NULL, user TEXT NOT NULL, kind TEXT NOT NULL,
    projects TEXT NOT NULL, actions TEXT NOT NULL, description TEXT NOT NULL,
    created REAL NOT NULL, expires REAL, last_used REAL, revoked REAL, details TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user);
CREATE TABLE IF NOT EXISTS once_ids(
    issuer TEXT NOT NULL, jti TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (issuer, jti));
"""


class SQLiteTokenStore(SQLTokenStore):
    """TokenStore on one SQLite file; made 0600 because it holds token digests."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._connection() as db:
            db.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # 0600: it holds token digests; FULL: a created or revoked token survives a power cut.
            db = open_sqlite(self.path, synchronous="FULL", mode=0o600, shared=True, timeout=30)
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db
