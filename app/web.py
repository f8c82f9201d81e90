"""Pages for people: home, the project list with search, project pages and their assets.

Everything a page shows comes from the catalog's in-memory ``View``. What costs more than a
dictionary lookup is computed once and kept: the search structure once per View (projects
that did not change keep their entries), a project's core metadata and rendered README once
per ``Project`` object (the catalog replaces the object when the project changes).

Descriptions are rendered as PyPI renders them, with ``readme_renderer`` (Markdown, reST or
plain text; its output is sanitized with nh3), and pages carry a Content-Security-Policy
that forbids inline scripts, so nothing a package author writes runs in a reader's browser.
"""

from __future__ import annotations

import bisect
import email.message
import hashlib
import html
import importlib.metadata
import logging
import mimetypes
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import jinja2
import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt
from bottle import Bottle, HTTPError, HTTPResponse, redirect, request, response
from markupsafe import Markup
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from .auth import Access
from .caching import cache_control, etag_of, not_modified
from .catalog import Catalog, DistFile, Project, View
from .dists import InvalidDistribution, parse_filename, read_core_metadata
from .simple_api import valid_project_name
from .proxy import external_url
from .settings import Settings

log = logging.getLogger("wharf.web")

STATIC_DIR = Path(__file__).parent / "static"
PER_PAGE = 50
MAX_QUERY = 200
RECENT = 8
# Details (metadata + rendered README) kept per worker; a README renders in milliseconds
# to a few hundred (docutils), so only the pages people actually look at are kept.
DETAILS_KEEP = 512
# A description larger than this is shown as plain text: rendering megabytes of reST
# would hold a worker for seconds.
MAX_RENDERED_DESCRIPTION = 512 * 1024

_PATH_SAFE = "/:@!$&'()*+,;=%~"
_SEPARATORS = re.compile(r"[-_.]+")
_EMPTY_ANCHOR = re.compile(r'<a (?:title="[^"<>]*" )?href="#user-content-[^"<>]*" rel="nofollow"></a>')
# pypiserver's welcome files use these bottle-template placeholders; only these are
# substituted (the operator's file is never executed as a template).
_WELCOME_FIELDS = re.compile(r"\{\{\s*(URL|VERSION|NUMPKGS|PACKAGES|SIMPLE)\s*\}\}")
_KINDS = {"bdist_wheel": "wheel", "sdist": "source", "bdist_egg": "egg",
          "bdist_wininst": "Windows installer", "bdist_msi": "MSI installer"}
# Pages load only what Wharf serves (and data: images): a README's image from elsewhere
# would tell a third party who reads which private project, and when (issue 14.11).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


# --- the project list and its search ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Entry:
    """One project as the list shows it."""

    project: Project
    name: str  # normalized
    display_name: str
    latest: str
    summary: str
    updated: float  # newest upload time of any file


def make_entry(project: Project) -> Entry:
    latest = [f for f in project.files if f.version == project.latest]
    summary = next((f.summary for f in latest if f.summary), "") or ""
    return Entry(project, project.name, project.display_name, project.latest or "",
                 " ".join(summary.split()), max(f.upload_time for f in project.files))


def _query_terms(query: str) -> list[str]:
    return [term for term in query.lower().split() if term]


class SearchIndex:
    """Every project of one catalog View, in name order, with a text to search in.

    The searched text is one string ("name<TAB>summary<NL>" per project), so finding a
    term is one C-speed scan rather than a Python loop over ten thousand projects.
    """

    def __init__(self, view: View, previous: SearchIndex | None = None):
        reuse = previous.by_name if previous is not None else {}
        entries = []
        for name in view.names:
            project = view.projects[name]
            old = reuse.get(name)
            entries.append(old if old is not None and old.project is project else make_entry(project))
        self.serial = view.serial
        self.entries: tuple[Entry, ...] = tuple(entries)
        self.by_name = {e.name: e for e in entries}
        self.file_count = view.file_count
        lines = [f"{e.name}\t{e.display_name.lower()} {e.summary.lower()}\n" for e in entries]
        self.offsets: list[int] = []
        position = 0
        for line in lines:
            self.offsets.append(position)
            position += len(line)
        self.text = "".join(lines)
        self.ends = self.offsets[1:] + [len(self.text)]
        # Where each line's names (normalized and as displayed) end and its summary begins.
        self.name_ends = [offset + len(e.name) + 1 + len(e.display_name)
                          for offset, e in zip(self.offsets, entries)]
        self.names = view.names
        self.recent = tuple(sorted(entries, key=lambda e: e.updated, reverse=True)[:RECENT])

    def _containing(self, term: str) -> tuple[set[int], set[int]]:
        """Projects holding ``term`` anywhere, and those holding it in their name."""
        found: set[int] = set()
        in_name: set[int] = set()
        ends, name_ends = self.ends, self.name_ends
        for variant in {term, _SEPARATORS.sub("-", term)}:
            if not variant.strip("-"):
                continue
            position = self.text.find(variant)
            while position >= 0:
                line = bisect.bisect_right(self.offsets, position) - 1
                found.add(line)
                # The first hit in a line is the leftmost, and names come first in it.
                if position < name_ends[line]:
                    in_name.add(line)
                # One hit per project is enough: go on from the next project's line.
                position = self.text.find(variant, ends[line])
        return found, in_name

    def search(self, query: str) -> Sequence[Entry]:
        """Projects whose name or summary holds every word of ``query``, best first.

        Best first: the exact name, then names starting with the query, then names holding
        every word, then the rest (summary matches); alphabetical within each group.
        """
        terms = _query_terms(query)
        if not terms:
            return self.entries
        # Start from the rarest-looking (longest) term; later terms only narrow it down.
        terms.sort(key=len, reverse=True)
        hits, in_name = self._containing(terms[0])
        for term in terms[1:]:
            if not hits:
                break
            more, more_in_name = self._containing(term)
            hits &= more
            in_name &= more_in_name
        wanted = _SEPARATORS.sub("-", "-".join(terms))
        # Names are sorted, so those starting with the query are one run (the exact one first).
        first = bisect.bisect_left(self.names, wanted)
        last = bisect.bisect_left(self.names, wanted + "\U0010ffff", first)
        prefixed = [i for i in range(first, last) if i in hits]
        taken = set(prefixed)
        named = sorted((in_name & hits) - taken)
        others = sorted(hits - in_name - taken)
        entries = self.entries
        return [entries[i] for i in (*prefixed, *named, *others)]


