"""The pages' stylesheet, script and icon (static/ beside this module): read once, served from memory.

Each page links an asset with its content hash in the URL (``?v=``), so a versioned URL
can be cached for a year and an upgrade is picked up on the next page load.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from bottle import HTTPError, HTTPResponse, request, response

from ..caching import cache_control, not_modified

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file: its bytes, media type and content hash."""

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


def send_asset(assets: dict[str, Asset], name: str, requested_version: str | None) -> bytes:
    """The response to GET/HEAD of one asset; a versioned URL is cached as immutable."""
    asset = assets.get(name)
    if asset is None:
        raise HTTPError(404, f"no asset named {name[:100]!r}")
    current = requested_version == asset.version
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
