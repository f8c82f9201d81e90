"""Downloads of package files and their PEP 658 metadata files.

Only files the catalog knows are served, looked up by their URL path, so no request can
name a path outside the packages directories. Content-Encoding is never set: a
``.tar.gz`` is the bytes the hash describes, not a gzip-encoded tarball.

With object storage (app/storage/s3.py) no worker holds a whole file, nor streams one for
its duration when nginx is in front: nginx says so with ``X-Wharf-Accel: s3`` and gets an
``X-Accel-Redirect`` to its internal ``/_s3/`` location with a presigned URL of the
object, which nginx fetches and caches itself. Without nginx the object is streamed in
chunks; with ``s3_redirect_clients`` clients get a 302 to the presigned URL.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote

import jinja2
from bottle import Bottle, HTTPError, HTTPResponse, request, response

from .auth import Access
from .cache_refresh import index_lifetime
from .caching import cache_control, etag_of, http_date, if_range_holds, index_cache_headers, not_modified
from .catalog import Catalog, DistFile
from .dists import METADATA_SUFFIX
from .policy.rules import LocalRules
from .settings import Settings
from .storage import CHUNK, Storage, StorageUnavailable

_TYPES = (
    (".whl", "application/zip"),
    (".zip", "application/zip"),
    (".egg", "application/zip"),
    (".tar.gz", "application/gzip"),
    (".tgz", "application/gzip"),
    (".tar.bz2", "application/x-bzip2"),
    (".tbz", "application/x-bzip2"),
    (".tar.xz", "application/x-xz"),
    (".txz", "application/x-xz"),
    (".tar", "application/x-tar"),
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def content_type(filename: str) -> str:
    lower = filename.lower()
    for suffix, kind in _TYPES:
        if lower.endswith(suffix):
            return kind
    return "application/octet-stream"


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single satisfiable range; None to send the whole file.

    Raises HTTPError 416 for a syntactically valid range that cannot be satisfied.
    """
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not match:
        return None  # multiple or malformed ranges: ignoring Range is allowed (RFC 9110)
    start, end = match.groups()
    if not start and not end:
        return None
    if not start:
        length = int(end)
        if length == 0:
            raise _unsatisfiable(size)
        return max(size - length, 0), size - 1
    first = int(start)
    last = min(int(end), size - 1) if end else size - 1
    if end and int(end) < first:
        return None
    if first >= size:
        raise _unsatisfiable(size)
    return first, last


def _unsatisfiable(size: int) -> HTTPError:
    error = HTTPError(416, "requested range not satisfiable")
    error.set_header("Content-Range", f"bytes */{size}")
    return error


def _slice(stream, first: int, last: int):
    try:
        stream.seek(first)
        remaining = last - first + 1
        while remaining > 0:
            chunk = stream.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        stream.close()


# Files up to this size are read and sent as bytes: cheaper than a file object's
# sendfile path for the small wheels and metadata most requests are for.
SMALL_FILE = 64 * 1024


def _in_pieces(parts, size: int = 64 * 1024):
    """Rendered text as bytes, a piece of about ``size`` at a time (a streamed response)."""
    pending: list[str] = []
    length = 0
    for part in parts:
        pending.append(part)
        length += len(part)
        if length >= size:
            yield "".join(pending).encode()
            pending, length = [], 0
    if pending:
        yield "".join(pending).encode()


def send_stored(storage: Storage, root: int, relpath: str, etag: str, mtime: float, *, gone: str):
    """A stored file as the response body (the caller has set its headers).

    HEAD, conditional and single-range requests are answered; HTTPError 404 (``gone``) if
    the file is no longer there.
    """
    if not_modified(etag, mtime):
        raise HTTPResponse(status=304, headers=dict(response.headers))
    try:
        stream, size = storage.open(root, relpath)
    except FileNotFoundError:
        raise HTTPError(404, gone) from None
    except StorageUnavailable as exc:
        raise storage_unavailable(exc) from None
    wanted = request.environ.get("HTTP_RANGE")
    span = None
    try:
        if wanted and if_range_holds(etag, mtime):
            span = parse_range(wanted, size)
    except HTTPError:
        stream.close()
        raise
    if span is None:
        response.set_header("Content-Length", str(size))
        if request.method == "HEAD" or size <= SMALL_FILE:
            with stream:
                return b"" if request.method == "HEAD" else stream.read(size)
        return stream  # bottle hands it to wsgi.file_wrapper (sendfile under gunicorn)
    first, last = span
    response.status = 206
    response.set_header("Content-Range", f"bytes {first}-{last}/{size}")
    response.set_header("Content-Length", str(last - first + 1))
    if request.method == "HEAD":
        stream.close()
        return b""
    return _slice(stream, first, last)


def storage_unavailable(exc: Exception) -> HTTPError:
    """503 with Retry-After for a storage that cannot be reached (an object store that is down)."""
    error = HTTPError(503, "the index's file storage cannot be reached; try again shortly")
    error.set_header("Retry-After", "10")
    error.set_header("Cache-Control", "no-store")
    return error


