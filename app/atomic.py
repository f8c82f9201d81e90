"""Whole-file replacement: a file is either its old bytes or its new bytes, never a mix.

Every writer of a file that readers may open at any moment (package files, cached upstream
listings, the htpasswd file, rendered configs) goes through ``replace_file``: the bytes go
to a hidden temporary file in the same directory, which is renamed over the target only
once complete (a rename within one filesystem is atomic). Secrets that several processes
may create at once (``shared_secret``) are linked into place instead, never replaced.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replace_file(path: Path, *, mode: int | None = None, durable: bool = True) -> Iterator[BinaryIO]:
    """A stream whose bytes replace ``path`` if the block completes; nothing changes if it raises.

    ``mode`` sets the new file's permissions (default: the umask's); ``durable`` fsyncs the
    file before the rename and the directory after it, so the new bytes survive a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{secrets.token_hex(8)}-{path.name}"
    try:
        with open(tmp, "xb") as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_file(path: Path, data: bytes, *, mode: int | None = None, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (see ``replace_file``)."""
    with replace_file(path, mode=mode, durable=durable) as stream:
        stream.write(data)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new link) durable; best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def shared_secret(path: Path) -> str:
    """A random hex secret kept in ``path`` (0600): read it, or make it once.

    Race-free across processes: the secret is written whole to a temporary file and linked
    into place, which fails if another process made it first (then theirs is the one).
    """
    path = Path(path)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_text().strip()
