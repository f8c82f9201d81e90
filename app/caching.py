"""HTTP caching decided by the app: validators, conditional requests, Cache-Control.

The app says what may be cached and for how long; nginx and pip's cache obey.
"""

from __future__ import annotations

import hashlib
import time
from email.utils import formatdate, parsedate_to_datetime

from bottle import request


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def cache_control(max_age: int, *, private: bool, immutable: bool = False) -> str:
    parts = ["private" if private else "public", f"max-age={max_age}"]
    if immutable:
        parts.append("immutable")
    elif max_age < 60:
        parts.append("must-revalidate")
    return ", ".join(parts)


def index_cache_headers(max_age: int, *, private: bool, keep: int | None = None) -> dict[str, str]:
    """Headers of a page that changes (index pages): Cache-Control, and its lifetime for nginx.

    Clients get ``max_age``; nginx keeps the page ``keep`` seconds (default: ``max_age``),
    which is long while the app refreshes nginx after every change (app/cache_refresh.py).
    nginx keeps a response until its expiry second has passed, counting in whole
    seconds, so "max-age=1" lives 1 to 2 s there. X-Accel-Expires (read by nginx,
    never passed on to clients) gives the absolute last second instead: the page is
    then renewed at most ``keep`` seconds after it was made.
    """
    keep = max_age if keep is None else keep
    headers = {"Cache-Control": cache_control(max_age, private=private)}
    if keep > 0:
        headers["X-Accel-Expires"] = f"@{int(time.time()) + keep - 1}"
    return headers


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def not_modified(etag: str, last_modified: float | None = None) -> bool:
    """True if the client's copy is current (RFC 9110 section 13.2.2 precedence)."""
    inm = request.environ.get("HTTP_IF_NONE_MATCH")
    if inm is not None:
        return _etag_matches(inm, etag)
    ims = request.environ.get("HTTP_IF_MODIFIED_SINCE")
    if ims and last_modified is not None:
        try:
            return int(last_modified) <= parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
    return False


def if_range_holds(etag: str, last_modified: float) -> bool:
    """Whether a Range request's If-Range (if any) still matches the representation."""
    value = request.environ.get("HTTP_IF_RANGE")
    if not value:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison only
    try:
        return int(last_modified) == int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
