"""The upstream index: its listings and files, always hash-verified, and the pull-through cache.

Two users:
- ``wharf mirror`` (app/mirror.py) reads listings and downloads files with ``UpstreamIndex``;
- the pull-through cache (``PullThrough``, off unless ``upstream_url`` is set) serves
  projects that are not hosted here: the upstream's project page, rewritten so every file
  comes through Wharf, and each file downloaded on first request, checked against the hash
  upstream's listing gave, kept, and served locally from then on.

Rules the cache keeps:
- a local project always wins over an upstream one of the same normalized name (the
  simple API only asks us for names the catalog does not have, and the file route checks
  again), so nobody can shadow a private package by publishing its name upstream;
- bytes whose hash does not match the listing are refused and never stored;
- when upstream cannot be reached, the last listing fetched is served, cut down to the
  files that are cached, so installs that worked before keep working.

Cached files live under ``upstream_cache_path`` (by default in the state dot-folder), not in
the packages directories: they never become local projects, so upstream keeps being asked
for new releases.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import html.parser
import http.client
import json
import logging
import os
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import jinja2
from bottle import Bottle, HTTPError, HTTPResponse, request, static_file
from packaging.version import InvalidVersion, Version

from .auth import Access
from .caching import cache_control, etag_of
from .catalog import Catalog
from .dists import InvalidDistribution, has_dist_suffix, parse_filename, project_name
from .files import content_type
from .settings import Settings
from .simple_api import API_VERSION, JSON_V1, Page
from .storage import CHUNK

log = logging.getLogger("wharf.upstream")

ACCEPT = f"{JSON_V1}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
# Hashes we can check, strongest usual one first; a listing must give at least one.
VERIFIABLE = ("sha256", "sha384", "sha512", "blake2b_256")
# Largest project listing we read (PyPI's biggest are a few MiB).
MAX_LISTING_BYTES = 64 * 1024 * 1024
METADATA_SUFFIX = ".metadata"
# Files larger than this are passed on while they download (their first request), so that
# the client sees bytes before its read timeout; smaller ones are verified, then sent.
STREAM_AFTER = 4 * 1024 * 1024
# Upstream listings each worker keeps in memory (all of them are on disk).
MEMORY_LISTINGS = 256


class UpstreamError(Exception):
    """The upstream could not be asked (unreachable, refused us, or answered nonsense)."""


class HashMismatch(Exception):
    """Bytes from upstream that are not what its listing promised."""


# --- listings -----------------------------------------------------------------------------
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

    def file(self, filename: str) -> UpstreamFile | None:
        for f in self.files:
            if f.filename == filename:
                return f
        return None

    def to_json(self) -> str:
        return json.dumps({"project": self.project, "fetched": self.fetched, "versions": list(self.versions),
                           "files": [asdict(f) for f in self.files]})

    @classmethod
    def from_json(cls, text: str) -> Listing:
        data = json.loads(text)
        files = tuple(UpstreamFile(**f) for f in data["files"])
        return cls(data["project"], files, tuple(data.get("versions", ())), data["fetched"])


def _safe_filename(filename: str) -> bool:
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


def _versions(files: tuple[UpstreamFile, ...], given) -> tuple[str, ...]:
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
        if not isinstance(filename, str) or not _safe_filename(filename) or not entry.get("url"):
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
    return Listing(project, files_t, _versions(files_t, data.get("versions")))


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "base" and self.base is None:
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
        if not _safe_filename(filename):
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
    return Listing(project, files_t, _versions(files_t, ()))


# --- talking to the upstream ----------------------------------------------------------------
def redact(url: str) -> str:
    """The URL without its password, for logs and pages."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" if parts.password is not None else f"{parts.username}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class UpstreamIndex:
    """An upstream simple index: listings (PEP 691 JSON, HTML fallback) and verified downloads.

    Credentials in the URL are sent (as HTTP Basic, up front) only to that URL's origin,
    never to file hosts elsewhere or across redirects; ``cert`` replaces the system CAs.
    """

    def __init__(self, url: str, cert: Path | None = None, timeout: float = 15.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) index URL: {redact(url)}")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.url = urlunsplit((parts.scheme, netloc, path, "", ""))
        self.display_url = redact(url)
        self.timeout = timeout
        context = ssl.create_default_context(cafile=str(cert) if cert else None)
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
        if parts.username is not None:
            passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
            passwords.add_password(None, f"{parts.scheme}://{netloc}/", unquote(parts.username),
                                   unquote(parts.password or ""), is_authenticated=True)
            handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
        self._opener = urllib.request.build_opener(*handlers)

    def project_url(self, project: str) -> str:
        return self.url + quote(project) + "/"

    def _request(self, url: str, accept: str | None = None, method: str = "GET"):
        """An open response (the caller closes it); HTTPError for error statuses."""
        headers = {"User-Agent": "wharf (pull-through cache)"}
        if accept:
            headers["Accept"] = accept
        request = urllib.request.Request(url, headers=headers, method=method)
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise UpstreamError(f"{redact(url)}: {reason}") from None

    @contextlib.contextmanager
    def _open(self, url: str, accept: str | None = None, method: str = "GET") -> Iterator:
        response = self._request(url, accept, method)
        try:
            yield response
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError(f"{redact(url)}: {exc}") from None
        finally:
            response.close()

    def open_file(self, file: UpstreamFile):
        """The upstream's response for ``file`` (the caller reads, verifies and closes it)."""
        try:
            return self._request(file.url)
        except urllib.error.HTTPError as exc:
            raise UpstreamError(f"{redact(file.url)} answered {exc.code} {exc.reason}") from None

    def project(self, name: str) -> Listing | None:
        """The listing of ``name`` (normalized), or None if upstream has no such project."""
        url = self.project_url(name)
        try:
            with self._open(url, ACCEPT) as response:
                body = response.read(MAX_LISTING_BYTES + 1)
                kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                final_url = response.geturl()
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return None
            raise UpstreamError(f"{redact(url)} answered {exc.code} {exc.reason}") from None
        if len(body) > MAX_LISTING_BYTES:
            raise UpstreamError(f"the listing of {name} is larger than {MAX_LISTING_BYTES} bytes")
        if kind == JSON_V1 or kind.endswith("+json") or kind == "application/json":
            return parse_json_listing(name, body, final_url)
        return parse_html_listing(name, body, final_url)

    def download(self, file: UpstreamFile, stream: BinaryIO, progress=None) -> int:
        """Write ``file``'s bytes to ``stream``; raise HashMismatch unless they match the listing."""
        return self._fetch_verified(file.url, file.check_hashes(), stream, file.filename, progress)

    def download_metadata(self, file: UpstreamFile, stream: BinaryIO) -> int:
        """Write ``file``'s PEP 658 metadata to ``stream``, verified like a file."""
        if not file.core_metadata:
            raise HashMismatch(f"upstream's listing gives no metadata hash for {file.filename}")
        return self._fetch_verified(file.url + METADATA_SUFFIX, file.core_metadata, stream,
                                    file.filename + METADATA_SUFFIX, None)

    def _fetch_verified(self, url: str, expected: dict[str, str], stream: BinaryIO, what: str, progress) -> int:
        verifier = Verifier(expected, what)
        try:
            with self._open(url) as response:
                while chunk := response.read(CHUNK):
                    verifier.update(chunk)
                    stream.write(chunk)
                    if progress:
                        progress(len(chunk))
        except urllib.error.HTTPError as exc:
            raise UpstreamError(f"{redact(url)} answered {exc.code} {exc.reason}") from None
        verifier.check()
        return verifier.size

    def probe(self) -> None:
        """Raise UpstreamError unless the upstream answers at all (any HTTP status but 401/403/5xx)."""
        try:
            with self._open(self.url, method="HEAD"):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403) or exc.code >= 500:
                raise UpstreamError(f"{self.display_url} answered {exc.code} {exc.reason}") from None


