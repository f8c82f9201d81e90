"""What the index knows: projects, their files, hashes and metadata.

The packages directories stay plain files and the source of truth. What is costly to
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
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from .dists import CoreMetadata, InvalidDistribution, parse_filename, read_core_metadata
from .settings import Settings
from .storage import FileKey, LocalStorage

log = logging.getLogger("wharf.catalog")

# A file whose mtime is this recent may still be being written (cp, scp): wait for it.
SETTLE_SECONDS = 0.3
# A directory modified this recently is listed again on the next poll, in case its
# filesystem's timestamps are too coarse to show a second change.
RECENT_DIR_NS = 2_000_000_000
# How many journal entries to keep; a worker further behind reloads everything.
JOURNAL_KEEP = 100_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    root TEXT NOT NULL, relpath TEXT NOT NULL, dir TEXT NOT NULL, filename TEXT NOT NULL,
    project TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, packagetype TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    upload_time REAL NOT NULL, hashes TEXT NOT NULL, requires_python TEXT,
    metadata_sha256 TEXT, summary TEXT,
    PRIMARY KEY (root, relpath));
CREATE INDEX IF NOT EXISTS files_project ON files(project);
CREATE INDEX IF NOT EXISTS files_dir ON files(root, dir);
CREATE TABLE IF NOT EXISTS yanks(filename TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

FILE_COLUMNS = (
    "f.root, f.relpath, f.filename, f.project, f.name, f.version, f.packagetype, f.size,"
    " f.upload_time, f.hashes, f.requires_python, f.metadata_sha256, f.summary, y.reason"
)


@dataclass(frozen=True, slots=True)
class DistFile:
    """One distribution file as the index serves it."""

    root: int
    relpath: str  # POSIX path under its root; also its URL under /packages/
    filename: str
    project: str  # normalized name
    name: str  # display name
    version: str
    packagetype: str
    size: int
    upload_time: float
    sha256: str
    # Digests besides sha256 (the hash_algo setting), or None. Not one dict per file: at
    # 100,000 files those would be ~18 MiB per worker.
    other_hashes: dict[str, str] | None
    requires_python: str | None
    metadata_sha256: str | None  # sha256 of the wheel's METADATA (PEP 658), if any
    summary: str | None
    yanked: str | None  # None, or the reason ("" for none given)

    @property
    def hashes(self) -> dict[str, str]:
        return {"sha256": self.sha256, **(self.other_hashes or {})}

    def digest(self, algo: str) -> str | None:
        return self.sha256 if algo == "sha256" else (self.other_hashes or {}).get(algo)


@dataclass(frozen=True, slots=True)
class Project:
    """A project and its files, oldest version first."""

    name: str  # normalized
    display_name: str
    files: tuple[DistFile, ...]
    versions: tuple[str, ...]
    latest: str | None

    @classmethod
    def build(cls, name: str, files: Iterable[DistFile], versions_cache: dict) -> Project:
        def parsed(version: str) -> Version:
            v = versions_cache.get(version)
            if v is None:
                v = versions_cache[version] = Version(version)
            return v

        # The same path under two roots is one URL, served from the earlier root: list only that
        # one, or clients would see a second hash for bytes they can never download.
        served: dict[str, DistFile] = {}
        for f in files:
            if f.relpath not in served or f.root < served[f.relpath].root:
                served[f.relpath] = f
        ordered = tuple(sorted(served.values(), key=lambda f: (parsed(f.version), f.filename, f.relpath)))
        versions = tuple(dict.fromkeys(f.version for f in ordered))
        live = [f for f in ordered if f.yanked is None]
        final = [f for f in live if not parsed(f.version).is_prerelease]
        newest = (final or live or list(ordered))[-1]
        return cls(name, newest.name, ordered, versions, newest.version)


@dataclass(frozen=True, slots=True)
class View:
    """An immutable snapshot of the catalog; replaced whole when something changes."""

    projects: dict[str, Project] = field(default_factory=dict)
    by_url: dict[str, DistFile] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    serial: int = 0
    file_count: int = 0


class Catalog:
    """The index's knowledge of its packages directories."""

    def __init__(self, settings: Settings, storage: LocalStorage):
        self.settings = settings
        self.storage = storage
        self.state_dir = Path(settings.state_path)
        self.db_path = self.state_dir / "catalog.sqlite3"
        self.algorithms = tuple(dict.fromkeys(a for a in ("sha256", settings.hash_algo) if a != "off"))
        self.view = View()
        self.last_scan: float | None = None
        self._roots = [str(root) for root in storage.roots]
        self._seq = 0
        self._local = threading.local()
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._versions: dict[str, Version] = {}
        self._sync_lock = threading.RLock()
        self._scanner: _Scanner | None = None

    # --- life cycle --------------------------------------------------------------------
    def open(self, sweep: bool = True) -> Catalog:
        """Load the catalog; index first if ``sweep`` or if no process ever indexed these roots.

        Without ``sweep`` a catalog indexed before is loaded as it is, and the watcher
        catches up in the background (a restart with 100,000 files answers at once).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._db()
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
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def refresh(self) -> tuple[int, int]:
        """Index now in this thread, unless a running server does; (projects, files) indexed."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._db()
        if self._try_lead():
            self._scanner.sweep()
        else:
            log.info("a running server is keeping the catalog of %s current", ", ".join(self._roots))
        placeholders = ",".join("?" * len(self._roots))
        return tuple(self._db().execute(
            f"SELECT count(DISTINCT project), count(*) FROM files WHERE root IN ({placeholders})", self._roots,
        ).fetchone())

    def _watch(self) -> None:
        interval = max(self.settings.scan_interval, 0.05)
        first = True
        while first or not self._stop.wait(interval):
            first = False
            try:
                if self._scanner is None and self._try_lead():
                    self._scanner.sweep()
                elif self._scanner is not None:
                    self._scanner.poll()
                self.sync()
            except Exception:  # keep watching whatever one pass ran into
                log.exception("catalog pass failed")

    # --- database ----------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Switching a new database to WAL and creating its tables can answer
            # "database is locked" at once, without waiting, while another process
            # does the same (gunicorn starts its workers together): one at a time.
            fd = os.open(self.state_dir / "setup.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(SCHEMA)
            finally:
                os.close(fd)
            self._local.conn = conn
        return conn

    def _complete(self) -> bool:
        row = self._db().execute("SELECT value FROM meta WHERE key='complete'").fetchone()
        return bool(row) and row[0] == json.dumps(self._roots)

    # --- leadership (one scanner at a time) -------------------------------------------
    def _try_lead(self) -> bool:
        return self._lead(blocking=False)

    def _lead(self, blocking: bool) -> bool:
        if self._scanner is not None:
            return True
        fd = os.open(self.state_dir / "scan.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        self._scanner = _Scanner(self)
        return True

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._scanner = None

    # --- loading into memory ----------------------------------------------------------
    def _row_file(self, row) -> DistFile | None:
        (root, relpath, filename, project, name, version, packagetype, size, upload_time,
         hashes, requires_python, metadata_sha256, summary, yanked) = row
        try:
            index = self._roots.index(root)
        except ValueError:
            return None
        # Every row brings fresh string objects, though most values repeat (a project's
        # name on each of its files, versions, Requires-Python, summaries, the hash names,
        # relpath == filename in a flat directory). Sharing one object per value keeps a
        # worker ~35 MB smaller at 100,000 files (bench/README.md).
        intern = sys.intern
        if relpath == filename:
            filename = relpath
        digests = json.loads(hashes)
        sha256 = digests.pop("sha256", None)
        if sha256 is None:
            return None  # indexed without it (an older catalog): the scanner redoes the file
        other = {intern(algo): value for algo, value in digests.items()} or None
        return DistFile(index, relpath, filename, intern(project), intern(name), intern(version),
                        intern(packagetype), size, upload_time, sha256, other,
                        intern(requires_python) if requires_python else requires_python,
                        metadata_sha256, intern(summary) if summary else summary, yanked)

    def _select(self, where: str = "", params: tuple = ()) -> list[DistFile]:
        sql = f"SELECT {FILE_COLUMNS} FROM files f LEFT JOIN yanks y ON y.filename = f.filename {where}"
        files = (self._row_file(row) for row in self._db().execute(sql, params))
        return [f for f in files if f is not None]

    def reload(self) -> None:
        """Load everything from the database (start-up, or too far behind the journal)."""
        with self._sync_lock:
            conn = self._db()
            seq = conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
            grouped: dict[str, list[DistFile]] = {}
            for f in self._select():
                grouped.setdefault(f.project, []).append(f)
            projects = {name: Project.build(name, files, self._versions) for name, files in grouped.items()}
            self._seq = seq
            self.view = _make_view(projects, self.view.serial + 1)

    def catch_up(self) -> None:
        """Apply other processes' changes now (one pragma when there are none).

        Called before each request, so an upload or yank answered by one worker is seen by
        the next request whichever worker takes it; skipped if this process is syncing.
        """
        # PRAGMA data_version changes only when another connection commits, and costs no
        # table read: most requests stop here.
        version = self._db().execute("PRAGMA data_version").fetchone()[0]
        if version == getattr(self._local, "data_version", None):
            return
        if self._sync_lock.acquire(blocking=False):
            try:
                self.sync()
                self._local.data_version = version
            finally:
                self._sync_lock.release()

    def sync(self) -> bool:
        """Apply journal entries newer than ours; True if anything changed."""
        with self._sync_lock:
            conn = self._db()
            rows = conn.execute("SELECT seq, project FROM changes WHERE seq > ? ORDER BY seq", (self._seq,)).fetchall()
            if not rows:
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
                    _add_urls(by_url, new.files)
            names = view.names if projects.keys() == view.projects.keys() else tuple(sorted(projects))
            self._seq = rows[-1][0]
            self.view = View(projects, by_url, names, view.serial + 1, count)
        return True

    # --- changes made by the app (uploads, removals, yanks) ---------------------------
    def record(self, relpath: str, hashes: dict[str, str] | None = None) -> DistFile | None:
        """Index a file just written under the first root, and show it at once."""
        key = self.storage.stat_file(0, relpath)
        if key is None:
            return None
        conn = self._db()
        try:
            with _transaction(conn):
                project = _index_file(self, conn, 0, relpath, key, hashes)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:  # callers handle a full disk as OSError
                raise OSError(errno.ENOSPC, f"cannot index {relpath}: {exc}") from exc
            raise
        self.sync()
        return self.find(relpath) if project else None

    def forget(self, dist: DistFile) -> bool:
        """Delete a file from disk and from the index."""
        removed = self.storage.delete(dist.root, dist.relpath)
        conn = self._db()
        with _transaction(conn):
            conn.execute("DELETE FROM files WHERE root = ? AND relpath = ?", (self._roots[dist.root], dist.relpath))
            conn.execute("INSERT INTO changes(project) VALUES (?)", (dist.project,))
        self.sync()
        return removed

    def set_yanked(self, files: Iterable[DistFile], reason: str | None) -> int:
        """Yank (reason is a string, possibly empty) or unyank (None) files."""
        conn = self._db()
        count = 0
        with _transaction(conn):
            for f in files:
                if reason is None:
                    conn.execute("DELETE FROM yanks WHERE filename = ?", (f.filename,))
                else:
                    conn.execute("INSERT OR REPLACE INTO yanks(filename, reason) VALUES (?, ?)", (f.filename, reason))
                conn.execute("INSERT INTO changes(project) VALUES (?)", (f.project,))
                count += 1
        self.sync()
        return count

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
            data = read_core_metadata(self.storage.path(dist.root, dist.relpath), parse_filename(dist.filename))
        except (InvalidDistribution, OSError):
            return None
        return data


def _make_view(projects: dict[str, Project], serial: int) -> View:
    by_url: dict[str, DistFile] = {}
    count = 0
    for project in projects.values():
        count += len(project.files)
        _add_urls(by_url, project.files)
    return View(projects, by_url, tuple(sorted(projects)), serial, count)


def _add_urls(by_url: dict[str, DistFile], files: Iterable[DistFile]) -> None:
    for f in files:
        other = by_url.get(f.relpath)
        if other is None or f.root < other.root:  # an earlier root shadows a later one
            by_url[f.relpath] = f


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection):
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (a full disk) may leave the transaction open; the next BEGIN
        # on this connection would then fail for good.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _index_file(catalog: Catalog, conn: sqlite3.Connection, root: int, relpath: str, key: FileKey,
                hashes: dict[str, str] | None = None) -> str | None:
    """Hash and read one file into the database; returns its project, or None if skipped."""
    filename = relpath.rsplit("/", 1)[-1]
    try:
        dist = parse_filename(filename)
    except InvalidDistribution as exc:
        log.debug("skipping %s: %s", relpath, exc)
        return None
    storage = catalog.storage
    missing = [a for a in catalog.algorithms if not hashes or a not in hashes]
    digests = dict(hashes or {})
    if missing:
        digests.update(storage.digests(root, relpath, tuple(missing)))
    digests = {a: digests[a] for a in catalog.algorithms}
    metadata = None
    try:
        metadata = read_core_metadata(storage.path(root, relpath), dist)
    except InvalidDistribution as exc:
        log.warning("serving %s without metadata: %s", relpath, exc)
    parsed = None
    if metadata is not None:
        try:
            parsed = CoreMetadata.parse(metadata)
        except Exception as exc:  # malformed metadata is the package's problem, not ours
            log.warning("unreadable metadata in %s: %s", relpath, exc)
    metadata_sha256 = hashlib.sha256(metadata).hexdigest() if metadata is not None and dist.packagetype == "bdist_wheel" else None
    display = (parsed.name if parsed and parsed.name else dist.name) or dist.project
    conn.execute(
        "INSERT OR REPLACE INTO files(root, relpath, dir, filename, project, name, version, packagetype,"
        " size, mtime_ns, inode, upload_time, hashes, requires_python, metadata_sha256, summary)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (catalog._roots[root], relpath, relpath.rpartition("/")[0], filename, dist.project, display,
         str(dist.version), dist.packagetype, key.size, key.mtime_ns, key.inode, key.mtime_ns / 1e9,
         json.dumps(digests), parsed.requires_python if parsed else None, metadata_sha256,
         parsed.summary if parsed else None),
    )
    conn.execute("INSERT INTO changes(project) VALUES (?)", (dist.project,))
    return dist.project