# --- one project's page ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str | None  # None when it is not an http(s) URL: shown as text only


@dataclass(frozen=True, slots=True)
class Release:
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


def render_description(text: str | None, content_type: str | None) -> Markup | None:
    """A package's long description as safe HTML, the way PyPI renders it."""
    if not text or not text.strip():
        return None
    kind, params = _parse_content_type(content_type)
    if len(text) > MAX_RENDERED_DESCRIPTION:
        kind = "text/plain"
    rendered = None
    if kind == "text/markdown":
        rendered = readme_renderer.markdown.render(text, variant=params.get("variant", "GFM"))
    elif kind == "text/x-rst":
        rendered = readme_renderer.rst.render(text)
    elif kind == "text/plain":
        rendered = "<pre>" + readme_renderer.txt.render(text) + "</pre>"
    if rendered is None:  # unknown type or markup that did not render: PyPI's fallback
        rendered = "<pre>" + readme_renderer.txt.render(text) + "</pre>"
    # readme_renderer has already sanitized it (nh3): nothing executable remains. Its
    # heading anchors are empty links, which screen readers announce as nameless: drop them.
    return Markup(_EMPTY_ANCHOR.sub("", rendered))


def _parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    if not value or not value.strip():
        return "text/x-rst", {}  # what PyPI assumes when a package says nothing
    message = email.message.Message()
    message["content-type"] = value
    params = {k.lower(): str(v) for k, v in (message.get_params() or [])[1:]}
    return message.get_content_type(), params


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


