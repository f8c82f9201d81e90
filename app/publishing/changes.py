"""What removals and yanks do to the catalog, whether asked over HTTP or on the command line."""

from __future__ import annotations

from collections.abc import Iterable

from packaging.utils import canonicalize_name
from packaging.version import Version

from ..catalog import Catalog, DistFile


def select_files(catalog: Catalog, *, name: str = "", version: str = "", filename: str = "") -> list[DistFile]:
    """The files a removal or yank is about: one filename, or every file of a release.

    Raises ValueError for a version that is not a version.
    """
    if filename:
        found = catalog.find_filename(filename)
        return [found] if found else []
    project = catalog.project(canonicalize_name(name))
    if project is None:
        return []
    wanted = Version(version)
    return [f for f in project.files if Version(f.version) == wanted]


def remove_files(catalog: Catalog, files: Iterable[DistFile]) -> list[str]:
    """Delete files from disk and index; a removed file's yank is forgotten with it."""
    removed = []
    for f in files:
        catalog.forget(f)
        removed.append(f.relpath)
        if catalog.find_filename(f.filename) is None:
            catalog.set_yanked([f], None)  # a later upload of that name starts unyanked
    return removed


def yank_files(catalog: Catalog, files: list[DistFile], reason: str | None) -> int:
    """Yank (reason: a string, maybe empty) or unyank (None) the files."""
    return catalog.set_yanked(files, reason)