def redirect_to_object(storage, relpath: str, etag: str, mtime: float, sha256: str, *, to_client: bool):
    """Hand the download of an object to nginx (X-Accel-Redirect) or to the client (302).

    nginx's internal ``/_s3/`` location fetches the presigned URL it finds in
    X-Wharf-S3-Url and caches the object under the redirect's path, which names the
    file's sha256 (a replaced file is a new entry). The app's 304 is answered first, here.
    """
    # nginx keeps If-None-Match from a cached location's upstream; it passes it on as
    # X-Wharf-If-None-Match, and a 304 to it must never be stored (X-Accel-Expires: 0).
    forwarded = request.environ.get("HTTP_X_WHARF_IF_NONE_MATCH", "")
    if not_modified(etag, mtime) or etag in (tag.strip() for tag in forwarded.split(",")):
        response.set_header("X-Accel-Expires", "0")
        raise HTTPResponse(status=304, headers=dict(response.headers))
    url = storage.presigned_url(relpath)
    if to_client:
        headers = {"Location": url, "Cache-Control": "no-store"}
        raise HTTPResponse(status=302, headers=headers)
    response.set_header("X-Accel-Redirect", f"/_s3/{sha256}/{quote(relpath)}")
    response.set_header("X-Wharf-S3-Url", url)
    return b""


class Downloads:
    """Package files and their metadata files, with the headers their caching needs."""

    def __init__(self, settings: Settings, catalog: Catalog, access: Access):
        self.settings = settings
        self.catalog = catalog
        self.private = access.protects("download")
        self.immutable = not settings.overwrite
        self.cache_control = cache_control(settings.file_max_age, private=self.private, immutable=self.immutable)
        self.http_date = functools.lru_cache(maxsize=4096)(http_date)
        self.recheck = str(settings.file_recheck)

    def _headers(self, etag: str, mtime: float, kind: str) -> None:
        response.set_header("Content-Type", kind)
        response.set_header("ETag", etag)
        response.set_header("Last-Modified", self.http_date(mtime))
        response.set_header("Accept-Ranges", "bytes")
        response.set_header("Cache-Control", self.cache_control)
        if self.settings.file_recheck:
            # For nginx only (it keeps this from clients): ask again after this many
            # seconds, so a removed file is not served from its cache for a year.
            response.set_header("X-Accel-Expires", self.recheck)

    def send_file(self, dist: DistFile):
        etag = f'"{dist.sha256}"'
        self._headers(etag, dist.upload_time, content_type(dist.filename))
        storage = self.catalog.storage
        if hasattr(storage, "presigned_url") and request.method == "GET":
            to_client = self.settings.s3_redirect_clients
            if to_client or request.environ.get("HTTP_X_WHARF_ACCEL") == "s3":
                return redirect_to_object(storage, dist.relpath, etag, dist.upload_time, dist.sha256,
                                          to_client=to_client)
        return send_stored(self.catalog.storage, dist.root, dist.relpath, etag, dist.upload_time,
                           gone=f"{dist.filename} was removed")

    def send_metadata(self, dist: DistFile):
        data = self.catalog.read_metadata(dist)
        if data is None and dist.metadata_sha256 is not None and self.catalog.storage.readable():
            raise storage_unavailable(OSError("storage unreadable"))
        if data is None:
            raise HTTPError(404, f"no core metadata for {dist.filename}")
        etag = f'"{dist.metadata_sha256}"'
        self._headers(etag, dist.upload_time, "application/octet-stream")
        if not_modified(etag, dist.upload_time):
            raise HTTPResponse(status=304, headers=dict(response.headers))
        return data


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment, policy: LocalRules) -> Downloads:
    """The download routes; ``policy`` refuses the files of quarantined projects (PEP 792)."""
    downloads = Downloads(settings, catalog, access)
    listing_cache: dict[int, tuple[bytes, str]] = {}

    @app.route("/packages/<path:path>", method=["GET", "HEAD"])
    def package_file(path: str):
        access.require("download")
        dist = catalog.find(path)
        if dist is not None:
            policy.check_download(dist.project, dist.filename)
            return downloads.send_file(dist)
        if path.endswith(METADATA_SUFFIX):
            dist = catalog.find(path[: -len(METADATA_SUFFIX)])
            if dist is not None:
                policy.check_download(dist.project, dist.filename + METADATA_SUFFIX)
                return downloads.send_metadata(dist)
        raise HTTPError(404, "no such package file")

    @app.get("/packages/")
    def package_listing():
        # pypiserver's flat list of every file, for pip --find-links.
        access.require("list")
        view = catalog.view
        if not catalog.holds_everything():
            # A large index: its list (a million lines, ~60 MB) is streamed from the
            # database as it is rendered, never held whole by a worker.
            response.set_header("Content-Type", "text/html; charset=utf-8")
            for key, value in index_cache_headers(settings.index_max_age, private=access.protects("list"),
                                                    keep=index_lifetime(settings)).items():
                response.set_header(key, value)
            return _in_pieces(templates.get_template("packages.html").generate(links=catalog.relpaths()))
        cached = listing_cache.get(view.serial)
        if cached is None:
            body = templates.get_template("packages.html").render(links=catalog.relpaths()).encode()
            listing_cache.clear()
            listing_cache[view.serial] = cached = (body, etag_of(body))
        body, etag = cached
        response.set_header("Content-Type", "text/html; charset=utf-8")
        response.set_header("ETag", etag)
        for key, value in index_cache_headers(settings.index_max_age, private=access.protects("list"),
                                                keep=index_lifetime(settings)).items():
            response.set_header(key, value)
        if not_modified(etag):
            raise HTTPResponse(status=304, headers=dict(response.headers))
        return body

    return downloads
