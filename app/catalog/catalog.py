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

import errno
import fcntl
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from packaging.version import Version

from ..dists import DistName, InvalidDistribution, parse_filename, read_core_metadata
from ..settings import Settings
from ..storage import Storage, storage_for
from .database import FILE_COLUMNS, connect, transaction
from .records import DistFile, Project, View, add_urls, make_view
from .scanner import HEARTBEAT, Scanner, read_file, write_file

log = logging.getLogger("wharf.catalog")


class CatalogUnavailable(Exception):
    """The catalog's database refused a write (locked past its timeout, unreachable)."""


# Seconds without a scanner heartbeat after which /health reports the scanner stalled.
STALLED_AFTER = 30.0


class Catalog:
    """The index's knowledge of its storage (the packages directories).

    ``Catalog(settings)`` is the one way the app, the server and the CLI get theirs: its
    storage is ``storage_for(settings)`` unless one is given (tests count what it reads).
    """

    def __init__(self, settings: Settings, storage: Storage | None = None):
        self.settings = settings
        self.storage = storage if storage is not None else storage_for(settings)
        self.state_dir = Path(settings.state_path)
        self.db_path = self.state_dir / "catalog.sqlite3"
        self.algorithms = tuple(dict.fromkeys(a for a in ("sha256", settings.hash_algo) if a != "off"))
        self.view = View()
        self.last_scan: float | None = None
        self.root_names = self.storage.root_names()
        self._seq = 0
        self._local = threading.local()
        self._lock_fd: int | None = None
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
        """Why the scanner (in whichever process holds it) looks stuck, or None.

        The scanner rewrites its heartbeat file after every pass and every batch of files,
        naming a big file while it hashes it; a heartbeat older than ``STALLED_AFTER``
        seconds (or 20 scan intervals) means files added now would not show up.
        """
        path = self.state_dir / HEARTBEAT
        try:
            age = time.time() - path.stat().st_mtime
            reading = path.read_text(errors="replace").strip()
        except OSError:
            return None  # no scanner has run yet (the first sweep writes it)
        if age < max(STALLED_AFTER, 20 * self.settings.scan_interval):
            return None
        doing = f" (still reading {reading})" if reading else ""
        return f"the catalog scanner has not finished a pass for {age:.0f} s{doing}: new files are not being listed"

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
                self._report_scan()
            except Exception:  # keep watching whatever one pass ran into
                log.exception("catalog pass failed")

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
    def db(self) -> sqlite3.Connection:
        """This thread's connection to the catalog database."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.state_dir, self.db_path)
        return conn

    def _complete(self) -> bool:
        row = self.db().execute("SELECT value FROM meta WHERE key='complete'").fetchone()
        return bool(row) and row[0] == json.dumps(self.root_names)

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
        self._scanner = Scanner(self)
        self._scanned = self.view  # what changes from here on is reported
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
            index = self.root_names.index(root)
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
        files = (self._row_file(row) for row in self.db().execute(sql, params))
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
            self.view = make_view(projects, self.view.serial + 1)

    def catch_up(self) -> None:
        """Apply other processes' changes now (one pragma when there are none).

        Called before each request, so an upload or yank answered by one worker is seen by
        the next request whichever worker takes it; skipped if this process is syncing.
        """
        # PRAGMA data_version changes only when another connection commits, and costs no
        # table read: most requests stop here.
        version = self.db().execute("PRAGMA data_version").fetchone()[0]
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
            conn = self.db()
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
                    add_urls(by_url, new.files)
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
        row = read_file(self, 0, relpath, key, hashes)
        if row is None:
            return None
        conn = self.db()
        try:
            with transaction(conn):
                project = write_file(conn, row)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:  # callers handle a full disk as OSError
                raise OSError(errno.ENOSPC, f"cannot index {relpath}: {exc}") from exc
            raise CatalogUnavailable(f"cannot record {relpath}: {exc}") from exc
        self.sync()
        return self.find(relpath) if project else None

    def forget(self, dist: DistFile) -> bool:
        """Delete a file from disk and from the index."""
        removed = self.storage.delete(dist.root, dist.relpath)
        conn = self.db()
        with transaction(conn):
            conn.execute("DELETE FROM files WHERE root = ? AND relpath = ?", (self.root_names[dist.root], dist.relpath))
            conn.execute("INSERT INTO changes(project) VALUES (?)", (dist.project,))
        self.sync()
        return removed

    def set_yanked(self, files: Iterable[DistFile], reason: str | None) -> int:
        """Yank (reason is a string, possibly empty) or unyank (None) files."""
        conn = self.db()
        count = 0
        with transaction(conn):
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
