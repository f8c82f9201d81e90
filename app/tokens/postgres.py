"""The token store in PostgreSQL: the database every app node shares (``database_url``).

The same records as ``sqlite.py``; one connection per thread, made again after the
server went away. A token lookup while the database is down fails (401 or 503): the
password file keeps working meanwhile.
"""

from __future__ import annotations

import json
import secrets
import threading

from ..databases import PgConnection
from .sqlite import COLUMNS, SQLiteTokenStore
from .store import TokenRecord, TokenStore

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
PG_COLUMNS = COLUMNS.replace("user,", '"user",')


class PostgresTokenStore(TokenStore):
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

    _record = staticmethod(SQLiteTokenStore._record)

    def add(self, record: TokenRecord) -> None:
        self._connection().execute(
            f"INSERT INTO tokens({PG_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (record.id, record.digest, record.user, record.kind, json.dumps(list(record.projects)),
             json.dumps(list(record.actions)), record.description, record.created, record.expires,
             record.last_used, record.revoked, json.dumps(record.details)))

    def get(self, token_id: str) -> TokenRecord | None:
        row = self._connection().execute(f"SELECT {PG_COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return self._record(row) if row else None

    def list(self, user: str | None = None) -> list[TokenRecord]:
        if user is None:
            rows = self._connection().execute(f"SELECT {PG_COLUMNS} FROM tokens ORDER BY created, id")
        else:
            rows = self._connection().execute(
                f'SELECT {PG_COLUMNS} FROM tokens WHERE "user" = ? ORDER BY created, id', (user,))
        return [self._record(row) for row in rows]

    def revoke(self, token_id: str, when: float) -> bool:
        cursor = self._connection().execute(
            "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (when, token_id))
        return cursor.rowcount == 1

    def touch(self, token_id: str, when: float) -> None:
        self._connection().execute("UPDATE tokens SET last_used = ? WHERE id = ?", (when, token_id))

    def claim_once(self, issuer: str, jti: str, expires: float) -> bool:
        cursor = self._connection().execute(
            "INSERT INTO once_ids(issuer, jti, expires) VALUES (?,?,?) ON CONFLICT DO NOTHING", (issuer, jti, expires))
        return cursor.rowcount == 1

    def purge(self, before: float) -> None:
        db = self._connection()
        db.execute("DELETE FROM once_ids WHERE expires < ?", (before,))
        db.execute("DELETE FROM tokens WHERE kind = 'oidc' AND expires < ?", (before,))

    def shared_key(self) -> bytes:
        """One digest key for every node, made by whichever asks first."""
        db = self._connection()
        db.execute("INSERT INTO token_key VALUES (1, ?) ON CONFLICT DO NOTHING", (secrets.token_hex(32),))
        return bytes.fromhex(db.execute("SELECT value FROM token_key WHERE id = 1").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()
