"""Which requests the cross-site check refuses: a table of what browsers and tools send."""

from __future__ import annotations

import pytest

from app.cross_site import cross_site_reason

OWN = {"wsgi.url_scheme": "https", "HTTP_HOST": "pypi.example.com"}


@pytest.mark.parametrize(("method", "headers", "refused"), [
    # twine, uv, pip, curl: no browser headers at all
    ("POST", {}, False),
    ("DELETE", {}, False),
    # safe methods are never refused, whatever their origin
    ("GET", {"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ORIGIN": "https://evil.example"}, False),
    ("HEAD", {"HTTP_ORIGIN": "https://evil.example"}, False),
    ("OPTIONS", {"HTTP_ORIGIN": "null"}, False),
    # browsers on the index's own pages, or a typed URL
    ("POST", {"HTTP_SEC_FETCH_SITE": "same-origin", "HTTP_ORIGIN": "https://pypi.example.com"}, False),
    ("POST", {"HTTP_ORIGIN": "https://pypi.example.com:443"}, False),
    ("POST", {"HTTP_ORIGIN": "HTTPS://PYPI.EXAMPLE.COM"}, False),
    ("POST", {"HTTP_SEC_FETCH_SITE": "none"}, False),
    # another site
    ("POST", {"HTTP_SEC_FETCH_SITE": "cross-site"}, True),
    ("POST", {"HTTP_SEC_FETCH_SITE": "same-site", "HTTP_ORIGIN": "https://other.example.com"}, True),
    ("POST", {"HTTP_ORIGIN": "https://evil.example"}, True),
    ("POST", {"HTTP_ORIGIN": "http://pypi.example.com"}, True),  # another scheme is another origin
    ("POST", {"HTTP_ORIGIN": "https://pypi.example.com:8443"}, True),  # and another port
    ("POST", {"HTTP_ORIGIN": "null"}, True),  # sandboxed frames, data: pages
    ("POST", {"HTTP_ORIGIN": "not a url"}, True),
    ("PUT", {"HTTP_ORIGIN": "https://evil.example"}, True),
    ("DELETE", {"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ORIGIN": "https://evil.example"}, True),
    # a same-origin claim in one header does not excuse the other
    ("POST", {"HTTP_SEC_FETCH_SITE": "same-origin", "HTTP_ORIGIN": "https://evil.example"}, True),
])
def test_cross_site_requests_are_refused(method, headers, refused):
    environ = {**OWN, "REQUEST_METHOD": method, **headers}
    assert (cross_site_reason(environ) is not None) is refused


def test_the_origin_is_the_one_the_proxy_reports():
    environ = {"wsgi.url_scheme": "https", "HTTP_HOST": "localhost:8443", "REQUEST_METHOD": "POST",
               "HTTP_ORIGIN": "https://localhost:8443"}
    assert cross_site_reason(environ) is None
    environ["HTTP_ORIGIN"] = "https://localhost"
    assert "another origin" in cross_site_reason(environ)
