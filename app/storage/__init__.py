"""Where package files live: the interface every storage backend implements.

Storage is the only code that reads, writes, lists or deletes package files; the catalog,
the HTTP modules and ``wharf mirror`` go through a ``Storage``. A file is named by the
index of its root and its POSIX path relative to that root ("relpath"); nothing outside
the roots can be named. ``LocalStorage`` (app/storage/local.py) keeps the files in plain
directories; ``S3Storage`` (app/storage/s3.py) keeps them in S3-compatible object storage
(``storage_url = s3://BUCKET/PREFIX``); both implement the same two protocols.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ..settings import Settings

CHUNK = 1024 * 1024


class StorageUnavailable(OSError):
    """The storage cannot be reached or refused a request (an object store that is down):
    a request that needs it answers 503 and may be tried again."""


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
    """One directory's distribution files and subdirectories (dot-names left out)."""

    files: dict[str, int]  # distribution files by name: their inode (from the listing, no stat)
    subdirs: list[str]  # relative paths of the (non-dot) subdirectories


class NewFile(Protocol):
    """A file being written: hidden from readers until ``publish``; gone if never published."""

    size: int

    def write(self, data: bytes) -> int: ...

    def open(self) -> tuple[BinaryIO, int]:
        """What was written so far, to read back (checks before publishing) and its size."""

    def publish(self, *, replace: bool = False) -> str:
        """Move the complete file into place; returns its relpath under root 0.

        Without ``replace`` an existing file wins (FileExistsError), atomically: of two
        concurrent writers of one name, exactly one succeeds.
        """


class Storage(Protocol):
    """Package files under one or more roots; writes go to the first root."""

    def root_names(self) -> list[str]:
        """A name per root, stable across restarts (the catalog keys its rows by them)."""

    def readable(self) -> list[str]:
        """Problems that stop the index from reading its roots (empty if none)."""

    # Listing: per directory, so a poller can look only at directories whose mtime moved.
    def stat_dir(self, root: int, reldir: str) -> int | None:
        """The directory's modification time in ns, or None if it is not there."""

    def list_dir(self, root: int, reldir: str) -> DirListing | None: ...

    def list_files(self, root: int) -> Iterator[str]:
        """Relpaths of every distribution file under ``root`` (the whole tree, dot-folders skipped)."""

    def stat_file(self, root: int, relpath: str) -> FileKey | None: ...

    def open(self, root: int, relpath: str) -> tuple[BinaryIO, int]:
        """A binary stream positioned at the start, and the file's size; FileNotFoundError if gone."""

    def digests(self, root: int, relpath: str, algorithms: tuple[str, ...]) -> dict[str, str]: ...

    def new_file(self, relpath: str) -> AbstractContextManager[NewFile]:
        """A new file for ``relpath`` under root 0, removed on leaving the block unless published."""

    def write(self, relpath: str, source: BinaryIO, *, replace: bool = False) -> str:
        """Write ``source`` to ``relpath`` under root 0 atomically (see ``NewFile.publish``)."""

    def delete(self, root: int, relpath: str) -> bool:
        """Remove a file; False if it was not there."""

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Delete unpublished new files left by a killed process; returns how many."""


def storage_for(settings: Settings, *, dest: Path | None = None) -> Storage:
    """The storage the settings name: ``storage_url`` (s3://...), else the packages directories.

    With ``dest`` new files go to that local directory, and the packages directories are
    read besides it (``wharf mirror --dest``).
    """
    if dest is None and settings.storage_url:
        from .s3 import S3Storage  # boto3 is imported only when it is used

        return S3Storage(settings)
    if dest is None:
        return LocalStorage(settings.packages)
    others = [root for root in settings.packages if root.is_dir() and root.absolute() != dest.absolute()]
    return LocalStorage((dest, *others))


def new_hasher(name: str):
    """A hashlib object for one of our hash names (``blake2b_256`` is Warehouse's name)."""
    if name == "blake2b_256" or name == "blake2_256":
        return hashlib.blake2b(digest_size=32)
    if name == "md5":
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(name)


def read_digests(storage: Storage, root: int, relpath: str, algorithms: tuple[str, ...]) -> dict[str, str]:
    """Hash a stored file in one streamed pass (every backend's ``digests``)."""
    hashers = {name: new_hasher(name) for name in algorithms}
    stream, _size = storage.open(root, relpath)
    with stream:
        while chunk := stream.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def write_stream(storage: Storage, relpath: str, source: BinaryIO, *, replace: bool = False) -> str:
    """Copy ``source`` into a new file and publish it (every backend's ``write``)."""
    with storage.new_file(relpath) as new:
        while chunk := source.read(CHUNK):
            new.write(chunk)
        return new.publish(replace=replace)


# The backends, importable from here; they build on the definitions above.
from .local import LocalStorage  # noqa: E402

__all__ = ["CHUNK", "DirListing", "FileKey", "LocalStorage", "NewFile", "Storage", "StorageUnavailable", "new_hasher",
           "storage_for"]
