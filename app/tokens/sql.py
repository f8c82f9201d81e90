"""The token records in SQL, the same for every engine (SQLite, PostgreSQL).

An engine's store supplies ``_connection()`` (one per thread, taking ``?`` placeholders)
and ``self._connections``/``self._lock`` for ``close``; the queries are written once here.
"""

from __future__ import annotations

import json
import threading

from .store import TokenRecord, TokenStore

# "user" is quoted: a reserved word in PostgreSQL, a plain name in SQLite.
COLUMNS = 'id, digest, "user", kind, projects, actions, description, created, expires, last_used, revoked, details'


class SQLTokenStore(TokenStore):
    """The TokenStore methods on any connection that takes ``?`` placeholders."""

    def _connection(self):
        raise NotImplementedError

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
            rows = self._connection().execute(f'SELECT {COLUMNS} FROM tokens WHERE "user" = ? ORDER BY created, id',
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
            "INSERT INTO once_ids(issuer, jti, expires) VALUES (?,?,?) ON CONFLICT DO NOTHING", (issuer, jti, expires))
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
