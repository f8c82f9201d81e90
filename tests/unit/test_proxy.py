"""Forwarding headers: believed from trusted proxies only; a fixed base URL wins over them."""

from __future__ import annotations

import pytest

from app.proxy import ProxyHeaders, external_url
from tests.support import call_wsgi

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pypi.example.com",
             "X-Forwarded-Prefix": "/pypi", "X-Forwarded-For": "198.51.100.7, 10.0.0.2"}


def seen_by_app(trusted=("127.0.0.1", "::1"), base_url="", headers=None, remote_addr="127.0.0.1",
                path="/simple/"):
    """The environ the wrapped app receives, and the status the middleware answered."""
    seen: dict = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    status, _headers, body = call_wsgi(ProxyHeaders(app, trusted, base_url), path, headers=headers,
                                       remote_addr=remote_addr)
    return status, seen, body


def url(environ: dict, path: str = "/simple/") -> str:
    return external_url(environ, path)


def test_a_trusted_proxy_sets_scheme_host_prefix_and_client():
    status, environ, _ = seen_by_app(headers=FORWARDED)
    assert status == 200
    assert url(environ) == "https://pypi.example.com/pypi/simple/"
    assert environ["REMOTE_ADDR"] == "10.0.0.2"  # the right-most hop: what our proxy saw
    assert not any(key.startswith("HTTP_X_FORWARDED") for key in environ)  # consumed


@pytest.mark.parametrize("peer", ["203.0.113.9", "10.0.0.1", "not-an-address", ""])
def test_headers_from_anyone_else_are_dropped(peer):
    _, environ, _ = seen_by_app(headers={**FORWARDED, "Forwarded": "for=1.2.3.4;proto=https"},
                                remote_addr=peer)
    assert url(environ) == "http://testserver/simple/"
    assert environ["REMOTE_ADDR"] == peer
    # dropped before the app sees them: bottle would believe X-Forwarded-Host from anyone
    assert not any(key.startswith(("HTTP_X_FORWARDED", "HTTP_FORWARDED")) for key in environ)


@pytest.mark.parametrize(("trusted", "peer", "believed"), [
    (("10.0.0.0/8",), "10.9.8.7", True),
    (("10.0.0.0/8",), "127.0.0.1", False),
    (("*",), "203.0.113.9", True),
    (("::1",), "::1", True),
    (("fe80::/10",), "fe80::1%eth0", True),  # a zone index does not hide the address
    ((), "127.0.0.1", False),
])
def test_trusted_proxies_are_addresses_networks_or_star(trusted, peer, believed):
    _, environ, _ = seen_by_app(trusted=trusted, headers=FORWARDED, remote_addr=peer)
    assert (url(environ) == "https://pypi.example.com/pypi/simple/") is believed


@pytest.mark.parametrize(("headers", "expected"), [
    ({"X-Forwarded-Proto": "https"}, "https://testserver/simple/"),
    ({"X-Forwarded-Proto": "gopher"}, "http://testserver/simple/"),
    ({"X-Forwarded-Proto": "HTTPS, http"}, "https://testserver/simple/"),  # first hop, any case
    ({"X-Forwarded-Host": "a.test", "X-Forwarded-Port": "8443", "X-Forwarded-Proto": "https"},
     "https://a.test:8443/simple/"),
    ({"X-Forwarded-Host": "a.test", "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https"},
     "https://a.test/simple/"),  # the scheme's default port is left out
    ({"X-Forwarded-Host": "a.test:9000", "X-Forwarded-Port": "8443"}, "http://a.test:9000/simple/"),
    ({"X-Forwarded-Host": "[2001:db8::1]", "X-Forwarded-Port": "8080"}, "http://[2001:db8::1]:8080/simple/"),
    ({"X-Forwarded-Port": "8443"}, "http://testserver/simple/"),  # a port alone changes nothing
    ({"X-Forwarded-Host": "evil.test/path"}, "http://testserver/simple/"),
    ({"X-Forwarded-Host": "a.test\r\nX: y"}, "http://testserver/simple/"),
    ({"X-Forwarded-Prefix": "/a/b/"}, "http://testserver/a/b/simple/"),
    ({"X-Forwarded-Prefix": "no-slash"}, "http://testserver/simple/"),
    ({"X-Forwarded-Prefix": "/a b"}, "http://testserver/simple/"),
])
def test_forwarded_values_are_checked_before_use(headers, expected):
    _, environ, _ = seen_by_app(headers=headers)
    assert url(environ) == expected


@pytest.mark.parametrize("peer", ["127.0.0.1", "203.0.113.9"])
def test_server_base_url_overrides_headers_from_anyone(peer):
    _, environ, _ = seen_by_app(base_url="https://index.example.org/base/", headers=FORWARDED,
                                remote_addr=peer)
    assert url(environ, "/simple/x/") == "https://index.example.org/base/simple/x/"
    assert environ["REMOTE_ADDR"] == peer  # X-Forwarded-For is not applied under a base URL


def test_a_path_that_is_not_utf8_is_a_400_before_the_app():
    status, environ, body = seen_by_app(path="/simple/\xff/")
    assert status == 400 and environ == {} and b"not valid UTF-8" in body


def test_external_url_keeps_the_query_only_when_asked():
    environ = {"wsgi.url_scheme": "https", "HTTP_HOST": "h.test", "SCRIPT_NAME": "/p/",
               "QUERY_STRING": "q=a&page=2"}
    assert external_url(environ, "/projects/") == "https://h.test/p/projects/"
    assert external_url(environ, "/projects/", keep_query=True) == "https://h.test/p/projects/?q=a&page=2"
    bare = {"SERVER_NAME": "s.test", "SERVER_PORT": "8080"}
    assert external_url(bare, "/") == "http://s.test:8080/"
