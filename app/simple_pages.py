"""Simple API pages (PEP 503/691/700/658/592/792): the media types and the JSON and HTML renderings.

One builder for every page the index serves: the simple API's pages of local projects and
the pull-through cache's pages of upstream ones. A page is rendered once, kept with its
ETag, and its URLs are relative, so one rendering serves every host name and path prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import jinja2

from .caching import etag_of

API_VERSION = "1.4"  # 1.4: PEP 792 project status markers
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
# The Content-Type each media type is answered with.
CONTENT_TYPES = {JSON_V1: JSON_V1, HTML_V1: HTML_V1, TEXT_HTML: "text/html; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page, with what it was rendered from (to tell when it is stale)."""

    source: object  # the Project, the catalog's names, or an upstream Listing
    body: bytes
    etag: str

    @classmethod
    def of(cls, source: object, body: bytes) -> Page:
        return cls(source, body, etag_of(body))


@dataclass(frozen=True, slots=True)
class PageFile:
    """One file as a project page lists it."""

    filename: str
    url: str  # relative to the project page
    hashes: dict[str, str]
    fragment: str  # "#algo=digest" for the HTML link, or ""
    requires_python: str | None
    yanked: str | None  # None, or the reason ("" for none given)
    metadata_sha256: str | None  # PEP 658/714: the core metadata file's sha256, if served
    size: int | None = None
    upload_time: str | None = None  # ISO 8601, as PEP 700 gives it


def render_index(templates: jinja2.Environment, fmt: str, names: Iterable[str]) -> bytes:
    """The page listing every project."""
    if fmt == JSON_V1:
        data = {"meta": {"api-version": API_VERSION}, "projects": [{"name": n} for n in names]}
        return json.dumps(data, separators=(",", ":")).encode()
    return templates.get_template("simple/index.html").render(api_version=API_VERSION, projects=names).encode()


def render_project(templates: jinja2.Environment, fmt: str, name: str, versions: Iterable[str],
                   files: Iterable[PageFile], status: tuple[str, str] | None = None) -> bytes:
    """A project's page: JSON for ``JSON_V1``, HTML for the other types.

    ``status`` is the PEP 792 (status, reason) to mark the page with ("" for no reason);
    None leaves the marker out (an upstream that gave none).
    """
    if fmt == JSON_V1:
        return _project_json(name, versions, files, status)
    links = [
        {
            "href": f.url + f.fragment,
            "filename": f.filename,
            "requires_python": f.requires_python,
            "metadata": f"sha256={f.metadata_sha256}" if f.metadata_sha256 else None,
            "yanked": f.yanked,
        }
        for f in files
    ]
    return templates.get_template("simple/project.html").render(
        api_version=API_VERSION, name=name, links=links, status=status).encode()


def _project_json(name: str, versions: Iterable[str], files: Iterable[PageFile],
                  status: tuple[str, str] | None) -> bytes:
    entries = []
    for f in files:
        meta = {"sha256": f.metadata_sha256} if f.metadata_sha256 else False
        entry = {"filename": f.filename, "url": f.url, "hashes": f.hashes, "requires-python": f.requires_python}
        if f.size is not None:
            entry["size"] = f.size
        if f.upload_time:
            entry["upload-time"] = f.upload_time
        entry["yanked"] = f.yanked if f.yanked else (f.yanked is not None)
        entry["core-metadata"] = meta
        entry["dist-info-metadata"] = meta
        entries.append(entry)
    data = {"meta": {"api-version": API_VERSION}, "name": name, "versions": list(versions), "files": entries}
    if status is not None:
        data["project-status"] = {"status": status[0], **({"reason": status[1]} if status[1] else {})}
    return json.dumps(data, separators=(",", ":")).encode()
