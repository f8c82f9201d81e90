"""``wharf migrate``: copy an index (package files and durable state) to other storage and database.

From a single node's packages directory and SQLite files into S3 + PostgreSQL, or back,
or any other pairing. Every file is hashed on the way and read back from the target;
a file already there with the same sha256 is left alone, one with other bytes stops the
migration. Durable rows are added where missing (``durable.import_rows``). So running it
again copies only what is missing, and a migration cut short is finished by a re-run.
The derived catalog is not copied: the target's nodes build it from the files.
"""

from __future__ import annotations

import logging

from ..settings import Settings
from ..storage import Storage, storage_for
from . import durable
from .backup import BackupError, Report

log = logging.getLogger("wharf.migrate")


def migrate(source: Settings, target: Settings) -> Report:
    """Copy what ``target`` lacks from ``source``; what was copied."""
    report = Report()
    src, dst = storage_for(source), storage_for(target)
    for root in range(len(src.root_names())):
        for relpath in sorted(src.list_files(root)):
            _copy_file(src, root, relpath, dst, report)
    report.rows = durable.import_rows(target, durable.export_rows(source))
    return report


def _copy_file(src: Storage, root: int, relpath: str, dst: Storage, report: Report) -> None:
    want = src.digests(root, relpath, ("sha256",))["sha256"]
    if dst.stat_file(0, relpath) is not None:
        if dst.digests(0, relpath, ("sha256",))["sha256"] != want:
            raise BackupError(f"{relpath} is already in the target with other bytes")
        report.skipped += 1
        return
    stream, size = src.open(root, relpath)
    with stream:
        dst.write(relpath, stream)
    got = dst.digests(0, relpath, ("sha256",))["sha256"]
    if got != want:
        dst.delete(0, relpath)
        raise BackupError(f"{relpath}: the copy reads back with sha256 {got}, not {want}; removed it")
    log.info("copied %s (%d bytes, sha256 %s)", relpath, size, want)
    report.files += 1
    report.bytes += size
