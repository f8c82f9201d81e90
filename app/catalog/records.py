"""What the catalog knows, as requests read it: files, projects and the immutable View."""

from __future__ import annotations

import bisect
import json
import sys

from collections.abc import Iterable
from dataclasses import dataclass, field

from packaging.version import Version


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
    """What a worker knows of the whole index: every project's name, in order.

    Replaced whole when a change arrives. Projects themselves are not held here: the
    catalog loads them on demand into a bounded cache (app/catalog/project_cache.py), so
    a worker's memory does not grow with the number of files.
    """

    names: tuple[str, ...] = ()
    serial: int = 0
    seq: int = 0  # the position in the shared change journal this view reflects

    def lists(self, name: str) -> bool:
        """Whether a project of this name has files (a binary search, no I/O)."""
        names = self.names
        i = bisect.bisect_left(names, name)
        return i < len(names) and names[i] == name


def file_from_row(row: tuple, root_names: list[str]) -> DistFile | None:
    """A catalog row (``FILE_COLUMNS``) as a DistFile, or None if its root is gone or it lacks sha256."""
    (root, relpath, filename, project, name, version, packagetype, size, upload_time,
     hashes, requires_python, metadata_sha256, summary, yanked) = row
    try:
        index = root_names.index(root)
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
