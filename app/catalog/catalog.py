"""The catalog: what the index knows, kept current and shared by every worker.

The storage (the packages directories) stays the source of truth. What is costly to
learn from a file (hashes, core metadata) is computed once and kept in SQLite in the
state directory, keyed by (size, mtime, inode) so a changed file is redone and a restart
re-hashes nothing.

Every worker process holds an immutable ``View`` (every project's name) and a bounded
cache of the projects it served (project_cache.py): a request for a cached project reads
no database and takes no I/O, any other project is one indexed query, and a worker's
memory stays flat from a thousand files to a million. One process at a time (the holder of ``scan.lock``) watches the
directories: each ``scan_interval`` it stats the known directories and lists only those
whose mtime moved, so a file copied in by hand is seen within about a second without a
rescan per request. Every change is appended to a ``changes`` journal; every worker
polls the journal and drops just the projects that changed from its cache.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import json
import logging
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from packaging.version import Version

from ..dists import DistName, InvalidDistribution, parse_filename, read_core_metadata
from ..databases import DatabaseUnavailable, unavailable_errors
from ..settings import Settings
from ..storage import Storage, storage_for
from .database import FILE_COLUMNS, database_for
from .project_cache import ProjectCache
from .records import DistFile, Project, View, file_from_row
from .scanner import OutOfTime, Scanner, read_file, stalled_scanner, write_file

log = logging.getLogger("wharf.catalog")


class CatalogUnavailable(DatabaseUnavailable):
    """The catalog's database refused a write (locked past its timeout, unreachable)."""


class FileConflict(Exception):
    """Another upload (through any node) published this file name with other bytes first."""


