"""Keeping the catalog's database in step with the storage: the sweep, the poll, indexing a file.

One process at a time (the holder of ``scan.lock``) runs the ``Scanner``: each
``scan_interval`` it stats the known directories and lists only those whose mtime moved,
so a file copied in by hand is seen within about a second without a rescan per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import write_file as write_file_atomically
from ..dists import CoreMetadata, InvalidDistribution, parse_filename
from ..storage import FileKey
from .database import JOURNAL_KEEP, UPSERT_FILE, has_hashes, like_prefix

if TYPE_CHECKING:
    from .catalog import Catalog

log = logging.getLogger("wharf.catalog")

# A file whose mtime is this recent may still be being written (cp, scp): wait for it.
SETTLE_SECONDS = 0.3
# A directory modified this recently is listed again on the next poll, in case its
# filesystem's timestamps are too coarse to show a second change.
RECENT_DIR_NS = 2_000_000_000
# Files read before their rows are written in one transaction.
BATCH = 200
# Files at least this big are named in the heartbeat while being hashed, so /health can
# say what a slow scanner is busy with.
NAMED_READ_BYTES = 64 * 1024 * 1024
HEARTBEAT = "scanner.heartbeat"
# Seconds without a heartbeat after which /health reports the scanner stalled.
STALLED_AFTER = 30.0


def stalled_scanner(state_dir: Path, scan_interval: float) -> str | None:
    """Why the scanner looks stuck, or None.

    The scanner rewrites its heartbeat file after every pass and every batch of files,
    naming a big file while it hashes it; a heartbeat older than ``STALLED_AFTER``
    seconds (or 20 scan intervals) means files added now would not show up.
    """
    path = state_dir / HEARTBEAT
    try:
        age = time.time() - path.stat().st_mtime
        reading = path.read_text(errors="replace").strip()
    except OSError:
        return None  # no scanner has run yet (the first sweep writes it)
    if age < max(STALLED_AFTER, 20 * scan_interval):
        return None
    doing = f" (still reading {reading})" if reading else ""
    return f"the catalog scanner has not finished a pass for {age:.0f} s{doing}: new files are not being listed"


def read_file(catalog: Catalog, root: int, relpath: str, key: FileKey,
              hashes: dict[str, str] | None = None) -> tuple | None:
    """Hash one file and read its metadata: the row for ``write_file``, or None if skipped.

    All the file I/O happens here, outside any transaction: hashing a 6 GB file dropped in
    by hand takes minutes, and the database must stay writable meanwhile.
    """
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
        metadata = catalog.core_metadata(root, relpath, dist)
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
    return (catalog.root_names[root], relpath, relpath.rpartition("/")[0], filename, dist.project, display,
            str(dist.version), dist.packagetype, key.size, key.mtime_ns, key.inode, key.mtime_ns / 1e9,
            json.dumps(digests), parsed.requires_python if parsed else None, metadata_sha256,
            parsed.summary if parsed else None)


def write_file(conn, row: tuple) -> str:
    """Store a row made by ``read_file`` (inside the caller's transaction); returns its project."""
    conn.execute(UPSERT_FILE, row)
    conn.execute("INSERT INTO changes(project) VALUES (?)", (row[4],))
    return row[4]


# Seconds between progress lines while files are being read.
PROGRESS_EVERY = 5.0


class OutOfTime(Exception):
    """A sweep given a deadline ran past it (what it indexed so far is kept)."""


class Scanner:
    """Keeps the database in step with the directories; runs only in the lock holder."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.storage = catalog.storage
        self.transaction = catalog.database.transaction
        self.dirs: dict[tuple[int, str], int] = {}  # known directories and their mtime_ns
        self.pending: set[tuple[int, str]] = set()  # directories with files still settling
        self.last_sweep = 0.0
        self.indexed = 0  # files read (hashed, metadata) since this process became the scanner
        self.deadline: float | None = None  # a sweep stops (OutOfTime) past this monotonic time
        self._reported = time.monotonic()

    def beat(self, reading: str = "") -> None:
        """Tell other processes (their /health) that the scanner is alive, and what it reads."""
        with contextlib.suppress(OSError):
            write_file_atomically(self.catalog.state_dir / HEARTBEAT, reading.encode(), durable=False)

    def sweep(self) -> None:
        """Walk every directory and stat every file (start-up, then now and then)."""
        start = time.monotonic()
        conn = self.catalog.db()
        roots = self.catalog.root_names
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
        with self.transaction(conn):
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
            conn.execute("INSERT INTO meta(key, value) VALUES ('complete', ?)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (json.dumps(roots),))
        self.last_sweep = time.monotonic()
        self.catalog.last_scan = time.time()
        self.beat()
        log.info("indexed %d directories in %.2fs", len(self.dirs), self.last_sweep - start)

    def poll(self) -> None:
        """Look again at directories whose mtime moved (cheap: one stat per directory)."""
        if time.monotonic() - self.last_sweep > self.catalog.settings.full_scan_interval:
            self.sweep()
            return
        conn = self.catalog.db()
        now_ns = time.time_ns()
        for index in range(len(self.catalog.root_names)):
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
        self.beat()

    def _reconcile(self, conn, root: int, reldir: str, full: bool) -> None:
        mtime = self.storage.stat_dir(root, reldir)
        listing = self.storage.list_dir(root, reldir)
        if mtime is None or listing is None:
            self._forget_dir(conn, root, reldir)
            return
        self.pending.discard((root, reldir))
        rootname = self.catalog.root_names[root]
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
        complete_sql, complete_params = has_hashes(self.catalog.algorithms)
        for relpath, size, mtime_ns, inode, complete in conn.execute(
            f"SELECT relpath, size, mtime_ns, inode, CASE WHEN {complete_sql} THEN 1 ELSE 0 END"
            " FROM files WHERE root = ? AND dir = ?", (*complete_params, rootname, reldir),
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

        # Files are read in batches with no transaction open, then each batch is written in
        # one short transaction: a long hash never holds the database's write lock.
        for start in range(0, len(changed), BATCH):
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise OutOfTime(f"indexed {self.indexed} files before the deadline")
            rows = []
            for relpath, key in changed[start:start + BATCH]:
                if key.size >= NAMED_READ_BYTES:
                    self.beat(f"{self.catalog.root_names[root]}/{relpath}")
                try:
                    row = read_file(self.catalog, root, relpath, key)
                except OSError as exc:
                    log.warning("cannot read %s: %s", relpath, exc)
                    continue
                if self.storage.stat_file(root, relpath) != key:
                    self.pending.add((root, reldir))  # changed while we read it
                    continue
                if row is not None:
                    rows.append(row)
            if rows:
                with self.transaction(conn):
                    for row in rows:
                        write_file(conn, row)
                self._progress(len(rows))
            self.beat()
        if gone:
            with self.transaction(conn):
                for relpath in gone:
                    self._delete(conn, rootname, relpath)
        self.dirs[(root, reldir)] = mtime
        previous = {d for (r, d) in self.dirs if r == root and d.rpartition("/")[0] == reldir and d != reldir}
        for sub in set(listing.subdirs) - previous:
            self._reconcile(conn, root, sub, full=True)
        if full:
            for sub in set(listing.subdirs) & previous:
                self._reconcile(conn, root, sub, full=True)
        for sub in previous - set(listing.subdirs):
            self._forget_dir(conn, root, sub)

    def _progress(self, count: int) -> None:
        """Log how far a long index has come (a cold start of a million files takes a while;
        the index answers meanwhile with what it has)."""
        self.indexed += count
        now = time.monotonic()
        if now - self._reported >= PROGRESS_EVERY:
            self._reported = now
            log.info("indexing: %d files read so far", self.indexed)

    def _delete(self, conn, rootname: str, relpath: str) -> None:
        row = conn.execute("SELECT project FROM files WHERE root = ? AND relpath = ?", (rootname, relpath)).fetchone()
        if row:
            conn.execute("DELETE FROM files WHERE root = ? AND relpath = ?", (rootname, relpath))
            conn.execute("INSERT INTO changes(project) VALUES (?)", row)

    def _forget_dir(self, conn, root: int, reldir: str) -> None:
        """A directory vanished: drop it, its subdirectories and their files."""
        rootname = self.catalog.root_names[root]
        prefix = reldir + "/"
        for key in [k for k in self.dirs if k[0] == root and (k[1] == reldir or k[1].startswith(prefix))]:
            self.dirs.pop(key, None)
            self.pending.discard(key)
        with self.transaction(conn):
            if reldir:
                where, params = "root = ? AND (dir = ? OR dir LIKE ? ESCAPE '\\')", (rootname, reldir, like_prefix(prefix))
            else:
                where, params = "root = ?", (rootname,)
            projects = conn.execute(f"SELECT DISTINCT project FROM files WHERE {where}", params).fetchall()
            conn.execute(f"DELETE FROM files WHERE {where}", params)
            conn.executemany("INSERT INTO changes(project) VALUES (?)", projects)
