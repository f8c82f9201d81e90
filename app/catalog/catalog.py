"""The catalog: what the index knows, kept current and shared by every worker.

The storage (the packages directories) stays the source of truth. What is costly to
learn from a file (hashes, core metadata) is computed once and kept in SQLite in the
state directory, keyed by (size, mtime, inode) so a changed file is redone and a restart
re-hashes nothing.

Every worker process holds an immutable in-memory ``View`` that requests read without
locks or I/O. One process at a time (the holder of ``scan.lock``) watches the
directories: each ``scan_interval`` it stats the known directories and lists only those
whose mtime moved, so a file copied in by hand is seen within about a second without a
rescan per request. Every change is appended to a ``changes`` journal; every worker
polls the journal and reloads just the projects that changed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from packaging.version import Version

from ..dists import DistName, InvalidDistribution, parse_filename, read_core_metadata
from ..databases import DatabaseUnavailable, unavailable_errors
from ..settings import Settings
from ..storage import Storage, storage_for
from .database import FILE_COLUMNS, database_for
from .records import DistFile, Project, View, add_urls, file_from_row, make_view
from .scanner import Scanner, read_file, stalled_scanner, write_file

log = logging.getLogger("wharf.catalog")


class CatalogUnavailable(DatabaseUnavailable):
    """The catalog's database refused a write (locked past its timeout, unreachable)."""


class FileConflict(Exception):
    """Another upload (through any node) published this file name with other bytes first."""


# Longest a request waits for a sync in flight before answering from the view it has.
CATCH_UP_WAIT = 0.5


