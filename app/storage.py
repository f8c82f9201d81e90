"""Where package files live: plain files under one or more packages directories.

This is the only module that opens, writes or deletes package files. A file is named by
the index of its root and its POSIX path relative to that root; nothing outside the
roots can be named. Writes go to a dot-named temporary file in the target directory and
are renamed into place only when complete, so readers never see a partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .dists import has_dist_suffix

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileKey:
    """What tells a file changed without reading it."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileKey:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True, slots=True)
class DirListing:
    files: dict[str, int]  # distribution files by name: their inode (from the listing, no stat)
    subdirs: list[str]  # relative paths of the (non-dot) subdirectories


class StorageError(Exception):
    """A write that could not be completed (disk full, permissions)."""


class LocalStorage:
    """Package files on the local filesystem."""

    def __init__(self, roots: tuple[Path, ...]):
        self.roots = tuple(Path(root).absolute() for root in roots)
        self._prefixes = tuple(f"{root}{os.sep}" for root in self.roots)

    # --- reading ---------------------------------------------------------------------
    def path(self, root: int, relpath: str) -> Path:
        return self.roots[root].joinpath(*relpath.split("/")) if relpath else self.roots[root]

    def stat_dir(self, root: int, reldir: str) -> int | None:
        try:
            return os.stat(self.path(root, reldir)).st_mtime_ns
        except OSError:
            return None

    def _fast_path(self, root: int, relpath: str) -> str | Path:
        # path() without pathlib, for what runs per file or per request (stat, open)
        return self._prefixes[root] + relpath if relpath else self.roots[root]

    def stat_file(self, root: int, relpath: str) -> FileKey | None:
        try:
            st = os.stat(self._fast_path(root, relpath))
        except OSError:
            return None
        return FileKey.of(st)

    def list_dir(self, root: int, reldir: str) -> DirListing | None:
        files: dict[str, int] = {}
        subdirs: list[str] = []
        try:
            with os.scandir(self.path(root, reldir)) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue  # dot-folders (our state), temporary uploads, editor files
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(f"{reldir}/{entry.name}" if reldir else entry.name)
                    elif has_dist_suffix(entry.name) and entry.is_file():
                        # Only the inode is kept: a DirEntry holds on to its stat result,
                        # ~250 bytes a file during a sweep of 100,000 files.
                        files[entry.name] = entry.inode()
        except OSError:
            return None
        return DirListing(files, subdirs)

    def readable(self) -> list[str]:
        """Problems that stop the index from reading its directories (empty if none)."""
        problems = []
        for root in self.roots:
            if not root.is_dir():
                problems.append(f"{root} is not a directory")
            elif not os.access(root, os.R_OK | os.X_OK):
                problems.append(f"{root} is not readable")
        return problems

    def open(self, root: int, relpath: str) -> BinaryIO:
        return open(self._fast_path(root, relpath), "rb")

    def digests(self, root: int, relpath: str, algorithms: tuple[str, ...]) -> dict[str, str]:
        hashers = {name: new_hasher(name) for name in algorithms}
        with self.open(root, relpath) as stream:
            while chunk := stream.read(CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
        return {name: hasher.hexdigest() for name, hasher in hashers.items()}

    # --- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def temporary(self, filename: str) -> Iterator[tuple[BinaryIO, Path]]:
        """A hidden temporary file beside where ``filename`` will go; removed on error."""
        directory = self.roots[0]
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".upload-{secrets.token_hex(8)}-{filename}.part"
        try:
            stream = open(tmp, "xb")
            try:
                yield stream, tmp
            except BaseException:
                # Closing flushes what is still buffered, which fails as the write did (a
                # full disk): that second error must not hide the first.
                with contextlib.suppress(OSError):
                    stream.close()
                raise
            stream.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def publish(self, tmp: Path, filename: str, *, replace: bool) -> str:
        """Move a completed temporary file into place; returns its relpath under root 0.

        Without ``replace`` an existing file wins (FileExistsError), atomically.
        """
        target = self.roots[0] / filename
        with open(tmp, "rb") as stream:
            os.fsync(stream.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # fails if the name exists: no check-then-act race
            tmp.unlink()
        _fsync_dir(self.roots[0])
        return filename

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Delete temporary upload files left by a killed process; returns how many."""
        count = 0
        cutoff = time.time() - older_than
        with contextlib.suppress(OSError), os.scandir(self.roots[0]) as entries:
            for entry in entries:
                if entry.name.startswith(".upload-") and entry.name.endswith(".part"):
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            count += 1
        return count

    def delete(self, root: int, relpath: str) -> bool:
        try:
            self.path(root, relpath).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.path(root, relpath).parent)
        return True


def new_hasher(name: str):
    if name == "blake2b_256" or name == "blake2_256":
        return hashlib.blake2b(digest_size=32)
    return hashlib.new(name)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
