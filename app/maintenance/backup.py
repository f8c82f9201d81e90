"""``wharf backup DEST`` and ``wharf restore SRC``: the durable state (and local package files), consistently.

A backup is a directory:

- ``state/``: with SQLite, ``durable.sqlite3``, ``policy.sqlite3`` and ``tokens.sqlite3``
  copied with SQLite's online backup API (a consistent snapshot while workers write), and
  the ``token-secret`` and ``nginx-refresh.key`` files;
- ``durable.json``: with PostgreSQL, every durable row read in one snapshot (``durable.py``);
- ``packages/<root>/<path>``: the package files of local storage, each hashed while
  copied and read back to check it (with object storage the bucket keeps them);
- ``manifest.json``, written last: what the backup holds and every file's sha256. A
  directory without it is an unfinished backup and ``restore`` refuses it.

The durable state is saved before the files, so every upload record in a backup has its
file (published files are never changed in place, and a file is linked into view whole).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..cache_refresh import KEY_FILE
from ..settings import Settings
from ..storage import CHUNK, StorageUnavailable, storage_for
from . import durable

MANIFEST = "manifest.json"
FORMAT = 1
SECRETS = (durable.TOKEN_SECRET, KEY_FILE)


class BackupError(Exception):
    """A backup or restore that cannot go on (a message for the operator)."""


@dataclass
class Report:
    """What a backup, restore or migration did."""

    files: int = 0
    skipped: int = 0
    bytes: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rows = ", ".join(f"{n} {t}" for t, n in self.rows.items() if n) or "no new rows"
        return f"{self.files} file(s) copied ({self.bytes} bytes), {self.skipped} already there; {rows}"


def copy_stream(source: BinaryIO, out: BinaryIO) -> tuple[str, int]:
    """Copy in chunks; the sha256 and size of what was copied."""
    hasher, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        hasher.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup API: a consistent copy while other connections write."""
    src = sqlite3.connect(source, timeout=60)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def backup(settings: Settings, dest: Path) -> Report:
    """Save the durable state (and local package files) of a running or stopped index into ``dest``."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: back up into a new directory")
    (dest / "state").mkdir(parents=True, exist_ok=True)
    report = Report()
    engine = durable.engine_of(settings)
    state = Path(settings.state_path)
    if engine == "sqlite":
        durable.prepare(settings)  # an index that never ran has no files yet: back up empty ones
        for name in durable.SQLITE_FILES:
            _sqlite_copy(state / name, dest / "state" / name)
    else:
        data = durable.export_rows(settings)
        _fsync_write(dest / "durable.json", json.dumps(data))
        report.rows = {t: len(rows) for t, rows in data["tables"].items()}
    secrets = [name for name in SECRETS if (state / name).exists()]
    for name in secrets:
        shutil.copy2(state / name, dest / "state" / name)
    files = [] if settings.storage_url else _backup_files(settings, dest / "packages", report)
    manifest = {"format": FORMAT, "engine": engine, "storage": "s3" if settings.storage_url else "local",
                "created": time.time(), "secrets": secrets, "files": files}
    _fsync_write(dest / MANIFEST, json.dumps(manifest, indent=1))
    return report


def _backup_files(settings: Settings, target: Path, report: Report) -> list[dict]:
    storage = storage_for(settings)
    files = []
    for root in range(len(storage.root_names())):
        for relpath in sorted(storage.list_files(root)):
            try:
                stream, _size = storage.open(root, relpath)
            except FileNotFoundError:
                continue  # removed since it was listed
            path = target / str(root) / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            with stream, open(path, "wb") as out:
                digest, size = copy_stream(stream, out)
                out.flush()
                os.fsync(out.fileno())
            if sha256_of(path) != digest:
                raise BackupError(f"{relpath}: the copy in the backup reads back with another sha256")
            files.append({"root": root, "path": relpath, "size": size, "sha256": digest})
            report.files += 1
            report.bytes += size
    return files


def read_manifest(src: Path) -> dict:
    try:
        manifest = json.loads((Path(src) / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{src} has no {MANIFEST}: not a backup, or an unfinished one") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src}: unknown backup format {manifest.get('format')!r}")
    return manifest


def restore(settings: Settings, src: Path) -> Report:
    """Put a backup's durable state (and files) into the fresh state dir or database ``settings`` name."""
    src = Path(src)
    manifest = read_manifest(src)
    engine = durable.engine_of(settings)
    state = Path(settings.state_path)
    _require_fresh(settings, state)
    report = Report()
    state.mkdir(parents=True, exist_ok=True)
    for name in manifest["secrets"]:
        if not (state / name).exists():
            shutil.copy2(src / "state" / name, state / name)
    if manifest["engine"] == "sqlite" and engine == "sqlite":
        for name in durable.SQLITE_FILES:
            _sqlite_copy(src / "state" / name, state / name)
    else:
        # Across engines the rows travel as data: a SQLite backup into PostgreSQL, or back.
        if manifest["engine"] == "sqlite":
            saved = dataclasses.replace(settings, state_dir=src / "state", database_url="", storage_url="")
            data = durable.export_rows(saved)
        else:
            data = json.loads((src / "durable.json").read_text())
        report.rows = durable.import_rows(settings, data)
    _restore_files(settings, src, manifest["files"], report)
    return report


def _require_fresh(settings: Settings, state: Path) -> None:
    if durable.engine_of(settings) == "sqlite":
        present = [n for n in (*durable.SQLITE_FILES, durable.TOKEN_SECRET) if (state / n).exists()]
        if present:
            raise BackupError(f"{state} already holds {', '.join(present)}: restore into a fresh state directory")
        return
    data = durable.export_rows(settings) if _has_tables(settings) else {"tables": {}}
    if any(data["tables"].values()):
        raise BackupError("the database already holds durable records: restore into a fresh database")


def _has_tables(settings: Settings) -> bool:
    from ..databases import PgConnection

    conn = PgConnection(settings.database_url)
    try:
        return conn.execute("SELECT to_regclass('public.token_key') IS NOT NULL").fetchone()[0]
    finally:
        conn.close()


def _restore_files(settings: Settings, src: Path, files: list[dict], report: Report) -> None:
    storage = storage_for(settings)
    for entry in files:
        relpath, want = entry["path"], entry["sha256"]
        path = src / "packages" / str(entry["root"]) / relpath
        if sha256_of(path) != want:
            raise BackupError(f"{path}: its sha256 differs from the one the backup recorded")
        if storage.stat_file(0, relpath) is not None:
            if storage.digests(0, relpath, ("sha256",))["sha256"] != want:
                raise BackupError(f"{relpath} is already there with other bytes")
            report.skipped += 1
            continue
        try:
            with open(path, "rb") as source:
                storage.write(relpath, source)
        except StorageUnavailable as exc:
            raise BackupError(f"cannot write {relpath}: {exc}") from exc
        if storage.digests(0, relpath, ("sha256",))["sha256"] != want:
            raise BackupError(f"{relpath}: the restored copy reads back with another sha256")
        report.files += 1
        report.bytes += entry["size"]
