"""The durable state as plain rows: what ``wharf backup``, ``restore`` and ``migrate`` carry.

Facts no package file holds, on either engine: yanks and upload records (the catalog's
durable part), project statuses and removals (the policy records), API tokens and
once-only token ids, and the key their digests are made with (``token-secret`` in the
state directory with SQLite, the ``token_key`` table with PostgreSQL). ``export_rows``
reads them in one snapshot per database; ``import_rows`` adds the ones a target lacks,
so running it twice adds nothing the second time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..catalog.sqlite import DURABLE_FILENAME
from ..databases import PgConnection, uses_postgres
from ..policy.store import FILENAME as POLICY_FILENAME
from ..settings import Settings
from ..tokens.sql import COLUMNS as TOKEN_COLUMNS

TOKENS_FILENAME = "tokens.sqlite3"
TOKEN_SECRET = "token-secret"

# Each durable table, its columns, and (SQLite) the file it lives in.
TABLES: dict[str, tuple[str, str]] = {
    "yanks": ("filename, reason", DURABLE_FILENAME),
    "uploads": ("filename, sha256, uploaded_by, uploaded_at", DURABLE_FILENAME),
    "project_status": ("project, status, reason, changed_by, changed_at", POLICY_FILENAME),
    "removals": ("filename, sha256, removed_by, removed_at", POLICY_FILENAME),
    "tokens": (TOKEN_COLUMNS, TOKENS_FILENAME),
    "once_ids": ("issuer, jti, expires", TOKENS_FILENAME),
}
SQLITE_FILES = (DURABLE_FILENAME, POLICY_FILENAME, TOKENS_FILENAME)


def engine_of(settings: Settings) -> str:
    return "postgresql" if uses_postgres(settings) else "sqlite"


def prepare(settings: Settings) -> None:
    """Create the durable tables where ``settings`` keep them (a fresh state dir or database)."""
    from ..catalog.database import database_for
    from ..policy.store import policy_store_for
    from ..tokens.store import open_store

    state = Path(settings.state_path)
    state.mkdir(parents=True, exist_ok=True)
    database = database_for(settings, state)
    database.connect().close()
    database.close()
    policy_store_for(settings).close()
    open_store(state, settings.database_url).close()


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _insert(table: str) -> str:
    columns = TABLES[table][0]
    marks = ",".join("?" * len(columns.split(",")))
    if table == "removals":  # no key: a removal is the same one if every field is
        return (f"INSERT INTO removals({columns}) SELECT {marks} WHERE NOT EXISTS (SELECT 1 FROM removals "
                "WHERE filename = ? AND sha256 = ? AND removed_by = ? AND removed_at = ?)")
    return f"INSERT INTO {table}({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def _params(table: str, row: list) -> tuple:
    return (*row, *row) if table == "removals" else tuple(row)


def export_rows(settings: Settings) -> dict[str, Any]:
    """Every durable row, and the token key (hex, or None), as JSON-ready data."""
    tables: dict[str, list[list]] = {}
    if uses_postgres(settings):
        conn = PgConnection(settings.database_url)
        try:
            with conn.transaction():
                # One snapshot of every table, whatever the nodes write meanwhile.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                for table, (columns, _file) in TABLES.items():
                    tables[table] = [list(r) for r in conn.execute(f"SELECT {columns} FROM {table}").fetchall()]
                row = conn.execute("SELECT value FROM token_key WHERE id = 1").fetchone()
        finally:
            conn.close()
        return {"tables": tables, "token_key": row[0] if row else None}
    state = Path(settings.state_path)
    for filename in SQLITE_FILES:
        names = [t for t, (_c, f) in TABLES.items() if f == filename]
        if not (state / filename).exists():
            tables.update({t: [] for t in names})
            continue
        with _sqlite(state / filename) as conn:
            conn.execute("BEGIN")  # one snapshot of the file's tables
            for table in names:
                tables[table] = [list(r) for r in conn.execute(f"SELECT {TABLES[table][0]} FROM {table}")]
            conn.execute("COMMIT")
    secret = state / TOKEN_SECRET
    return {"tables": tables, "token_key": secret.read_text().strip() if secret.exists() else None}


def import_rows(settings: Settings, data: dict[str, Any]) -> dict[str, int]:
    """Add the rows the target lacks; how many were added per table. The token key must agree."""
    prepare(settings)
    added: dict[str, int] = {}
    tables = data["tables"]
    key = data.get("token_key")
    if uses_postgres(settings):
        conn = PgConnection(settings.database_url)
        try:
            with conn.transaction():
                if key:
                    conn.execute("INSERT INTO token_key VALUES (1, ?) ON CONFLICT DO NOTHING", (key,))
                    have = conn.execute("SELECT value FROM token_key WHERE id = 1").fetchone()[0]
                    _check_key(have, key, tables)
                for table in TABLES:
                    added[table] = sum(conn.execute(_insert(table), _params(table, row)).rowcount
                                       for row in tables.get(table, ()))
        finally:
            conn.close()
        return added
    state = Path(settings.state_path)
    if key:
        _write_sqlite_key(state / TOKEN_SECRET, key, tables)
    for filename in SQLITE_FILES:
        with _sqlite(state / filename) as conn:
            conn.execute("BEGIN IMMEDIATE")
            for table in (t for t, (_c, f) in TABLES.items() if f == filename):
                added[table] = sum(conn.execute(_insert(table), _params(table, row)).rowcount
                                   for row in tables.get(table, ()))
            conn.execute("COMMIT")
    return added


def _check_key(have: str, key: str, tables: dict) -> None:
    if have.strip() != key.strip() and tables.get("tokens"):
        raise ValueError("the target already has another token key: the copied API tokens would not verify there "
                         "(restore or migrate into a fresh state directory or database)")


def _write_sqlite_key(path: Path, key: str, tables: dict) -> None:
    """The token key file (0600), written whole and fsynced, unless the same one is there."""
    if path.exists():
        _check_key(path.read_text(), key, tables)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.strip() + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
