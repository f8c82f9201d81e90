"""The simple repository API as pip and uv use it: PEP 503, 629, 691, 700, 658/714, 592, 792.

Here: the routes, content negotiation, and caching headers. Pages are built by
app/simple_pages.py, once per project change, and kept in memory with their ETag.
"""

from __future__ import annotations

import threading
import zlib
from datetime import datetime, timezone
from urllib.parse import quote

import jinja2
from bottle import Bottle, HTTPError, HTTPResponse, redirect, request, response

from .auth import Access
from .cache_refresh import index_lifetime
from .caching import index_cache_headers, not_modified
from .catalog import Catalog, DistFile, Project
from .dists import project_name
from .policy.rules import LocalRules
from .proxy import external_url
from .settings import Settings
from .simple_pages import CONTENT_TYPES, HTML_V1, JSON_V1, TEXT_HTML, CompressedIndex, Page, PageFile, render_project

_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
}
# Server preference among equally acceptable types, by how specifically they matched:
# a client naming our JSON type gets JSON first; "*/*" alone (browsers, curl) gets HTML.
_PREFERENCE = {3: (JSON_V1, HTML_V1, TEXT_HTML), 2: (TEXT_HTML, HTML_V1, JSON_V1), 1: (TEXT_HTML, HTML_V1, JSON_V1)}


# Rendered project pages a worker keeps (the catalog's project cache decides which are live).
PAGES_KEPT = 4096


class NotAcceptable(HTTPError):
    def __init__(self, accept: str):
        super().__init__(406, f"none of the accepted types ({accept[:200]!r}) is served here; "
                              f"use {JSON_V1}, {HTML_V1} or {TEXT_HTML}")


def _parse_accept(header: str) -> list[tuple[str, float]]:
    ranges = []
    for part in header.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        media = media.lower()
        ranges.append((_ALIASES.get(media, media), q))
    return ranges


def negotiate(accept: str | None) -> str:
    """Choose the response type for an Accept header (PEP 691); raise 406 if none fits."""
    if not accept or not accept.strip():
        return TEXT_HTML
    best: tuple[float, int, int] | None = None
    chosen = None
    ranges = _parse_accept(accept)
    for offer in (JSON_V1, HTML_V1, TEXT_HTML):
        kind = offer.split("/")[0]
        q, specificity = None, 0
        for media, weight in ranges:
            level = 3 if media == offer else 2 if media == f"{kind}/*" else 1 if media == "*/*" else 0
            if level > specificity:
                q, specificity = weight, level
        if q is None or q <= 0:
            continue
        rank = (q, specificity, -_PREFERENCE[specificity].index(offer))
        if best is None or rank > best:
            best, chosen = rank, offer
    if chosen is None:
        raise NotAcceptable(accept)
    return chosen


def file_url(f: DistFile) -> str:
    return "../../packages/" + quote(f.relpath)