class ProjectPages:
    """Reads core metadata and renders READMEs, once per Project object."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
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
                    data = read_core_metadata(self.catalog.storage.path(f.root, f.relpath),
                                              parse_filename(f.filename))
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
            description = render_description(raw.get("description"), raw.get("description_content_type"))
        except Exception:  # a renderer bug must not take the page down: show the text
            log.exception("rendering the description of %s failed", project.name)
            description = Markup("<pre>") + raw.get("description", "") + Markup("</pre>")
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
        )


# --- formatting helpers for templates ----------------------------------------------------
def human_size(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def human_date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d")


def file_kind(f: DistFile) -> str:
    return _KINDS.get(f.packagetype, f.packagetype)


# --- static assets -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    version: str


def load_assets(directory: Path = STATIC_DIR) -> dict[str, Asset]:
    """The stylesheet, script and icon, read once; served from memory."""
    assets = {}
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if not path.is_file() or path.name.startswith("."):
            continue
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith(("javascript", "+xml")):
            kind += "; charset=utf-8"
        body = path.read_bytes()
        assets[path.name] = Asset(body, kind, hashlib.blake2b(body, digest_size=6).hexdigest())
    return assets


# --- HTTP -------------------------------------------------------------------------------
def _query() -> dict[str, str]:
    """The query string as text; a malformed one is the client's error (400)."""
    raw = request.environ.get("QUERY_STRING", "")
    try:
        parsed = parse_qs(raw, errors="strict", max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HTTPError(400, "the query string is not valid UTF-8 form data") from None
    return {key: values[-1] for key, values in parsed.items()}


def _root() -> str:
    """The app's own path as the browser sees it (honours a proxy's prefix), ending in /."""
    script = request.environ.get("SCRIPT_NAME", "").strip("/")
    return f"/{quote(script, safe=_PATH_SAFE)}/" if script else "/"


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment) -> None:
    welcome = settings.welcome_file.read_text(encoding="utf-8") if settings.welcome_file else None
    try:
        version = importlib.metadata.version("wharf")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    assets = load_assets()
    pages = ProjectPages(catalog)
    private = access.protects("list")
    state: dict[str, SearchIndex] = {}
    index_lock = threading.Lock()

    templates.globals.update(human_size=human_size, iso_time=iso_time, human_time=human_time,
                             human_date=human_date, file_kind=file_kind, quote=quote)

    def search_index() -> SearchIndex:
        view = catalog.view
        current = state.get("index")
        if current is not None and current.serial == view.serial:
            return current
        with index_lock:
            current = state.get("index")
            if current is None or current.serial != view.serial:
                current = state["index"] = SearchIndex(view, current)
            return current

    def static_url(name: str) -> str:
        return f"{_root()}static/{name}?v={assets[name].version}"

    def page(template: str, status: int = 200, **context) -> bytes:
        body = templates.get_template(template).render(
            root=_root(), static_url=static_url, query=context.pop("query", ""), **context).encode()
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "private, no-cache" if private else "no-cache",
            "ETag": etag_of(body),
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        }
        if status == 200 and not_modified(headers["ETag"]):
            raise HTTPResponse(status=304, headers=headers)
        response.status = status
        for key, value in headers.items():
            response.set_header(key, value)
        return body

    def urls() -> dict[str, str]:
        return {
            "index_url": external_url(request.environ, "/simple/"),
            "upload_url": external_url(request.environ, "/"),
        }

    @app.get("/")
    def home():
        access.require("list")
        if welcome is not None:
            return welcome_page()
        index = search_index()
        pull_through = app.config.get("wharf.upstream")  # app/upstream.py, None when off
        return page("web/home.html", projects=len(index.entries), files=index.file_count,
                    recent=index.recent, takes_uploads=access.takes_uploads,
                    upstream=pull_through.status() if pull_through is not None else None,
                    needs_login={a: access.protects(a) for a in ("update", "download", "list")}, **urls())

    def welcome_page() -> str:
        view = catalog.view
        # What pypiserver fills in: the absolute URL, paths for the rest, the file count.
        values = {
            "URL": external_url(request.environ, "/"),
            "VERSION": version,
            "NUMPKGS": str(view.file_count),
            "PACKAGES": _root() + "packages/",
            "SIMPLE": _root() + "simple/",
        }
        response.set_header("Content-Type", "text/html; charset=utf-8")
        response.set_header("Cache-Control", "private, no-cache" if private else "no-cache")
        return _WELCOME_FIELDS.sub(lambda m: html.escape(values[m.group(1)]), welcome)

    @app.get("/projects")
    def projects_redirect():
        redirect(external_url(request.environ, "/projects/", keep_query=True), 301)

    @app.get("/projects/")
    def project_list():
        access.require("list")
        params = _query()
        query = " ".join(params.get("q", "").split())
        if len(query) > MAX_QUERY:
            raise HTTPError(400, f"the search is longer than {MAX_QUERY} characters")
        number = params.get("page", "1")
        if not number.isdigit() or not 0 < int(number) < 1_000_000:
            raise HTTPError(400, "page must be a positive whole number")
        number = int(number)
        index = search_index()
        found = index.search(query)
        pages_total = max(1, -(-len(found) // PER_PAGE))
        if number > pages_total:
            return page("web/projects.html", status=404, query=query, entries=[], total=len(found),
                        page=number, pages=pages_total, all_projects=len(index.entries), missing_page=True)
        start = (number - 1) * PER_PAGE
        return page("web/projects.html", query=query, entries=found[start:start + PER_PAGE],
                    total=len(found), page=number, pages=pages_total, all_projects=len(index.entries),
                    missing_page=False)

    @app.get("/project/<name>")
    def project_redirect(name: str):
        redirect(external_url(request.environ, f"/project/{valid_project_name(name)}/"), 301)

    @app.get("/project/<name>/")
    def project_page(name: str):
        access.require("list")
        normalized = valid_project_name(name)
        if normalized != name:
            redirect(external_url(request.environ, f"/project/{normalized}/"), 301)
        project = catalog.project(name)
        if project is None:
            return page("web/not_found.html", status=404, name=name)
        return page("web/project.html", project=project, details=pages.details(project), **urls())

    @app.route("/static/<name>", method=["GET", "HEAD"])
    def static(name: str):
        asset = assets.get(name)
        if asset is None:
            raise HTTPError(404, f"no asset named {name[:100]!r}")
        current = _query().get("v") == asset.version
        etag = f'"{asset.version}"'
        headers = {
            "Content-Type": asset.content_type,
            "ETag": etag,
            # A versioned URL never changes; an unversioned one may after an upgrade.
            "Cache-Control": cache_control(31536000 if current else 300, private=False, immutable=current),
            "X-Content-Type-Options": "nosniff",
        }
        if not_modified(etag):
            raise HTTPResponse(status=304, headers=headers)
        for key, value in headers.items():
            response.set_header(key, value)
        response.set_header("Content-Length", str(len(asset.body)))
        return b"" if request.method == "HEAD" else asset.body