class Catalog:
    """The index's knowledge of its storage (the packages directories).

    ``Catalog(settings)`` is the one way the app, the server and the CLI get theirs: its
    storage is ``storage_for(settings)`` unless one is given (tests count what it reads).
    """

    def __init__(self, settings: Settings, storage: Storage | None = None):
        self.settings = settings
        self.storage = storage if storage is not None else storage_for(settings)
        self.state_dir = Path(settings.state_path)
        self.database = database_for(settings, self.state_dir)
        self.db_path = self.state_dir / "catalog.sqlite3"  # (SQLite only)
        self.algorithms = tuple(dict.fromkeys(a for a in ("sha256", settings.hash_algo) if a != "off"))
        self.view = View()
        self.last_scan: float | None = None
        self.root_names = self.storage.root_names()
        self._seq = 0
        self._local = threading.local()
        self._generation = 0  # bumped when the database file was replaced: reconnect
        self._rebuilding = False  # the database was lost: reload once a sweep rebuilt it
        self._outage: str | None = None  # why the database is unreachable (logged once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._versions: dict[str, Version] = {}
        self._sync_lock = threading.RLock()
        self._scanner: Scanner | None = None
        # Called by the scanning process with the view before and after each pass that
        # changed it (create_app: refresh nginx's copies of what changed).
        self.after_scan: Callable[[View, View], None] | None = None
        self._scanned: View | None = None

    # --- life cycle --------------------------------------------------------------------
    def open(self, sweep: bool = True) -> Catalog:
        """Load the catalog; index first if ``sweep`` or if no process ever indexed these roots.

        Without ``sweep`` a catalog indexed before is loaded as it is, and the watcher
        catches up in the background (a restart with 100,000 files answers at once).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db()
        if sweep and self._try_lead():
            self._scanner.sweep()  # else a running server holds the lock and keeps it current
        while not self._complete() and not self._stop.is_set():
            if self._try_lead():
                self._scanner.sweep()
                break
            time.sleep(0.1)
        self.reload()
        return self

    def start(self) -> Catalog:
        """Open and keep watching the directories in a background thread."""
        self.open(sweep=False)
        self._thread = threading.Thread(target=self._watch, name="wharf-catalog", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._release()
        self.database.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def refresh(self) -> tuple[int, int]:
        """Index now in this thread, unless a running server does; (projects, files) indexed."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db()
        if self._try_lead():
            self._scanner.sweep()
        else:
            log.info("a running server is keeping the catalog of %s current", ", ".join(self.root_names))
        placeholders = ",".join("?" * len(self.root_names))
        return tuple(self.db().execute(
            f"SELECT count(DISTINCT project), count(*) FROM files WHERE root IN ({placeholders})", self.root_names,
        ).fetchone())

    def scanner_problem(self) -> str | None:
        """Why the scanner (in whichever process holds it) looks stuck, or None (scanner.py)."""
        return stalled_scanner(self.state_dir, self.settings.scan_interval)

    def _watch(self) -> None:
        interval = max(self.settings.scan_interval, 0.05)
        first = True
        while first or not self._stop.wait(interval):
            first = False
            try:
                self._check_database()
                if self._scanner is not None and not self.database.holds_scanner_lock():
                    self._scanner = None
                if self._scanner is None and self._try_lead():
                    self._scanner.sweep()
                elif self._scanner is not None:
                    self._scanner.sweep() if self._rebuilding else self._scanner.poll()
                if self._rebuilding and self._complete():
                    self._rebuilding = False
                    self.reload()
                    log.warning("the catalog database was rebuilt; serving from it again")
                else:
                    self.sync()
                self._report_scan()
                if self._outage:
                    log.warning("the catalog database answers again")
                    self._outage = None
            except unavailable_errors() as exc:  # PostgreSQL down: serve from memory, retry next pass
                if self._outage is None:
                    log.error("the catalog database is unavailable, serving from memory: %s", exc)
                self._outage = str(exc)
            except sqlite3.DatabaseError as exc:
                if self.database.recover(exc):
                    self._lost_database()
                else:
                    log.exception("catalog pass failed")
            except Exception:  # keep watching whatever one pass ran into
                log.exception("catalog pass failed")

    def _check_database(self) -> None:
        """Notice a database file deleted or replaced under us (never keep writing to an unlinked one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", 0) == self._generation \
                and not self.database.usable(conn) and self.database.name == "catalog.sqlite3":
            log.error("the catalog database %s was deleted or replaced while running: rebuilding it from the "
                      "packages (yanks and upload records are kept apart)", self.db_path)
            self._lost_database()

    def _lost_database(self) -> None:
        self._generation += 1
        self._rebuilding = True
        if self._scanner is not None:
            self._scanner.dirs.clear()

    def _report_scan(self) -> None:
        """Hand the views before and after to ``after_scan``: files found by hand, and (again,
        shortly after) every other process's changes, including the command line's."""
        if self._scanner is None or self.after_scan is None:
            return
        before, self._scanned = self._scanned, self.view
        # (serial 0: nothing was loaded yet, so nothing this process served can be stale)
        if before is not None and before.serial and before is not self.view:
            self.after_scan(before, self.view)

    # --- database ----------------------------------------------------------------------
    def db(self):
        """This thread's connection to the catalog database (a new one if it died)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and (getattr(self._local, "generation", 0) != self._generation
                                 or (self.database.name != "catalog.sqlite3" and not self.database.usable(conn))):
            with contextlib.suppress(Exception):
                conn.close()
            conn = self._local.conn = None
        if conn is None:
            conn = self.database.connect()
            self._local.conn, self._local.generation = conn, self._generation
        return conn

    def shared_secret(self, name: str) -> str | None:
        """A secret every node on this catalog's database shares, or None on SQLite (one node)."""
        return self.database.shared_secret(self.db(), name) if self.database.shared else None

    def _complete(self) -> bool:
        row = self.db().execute("SELECT value FROM meta WHERE key='complete'").fetchone()
        return bool(row) and row[0] == json.dumps(self.root_names)

    # --- leadership (one scanner at a time) -------------------------------------------
    def _try_lead(self) -> bool:
        """Become the one scanner (a flock, or PostgreSQL's advisory lock across nodes)."""
        if self._scanner is not None:
            return True
        if not self.database.try_lock_scanner():
            return False
        self._scanner = Scanner(self)
        self._scanned = self.view  # what changes from here on is reported
        return True

    def _release(self) -> None:
        self.database.release_scanner()
        self._scanner = None

    # --- loading into memory ----------------------------------------------------------
    def _select(self, where: str = "", params: tuple = ()) -> list[DistFile]:
        sql = f"SELECT {FILE_COLUMNS} FROM files f LEFT JOIN yanks y ON y.filename = f.filename {where}"
        files = (file_from_row(row, self.root_names) for row in self.db().execute(sql, params))
        return [f for f in files if f is not None]

    def reload(self) -> None:
        """Load everything from the database (start-up, or too far behind the journal)."""
        with self._sync_lock:
            conn = self.db()
            seq = conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
            grouped: dict[str, list[DistFile]] = {}
            for f in self._select():
                grouped.setdefault(f.project, []).append(f)
            projects = {name: Project.build(name, files, self._versions) for name, files in grouped.items()}
            self._seq = seq
            self.view = make_view(projects, self.view.serial + 1, seq)

    def catch_up(self, seq: int = 0) -> None:
        """Apply other processes' changes now (one pragma when there are none).

        Called before each request, so an upload or yank answered by one worker is seen by
        the next request whichever worker takes it. ``seq``: a journal position the request
        must see (nginx's refresh of a change another node made, app/cache_refresh.py).
        """
        # SQLite: PRAGMA data_version; PostgreSQL: a stat of this node's stamp file. Most
        # requests stop here; other nodes' changes arrive through the watcher's sync.
        try:
            changed, version = self.database.changed(self.db(), getattr(self._local, "data_version", None))
            if not changed and seq <= self._seq:
                return
            # If the watcher is syncing right now, wait for it (briefly): the change that
            # moved the mark may be the one it is applying.
            if self._sync_lock.acquire(timeout=CATCH_UP_WAIT):
                try:
                    self.sync()
                    self._local.data_version = version
                finally:
                    self._sync_lock.release()
        except (*unavailable_errors(), sqlite3.DatabaseError) as exc:  # down or damaged: answer from memory
            log.warning("serving the catalog from memory: %s", exc)

    def sync(self) -> bool:
        """Apply journal entries newer than ours; True if anything changed."""
        with self._sync_lock:
            if self._rebuilding:
                return False  # keep serving what we had until the rebuild is complete
            conn = self.db()
            rows = conn.execute("SELECT seq, project FROM changes WHERE seq > ? ORDER BY seq", (self._seq,)).fetchall()
            if not rows:
                newest = conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0] if self._seq else 0
                if newest < self._seq:
                    self.reload()  # a new journal (the database was rebuilt or restored)
                    return True
                return False
            oldest = conn.execute("SELECT min(seq) FROM changes").fetchone()[0]
            if self._seq and oldest > self._seq + 1:
                self.reload()  # the journal was pruned past us
                return True
            view = self.view
            projects = dict(view.projects)
            by_url = dict(view.by_url)
            count = view.file_count
            for name in {project for _seq, project in rows}:
                old = projects.pop(name, None)
                if old is not None:
                    count -= len(old.files)
                    for f in old.files:
                        if by_url.get(f.relpath) is f:
                            del by_url[f.relpath]
                files = self._select("WHERE f.project = ?", (name,))
                if files:
                    projects[name] = new = Project.build(name, files, self._versions)
                    count += len(new.files)
                    add_urls(by_url, new.files)
            names = view.names if projects.keys() == view.projects.keys() else tuple(sorted(projects))
            self._seq = rows[-1][0]
            self.view = View(projects, by_url, names, view.serial + 1, count, self._seq)
            # Maybe another node's change: this node's other workers sync before their next
            # request too, so a page one of them lists never leads to a 404 from another.
            self.database.announce()
        return True

    # --- changes made by the app (uploads, removals, yanks) ---------------------------
    def sync_before_write(self) -> None:
        """Apply every node's committed changes now: a yank may name a file another node just published."""
        try:
            self.sync()
        except unavailable_errors() as exc:
            raise CatalogUnavailable(f"cannot read the catalog: {exc}") from exc

    def _write(self, what: str, changes: Callable) -> object:
        """Run ``changes(conn)`` in one transaction; CatalogUnavailable if the database refused it."""
        try:
            conn = self.db()
            with self.database.transaction(conn):
                result = changes(conn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:  # callers handle a full disk as OSError
                raise OSError(errno.ENOSPC, f"cannot {what}: {exc}") from exc
            raise CatalogUnavailable(f"cannot {what}: {exc}") from exc
        except unavailable_errors() as exc:
            raise CatalogUnavailable(f"cannot {what}: {exc}") from exc
        self.database.announce()
        self.sync()
        return result

    def record(self, relpath: str, hashes: dict[str, str] | None = None, *,
               uploaded_by: str | None = None, replace: bool = False) -> DistFile | None:
        """Index a file just written under the first root, and show it at once.

        With ``uploaded_by`` (an upload) the durable upload record is written in the same
        transaction; its unique file name settles a race between nodes: FileConflict if
        another upload holds the name with other bytes (unless ``replace``).
        """
        key = self.storage.stat_file(0, relpath)
        if key is None:
            return None
        row = read_file(self, 0, relpath, key, hashes)
        if row is None:
            return None

        def changes(conn) -> str:
            if uploaded_by is not None:
                self._claim(conn, row[3], json.loads(row[12])["sha256"], uploaded_by, replace)
            return write_file(conn, row)

        project = self._write(f"record {relpath}", changes)
        return self.find(relpath) if project else None

    @staticmethod
    def _claim(conn, filename: str, sha256: str, by: str, replace: bool) -> None:
        claimed = conn.execute(
            "INSERT INTO uploads(filename, sha256, uploaded_by, uploaded_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (filename) DO NOTHING", (filename, sha256, by, time.time())).rowcount
        if claimed:
            return
        held = conn.execute("SELECT sha256 FROM uploads WHERE filename = ?", (filename,)).fetchone()
        listed = conn.execute("SELECT 1 FROM files WHERE filename = ? LIMIT 1", (filename,)).fetchone()
        if held and held[0] != sha256 and listed and not replace:
            raise FileConflict(f"{filename} already exists with different content")
        conn.execute("UPDATE uploads SET sha256 = ?, uploaded_by = ?, uploaded_at = ? WHERE filename = ?",
                     (sha256, by, time.time(), filename))

    def uploader(self, filename: str) -> tuple[str, float] | None:
        """Who uploaded this file name and when (the durable upload record), or None."""
        row = self.db().execute("SELECT uploaded_by, uploaded_at FROM uploads WHERE filename = ?",
                                (filename,)).fetchone()
        return (row[0], row[1]) if row else None

    def forget(self, dist: DistFile) -> bool:
        """Delete a file from disk and from the index."""
        removed = self.storage.delete(dist.root, dist.relpath)

        def changes(conn) -> None:
            conn.execute("DELETE FROM files WHERE root = ? AND relpath = ?", (self.root_names[dist.root], dist.relpath))
            if not conn.execute("SELECT 1 FROM files WHERE filename = ? LIMIT 1", (dist.filename,)).fetchone():
                conn.execute("DELETE FROM uploads WHERE filename = ?", (dist.filename,))
            conn.execute("INSERT INTO changes(project) VALUES (?)", (dist.project,))

        self._write(f"remove {dist.relpath}", changes)
        return removed

    def set_yanked(self, files: Iterable[DistFile], reason: str | None) -> int:
        """Yank (reason is a string, possibly empty) or unyank (None) files."""
        files = list(files)

        def yank(conn) -> None:
            for f in files:
                if reason is None:
                    conn.execute("DELETE FROM yanks WHERE filename = ?", (f.filename,))
                else:
                    conn.execute("INSERT INTO yanks(filename, reason) VALUES (?, ?)"
                                 " ON CONFLICT (filename) DO UPDATE SET reason = excluded.reason", (f.filename, reason))

        def announce(conn) -> None:
            conn.executemany("INSERT INTO changes(project) VALUES (?)", [(f.project,) for f in files])

        # The yanks first, then the journal entry that makes workers and nodes re-read the
        # project: with SQLite the yanks live in another file (durable.sqlite3), and a
        # transaction over two WAL files is atomic per file only, so in one transaction a
        # worker could read the new entry before the yank and keep the old page for good.
        self._write("change yanks", yank)
        self._write("announce yanks", announce)
        return len(files)

    # --- queries -----------------------------------------------------------------------
    def project(self, name: str) -> Project | None:
        return self.view.projects.get(name)

    def find(self, url_path: str) -> DistFile | None:
        return self.view.by_url.get(url_path)

    def find_filename(self, filename: str) -> DistFile | None:
        try:
            dist = parse_filename(filename)
        except InvalidDistribution:
            return None
        project = self.view.projects.get(dist.project)
        if project:
            for f in project.files:
                if f.filename == filename:
                    return f
        return None

    def read_metadata(self, dist: DistFile) -> bytes | None:
        """The core metadata file of a wheel, byte-identical, as PEP 658 serves it."""
        if dist.metadata_sha256 is None:
            return None
        try:
            return self.core_metadata(dist.root, dist.relpath, parse_filename(dist.filename))
        except (InvalidDistribution, OSError):
            return None

    def core_metadata(self, root: int, relpath: str, dist: DistName) -> bytes | None:
        """The core metadata inside a stored wheel or sdist (read through storage), or None.

        Raises InvalidDistribution for an unreadable archive, OSError for a missing file.
        """
        stream, _size = self.storage.open(root, relpath)
        with stream:
            return read_core_metadata(stream, dist, relpath.rsplit("/", 1)[-1])
