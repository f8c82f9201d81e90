"""Refusal of state-changing requests that a browser sent on behalf of another web site.

Browsers keep Basic credentials and attach them to a form that any other page posts to
the index, so without this check a hostile page could upload, remove or yank as the user
who logged in. Browsers say where a request comes from (``Sec-Fetch-Site`` in current
ones, ``Origin`` on every cross-origin POST since long before); twine, uv, pip and curl
send neither, so they are never affected. Safe methods (GET, HEAD, OPTIONS) change
nothing and pass.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import bottle

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# "none": the user typed the URL or used a bookmark; "same-origin": a page of the index.
# "same-site" is refused too: a sibling host under the same domain is another origin.
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, with default ports made explicit."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def own_origin(environ: dict) -> tuple[str, str, int] | None:
    """The origin clients reach this index at (proxy headers were applied before)."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    return origin_of(f"{scheme}://{host}")


def cross_site_reason(environ: dict) -> str | None:
    """Why this request must be refused as cross-site, or None if it may go on."""
    if environ.get("REQUEST_METHOD", "GET").upper() in SAFE_METHODS:
        return None
    site = environ.get("HTTP_SEC_FETCH_SITE")
    if site is not None and site.strip().lower() not in ALLOWED_FETCH_SITES:
        return f"a browser sent this request from another site (Sec-Fetch-Site: {site.strip()[:40]})"
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None:
        theirs = origin_of(origin) if origin.strip().lower() != "null" else None
        if theirs is None or theirs != own_origin(environ):
            return f"a browser sent this request from another origin ({origin.strip()[:100]})"
    return None


def refuse_cross_site() -> None:
    """A before-request hook: answers 403 to a cross-site state-changing request."""
    reason = cross_site_reason(bottle.request.environ)
    if reason is not None:
        bottle.request.environ["wharf.cross_site"] = reason
        raise bottle.HTTPError(403, f"Forbidden: {reason}; changes are accepted only from this index's own pages and from tools such as twine and uv")
