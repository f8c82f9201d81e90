"""The catalog's database: one small interface, a SQLite and a PostgreSQL implementation.

What is costly to learn from a file (hashes, core metadata) is kept keyed by (size,
mtime, inode), with a ``changes`` journal every worker follows: all derived from the
files, rebuilt if lost. Beside it sit the durable records that no file holds (``yanks``
and ``uploads``): in SQLite they are a file of their own (``durable.sqlite3``, fsynced,
attached to each connection), in PostgreSQL tables of the one shared database.

The SQL the catalog and the scanner run is written once, with ``?`` placeholders, in the
dialect both engines share (``ON CONFLICT``, ``LIKE ... ESCAPE``).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..databases import uses_postgres
from ..settings import Settings


# How many journal entries to keep; a worker further behind reloads everything.
JOURNAL_KEEP = 100_000

FILE_COLUMNS = (
    "f.root, f.relpath, f.filename, f.project, f.name, f.version, f.packagetype, f.size,"
    " f.upload_time, f.hashes, f.requires_python, f.metadata_sha256, f.summary, y.reason"
)

UPSERT_FILE = (
    "INSERT INTO files(root, relpath, dir, filename, project, name, version, packagetype,"
    " size, mtime_ns, inode, upload_time, hashes, requires_python, metadata_sha256, summary)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (root, relpath) DO UPDATE SET"
    " dir=excluded.dir, filename=excluded.filename, project=excluded.project, name=excluded.name,"
    " version=excluded.version, packagetype=excluded.packagetype, size=excluded.size,"
    " mtime_ns=excluded.mtime_ns, inode=excluded.inode, upload_time=excluded.upload_time,"
    " hashes=excluded.hashes, requires_python=excluded.requires_python,"
    " metadata_sha256=excluded.metadata_sha256, summary=excluded.summary"
)


def has_hashes(algorithms: tuple[str, ...]) -> tuple[str, list[str]]:
    """SQL true for rows whose hashes name every algorithm (json.dumps writes '"sha256": ...')."""
    if not algorithms:
        return "1=1", []
    return " AND ".join(["hashes LIKE ?"] * len(algorithms)), [f'%"{a}":%' for a in algorithms]


def like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class CatalogDatabase(abc.ABC):
    """Connections, transactions, the scanner's lock and change signals, for one engine."""

    #: Where the derived catalog lives, for messages ("catalog.sqlite3", "PostgreSQL").
    name: str
    #: Whether several nodes may share it (then they share secrets through it too).
    shared = False

    @abc.abstractmethod
    def connect(self) -> Any:
        """A new connection with the schema in place (``execute``, ``executemany``)."""

    @abc.abstractmethod
    def transaction(self, conn: Any) -> contextlib.AbstractContextManager:
        """Run the block as one transaction on ``conn``."""

    @abc.abstractmethod
    def usable(self, conn: Any) -> bool:
        """False once a connection is known dead (PostgreSQL restarted, file replaced)."""

    @abc.abstractmethod
    def try_lock_scanner(self) -> bool:
        """Become the one scanner of these roots, if no other process (or node) is."""

    @abc.abstractmethod
    def holds_scanner_lock(self) -> bool:
        """Still the scanner (a PostgreSQL session holding the lock may have been lost)."""

    @abc.abstractmethod
    def release_scanner(self) -> None: ...

    @abc.abstractmethod
    def summaries(self, conn: Any, roots_sql: str, roots) -> Iterator[tuple[str, str, str]]:
        """(project, display name, summary of its newest upload) per project, in name order."""

    @abc.abstractmethod
    def changed(self, conn: Any, seen: Any) -> tuple[bool, Any]:
        """Whether another process may have written since ``seen`` (cheap; no table read)."""

    def announce(self) -> None:
        """Tell this node's other workers that a write committed (their next request syncs)."""

    def shared_secret(self, conn: Any, name: str) -> str | None:
        """A random secret every node of this database shares (PostgreSQL), or None (one node:
        the caller keeps its own in the state directory)."""
        return None

    def recover(self, exc: BaseException) -> bool:
        """Deal with an error that may mean the derived store is damaged; True if it was rebuilt."""
        return False

    def close(self) -> None:
        """Release what the database holds for this process (locks, connections)."""


def database_for(settings: Settings, state_dir: Path) -> CatalogDatabase:
    """The catalog database these settings name: PostgreSQL for a postgresql:// URL, else SQLite."""
    if uses_postgres(settings):
        from .postgres import PostgresCatalogDatabase

        return PostgresCatalogDatabase(settings.database_url, state_dir)
    from .sqlite import SQLiteCatalogDatabase

    return SQLiteCatalogDatabase(state_dir)


@contextlib.contextmanager
def noop() -> Iterator[None]:
    yield
