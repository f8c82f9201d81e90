"""What the catalog knows, as requests read it: files, projects and the immutable View."""

from __future__ import annotations

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
    """An immutable snapshot of the catalog; replaced whole when something changes."""

    projects: dict[str, Project] = field(default_factory=dict)
    by_url: dict[str, DistFile] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    serial: int = 0
    file_count: int = 0


def make_view(projects: dict[str, Project], serial: int) -> View:
    by_url: dict[str, DistFile] = {}
    count = 0
    for project in projects.values():
        count += len(project.files)
        add_urls(by_url, project.files)
    return View(projects, by_url, tuple(sorted(projects)), serial, count)


def add_urls(by_url: dict[str, DistFile], files: Iterable[DistFile]) -> None:
    for f in files:
        other = by_url.get(f.relpath)
        if other is None or f.root < other.root:  # an earlier root shadows a later one
            by_url[f.relpath] = f