# Longest a request waits for a sync in flight before answering from the view it has.
CATCH_UP_WAIT = 0.5
# Longest a starting server waits for a first index of its storage before answering with
# what is indexed so far (the rest shows as the scanner goes on).
START_WAIT = 1.0
# How many recent changes (project, its state before) a worker remembers, for the nginx
# refreshes of what changed between two views (cache_refresh.py).
DELTAS_KEPT = 2_000
# Parsed versions kept for sorting; a new dict beyond this many distinct strings.
VERSIONS_KEPT = 50_000
# File URLs whose project name is remembered (parsing a wheel's name is a fifth of a
# download's cost); a new dict beyond this many.
URL_PROJECTS_KEPT = 20_000
# A project whose state before a change this worker never loaded.
UNKNOWN = object()


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
        self._url_projects: dict[str, str] = {}  # file URL -> its project (by its file name)
        self.projects = ProjectCache(settings.catalog_cache_files)
        # (serial, project, its Project before that change or UNKNOWN); a reload leaves a gap.
        self._deltas: deque[tuple[int, str, object]] = deque(maxlen=DELTAS_KEPT)
        self._deltas_from = 0  # the serial from which _deltas is complete
        self._file_count: tuple[int, int] = (-1, 0)  # (serial, files)
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
        """Load the catalog and keep watching the storage in a background thread.

        A storage never indexed before (a cold start) is indexed by the watcher in the
        background: the server waits up to ``START_WAIT`` for it, then answers with what
        is indexed so far while the scanner goes on (it logs its progress).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db()
        self._thread = threading.Thread(target=self._watch, name="wharf-catalog", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_WAIT
        while not self._complete() and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)
        self.reload()
        if not self._complete():
            log.warning("answering while the storage is indexed for the first time: %d projects so far",
                        len(self.view.names))
        return self

    def indexing(self) -> bool:
        """Whether the first index of the storage is still under way (answers list what it has)."""
        try:
            return not self._complete()
        except (*unavailable_errors(), sqlite3.DatabaseError):
            return False

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._release()
        self.database.close()
        self.close_connection()

    def close_connection(self) -> None:
        """Close this thread's connection to the database (a helper thread that is done)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def refresh(self, within: float | None = None) -> tuple[int, int]:
        """Index now in this thread, unless a running server does; (projects, files) indexed.

        ``within`` seconds at most: then what is indexed so far is kept, and the rest
        is left to a later sweep (a server's scanner).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db()
        if self._try_lead():
            self._scanner.deadline = None if within is None else time.monotonic() + within
            try:
                self._scanner.sweep()
            except OutOfTime:
                log.info("indexed part of the storage in %.1f s; the server indexes the rest", within)
            finally:
                self._scanner.deadline = None
        else:
            log.info("a running server is keeping the catalog of %s current", ", ".join(self.root_names))
        return self.counts()

    def counts(self) -> tuple[int, int]:
        """(projects, files) the catalog's database holds now, indexed or not yet."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return tuple(self.db().execute(
            f"SELECT count(DISTINCT project), count(*) FROM files WHERE {self._roots_sql()}", self.root_names,
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

    def _roots_sql(self, column: str = "root") -> str:
        return f"{column} IN ({','.join('?' * len(self.root_names))})"

    def _listed_names(self, names: Iterable[str] | None = None) -> list[str]:
        """The projects with files under the served roots (of ``names``, or all), in order."""
        sql = f"SELECT DISTINCT project FROM files WHERE {self._roots_sql()}"
        if names is None:
            return [row[0] for row in self.db().execute(sql + " ORDER BY project", self.root_names)]
        names = list(names)
        found: list[str] = []
        for start in range(0, len(names), 500):
            batch = names[start:start + 500]
            found += [row[0] for row in self.db().execute(
                sql + f" AND project IN ({','.join('?' * len(batch))})", (*self.root_names, *batch))]
        return sorted(found)

    def _load_all_if_small(self) -> None:
        """An index within the cache's bound is held whole, as a small index always was:
        every read is answered from memory, even while the database is down."""
        if self.file_count() > self.projects.max_files:
            return
        generation = self.projects.generation
        grouped: dict[str, list[DistFile]] = {}
        for f in self._select(f"WHERE {self._roots_sql('f.root')}", tuple(self.root_names)):
            grouped.setdefault(f.project, []).append(f)
        for name, files in grouped.items():
            self.projects.put(Project.build(name, files, self._versions), generation)

    def holds_everything(self) -> bool:
        """Whether every project is in this worker's memory (an index within the cache's bound)."""
        return len(self.projects) >= len(self.view.names)

    def reload(self) -> None:
        """Read every project's name from the database (start-up, or too far behind the journal)."""
        with self._sync_lock:
            conn = self.db()
            seq = conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
            names = tuple(sys.intern(name) for name in self._listed_names())
            self.projects.clear()
            self._seq = seq
            self.view = View(names, self.view.serial + 1, seq)
            self._load_all_if_small()
            self._deltas.clear()
            self._deltas_from = self.view.serial

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
            changed = sorted({project for _seq, project in rows})
            serial = view.serial + 1
            whole = self.holds_everything()
            for name in changed:
                before = self.projects.peek(name)
                if len(self._deltas) == self._deltas.maxlen:  # the oldest goes: ranges before it are unknown
                    self._deltas_from = max(self._deltas_from, self._deltas[0][0])
                self._deltas.append((serial, name, before if before is not None else UNKNOWN))
            self.projects.drop(changed)
            listed = set(self._listed_names(changed))
            names = view.names
            added = [n for n in changed if n in listed and not view.lists(n)]
            removed = {n for n in changed if n not in listed and view.lists(n)}
            if len(added) + len(removed) > 64:
                names = tuple(sorted((set(names) - removed).union(sys.intern(n) for n in added)))
            elif added or removed:
                merged = [n for n in names if n not in removed] if removed else list(names)
                for name in added:
                    bisect.insort(merged, sys.intern(name))
                names = tuple(merged)
            self._seq = rows[-1][0]
            self.view = View(names, serial, self._seq)
            if whole:  # keep it whole: load what changed now, not at the next request
                for name in changed:
                    if self.view.lists(name):
                        self.project(name)
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
        """A project by its normalized name: from the cache, else one query (None if it has no files)."""
        project = self.projects.get(name)
        if project is not None:
            return project
        if not self.view.lists(name):
            return None
        generation = self.projects.generation
        try:
            files = self._select("WHERE f.project = ?", (name,))
        except (*unavailable_errors(), sqlite3.DatabaseError) as exc:
            raise CatalogUnavailable(f"cannot read project {name}: {exc}") from exc
        if not files:
            return None
        if len(self._versions) > VERSIONS_KEPT:
            self._versions = {}
        project = Project.build(name, files, self._versions)
        self.projects.put(project, generation)
        return project

    def find(self, url_path: str) -> DistFile | None:
        """The file served at /packages/<url_path>, if any (its project says, by the file's name)."""
        name = self._url_projects.get(url_path)
        if name is None:
            try:
                name = parse_filename(url_path.rpartition("/")[2]).project
            except InvalidDistribution:
                return None
            if len(self._url_projects) >= URL_PROJECTS_KEPT:
                self._url_projects = {}
            self._url_projects[url_path] = name
        project = self.project(name)
        if project is not None:
            for f in project.files:
                if f.relpath == url_path:
                    return f
        return None

    def find_filename(self, filename: str) -> DistFile | None:
        try:
            dist = parse_filename(filename)
        except InvalidDistribution:
            return None
        project = self.project(dist.project)
        if project:
            for f in project.files:
                if f.filename == filename:
                    return f
        return None

    def file_count(self) -> int:
        """Files in the catalog (one count per view, on demand)."""
        serial, count = self._file_count
        view = self.view
        if serial != view.serial:
            # A path under two roots is one file, served from the earlier one.
            what = "count(*)" if len(self.root_names) == 1 else "count(DISTINCT relpath)"
            count = self.db().execute(f"SELECT {what} FROM files WHERE {self._roots_sql()}",
                                      self.root_names).fetchone()[0]
            self._file_count = (view.serial, count)
        return count

    def relpaths(self) -> Iterator[str]:
        """Every served file's path under its root, in order (the /packages/ list)."""
        rows = self.db().execute(f"SELECT DISTINCT relpath FROM files WHERE {self._roots_sql()} ORDER BY relpath",
                                 self.root_names)
        for (relpath,) in rows:
            yield relpath

    def recent(self, count: int) -> list[Project]:
        """The ``count`` projects with the newest uploads, newest first."""
        seen: list[str] = []
        # Newest first along the upload_time index (a filter on root would make the planner
        # sort every row instead); a row of a root no longer served is skipped here.
        roots = set(self.root_names)
        rows = self.db().execute("SELECT project, root FROM files ORDER BY upload_time DESC LIMIT ?", (count * 50,))
        for name, root in rows:
            if root in roots and name not in seen:
                seen.append(name)
                if len(seen) == count:
                    break
        return [p for p in map(self.project, seen) if p is not None]

    def summaries(self) -> Iterator[tuple[str, str, str]]:
        """(project, display name, summary of its newest upload) for every project, in name order."""
        yield from self.database.summaries(self.db(), self._roots_sql("f.root"), self.root_names)

    def changes_between(self, old: View, new: View) -> list[tuple[str, object]] | None:
        """Each project changed from ``old`` to ``new`` with its Project in ``old`` (or
        UNKNOWN if this worker never loaded it), or None if this worker no longer knows."""
        if old.serial < self._deltas_from:
            return None
        first: dict[str, object] = {}
        for serial, name, before in list(self._deltas):  # (a copy: the watcher may be appending)
            if old.serial < serial <= new.serial and name not in first:
                first[name] = before
        return list(first.items())

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
