"""The request as the client sent it, when a reverse proxy stands in between.

``X-Forwarded-Proto``, ``-Host``, ``-Port``, ``-Prefix`` and ``-For`` are believed only
from ``trusted_proxies``; from anyone else they are dropped before the app sees them
(bottle would otherwise believe ``X-Forwarded-Host`` from any client). A fixed
``server_base_url`` overrides both.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_PREFIX = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?$")
_FORWARDED = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT",
              "HTTP_X_FORWARDED_PREFIX", "HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED")


class ProxyHeaders:
    """WSGI middleware applying trusted forwarding headers to the environ."""

    def __init__(self, app: Callable, trusted: Iterable[str], base_url: str = ""):
        self.app = app
        self.any = False
        self.networks = []
        for item in trusted:
            if item == "*":
                self.any = True
            else:
                self.networks.append(ipaddress.ip_network(item, strict=False))
        self.base = urlsplit(base_url.rstrip("/")) if base_url else None

    def trusts(self, peer: str) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(self, environ: dict, start_response: Callable):
        try:
            environ["PATH_INFO"].encode("latin-1").decode("utf-8")
        except (UnicodeError, KeyError):
            return _bad_request(start_response, "the request path is not valid UTF-8")
        headers = {key: environ.pop(key) for key in _FORWARDED if key in environ}
        if self.base is not None:
            environ["wsgi.url_scheme"] = self.base.scheme
            environ["HTTP_HOST"] = self.base.netloc
            environ["SCRIPT_NAME"] = self.base.path
        elif headers and self.trusts(environ.get("REMOTE_ADDR", "")):
            _apply(environ, headers)
        return self.app(environ, start_response)


def _first(value: str) -> str:
    return value.split(",")[0].strip()


def _apply(environ: dict, headers: dict[str, str]) -> None:
    proto = _first(headers.get("HTTP_X_FORWARDED_PROTO", "")).lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
    host = _first(headers.get("HTTP_X_FORWARDED_HOST", ""))
    if host and _HOST.match(host):
        environ["HTTP_HOST"] = host
    port = _first(headers.get("HTTP_X_FORWARDED_PORT", ""))
    if port.isdigit() and "HTTP_X_FORWARDED_HOST" in headers and ":" not in host.rsplit("]", 1)[-1]:
        default = {"http": "80", "https": "443"}.get(environ.get("wsgi.url_scheme", ""))
        if port != default:
            environ["HTTP_HOST"] = f"{host}:{port}"
    prefix = _first(headers.get("HTTP_X_FORWARDED_PREFIX", ""))
    if prefix and _PREFIX.match(prefix):
        environ["SCRIPT_NAME"] = prefix.rstrip("/") + environ.get("SCRIPT_NAME", "")
    client = headers.get("HTTP_X_FORWARDED_FOR", "")
    if client:
        # The right-most address is the one our trusted proxy saw.
        environ["REMOTE_ADDR"] = client.split(",")[-1].strip()


def _bad_request(start_response: Callable, message: str):
    body = f"400 Bad Request: {message}\n".encode()
    start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"),
                                       ("Content-Length", str(len(body)))])
    return [body]


def external_url(environ: dict, path: str, *, keep_query: bool = False) -> str:
    """The absolute URL of ``path`` (relative to the app's root) as the client sees it,
    with this request's query string when ``keep_query``."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    url = f"{scheme}://{host}{environ.get('SCRIPT_NAME', '').rstrip('/')}{path}"
    query = environ.get("QUERY_STRING") if keep_query else None
    return f"{url}?{query}" if query else url
