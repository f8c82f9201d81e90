"""HTML pages as responses: the template context every page shares, and its headers.

Pages carry a Content-Security-Policy that forbids inline scripts, and are revalidated
on every load (``no-cache`` with an ETag); on a private index only the reader's own
cache may keep them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote

import jinja2
from bottle import HTTPError, HTTPResponse, request, response

from ..caching import etag_of, not_modified
from .assets import Asset
from .details import file_kind, human_size

# Pages load only what Wharf serves (and data: images): a README's image from elsewhere
# would tell a third party who reads which private project, and when (issue 14.11).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

_PATH_SAFE = "/:@!$&'()*+,;=%~"


def query_params() -> dict[str, str]:
    """The query string as text; a malformed one is the client's error (400)."""
    raw = request.environ.get("QUERY_STRING", "")
    try:
        parsed = parse_qs(raw, errors="strict", max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HTTPError(400, "the query string is not valid UTF-8 form data") from None
    return {key: values[-1] for key, values in parsed.items()}


def root_path() -> str:
    """The app's own path as the browser sees it (honours a proxy's prefix), ending in /."""
    script = request.environ.get("SCRIPT_NAME", "").strip("/")
    return f"/{quote(script, safe=_PATH_SAFE)}/" if script else "/"


def page_cache_control(private: bool) -> str:
    """Pages change with every upload: always revalidated; shared caches skip private ones."""
    return "private, no-cache" if private else "no-cache"


def iso_time(timestamp: float) -> str:
    """A time for machines (``<time datetime=...>``)."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_time(timestamp: float) -> str:
    """A time for people, in UTC."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def human_date(timestamp: float) -> str:
    """A date for people, in UTC."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d")


def _installed() -> bool:
    try:
        importlib.metadata.version("wharf")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _template_digests(templates: jinja2.Environment) -> list[str]:
    loader = templates.loader
    names = loader.list_templates() if loader is not None else []
    return [f"{name}={hashlib.sha256(loader.get_source(templates, name)[0].encode()).hexdigest()[:16]}"
            for name in names if name.startswith("web/")]


class Pages:
    """Renders ``web/*.html`` templates into responses with the pages' headers."""

    def __init__(self, templates: jinja2.Environment, assets: dict[str, Asset], private: bool):
        self.templates = templates
        self.assets = assets
        self.private = private
        # Pages made by another version of the templates or assets are other pages.
        self.fingerprint = etag_of("|".join([importlib.metadata.version("wharf") if _installed() else "dev",
                                             *(f"{n}={a.version}" for n, a in sorted(assets.items())),
                                             *_template_digests(templates)]).encode())
        templates.globals.update(human_size=human_size, iso_time=iso_time, human_time=human_time,
                                 human_date=human_date, file_kind=file_kind, quote=quote)

    def static_url(self, name: str) -> str:
        return f"{root_path()}static/{name}?v={self.assets[name].version}"

    def render(self, template: str, status: int = 200, *, version: str | None = None, **context) -> bytes:
        """The page's body; sets its headers, or answers 304 when the reader's copy is current.

        ``version`` names everything the page shows (its data, the query): given, the ETag
        comes from it and a conditional request is answered before anything is rendered.
        """
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": page_cache_control(self.private),
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        }
        if version is not None:
            headers["ETag"] = etag_of(f"{self.fingerprint}|{template}|{root_path()}|{version}".encode())
            if status == 200 and not_modified(headers["ETag"]):
                raise HTTPResponse(status=304, headers=headers)
        static_url: Callable[[str], str] = self.static_url
        body = self.templates.get_template(template).render(
            root=root_path(), static_url=static_url, query=context.pop("query", ""), **context).encode()
        if version is None:
            headers["ETag"] = etag_of(body)
            if status == 200 and not_modified(headers["ETag"]):
                raise HTTPResponse(status=304, headers=headers)
        response.status = status
        for key, value in headers.items():
            response.set_header(key, value)
        return body
