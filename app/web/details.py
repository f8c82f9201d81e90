"""One project's page: what it shows beyond the catalog's records, read and rendered once.

A project's core metadata and rendered README are kept per ``Project`` object (the
catalog replaces the object when the project changes), for the pages people look at.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from markupsafe import Markup
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from ..catalog import Catalog, DistFile, Project
from ..dists import InvalidDistribution, parse_filename
from .readme import ReadmeRenderer, plain_description
from .search import make_entry

log = logging.getLogger("wharf.web")

# Details (metadata + rendered README) kept per worker; a README renders in milliseconds
# to a few hundred (docutils), so only the pages people actually look at are kept.
DETAILS_KEEP = 512

_KINDS = {"bdist_wheel": "wheel", "sdist": "source", "bdist_egg": "egg",
          "bdist_wininst": "Windows installer", "bdist_msi": "MSI installer"}


@dataclass(frozen=True, slots=True)
class Link:
    """A project URL from the metadata."""

    label: str
    url: str | None  # None when it is not an http(s) URL: shown as text only


@dataclass(frozen=True, slots=True)
class Release:
    """One version's files as the release history lists them."""

    version: str
    files: tuple[DistFile, ...]
    yanked: bool  # every file of it is yanked
    yanked_reason: str
    uploaded: float
    prerelease: bool


@dataclass(frozen=True, slots=True)
class Details:
    """What a project page shows beyond the catalog's own records."""

    summary: str
    requires_python: str | None
    license: str | None
    license_text: str | None  # a long License field, shown folded
    dependencies: tuple[str, ...]
    optional: tuple[str, ...]
    links: tuple[Link, ...]
    author: str | None
    classifiers: tuple[str, ...]
    description: Markup | None
    metadata_from: str | None  # the file the metadata was read from
    releases: tuple[Release, ...]
    signature: str  # changes whenever anything the page shows changes (its ETag's source)


def _web_link(label: str, url: str) -> Link:
    url = url.strip()
    try:
        ok = urlsplit(url).scheme.lower() in ("http", "https")
    except ValueError:
        ok = False
    return Link(label.strip() or url, url if ok else None)


def _license(raw: dict) -> tuple[str | None, str | None]:
    expression = raw.get("license_expression")
    if expression:
        return expression, None
    text = (raw.get("license") or "").strip()
    classified = [c.split(" :: ")[-1] for c in raw.get("classifiers", []) if c.startswith("License ::")]
    if text and "\n" not in text and len(text) <= 80:
        return text, None
    if classified:
        return ", ".join(classified), text or None
    if text:
        return "See the license text", text
    return None, None


def _dependencies(raw: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    required, optional = [], []
    for item in raw.get("requires_dist", []):
        try:
            marker = Requirement(item).marker
        except InvalidRequirement:
            marker = None
        (optional if marker is not None and "extra" in str(marker) else required).append(item)
    return tuple(required), tuple(optional)


def _releases(project: Project) -> tuple[Release, ...]:
    grouped: dict[str, list[DistFile]] = {}
    for f in project.files:
        grouped.setdefault(f.version, []).append(f)
    releases = []
    for version in reversed(project.versions):
        files = tuple(grouped[version])
        yanked = all(f.yanked is not None for f in files)
        reasons = sorted({f.yanked for f in files if f.yanked})
        try:
            prerelease = Version(version).is_prerelease
        except InvalidVersion:
            prerelease = False
        releases.append(Release(version, files, yanked, "; ".join(reasons),
                                min(f.upload_time for f in files), prerelease))
    return tuple(releases)


def _signature(project: Project, raw: dict) -> str:
    digest = hashlib.sha256(repr(sorted(raw.items())).encode())
    for f in project.files:
        digest.update(f"{f.relpath}|{f.sha256}|{f.yanked}|{f.upload_time}|{f.requires_python}\n".encode())
    return digest.hexdigest()


class ProjectPages:
    """Reads core metadata and renders READMEs, once per Project object."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.readmes = ReadmeRenderer(catalog.state_dir / "readme")
        self._kept: OrderedDict[str, tuple[Project, Details]] = OrderedDict()
        self._lock = threading.Lock()

    def details(self, project: Project) -> Details:
        with self._lock:
            kept = self._kept.get(project.name)
            if kept is not None and kept[0] is project:
                self._kept.move_to_end(project.name)
                return kept[1]
        details = self._build(project)
        with self._lock:
            self._kept[project.name] = (project, details)
            while len(self._kept) > DETAILS_KEEP:
                self._kept.popitem(last=False)
        return details

    def _metadata(self, project: Project) -> tuple[dict, str | None]:
        latest = [f for f in project.files if f.version == project.latest]
        # Wheels first (their METADATA is what installers read), unyanked before yanked.
        latest.sort(key=lambda f: (f.yanked is not None, f.packagetype != "bdist_wheel"))
        for f in latest:
            try:
                if f.packagetype == "bdist_wheel":
                    data = self.catalog.read_metadata(f)
                elif f.packagetype == "sdist":
                    data = self.catalog.core_metadata(f.root, f.relpath, parse_filename(f.filename))
                else:
                    data = None
                if data is None:
                    continue
                raw, _unparsed = parse_email(data)
                return raw, f.filename
            except (InvalidDistribution, OSError, ValueError, UnicodeError) as exc:
                log.info("no metadata from %s: %s", f.filename, exc)
        return {}, None

    def _build(self, project: Project) -> Details:
        raw, source = self._metadata(project)
        entry = make_entry(project)
        links = []
        if raw.get("home_page"):
            links.append(_web_link("Homepage", raw["home_page"]))
        for label, url in (raw.get("project_urls") or {}).items():
            links.append(_web_link(label, url))
        if raw.get("download_url"):
            links.append(_web_link("Download", raw["download_url"]))
        author = raw.get("author") or raw.get("author_email") or raw.get("maintainer") or raw.get("maintainer_email")
        license_name, license_text = _license(raw)
        required, optional = _dependencies(raw)
        try:
            description = self.readmes.render(raw.get("description"), raw.get("description_content_type"))
        except Exception:  # a renderer bug must not take the page down: show the text
            log.exception("rendering the description of %s failed", project.name)
            description = plain_description(raw.get("description", ""))
        return Details(
            summary=" ".join((raw.get("summary") or entry.summary).split()),
            requires_python=raw.get("requires_python") or next(
                (f.requires_python for f in project.files if f.version == project.latest and f.requires_python), None),
            license=license_name,
            license_text=license_text,
            dependencies=required,
            optional=optional,
            links=tuple(links),
            author=" ".join(author.split()) if author else None,
            classifiers=tuple(raw.get("classifiers", [])),
            description=description,
            metadata_from=source,
            releases=_releases(project),
            signature=_signature(project, raw),
        )


# --- how the page shows a file -------------------------------------------------------------
def human_size(size: int) -> str:
    """A file size as people read it: 1.2 MB (decimal units, as PyPI shows them)."""
    if size < 1000:
        return f"{size} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def file_kind(f: DistFile) -> str:
    """What kind of distribution a file is, in words (wheel, source, ...)."""
    return _KINDS.get(f.packagetype, f.packagetype)
