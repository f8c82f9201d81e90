"""The token store in PostgreSQL: the database every app node shares (``database_url``).

The same records as ``sqlite.py``; one connection per thread, made again after the
server went away. A token lookup while the database is down fails (401 or 503): the
password file keeps working meanwhile.
"""

from __future__ import annotations

import secrets
import threading

from ..databases import PgConnection
from .sql import SQLTokenStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens(
    id TEXT PRIMARY KEY, digest TEXT NOT NULL, "user" TEXT NOT NULL, kind TEXT NOT NULL,
    projects TEXT NOT NULL, actions TEXT NOT NULL, description TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION, last_used DOUBLE PRECISION,
    revoked DOUBLE PRECISION, details TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens("user");
CREATE TABLE IF NOT EXISTS token_key(id INTEGER PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS once_ids(
    issuer TEXT NOT NULL, jti TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL, PRIMARY KEY (issuer, jti));
"""


class PostgresTokenStore(SQLTokenStore):
    """TokenStore on the shared PostgreSQL database."""

    def __init__(self, url: str):
        from ..catalog.postgres import create_schema

        self.url = url
        self._local = threading.local()
        self._connections: list[PgConnection] = []
        self._lock = threading.Lock()
        create_schema(self._connection(), SCHEMA)

    def _connection(self) -> PgConnection:
        db = getattr(self._local, "db", None)
        if db is None or not db.usable:
            db = self._local.db = PgConnection(self.url)
            with self._lock:
                self._connections.append(db)
        return db

    def shared_key(self) -> bytes:
        """One digest key for every node, made by whichever asks first."""
        db = self._connection()
        db.execute("INSERT INTO token_key VALUES (1, ?) ON CONFLICT DO NOTHING", (secrets.token_hex(32),))
        return bytes.fromhex(db.execute("SELECT value FROM token_key WHERE id = 1").fetchone()[0])
