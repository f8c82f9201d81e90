"""Package files on the local filesystem: plain files under one or more directories.

Only regular files that really are under a root are ever listed or opened: a symbolic
link (to a file or a directory, pointing inside the roots or not), a device or a FIFO is
skipped when listing and refused when opening, and an opened file is checked to live
under its root, so a link dropped into the packages directory cannot publish the TLS
key, the password file or ``/etc/passwd``.

New files are written to a dot-named temporary file in their target directory and linked
(or renamed) into place only when complete, so readers never see a partial file, and a
link fails if the name is taken, so two writers of one name cannot both win.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..atomic import fsync_dir
from ..dists import has_dist_suffix
from . import DirListing, FileKey, read_digests, write_stream

TEMPORARY_PREFIX = ".upload-"
TEMPORARY_SUFFIX = ".part"


class LocalStorage:
    """Package files in local directories (implements app.storage.Storage)."""

    def __init__(self, roots: tuple[Path, ...]):
        self.roots = tuple(Path(root).absolute() for root in roots)
        self._prefixes = tuple(f"{root}{os.sep}" for root in self.roots)
        # Where the roots really are (a root may itself be a link, which is fine): an opened
        # file's real path must start with its root's.
        self._real_prefixes = tuple(os.path.join(os.path.realpath(root), "") for root in self.roots)

    def root_names(self) -> list[str]:
        return [str(root) for root in self.roots]

    def _path(self, root: int, relpath: str) -> Path:
        if relpath and (relpath.startswith("/") or "\0" in relpath
                        or any(part in ("", ".", "..") for part in relpath.split("/"))):
            raise ValueError(f"not a path under the storage's roots: {relpath!r}")
        return self.roots[root].joinpath(*relpath.split("/")) if relpath else self.roots[root]

    def _fast_path(self, root: int, relpath: str) -> str:
        # _path() without pathlib, for what runs per file or per request (stat, open).
        if relpath.startswith("/") or "\0" in relpath or "/../" in f"/{relpath}/":
            raise ValueError(f"not a path under the storage's roots: {relpath!r}")
        return self._prefixes[root] + relpath if relpath else str(self.roots[root])

    # --- reading ---------------------------------------------------------------------
    def readable(self) -> list[str]:
        problems = []
        for root in self.roots:
            if not root.is_dir():
                problems.append(f"{root} is not a directory")
            elif not os.access(root, os.R_OK | os.X_OK):
                problems.append(f"{root} is not readable")
        return problems

    def stat_dir(self, root: int, reldir: str) -> int | None:
        try:
            return os.stat(self._path(root, reldir)).st_mtime_ns
        except OSError:
            return None

    def list_dir(self, root: int, reldir: str) -> DirListing | None:
        files: dict[str, int] = {}
        subdirs: list[str] = []
        try:
            with os.scandir(self._path(root, reldir)) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue  # dot-folders (our state), temporary uploads, editor files
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(f"{reldir}/{entry.name}" if reldir else entry.name)
                    elif has_dist_suffix(entry.name) and entry.is_file(follow_symlinks=False):
                        # Only the inode is kept: a DirEntry holds on to its stat result,
                        # ~250 bytes a file during a sweep of 100,000 files.
                        files[entry.name] = entry.inode()
        except OSError:
            return None
        return DirListing(files, subdirs)

    def list_files(self, root: int) -> Iterator[str]:
        pending = [""]
        while pending:
            reldir = pending.pop()
            listing = self.list_dir(root, reldir)
            if listing is None:
                continue
            prefix = f"{reldir}/" if reldir else ""
            yield from (prefix + name for name in listing.files)
            pending.extend(listing.subdirs)

    def stat_file(self, root: int, relpath: str) -> FileKey | None:
        try:
            st = os.lstat(self._fast_path(root, relpath))
        except OSError:
            return None
        return FileKey.of(st) if stat.S_ISREG(st.st_mode) else None

    def open(self, root: int, relpath: str) -> tuple[BinaryIO, int]:
        """The file's bytes and size; FileNotFoundError for anything but a regular file under the root."""
        path = self._fast_path(root, relpath)
        # O_NOFOLLOW refuses a link as the last component; O_NONBLOCK keeps a FIFO from
        # blocking the open. A link among the directories above it is caught below.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not self._under_root(root, fd, path):
                raise FileNotFoundError(f"not a regular file under the packages directory: {relpath}")
            os.set_blocking(fd, True)
            stream = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        return stream, st.st_size

    def _under_root(self, root: int, fd: int, path: str) -> bool:
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")  # where the open file really is
        except OSError:
            real = os.path.realpath(path)
        return real.startswith(self._real_prefixes[root])

    def digests(self, root: int, relpath: str, algorithms: tuple[str, ...]) -> dict[str, str]:
        return read_digests(self, root, relpath, algorithms)

    # --- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def new_file(self, relpath: str) -> Iterator[LocalNewFile]:
        target = self._path(0, relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}-{target.name}{TEMPORARY_SUFFIX}"
        new = LocalNewFile(relpath, target, tmp, open(tmp, "xb"))
        try:
            yield new
        except BaseException:
            # Closing flushes what is still buffered, which fails as the write did (a full
            # disk): that second error must not hide the first.
            with contextlib.suppress(OSError):
                new.stream.close()
            raise
        finally:
            new.stream.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def write(self, relpath: str, source: BinaryIO, *, replace: bool = False) -> str:
        return write_stream(self, relpath, source, replace=replace)

    def delete(self, root: int, relpath: str) -> bool:
        path = self._path(root, relpath)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    def remove_stale_temporaries(self, older_than: float) -> int:
        count = 0
        cutoff = time.time() - older_than
        with contextlib.suppress(OSError), os.scandir(self.roots[0]) as entries:
            for entry in entries:
                if entry.name.startswith(TEMPORARY_PREFIX) and entry.name.endswith(TEMPORARY_SUFFIX):
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            count += 1
        return count


class LocalNewFile:
    """A file being written to its hidden temporary name (implements app.storage.NewFile)."""

    def __init__(self, relpath: str, target: Path, tmp: Path, stream: BinaryIO):
        self.relpath, self.target, self.tmp, self.stream = relpath, target, tmp, stream
        self.size = 0

    def write(self, data: bytes) -> int:
        written = self.stream.write(data)
        self.size += len(data)
        return written

    def open(self) -> tuple[BinaryIO, int]:
        self.stream.flush()
        stream = open(self.tmp, "rb")
        return stream, os.fstat(stream.fileno()).st_size

    def publish(self, *, replace: bool = False) -> str:
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()
        if replace:
            os.replace(self.tmp, self.target)
        else:
            os.link(self.tmp, self.target)  # fails if the name exists: no check-then-act race
            self.tmp.unlink()
        fsync_dir(self.target.parent)
        return self.relpath
