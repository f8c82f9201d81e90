"""Upstream project pages as records: PEP 691 JSON and PEP 503 HTML listings, parsed.

Only what could be a distribution file in a cache directory is kept: names that could
leave a directory are dropped.
"""

from __future__ import annotations

import contextlib
import html.parser
import json
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import unquote, urljoin, urlsplit

from packaging.version import InvalidVersion, Version

from ..dists import InvalidDistribution, has_dist_suffix, parse_filename
from ..policy.store import STATUSES

# Hashes we can check, strongest usual one first; a listing must give at least one.
VERIFIABLE = ("sha256", "sha384", "sha512", "blake2b_256")


class UpstreamError(Exception):
    """The upstream could not be asked (unreachable, refused us, or answered nonsense)."""


class HashMismatch(Exception):
    """Bytes from upstream that are not what its listing promised."""


@dataclass(frozen=True)
class UpstreamFile:
    """One file in an upstream listing, with the absolute URL upstream gave for it."""

    filename: str
    url: str
    hashes: dict[str, str]
    requires_python: str | None = None
    yanked: str | None = None  # None, or the reason ("" when none given)
    core_metadata: dict[str, str] | None = None  # PEP 658 hashes, when upstream has it
    size: int | None = None
    upload_time: str | None = None

    def check_hashes(self) -> dict[str, str]:
        """The hashes we will verify downloads against (raises HashMismatch if none)."""
        usable = {a: h.lower() for a, h in self.hashes.items() if a in VERIFIABLE}
        if not usable:
            raise HashMismatch(f"upstream's listing gives no usable hash for {self.filename}")
        return usable


@dataclass(frozen=True)
class Listing:
    """One upstream project page, as fetched at ``fetched`` (wall-clock seconds)."""

    project: str  # normalized
    files: tuple[UpstreamFile, ...]
    versions: tuple[str, ...] = ()
    fetched: float = field(default_factory=time.time)
    status: tuple[str, str] | None = None  # PEP 792 (status, reason) as upstream gives it, if it does

    def file(self, filename: str) -> UpstreamFile | None:
        for f in self.files:
            if f.filename == filename:
                return f
        return None

    def to_json(self) -> str:
        return json.dumps({"project": self.project, "fetched": self.fetched, "versions": list(self.versions),
                           "files": [asdict(f) for f in self.files],
                           "status": list(self.status) if self.status else None})

    @classmethod
    def from_json(cls, text: str) -> Listing:
        data = json.loads(text)
        files = tuple(UpstreamFile(**f) for f in data["files"])
        status = data.get("status")
        return cls(data["project"], files, tuple(data.get("versions", ())), data["fetched"],
                   (str(status[0]), str(status[1])) if status else None)


def safe_filename(filename: str) -> bool:
    # Names become paths in the cache: nothing that could leave its directory.
    return (bool(filename) and "/" not in filename and "\\" not in filename and "\0" not in filename
            and not filename.startswith(".") and has_dist_suffix(filename))


def _yanked(value) -> str | None:
    if value is None or value is False:
        return None
    return value if isinstance(value, str) else ""


def _metadata_hashes(value) -> dict[str, str] | None:
    # PEP 658/714: a dict of hashes, or true (present, hash unknown: not verifiable, so unused).
    if isinstance(value, dict):
        hashes = {str(k): str(v) for k, v in value.items() if k in VERIFIABLE}
        return hashes or None
    return None


def project_status(status, reason) -> tuple[str, str] | None:
    """A PEP 792 (status, reason) from an upstream page; None when it gives none or one we don't know."""
    if not isinstance(status, str) or status not in STATUSES:
        return None
    return status, reason if isinstance(reason, str) else ""


def versions_of(files: tuple[UpstreamFile, ...], given) -> tuple[str, ...]:
    found: dict[str, Version] = {}
    for version in given or ():
        with contextlib.suppress(InvalidVersion, TypeError):
            found[str(version)] = Version(str(version))
    for f in files:
        with contextlib.suppress(InvalidDistribution):
            version = parse_filename(f.filename).version
            found.setdefault(str(version), version)
    return tuple(sorted(found, key=found.__getitem__))


def parse_json_listing(project: str, body: bytes, base_url: str) -> Listing:
    """A PEP 691 JSON project page."""
    try:
        data = json.loads(body)
        entries = data["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamError(f"unreadable JSON listing for {project}: {exc}") from None
    files = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        filename = entry.get("filename")
        if not isinstance(filename, str) or not safe_filename(filename) or not entry.get("url"):
            continue
        hashes = entry.get("hashes") if isinstance(entry.get("hashes"), dict) else {}
        metadata = entry.get("core-metadata", entry.get("dist-info-metadata"))
        size = entry.get("size")
        files.append(UpstreamFile(
            filename=filename,
            url=urljoin(base_url, str(entry["url"])),
            hashes={str(k): str(v) for k, v in hashes.items()},
            requires_python=entry.get("requires-python") or None,
            yanked=_yanked(entry.get("yanked")),
            core_metadata=_metadata_hashes(metadata),
            size=size if isinstance(size, int) else None,
            upload_time=entry.get("upload-time") if isinstance(entry.get("upload-time"), str) else None,
        ))
    files_t = tuple(files)
    marker = data.get("project-status") if isinstance(data.get("project-status"), dict) else {}
    return Listing(project, files_t, versions_of(files_t, data.get("versions")),
                   status=project_status(marker.get("status"), marker.get("reason")))


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str] = {}  # pypi:* meta tags (PEP 629, 792)

    def handle_starttag(self, tag, attrs):
        if tag == "meta":
            values = dict(attrs)
            name = values.get("name") or ""
            if name.startswith("pypi:") and values.get("content") is not None:
                self.meta.setdefault(name, values["content"])
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            self.anchors.append(dict(attrs))


def parse_html_listing(project: str, body: bytes, base_url: str) -> Listing:
    """A PEP 503 HTML project page (hashes in URL fragments, PEP 592/658 data- attributes)."""
    parser = _Anchors()
    parser.feed(body.decode("utf-8", errors="replace"))
    base = urljoin(base_url, parser.base) if parser.base else base_url
    files = []
    for attrs in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, _, fragment = urljoin(base, href).partition("#")
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        if not safe_filename(filename):
            continue
        hashes = {}
        algo, _, digest = fragment.partition("=")
        if algo and digest:
            hashes[algo] = digest
        metadata = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        meta_hashes = None
        if metadata and "=" in metadata:
            m_algo, _, m_digest = metadata.partition("=")
            meta_hashes = _metadata_hashes({m_algo: m_digest})
        files.append(UpstreamFile(
            filename=filename,
            url=url,
            hashes=hashes,
            requires_python=attrs.get("data-requires-python") or None,
            yanked=(attrs.get("data-yanked") or "") if "data-yanked" in attrs else None,
            core_metadata=meta_hashes,
        ))
    files_t = tuple(files)
    return Listing(project, files_t, versions_of(files_t, ()),
                   status=project_status(parser.meta.get("pypi:project-status"),
                                         parser.meta.get("pypi:project-status-reason")))