def upload_time(f: DistFile) -> str:
    return datetime.fromtimestamp(f.upload_time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SimpleAPI:
    """The pages of local projects and the project index, built once per change and kept."""

    def __init__(self, settings: Settings, catalog: Catalog, templates: jinja2.Environment,
                 policy: LocalRules):
        self.settings = settings
        self.policy = policy  # PEP 792 statuses (app/policy/rules.py)
        self.catalog = catalog
        self.templates = templates
        self.pages: dict[tuple[str, str], Page] = {}
        self.indexes = {fmt: CompressedIndex(templates, fmt) for fmt in (JSON_V1, TEXT_HTML)}
        self._index_pages: dict[str, Page] = {}
        self._index_lock = threading.Lock()
        self.fragment_algo = settings.hash_algo if settings.hash_algo != "off" else None
        self._accept_cache: dict[str, str] = {}

    def media_type(self) -> str:
        fmt = request.query.get("format")
        if fmt:
            # A "+" typed into a URL (as PEP 691's examples show) arrives decoded as a space.
            fmt = fmt.strip().replace(" ", "+").lower()
            fmt = _ALIASES.get(fmt, fmt)
            if fmt not in CONTENT_TYPES:
                raise NotAcceptable(fmt)
            return fmt
        accept = request.environ.get("HTTP_ACCEPT", "")
        chosen = self._accept_cache.get(accept)
        if chosen is None:
            chosen = negotiate(accept)
            if len(self._accept_cache) < 256:
                self._accept_cache[accept] = chosen
        return chosen

    def _cached(self, key: tuple, source: object, render) -> Page:
        page = self.pages.get(key)
        if page is None or page.source is not source:
            page = Page.of(source, render())
            if len(self.pages) >= PAGES_KEPT:
                self.pages.clear()  # (the catalog's own cache bounds which projects are live)
            self.pages[key] = page
        return page

    # --- rendering ---------------------------------------------------------------------
    def index_page(self, fmt: str) -> Page:
        """The project index, gzip-compressed, rebuilt (by the chunk) when the names change."""
        names = self.catalog.view.names
        fmt = JSON_V1 if fmt == JSON_V1 else TEXT_HTML
        page = self._index_pages.get(fmt)
        if page is None or page.source is not names:
            with self._index_lock:
                page = self._index_pages.get(fmt)
                if page is None or page.source is not names:
                    page = self._index_pages[fmt] = self.indexes[fmt].page(names)
        return page

    def project_page(self, project: Project, fmt: str) -> Page:
        status = self.policy.status(project.name)
        # A status change renders a new page: the status is part of the key.
        key = (project.name, JSON_V1 if fmt == JSON_V1 else "html", status)
        # A quarantined project lists no files (PEP 792).
        files = () if status.hides_files else project.files
        return self._cached(key, project, lambda: render_project(
            self.templates, fmt, project.name, project.versions if files else (), [self._entry(f) for f in files],
            (status.status, status.reason)))

    def _entry(self, f: DistFile) -> PageFile:
        algo = self.fragment_algo
        digest = f.digest(algo) if algo else None
        return PageFile(filename=f.filename, url=file_url(f), hashes=f.hashes,
                        fragment=f"#{algo}={digest}" if digest else "", requires_python=f.requires_python,
                        yanked=f.yanked, metadata_sha256=f.metadata_sha256, size=f.size,
                        upload_time=upload_time(f))


def _respond(page: Page, fmt: str, max_age: int, private: bool, keep: int | None = None) -> bytes:
    headers = {
        "Content-Type": CONTENT_TYPES[fmt],
        # Not "Authorization": every user who may list sees the same page, "private" keeps shared
        # caches out, and nginx would write an MD5 of the header into its cache files (issue 14.10).
        "Vary": "Accept, Accept-Encoding" if page.encoding else "Accept",
        "ETag": page.etag,
        **index_cache_headers(max_age, private=private, keep=keep),
    }
    if not_modified(page.etag):
        raise HTTPResponse(status=304, headers=headers)
    for key, value in headers.items():
        response.set_header(key, value)
    if page.encoding == "gzip":
        if accepts_gzip(request.environ.get("HTTP_ACCEPT_ENCODING", "")):
            response.set_header("Content-Encoding", "gzip")
            return page.body
        return zlib.decompress(page.body, 31)  # a client that takes no gzip (rare): inflated for it
    return page.body


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (and does not refuse it with q=0)."""
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if params.strip().startswith("q=") else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def _redirect(path: str) -> None:
    redirect(external_url(request.environ, path, keep_query=True), 301)


def valid_project_name(name: str) -> str:
    """The normalized form of a project name from a URL; 404 for one that cannot exist."""
    normalized = project_name(name)
    if normalized is None:
        raise HTTPError(404, f"not a valid project name: {name[:100]!r}")
    return normalized


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment, policy: LocalRules, upstream=None) -> SimpleAPI:
    """The simple API routes; ``upstream`` is the pull-through cache (app/upstream/pull_through.py), if on."""
    api = SimpleAPI(settings, catalog, templates, policy)
    private = access.protects("list")
    max_age = settings.index_max_age
    # Local pages live long in nginx, which is refreshed when they change; pages of the
    # pull-through cache change upstream, unseen, and keep index_max_age.
    keep = index_lifetime(settings)

    @app.get("/simple")
    def simple_root_redirect():
        _redirect("/simple/")

    @app.get("/simple/")
    def simple_index():
        access.require("list")
        fmt = api.media_type()
        return _respond(api.index_page(fmt), fmt, max_age, private, keep)

    @app.get("/simple/<name>")
    def simple_project_redirect(name: str):
        _redirect(f"/simple/{valid_project_name(name)}/")

    @app.get("/simple/<name>/")
    def simple_project(name: str):
        access.require("list")
        normalized = valid_project_name(name)
        if normalized != name:
            _redirect(f"/simple/{normalized}/")
        fmt = api.media_type()
        project = catalog.project(name)
        if project is None:
            # Pull-through cache: only names no local project has reach it (no dependency confusion).
            page = upstream.project_page(name, fmt) if upstream is not None else None
            if page is not None:
                return _respond(page, fmt, max_age, private)
            if settings.fallback_url:
                redirect(settings.fallback_url.rstrip("/") + f"/{name}/", 302)
            raise HTTPError(404, f"no project named {name!r} here")
        return _respond(api.project_page(project, fmt), fmt, max_age, private, keep)

    return api