class Verifier:
    """Hashes bytes as they pass and checks them against the hashes a listing gave."""

    def __init__(self, expected: dict[str, str], what: str):
        self.expected = {algo: digest.lower() for algo, digest in expected.items()}
        self.what = what
        self.hashers = {algo: _hasher(algo) for algo in self.expected}
        self.size = 0

    def update(self, chunk: bytes) -> None:
        for hasher in self.hashers.values():
            hasher.update(chunk)
        self.size += len(chunk)

    def check(self) -> None:
        for algo, hasher in self.hashers.items():
            if hasher.hexdigest() != self.expected[algo]:
                raise HashMismatch(f"{self.what}: upstream sent bytes whose {algo} is {hasher.hexdigest()}, "
                                   f"not the {self.expected[algo]} its listing gives")


def _hasher(algo: str):
    return hashlib.blake2b(digest_size=32) if algo == "blake2b_256" else hashlib.new(algo)


# --- the pull-through cache -------------------------------------------------------------------
class PullThrough:
    """Projects not hosted here, served from the upstream through a verified local cache.

    ``status()`` is what the health endpoint and the web pages show about the upstream.
    """

    def __init__(self, settings: Settings, catalog: Catalog, templates: jinja2.Environment):
        self.settings = settings
        self.catalog = catalog
        self.templates = templates
        self.index = UpstreamIndex(settings.upstream_url, settings.upstream_cert, settings.upstream_timeout)
        self.root = Path(settings.upstream_cache_path)
        self.private = False  # set by register(): whether downloads need a user
        self.allow = tuple(p.lower() for p in settings.upstream_allow)
        self.deny = tuple(p.lower() for p in settings.upstream_deny)
        self._listings: dict[str, Listing] = {}  # the most recent MEMORY_LISTINGS, by project
        self._pages: dict[tuple[str, str], Page] = {}  # rendered online pages, by (project, format)
        self._missing: dict[str, float] = {}  # projects upstream said it lacks, and when
        self._probe_lock = threading.Lock()
        for sub in ("pages", "files", "metadata"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # --- policy --------------------------------------------------------------------------
    def allowed(self, project: str) -> bool:
        """Whether the upstream project ``project`` (normalized) may be served and cached."""
        if any(fnmatch.fnmatchcase(project, p) for p in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(project, p) for p in self.allow)

    def serves(self, project: str) -> bool:
        # Local projects shadow upstream ones: never mix the two under one name.
        return (project_name(project) == project
                and self.catalog.project(project) is None and self.allowed(project))

    # --- listings ------------------------------------------------------------------------
    def _page_path(self, project: str) -> Path:
        return self.root / "pages" / f"{project}.json"

    def _stored(self, project: str) -> Listing | None:
        listing = self._listings.get(project)
        path = self._page_path(project)
        try:
            # Another worker may have fetched a newer one.
            if listing is None or path.stat().st_mtime > listing.fetched + 1:
                listing = Listing.from_json(path.read_text(encoding="utf-8"))
                self._remember(listing)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cached listing of %s: %s", project, exc)
            return listing
        return listing

    def listing(self, project: str) -> tuple[Listing | None, bool]:
        """(listing, online): a fresh listing, or the stored one when upstream is unreachable.

        Raises UpstreamError when upstream is unreachable and nothing is stored.
        """
        stored = self._stored(project)
        max_age = self.settings.upstream_max_age
        if stored is not None and time.time() - stored.fetched < max_age:
            return stored, True
        missing_since = self._missing.get(project)
        if stored is None and missing_since is not None and time.monotonic() - missing_since < max_age:
            return None, True
        try:
            fresh = self.index.project(project)
        except UpstreamError as exc:
            self._note(False, str(exc))
            if stored is None:
                raise
            log.info("upstream unreachable, serving the cached listing of %s: %s", project, exc)
            return stored, False
        self._note(True, None)
        if fresh is None:
            self._missing[project] = time.monotonic()
            return None, True
        self._missing.pop(project, None)
        _write_atomic(self._page_path(project), fresh.to_json().encode())
        self._remember(fresh)
        return fresh, True

    def _remember(self, listing: Listing) -> None:
        self._listings.pop(listing.project, None)
        self._listings[listing.project] = listing
        while len(self._listings) > MEMORY_LISTINGS:  # big projects' listings run to megabytes
            self._listings.pop(next(iter(self._listings)))

    def project_page(self, project: str, fmt: str) -> Page | None:
        """The simple API page of an upstream project, or None if it is not served from upstream.

        Called by simple_api for names the catalog does not have.
        """
        if not self.serves(project):
            return None
        try:
            listing, online = self.listing(project)
        except UpstreamError as exc:
            raise _gateway_error(f"upstream unreachable and nothing of {project} is cached: {exc}") from None
        if listing is None:
            return None
        if online:
            page = self._pages.get((project, fmt))
            if page is None or page.source is not listing:
                body = self._render(listing, self._servable(listing.files), fmt, online)
                page = Page(listing, body, etag_of(body))
                if len(self._pages) >= 2 * MEMORY_LISTINGS:
                    self._pages.clear()
                self._pages[(project, fmt)] = page
            return page
        # Offline: only what is cached can be installed, so offer only that.
        files = tuple(f for f in self._servable(listing.files) if self._file_path(project, f.filename).is_file())
        if not files:
            raise _gateway_error(f"upstream unreachable and no file of {project} is cached")
        body = self._render(listing, files, fmt, online)
        return Page(listing, body, etag_of(body))

    @staticmethod
    def _servable(files: tuple[UpstreamFile, ...]) -> tuple[UpstreamFile, ...]:
        # A file without a hash we can check would be refused: don't offer it.
        return tuple(f for f in files if any(a in f.hashes for a in VERIFIABLE))

    def _advertised_metadata(self, project: str, f: UpstreamFile, online: bool) -> str | None:
        if not f.core_metadata or "sha256" not in f.core_metadata:
            return None
        if not online and not self._metadata_path(project, f.filename).is_file():
            return None  # offline, a metadata link we cannot serve would stop pip
        return f.core_metadata["sha256"]

    def _render(self, listing: Listing, files: tuple[UpstreamFile, ...], fmt: str, online: bool) -> bytes:
        project = listing.project

        def url(f: UpstreamFile) -> str:
            return f"../../upstream/{quote(project)}/{quote(f.filename)}"

        if fmt == JSON_V1:
            entries = []
            for f in files:
                meta = self._advertised_metadata(project, f, online)
                entry = {
                    "filename": f.filename,
                    "url": url(f),
                    "hashes": dict(f.hashes),
                    "requires-python": f.requires_python,
                    "yanked": f.yanked if f.yanked else (f.yanked is not None),
                    "core-metadata": {"sha256": meta} if meta else False,
                    "dist-info-metadata": {"sha256": meta} if meta else False,
                }
                if f.size is not None:
                    entry["size"] = f.size
                if f.upload_time:
                    entry["upload-time"] = f.upload_time
                entries.append(entry)
            versions = listing.versions if online else _versions(files, ())
            data = {"meta": {"api-version": API_VERSION}, "name": project, "versions": list(versions),
                    "files": entries}
            return json.dumps(data, separators=(",", ":")).encode()
        links = []
        for f in files:
            algo = next((a for a in VERIFIABLE if a in f.hashes), None)
            meta = self._advertised_metadata(project, f, online)
            links.append({
                "href": url(f) + (f"#{algo}={f.hashes[algo]}" if algo else ""),
                "filename": f.filename,
                "requires_python": f.requires_python,
                "metadata": f"sha256={meta}" if meta else None,
                "yanked": f.yanked,
            })
        return self.templates.get_template("simple/project.html").render(
            api_version=API_VERSION, name=project, links=links).encode()

    # --- files ---------------------------------------------------------------------------
    def _file_path(self, project: str, filename: str) -> Path:
        return self.root / "files" / project / filename

    def _metadata_path(self, project: str, filename: str) -> Path:
        return self.root / "metadata" / project / (filename + METADATA_SUFFIX)

    def fetch(self, project: str, filename: str, stream: bool = False) -> Path | HTTPResponse:
        """An upstream file (or its .metadata): the cached copy, fetched and verified first if need be.

        With ``stream``, a large file not yet cached comes back as a response that passes
        the bytes on while they arrive (see ``_relay``); anything else is the path of the
        verified cached copy. Raises HTTPError 404 for files upstream does not list, and
        HTTPResponse 502 when the file cannot be had or its bytes do not match upstream's
        hash (nothing is stored then).
        """
        is_metadata = filename.endswith(METADATA_SUFFIX)
        dist_name = filename[: -len(METADATA_SUFFIX)] if is_metadata else filename
        if not _safe_filename(dist_name) or not self.serves(project):
            raise HTTPError(404, "no such upstream file")
        path = self._metadata_path(project, dist_name) if is_metadata else self._file_path(project, dist_name)
        if path.is_file():
            return path
        try:
            listing, _online = self.listing(project)
        except UpstreamError as exc:
            raise _gateway_error(f"upstream unreachable and {filename} is not cached: {exc}") from None
        entry = listing.file(dist_name) if listing else None
        if entry is None or (is_metadata and not entry.core_metadata):
            raise HTTPError(404, f"upstream does not list {filename}")
        try:
            if is_metadata:
                with _atomic(path) as out:
                    self.index.download_metadata(entry, out)
            else:
                verifier = Verifier(entry.check_hashes(), filename)
                response = self.index.open_file(entry)
                length = response.headers.get("Content-Length", "")
                if stream and length.isdigit() and int(length) > STREAM_AFTER:
                    return self._relay(response, verifier, path, int(length))
                try:
                    with _atomic(path) as out:
                        while chunk := response.read(CHUNK):
                            verifier.update(chunk)
                            out.write(chunk)
                        verifier.check()
                except (OSError, http.client.HTTPException) as exc:
                    raise UpstreamError(f"{redact(entry.url)}: {exc}") from None
                finally:
                    response.close()
        except HashMismatch as exc:
            log.warning("refused %s from upstream: %s", filename, exc)
            raise _gateway_error(f"refused {filename}: {exc}") from None
        except UpstreamError as exc:
            self._note(False, str(exc))
            raise _gateway_error(f"cannot fetch {filename} from upstream: {exc}") from None
        log.info("cached %s from upstream", filename)
        return path

    def _relay(self, response, verifier: Verifier, path: Path, length: int) -> HTTPResponse:
        """Pass a large file on as it arrives, holding back its last chunk until its hash checks.

        Bytes that do not match never reach the client whole (the connection is cut before
        the last chunk, short of its Content-Length) and are never stored.
        """
        def body() -> Iterator[bytes]:
            tmp = path.parent / f".tmp-{secrets.token_hex(8)}-{path.name}"
            stored = False
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "xb") as out:
                    held = b""
                    while chunk := response.read(CHUNK):
                        verifier.update(chunk)
                        out.write(chunk)
                        if held:
                            yield held
                        held = chunk
                    if verifier.size != length:
                        raise UpstreamError(f"{verifier.what}: upstream sent {verifier.size} of {length} bytes")
                    verifier.check()
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
                stored = True
                log.info("cached %s from upstream", verifier.what)
                yield held
            except HashMismatch as exc:
                log.warning("refused %s from upstream, cut off before its last bytes: %s", verifier.what, exc)
                raise
            finally:
                response.close()
                if not stored:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()

        kind = content_type(path.name)
        return HTTPResponse(body(), status=200, headers={
            "Content-Type": kind, "Content-Length": str(length),
            "Cache-Control": cache_control(self.settings.file_max_age, private=self.private, immutable=True)})

    # --- state for the health endpoint and web pages ---------------------------------------
    def _note(self, reachable: bool, error: str | None) -> None:
        state = {"reachable": reachable, "error": error, "checked": time.time()}
        with contextlib.suppress(OSError):
            _write_atomic(self.root / "status.json", json.dumps(state).encode(), durable=False)

    def _probe(self) -> None:
        try:
            self.index.probe()
        except UpstreamError as exc:
            self._note(False, str(exc))
        else:
            self._note(True, None)
        finally:
            self._probe_lock.release()

    def cached_counts(self) -> tuple[int, int, int]:
        """(files, projects, bytes) in the cache."""
        files = projects = size = 0
        with contextlib.suppress(OSError), os.scandir(self.root / "files") as dirs:
            for d in dirs:
                if d.name.startswith(".") or not d.is_dir(follow_symlinks=False):
                    continue
                count = 0
                with contextlib.suppress(OSError), os.scandir(d.path) as entries:
                    for e in entries:
                        if not e.name.startswith(".") and e.is_file(follow_symlinks=False):
                            count += 1
                            size += e.stat().st_size
                files += count
                projects += bool(count)
        return files, projects, size

    def status(self, probe_after: float = 60.0) -> dict:
        """The upstream as the health endpoint and web pages show it.

        {"url", "reachable" (true/false, null before the first contact), "error", "checked",
        "cached_files", "cached_projects", "cached_bytes"}. When the last contact is older
        than ``probe_after`` seconds a background probe is started; the answer never waits.
        """
        try:
            state = json.loads((self.root / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {"reachable": None, "error": None, "checked": None}
        if (state.get("checked") is None or time.time() - state["checked"] > probe_after) \
                and self._probe_lock.acquire(blocking=False):
            threading.Thread(target=self._probe, name="wharf-upstream-probe", daemon=True).start()
        files, projects, size = self.cached_counts()
        return {
            "url": self.index.display_url,
            "reachable": state.get("reachable"),
            "error": state.get("error"),
            "checked": state.get("checked"),
            "cached_files": files,
            "cached_projects": projects,
            "cached_bytes": size,
        }


def _gateway_error(message: str) -> HTTPResponse:
    # Raised as a response, not an HTTPError: the app's error handler would hide the reason.
    return HTTPResponse(f"502 Bad Gateway: {message}\n", status=502,
                        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})


@contextlib.contextmanager
def _atomic(path: Path, durable: bool = True) -> Iterator[BinaryIO]:
    """A hidden temporary file renamed to ``path`` only if the block completes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{secrets.token_hex(8)}-{path.name}"
    try:
        with open(tmp, "xb") as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    with _atomic(path, durable) as stream:
        stream.write(data)


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment) -> PullThrough | None:
    """The pull-through cache's file route; returns the cache (None when it is off)."""
    if not settings.upstream_url:
        return None
    cache = PullThrough(settings, catalog, templates)
    cache.private = private = access.protects("download")

    @app.route("/upstream/<project>/<filename>", method=["GET", "HEAD"])
    def upstream_file(project: str, filename: str):
        access.require("download")
        path = cache.fetch(project, filename, stream=request.method == "GET")
        if isinstance(path, HTTPResponse):
            return path  # a large file on its first request, passed on as it arrives
        kind = "application/octet-stream" if filename.endswith(METADATA_SUFFIX) else content_type(filename)
        st = path.stat()
        # bottle handles HEAD, Range and conditional requests; the ETag is given quoted (RFC 9110).
        return static_file(path.name, root=str(path.parent), mimetype=kind, etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
                           headers={"Cache-Control": cache_control(settings.file_max_age, private=private, immutable=True)})

    log.info("pull-through cache of %s in %s", cache.index.display_url, cache.root)
    return cache
