"""A mirror run: each wanted file not yet in storage is downloaded, verified and published.

Every file comes from the URL the upstream's own listing gives, is checked against that
listing's hash (and a lock file's), written to a new file in storage and only then
published, never over an existing file. A re-run downloads nothing that is there already.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from packaging.version import InvalidVersion, Version

from ..dists import InvalidDistribution, parse_filename
from ..policy.cooldown import Cooldown
from ..settings import Settings
from ..storage import Storage, storage_for
from ..upstream.client import UpstreamIndex
from ..upstream.listings import HashMismatch, Listing, UpstreamError, UpstreamFile
from .filtered_view import filtered_index
from .resolve import MirrorError, Target, Wanted, is_pylock, read_pylock, resolve


@dataclass
class Result:
    """What a run did: files added (with their sizes), files already there, and errors."""

    added: list[tuple[str, int]] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def sdist_of(listing: Listing, version: str) -> UpstreamFile | None:
    """The sdist of ``version`` in a listing (.tar.gz preferred), if upstream has one."""
    try:
        want = Version(version)
    except InvalidVersion:
        return None
    found = []
    for f in listing.files:
        try:
            dist = parse_filename(f.filename)
        except InvalidDistribution:
            continue
        if dist.packagetype == "sdist" and dist.version == want:
            found.append(f)
    found.sort(key=lambda f: (not f.filename.endswith(".tar.gz"), f.filename))
    return found[0] if found else None


def mirror_storage(settings: Settings, dest: Path | None) -> Storage:
    """Where a run writes (``dest``, else the first packages directory) and what counts as there already.

    A ``dest`` that is one of the index's packages directories is read with the others (the
    index serves them all); any other ``dest`` is read alone: a file in ./packages does not
    make a wheel present in a directory that never got it.
    """
    if dest is None:
        return storage_for(settings, dest=settings.packages[0])
    served = [root.absolute() for root in settings.packages]
    if dest.absolute() in served:
        return storage_for(settings, dest=dest)
    return storage_for(dataclasses.replace(settings, packages=(dest,)), dest=dest)


def existing_files(storage: Storage) -> set[str]:
    """Names of the distribution files already in the storage's roots (dot-folders skipped)."""
    names: set[str] = set()
    for root in range(len(storage.root_names())):
        names.update(relpath.rsplit("/", 1)[-1] for relpath in storage.list_files(root))
    return names


# --- reporting ----------------------------------------------------------------------------
class Progress(Protocol):
    """What a run reports to while it works (the CLI draws it on a terminal)."""

    def show(self, text: str, total: int | None = None) -> None: ...

    def advance(self, count: int) -> None: ...

    def clear(self) -> None: ...

    def added(self, filename: str, size: int) -> None: ...


class Silent:
    """A Progress that shows nothing."""

    def show(self, text: str, total: int | None = None) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def clear(self) -> None:
        pass

    def added(self, filename: str, size: int) -> None:
        pass


