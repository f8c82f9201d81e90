"""Simple API pages (PEP 503/691/700/658/592/792): the media types and the JSON and HTML renderings.

One builder for every page the index serves: the simple API's pages of local projects and
the pull-through cache's pages of upstream ones. A page is rendered once, kept with its
ETag, and its URLs are relative, so one rendering serves every host name and path prefix.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Iterable, Sequence
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
    encoding: str | None = None  # "gzip" if ``body`` is compressed (the project index)

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


# --- the project index, compressed, rebuilt by the chunk -----------------------------------
# A name ends a chunk when its CRC-32 says so (about one in CHUNK_MEAN), or at CHUNK_MAX:
# a name added or removed changes its own chunk only, wherever it falls.
CHUNK_MEAN = 1024
CHUNK_MAX = 4 * CHUNK_MEAN
_NAME_SLOT = "wharf-index-name-slot"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS
_FINAL_BLOCK = b"\x03\x00"  # an empty final deflate block


def _deflate(raw: bytes) -> bytes:
    """``raw`` as deflate blocks that end on a byte boundary and refer to nothing before
    them, so that compressed chunks can be joined into one stream."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(raw) + compressor.flush(zlib.Z_FULL_FLUSH)


def _chunks(names: Sequence[str]) -> list[tuple[int, int]]:
    bounds = []
    start = 0
    crc32 = zlib.crc32
    for i, name in enumerate(names):
        if i + 1 - start >= CHUNK_MAX or crc32(name.encode()) % CHUNK_MEAN == 0:
            bounds.append((start, i + 1))
            start = i + 1
    if start < len(names):
        bounds.append((start, len(names)))
    return bounds


class CompressedIndex:
    """The /simple/ page in one format, kept gzip-compressed: at a million files it lists
    ~330,000 names (~20 MB as HTML), which no worker should hold, or compress, per request.

    The names are cut into chunks at points the names themselves choose; each chunk is
    kept compressed, and a new list of names compresses only the chunks that differ. The
    ETag is the same for the same names in every worker.
    """

    def __init__(self, templates: jinja2.Environment, fmt: str):
        self.json = fmt == JSON_V1
        if self.json:
            self.head = json.dumps({"meta": {"api-version": API_VERSION}}, separators=(",", ":"))[:-1] + ',"projects":['
            self.tail = "]}"
        else:
            page = templates.get_template("simple/index.html").render(api_version=API_VERSION, projects=[_NAME_SLOT])
            line_start = page.rindex("\n", 0, page.index(_NAME_SLOT)) + 1
            line_end = page.index("\n", page.rindex(_NAME_SLOT)) + 1
            self.head, self.line, self.tail = page[:line_start], page[line_start:line_end], page[line_end:]
        self._kept: dict[tuple[str, ...], tuple[bytes, bytes]] = {}  # names -> (deflated, sha256 of raw)

    def _render(self, names: Sequence[str], first: bool) -> str:
        if self.json:
            text = ",".join('{"name":%s}' % json.dumps(n) for n in names)
            return text if first else "," + text
        line = self.line
        return "".join(line.replace(_NAME_SLOT, n) for n in names)

    def page(self, names: tuple[str, ...]) -> Page:
        kept: dict[tuple[str, ...], tuple[bytes, bytes]] = {}
        parts = [_deflate(self.head.encode())]
        digest = hashlib.sha256(self.head.encode())
        for number, (start, end) in enumerate(_chunks(names)):
            key = names[start:end]
            if number == 0:
                key = ("",) + key  # the first chunk of JSON has no leading comma
            chunk = self._kept.get(key)
            if chunk is None:
                raw = self._render(names[start:end], number == 0).encode()
                chunk = (_deflate(raw), hashlib.sha256(raw).digest())
            kept[key] = chunk
            parts.append(chunk[0])
            digest.update(chunk[1])
        parts.append(_deflate(self.tail.encode()))
        digest.update(self.tail.encode())
        self._kept = kept
        stream = b"".join(parts) + _FINAL_BLOCK
        # The gzip trailer: CRC-32 and length of the whole page (one pass over it, never kept).
        crc, size = 0, 0
        inflater = zlib.decompressobj(-15)
        for offset in range(0, len(stream), 1 << 20):
            raw = inflater.decompress(stream[offset:offset + (1 << 20)])
            crc, size = zlib.crc32(raw, crc), size + len(raw)
        body = _GZIP_HEADER + stream + struct.pack("<II", crc, size & 0xFFFFFFFF)
        return Page(names, body, '"' + digest.hexdigest()[:32] + '"', "gzip")
