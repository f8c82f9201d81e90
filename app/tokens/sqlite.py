"""The token store in SQLite: ``tokens.sqlite3`` in the state directory, shared by every worker.

WAL mode, so readers (every authenticated request looks its token up) never wait for the
rare writer; one connection per thread, because gunicorn's threads and the CLI each
need their own.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from ..sqlite_files import open_sqlite
from .store import TokenRecord, TokenStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens(
    id TEXT PRIMARY KEY, digest TEXT NOT NULL, user TEXT NOT NULL, kind TEXT NOT NULL,
    projects TEXT NOT NULL, actions TEXT NOT NULL, description TEXT NOT NULL,
    created REAL NOT NULL, expires REAL, last_used REAL, revoked REAL, details TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user);
CREATE TABLE IF NOT EXISTS once_ids(
    issuer TEXT NOT NULL, jti TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (issuer, jti));
"""
COLUMNS = "id, digest, user, kind, projects, actions, description, created, expires, last_used, revoked, details"


class SQLiteTokenStore(TokenStore):
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

    @staticmethod
    def _record(row: tuple) -> TokenRecord:
        (id_, digest, user, kind, projects, actions, description, created, expires, last_used, revoked,
         details) = row
        return TokenRecord(id_, digest, user, kind, tuple(json.loads(projects)), tuple(json.loads(actions)),
                           description, created, expires, last_used, revoked, json.loads(details))

    def add(self, record: TokenRecord) -> None:
        self._connection().execute(
            f"INSERT INTO tokens({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (record.id, record.digest, record.user, record.kind, json.dumps(list(record.projects)),
             json.dumps(list(record.actions)), record.description, record.created, record.expires,
             record.last_used, record.revoked, json.dumps(record.details)))

    def get(self, token_id: str) -> TokenRecord | None:
        row = self._connection().execute(f"SELECT {COLUMNS} FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return self._record(row) if row else None

    def list(self, user: str | None = None) -> list[TokenRecord]:
        if user is None:
            rows = self._connection().execute(f"SELECT {COLUMNS} FROM tokens ORDER BY created, id")
        else:
            rows = self._connection().execute(f"SELECT {COLUMNS} FROM tokens WHERE user = ? ORDER BY created, id",
                                              (user,))
        return [self._record(row) for row in rows]

    def revoke(self, token_id: str, when: float) -> bool:
        cursor = self._connection().execute(
            "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (when, token_id))
        return cursor.rowcount == 1

    def touch(self, token_id: str, when: float) -> None:
        self._connection().execute("UPDATE tokens SET last_used = ? WHERE id = ?", (when, token_id))

    def claim_once(self, issuer: str, jti: str, expires: float) -> bool:
        cursor = self._connection().execute(
            "INSERT OR IGNORE INTO once_ids(issuer, jti, expires) VALUES (?,?,?)", (issuer, jti, expires))
        return cursor.rowcount == 1

    def purge(self, before: float) -> None:
        db = self._connection()
        db.execute("DELETE FROM once_ids WHERE expires < ?", (before,))
        db.execute("DELETE FROM tokens WHERE kind = 'oidc' AND expires < ?", (before,))

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()