# --- the run ----------------------------------------------------------------------------------
def mirror(index: UpstreamIndex, storage: Storage, *, index_url: str, cert: Path | None, timeout: float,
           requirements: list[str], requirement_files: list[Path], target_list: list[Target],
           sdists: bool = True, dry_run: bool = False, retries: int | None = None,
           progress: Progress | None = None, policy: Settings | None = None) -> Result:
    """Mirror ``requirements`` for every target into ``storage`` (its first root); see the module docstring.

    Files in any of the storage's roots count as present. With an upstream cooldown in
    ``policy`` (the upstream_* settings), pip resolves against the upstream as the policy
    shows it (app/mirror/filtered_view.py), and every file is judged again before download.
    """
    cooldown = Cooldown.from_settings(policy) if policy is not None else Cooldown()
    progress = progress or Silent()
    result = Result()
    locks = [p for p in requirement_files if is_pylock(p)]
    plain_files = [p for p in requirement_files if not is_pylock(p)]

    wanted: dict[str, Wanted] = {}
    for lock in locks:
        for w in read_pylock(lock):
            wanted.setdefault(w.filename, w)
    if requirements or plain_files:
        # With a cooldown, pip asks a loopback view of the upstream that shows only what it allows.
        view = filtered_index(policy, index_url, cert) if cooldown.active else contextlib.nullcontext(index_url)
        with view as resolve_url:
            _resolve_all(index, resolve_url, None if cooldown.active else cert, timeout, requirements, plain_files,
                         target_list, retries, progress, wanted)

    listings: dict[str, Listing | None] = {}

    def listing_of(project: str) -> Listing | None:
        if project not in listings:
            progress.show(f"reading the listing of {project}")
            listings[project] = index.project(project)
        return listings[project]

    if sdists:
        for project, version in sorted({(w.project, w.version) for w in list(wanted.values())}):
            try:
                listing = listing_of(project)
            except UpstreamError as exc:
                result.errors.append(str(exc))
                continue
            sdist = sdist_of(listing, version) if listing else None
            # An sdist the cooldown holds back is left out, not an error: the wheels are enough.
            if sdist is not None and cooldown.check(project, sdist.filename, sdist.upload_time, "mirror sdist").allowed:
                wanted.setdefault(sdist.filename, Wanted(project, version, sdist.filename))

    have = existing_files(storage)
    todo = []
    for filename in sorted(wanted):
        if filename in have:
            result.present.append(filename)
        else:
            todo.append(wanted[filename])

    for number, w in enumerate(todo, 1):
        try:
            listing = listing_of(w.project)
        except UpstreamError as exc:
            result.errors.append(str(exc))
            continue
        entry = listing.file(w.filename) if listing else None
        if entry is None:
            result.errors.append(f"{w.filename}: not in the upstream listing of {w.project}")
            continue
        conflict = _lock_conflict(w, entry)
        if conflict:
            result.errors.append(conflict)
            continue
        verdict = cooldown.check(w.project, w.filename, entry.upload_time, "mirror download")
        if not verdict.allowed:
            result.errors.append(verdict.explain(w.filename))
            continue
        if dry_run:
            result.added.append((w.filename, entry.size or 0))
            continue
        progress.show(f"[{number}/{len(todo)}] {w.filename}", entry.size)
        try:
            with storage.new_file(w.filename) as new:
                size = index.download(entry, new, progress.advance)
                new.publish(replace=False)
        except FileExistsError:
            result.present.append(w.filename)  # another run put it there meanwhile
            continue
        except (HashMismatch, UpstreamError, OSError) as exc:
            progress.clear()
            result.errors.append(f"{w.filename}: {exc}")
            continue
        progress.clear()
        result.added.append((w.filename, size))
        progress.added(w.filename, size)
    progress.clear()
    return result


def _resolve_all(index: UpstreamIndex, index_url: str, cert: Path | None, timeout: float, requirements: list[str],
                 plain_files: list[Path], target_list: list[Target], retries: int | None, progress: Progress,
                 wanted: dict[str, Wanted]) -> None:
    """pip's resolution for every target, added to ``wanted``."""
    for target in target_list:
        progress.show(f"resolving for {target}")
        try:
            resolved = resolve(index_url, cert, timeout, target, requirements, plain_files, retries=retries)
        except MirrorError as exc:
            # pip -q says "no matching distribution" for a refused certificate or password too.
            try:
                index.probe()
            except UpstreamError as why:
                raise MirrorError(f"{exc}\nthe upstream itself: {why}") from None
            raise
        for w in resolved:
            wanted.setdefault(w.filename, w)
        progress.clear()


def _lock_conflict(w: Wanted, entry: UpstreamFile) -> str | None:
    # A lock's hashes must agree with the listing's: the download is checked against the latter.
    for algo, digest in w.hashes.items():
        theirs = entry.hashes.get(algo)
        if theirs is not None and theirs.lower() != digest:
            return f"{w.filename}: the lock file's {algo} differs from the upstream listing's"
    if w.hashes and not any(a in entry.hashes for a in w.hashes):
        return f"{w.filename}: the upstream listing has none of the lock file's hashes"
    return None