class _Scanner:
    """Keeps the database in step with the directories; runs only in the lock holder."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.storage = catalog.storage
        self.dirs: dict[tuple[int, str], int] = {}  # known directories and their mtime_ns
        self.pending: set[tuple[int, str]] = set()  # directories with files still settling
        self.last_sweep = 0.0

    def sweep(self) -> None:
        """Walk every directory and stat every file (start-up, then now and then)."""
        start = time.monotonic()
        conn = self.catalog._db()
        roots = self.catalog._roots
        self.dirs.clear()
        for index in range(len(roots)):
            self._reconcile(conn, index, "", full=True)
        # Files still being written when we looked: wait for them (briefly) so that a
        # server answers its first request with everything that was on disk.
        deadline = time.monotonic() + 5
        while self.pending and time.monotonic() < deadline:
            time.sleep(SETTLE_SECONDS)
            for root, reldir in list(self.pending):
                self._reconcile(conn, root, reldir, full=False)
        with _transaction(conn):
            placeholders = ",".join("?" * len(roots))
            gone = conn.execute(f"SELECT DISTINCT project FROM files WHERE root NOT IN ({placeholders})", roots).fetchall()
            conn.execute(f"DELETE FROM files WHERE root NOT IN ({placeholders})", roots)
            # Directories removed while no one was watching: the walk no longer reaches them.
            for index, rootname in enumerate(roots):
                visited = {reldir for (r, reldir) in self.dirs if r == index}
                for (reldir,) in conn.execute("SELECT DISTINCT dir FROM files WHERE root = ?", (rootname,)).fetchall():
                    if reldir not in visited:
                        where = "WHERE root = ? AND dir = ?"
                        gone += conn.execute(f"SELECT DISTINCT project FROM files {where}", (rootname, reldir)).fetchall()
                        conn.execute(f"DELETE FROM files {where}", (rootname, reldir))
            conn.executemany("INSERT INTO changes(project) VALUES (?)", gone)
            conn.execute("DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes) - ?", (JOURNAL_KEEP,))
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('complete', ?)", (json.dumps(roots),))
        self.last_sweep = time.monotonic()
        self.catalog.last_scan = time.time()
        log.info("indexed %d directories in %.2fs", len(self.dirs), self.last_sweep - start)

    def poll(self) -> None:
        """Look again at directories whose mtime moved (cheap: one stat per directory)."""
        if time.monotonic() - self.last_sweep > self.catalog.settings.full_scan_interval:
            self.sweep()
            return
        conn = self.catalog._db()
        now_ns = time.time_ns()
        for index in range(len(self.catalog._roots)):
            if (index, "") not in self.dirs:
                self._reconcile(conn, index, "", full=True)  # a root that was missing
        for (root, reldir), seen in list(self.dirs.items()):
            if (root, reldir) not in self.dirs:
                continue  # removed while reconciling its parent
            mtime = self.storage.stat_dir(root, reldir)
            if mtime is None:
                self._forget_dir(conn, root, reldir)
            elif mtime != seen or mtime > now_ns - RECENT_DIR_NS or (root, reldir) in self.pending:
                self._reconcile(conn, root, reldir, full=False)
        self.catalog.last_scan = time.time()

    def _reconcile(self, conn: sqlite3.Connection, root: int, reldir: str, full: bool) -> None:
        mtime = self.storage.stat_dir(root, reldir)
        listing = self.storage.list_dir(root, reldir)
        if mtime is None or listing is None:
            self._forget_dir(conn, root, reldir)
            return
        self.pending.discard((root, reldir))
        rootname = self.catalog._roots[root]
        prefix = f"{reldir}/" if reldir else ""
        on_disk = listing.files  # name -> inode; what is left after the rows below is new
        settle_before = time.time() - SETTLE_SECONDS
        changed: list[tuple[str, FileKey]] = []
        gone: list[str] = []

        def look_at(relpath: str, old: tuple | None) -> None:
            key = self.storage.stat_file(root, relpath)
            if key is None or (old is not None and old == (key.size, key.mtime_ns, key.inode, 1)):
                return
            if key.mtime_ns / 1e9 > settle_before:
                self.pending.add((root, reldir))  # still being copied: look again soon
            else:
                changed.append((relpath, key))

        # The known rows are streamed against the listing, never held: a directory may hold
        # 100,000 files. Reading first and writing after keeps the cursor out of the writes.
        has_hashes = " AND ".join(["json_type(hashes, ?) IS NOT NULL"] * len(self.catalog.algorithms)) or "1"
        for relpath, size, mtime_ns, inode, complete in conn.execute(
            f"SELECT relpath, size, mtime_ns, inode, {has_hashes} FROM files WHERE root = ? AND dir = ?",
            (*(f"$.{a}" for a in self.catalog.algorithms), rootname, reldir),
        ):
            listed_inode = on_disk.pop(relpath[len(prefix):], None)
            if listed_inode is None:
                gone.append(relpath)
            elif full or listed_inode != inode:
                # A quick pass takes a known name on the same inode as unchanged (the inode
                # comes with the listing, no stat); a file renamed over it (rsync, mv) is not.
                look_at(relpath, (size, mtime_ns, inode, complete))
        for name in on_disk:
            look_at(prefix + name, None)

        if changed or gone:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for batch, (relpath, key) in enumerate(changed, 1):
                    try:
                        _index_file(self.catalog, conn, root, relpath, key)
                    except OSError as exc:
                        log.warning("cannot read %s: %s", relpath, exc)
                        continue
                    if self.storage.stat_file(root, relpath) != key:
                        self.pending.add((root, reldir))  # changed while we read it
                    if batch % 200 == 0:
                        conn.execute("COMMIT")
                        conn.execute("BEGIN IMMEDIATE")
                for relpath in gone:
                    self._delete(conn, rootname, relpath)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.dirs[(root, reldir)] = mtime
        previous = {d for (r, d) in self.dirs if r == root and d.rpartition("/")[0] == reldir and d != reldir}
        for sub in set(listing.subdirs) - previous:
            self._reconcile(conn, root, sub, full=True)
        if full:
            for sub in set(listing.subdirs) & previous:
                self._reconcile(conn, root, sub, full=True)
        for sub in previous - set(listing.subdirs):
            self._forget_dir(conn, root, sub)

    def _delete(self, conn: sqlite3.Connection, rootname: str, relpath: str) -> None:
        row = conn.execute("SELECT project FROM files WHERE root = ? AND relpath = ?", (rootname, relpath)).fetchone()
        if row:
            conn.execute("DELETE FROM files WHERE root = ? AND relpath = ?", (rootname, relpath))
            conn.execute("INSERT INTO changes(project) VALUES (?)", row)

    def _forget_dir(self, conn: sqlite3.Connection, root: int, reldir: str) -> None:
        """A directory vanished: drop it, its subdirectories and their files."""
        rootname = self.catalog._roots[root]
        prefix = reldir + "/"
        for key in [k for k in self.dirs if k[0] == root and (k[1] == reldir or k[1].startswith(prefix))]:
            self.dirs.pop(key, None)
            self.pending.discard(key)
        with _transaction(conn):
            if reldir:
                where, params = "root = ? AND (dir = ? OR dir LIKE ? ESCAPE '\\')", (rootname, reldir, _like_prefix(prefix))
            else:
                where, params = "root = ?", (rootname,)
            projects = conn.execute(f"SELECT DISTINCT project FROM files WHERE {where}", params).fetchall()
            conn.execute(f"DELETE FROM files WHERE {where}", params)
            conn.executemany("INSERT INTO changes(project) VALUES (?)", projects)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
