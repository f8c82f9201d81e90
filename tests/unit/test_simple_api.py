"""The simple repository API (app/simple_api.py, app/simple_pages.py): negotiation, pages, redirects, metadata."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from bottle import HTTPError

from app.simple_api import HTML_V1, JSON_V1, TEXT_HTML, negotiate
from tests.support import call_wsgi, make_sdist, make_wheel

PIP_ACCEPT = f"{JSON_V1}, {HTML_V1}; q=0.1, text/html; q=0.01"
UV_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, text/html;q=0.01"


# --- content negotiation ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT_HTML),
        ("", TEXT_HTML),
        ("   ", TEXT_HTML),
        ("text/html", TEXT_HTML),
        (JSON_V1, JSON_V1),
        (HTML_V1, HTML_V1),
        ("application/vnd.pypi.simple.latest+json", JSON_V1),
        ("application/vnd.pypi.simple.latest+html", HTML_V1),
        ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", JSON_V1),
        (PIP_ACCEPT, JSON_V1),
        (UV_ACCEPT, JSON_V1),
        ("*/*", TEXT_HTML),
        ("text/*", TEXT_HTML),
        ("application/*", HTML_V1),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", TEXT_HTML),  # a browser
        ("text/html;level=1", TEXT_HTML),
        (f"{JSON_V1};q=0.5, text/html", TEXT_HTML),
        (f"{JSON_V1};q=0.5, text/html;q=0.6", TEXT_HTML),
        (f"{JSON_V1};q=0.9, {HTML_V1};q=0.9", JSON_V1),  # a tie: the specific JSON type wins
        (f"*/*;q=0.1, {JSON_V1}", JSON_V1),
        (f"{JSON_V1};q=0, */*", TEXT_HTML),
        (f"{JSON_V1} ; q=0.000, {HTML_V1} ; Q=0.5", HTML_V1),
        ("text/html;q=0, */*", HTML_V1),
        (f"text/html;q=0, {HTML_V1};q=0, */*;q=0.3", JSON_V1),
        (f"application/json, {JSON_V1};q=0.2", JSON_V1),
        (f"application/vnd.pypi.simple.v2+json, {HTML_V1};q=0.5", HTML_V1),
        ("text/html;q=1.0", TEXT_HTML),
        ("text/html, text/html;q=0.5", TEXT_HTML),
    ],
)
def test_negotiate(accept, expected):
    assert negotiate(accept) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "image/png",
        "application/vnd.pypi.simple.v2+json",
        "application/vnd.pypi.simple.v1+xml",
        f"{JSON_V1};q=0",
        "*/*;q=0",
        "text/html;q=0, application/*;q=0",
        "text/html;q=abc",
        "text/html;q=2",
        "text/html;q=-1",
        "garbage",
        ";;;",
        ",,,",
        "text",
        "\x00\xff",
        "text/" + "x" * 5000,
    ],
)
def test_negotiate_refuses_with_406(accept):
    with pytest.raises(HTTPError) as info:
        negotiate(accept)
    assert info.value.status_code == 406


# --- an app over a small packages directory ---------------------------------------------------
def settle(*paths: Path) -> None:
    """Make files look long finished (the catalog waits for freshly written ones)."""
    past = time.time() - 3600
    for path in paths:
        os.utime(path, (past, past))


@pytest.fixture
def tree(packages: Path) -> dict[str, Path]:
    files = {
        "wheel": make_wheel(packages, "Foo.Bar", "1.0", requires_python="<3,>=2.7"),
        "sdist": make_sdist(packages, "Foo.Bar", "1.0"),
        "new": make_wheel(packages, "Foo.Bar", "1.10", requires_python=">=3.8"),
        "old": make_wheel(packages, "Foo.Bar", "1.9"),
        "pre": make_wheel(packages / "sub", "Foo.Bar", "2.0rc1"),
        "other": make_wheel(packages, "other_pkg", "0.1"),
        "local": make_sdist(packages, "plus", "1.0+local.1"),
    }
    settle(*files.values())
    return files


@pytest.fixture
def app(make_app, tree):
    return make_app()


def get(app, path, accept=None, **kwargs):
    headers = dict(kwargs.pop("headers", {}))
    if accept is not None:
        headers["Accept"] = accept
    return call_wsgi(app, path, headers=headers, **kwargs)


class Links(HTMLParser):
    """Anchors and meta tags of a simple page, attributes unescaped as a client sees them."""

    def __init__(self, body: bytes):
        super().__init__()
        self.anchors: dict[str, dict[str, str | None]] = {}
        self.meta: dict[str, str | None] = {}
        self.feed(body.decode())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self._current = attrs
        elif tag == "meta" and "name" in attrs:
            self.meta[attrs["name"]] = attrs.get("content")

    def handle_data(self, data):
        if getattr(self, "_current", None) is not None:
            self.anchors[data.strip()] = self._current
            self._current = None


@pytest.mark.parametrize(
    ("accept", "query", "content_type"),
    [
        (None, "", "text/html; charset=utf-8"),
        ("*/*", "", "text/html; charset=utf-8"),
        (PIP_ACCEPT, "", JSON_V1),
        (UV_ACCEPT, "", JSON_V1),
        (HTML_V1, "", HTML_V1),
        (None, f"format={JSON_V1}", JSON_V1),
        ("text/html", "format=application/vnd.pypi.simple.latest%2Bjson", JSON_V1),
        (None, "format=application%2Fvnd.pypi.simple.v1%2Bjson", JSON_V1),
        (JSON_V1, f"format={HTML_V1}", HTML_V1),
        (JSON_V1, "format=text/html", "text/html; charset=utf-8"),
    ],
)
@pytest.mark.parametrize("path", ["/simple/", "/simple/foo-bar/"])
def test_content_types_and_vary(app, path, accept, query, content_type):
    status, headers, body = get(app, path, accept, query=query)
    assert status == 200
    assert headers["content-type"] == content_type
    # The project index is kept compressed (a gzip copy or, for a client that takes none, inflated).
    assert headers["vary"] == ("Accept, Accept-Encoding" if path == "/simple/" else "Accept")
    assert "max-age=1" in headers["cache-control"]
    assert headers["etag"].startswith('"')
    if content_type == JSON_V1:
        assert json.loads(body)["meta"]["api-version"] == "1.4"  # PEP 792 status markers
    else:
        assert Links(body).meta["pypi:repository-version"] == "1.4"


@pytest.mark.parametrize("path", ["/simple/", "/simple/foo-bar/"])
def test_nginx_is_told_the_last_second_a_page_may_be_kept(app, path):
    """nginx rounds max-age up to whole seconds; the absolute expiry keeps it to the lifetime nginx
    is given: index_cache_lifetime while nginx is refreshed after every change (the default)."""
    keep = app.config["wharf.settings"].index_cache_lifetime
    before = int(time.time())
    status, headers, _ = get(app, path)
    after = int(time.time())
    assert status == 200 and headers["x-accel-expires"].startswith("@")
    assert before + keep - 1 <= int(headers["x-accel-expires"][1:]) <= after + keep - 1
    status, headers, _ = get(app, path, headers={"If-None-Match": headers["etag"]})
    assert status == 304 and headers["x-accel-expires"].startswith("@")  # a renewal sets it again


@pytest.mark.parametrize("accept", ["application/json", "image/*", "garbage", f"{JSON_V1};q=0"])
@pytest.mark.parametrize("path", ["/simple/", "/simple/foo-bar/"])
def test_unacceptable_types_get_406(app, path, accept):
    status, headers, body = get(app, path, accept)
    assert status == 406
    assert headers["content-type"].startswith("text/plain")
    assert JSON_V1.encode() in body


@pytest.mark.parametrize("fmt", ["bogus", "application/json", "text/plain", "%00"])
def test_unknown_format_query_gets_406(app, fmt):
    status, _headers, _body = get(app, "/simple/foo-bar/", query=f"format={fmt}")
    assert status == 406


def test_index_lists_projects(app):
    _s, _h, body = get(app, "/simple/")
    assert set(Links(body).anchors) == {"foo-bar", "other-pkg", "plus"}
    assert Links(body).anchors["foo-bar"]["href"] == "foo-bar/"
    _s, _h, body = get(app, "/simple/", JSON_V1)
    assert json.loads(body) == {"meta": {"api-version": "1.4"},
                                "projects": [{"name": "foo-bar"}, {"name": "other-pkg"}, {"name": "plus"}]}


def test_project_html_links(app, tree):
    _s, _h, body = get(app, "/simple/foo-bar/")
    anchors = Links(body).anchors
    assert set(anchors) == {tree[k].name for k in ("wheel", "sdist", "new", "old", "pre")}
    wheel = anchors[tree["wheel"].name]
    digest = hashlib.sha256(tree["wheel"].read_bytes()).hexdigest()
    assert wheel["href"] == f"../../packages/{tree['wheel'].name}#sha256={digest}"
    # PEP 503: the attribute holds the specifier, HTML-escaped on the wire.
    assert wheel["data-requires-python"] == "<3,>=2.7"
    assert b'data-requires-python="&lt;3,&gt;=2.7"' in body
    assert anchors[tree["pre"].name]["href"].startswith(f"../../packages/sub/{tree['pre'].name}#sha256=")
    assert "data-requires-python" not in anchors[tree["sdist"].name]
    assert "data-core-metadata" not in anchors[tree["sdist"].name]
    assert all("data-yanked" not in a for a in anchors.values())


def test_project_json_pep_691_and_700(app, tree):
    status, _h, body = get(app, "/simple/foo-bar/", JSON_V1)
    assert status == 200
    data = json.loads(body)
    assert data["name"] == "foo-bar"
    assert data["meta"] == {"api-version": "1.4"}
    assert data["project-status"] == {"status": "active"}
    # PEP 440 order, not string order.
    assert data["versions"] == ["1.0", "1.9", "1.10", "2.0rc1"]
    files = {f["filename"]: f for f in data["files"]}
    assert set(files) == {tree[k].name for k in ("wheel", "sdist", "new", "old", "pre")}
    for key in ("wheel", "sdist", "new", "old", "pre"):
        path, entry = tree[key], files[tree[key].name]
        assert entry["hashes"] == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        assert entry["size"] == path.stat().st_size
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", entry["upload-time"])
        assert entry["yanked"] is False
        assert entry["url"].endswith(path.name) and "#" not in entry["url"]
    assert files[tree["wheel"].name]["requires-python"] == "<3,>=2.7"
    assert files[tree["new"].name]["requires-python"] == ">=3.8"
    assert files[tree["sdist"].name]["core-metadata"] is False
    # upload-time is the file's mtime, in UTC.
    mtime = tree["wheel"].stat().st_mtime
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(mtime)) == files[tree["wheel"].name]["upload-time"][:19]


def _served_path(page_path: str, href: str) -> str:
    """The PATH_INFO a client's request for ``href`` (found on ``page_path``) arrives as."""
    return unquote(urlsplit(urljoin("http://testserver" + page_path, href)).path)


@pytest.mark.parametrize("key", ["wheel", "new", "pre", "other"])
def test_core_metadata_matches_the_wheel(app, tree, key):
    wheel = tree[key]
    page = f"/simple/{'other-pkg' if key == 'other' else 'foo-bar'}/"
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        inside = archive.read(name)
    _s, _h, html = get(app, page)
    anchor = Links(html).anchors[wheel.name]
    _s, _h, body = get(app, page, JSON_V1)
    entry = {f["filename"]: f for f in json.loads(body)["files"]}[wheel.name]

    status, headers, served = get(app, _served_path(page, anchor["href"].split("#")[0]) + ".metadata")
    assert status == 200
    assert served == inside
    digest = hashlib.sha256(served).hexdigest()
    assert anchor["data-core-metadata"] == f"sha256={digest}"
    assert anchor["data-dist-info-metadata"] == f"sha256={digest}"
    assert entry["core-metadata"] == {"sha256": digest}
    assert entry["dist-info-metadata"] == {"sha256": digest}
    assert headers["etag"] == f'"{digest}"'


def test_every_link_on_a_page_downloads_the_hashed_bytes(app, tree):
    for page in ("/simple/foo-bar/", "/simple/plus/"):
        _s, _h, body = get(app, page)
        for filename, anchor in Links(body).anchors.items():
            href, _, fragment = anchor["href"].partition("#")
            status, _h, data = get(app, _served_path(page, href))
            assert status == 200, filename
            assert fragment == f"sha256={hashlib.sha256(data).hexdigest()}"


def test_local_version_with_plus_is_quoted_and_served(app, tree):
    _s, _h, body = get(app, "/simple/plus/")
    href = Links(body).anchors[tree["local"].name]["href"]
    assert "%2B" in href.split("#")[0]
    status, _h, data = get(app, _served_path("/simple/plus/", href.split("#")[0]))
    assert status == 200 and data == tree["local"].read_bytes()


# --- validators -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/simple/", "/simple/foo-bar/"])
@pytest.mark.parametrize("accept", [None, JSON_V1])
def test_etag_and_304(app, path, accept):
    status, headers, body = get(app, path, accept)
    etag = headers["etag"]
    status, again, empty = get(app, path, accept, headers={"If-None-Match": etag})
    assert (status, empty) == (304, b"")
    assert again["etag"] == etag
    assert again["vary"] == headers["vary"]
    status, _h, _b = get(app, path, accept, headers={"If-None-Match": f'"nope", W/{etag}'})
    assert status == 304
    status, _h, again_body = get(app, path, accept, headers={"If-None-Match": '"something-else"'})
    assert (status, again_body) == (200, body)


def test_json_and_html_have_different_etags(app):
    html = get(app, "/simple/foo-bar/")[1]["etag"]
    js = get(app, "/simple/foo-bar/", JSON_V1)[1]["etag"]
    assert html != js


def test_etag_changes_when_a_file_arrives(app, packages):
    before = get(app, "/simple/foo-bar/")[1]["etag"]
    settle(make_wheel(packages, "Foo.Bar", "3.0"))
    catalog = app.config["wharf.catalog"]
    catalog.refresh()
    assert catalog.sync()
    status, headers, body = get(app, "/simple/foo-bar/", headers={"If-None-Match": before})
    assert status == 200
    assert headers["etag"] != before
    assert b"foo_bar-3.0-py3-none-any.whl" in body


def test_head_has_headers_and_no_body(app):
    status, headers, body = get(app, "/simple/foo-bar/", method="HEAD")
    assert status == 200 and body == b""
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["etag"] == get(app, "/simple/foo-bar/")[1]["etag"]


# --- redirects --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "query", "location"),
    [
        ("/simple", "", "http://testserver/simple/"),
        ("/simple/Foo.Bar/", "", "http://testserver/simple/foo-bar/"),
        ("/simple/foo_bar/", "", "http://testserver/simple/foo-bar/"),
        ("/simple/FOO--._bar/", "", "http://testserver/simple/foo-bar/"),
        ("/simple/foo-bar", "", "http://testserver/simple/foo-bar/"),
        ("/simple/Foo.Bar", "", "http://testserver/simple/foo-bar/"),  # one hop, not two
        ("/simple/Foo.Bar/", f"format={JSON_V1}", f"http://testserver/simple/foo-bar/?format={JSON_V1}"),
        ("/simple/foo-bar", "a=1&b=2", "http://testserver/simple/foo-bar/?a=1&b=2"),
        ("/simple", "format=text/html", "http://testserver/simple/?format=text/html"),
        ("/simple/Unknown.Project/", "", "http://testserver/simple/unknown-project/"),
    ],
)
def test_redirects(app, path, query, location):
    status, headers, _body = get(app, path, query=query)
    assert status == 301
    assert headers["location"] == location


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pypi.example.com", "X-Forwarded-Prefix": "/pypi"}


@pytest.mark.parametrize(
    ("remote_addr", "headers", "location"),
    [
        ("127.0.0.1", FORWARDED, "https://pypi.example.com/pypi/simple/foo-bar/"),
        ("::1", FORWARDED, "https://pypi.example.com/pypi/simple/foo-bar/"),
        ("127.0.0.1", {**FORWARDED, "X-Forwarded-Port": "8443"}, "https://pypi.example.com:8443/pypi/simple/foo-bar/"),
        ("127.0.0.1", {"X-Forwarded-Proto": "https, http"}, "https://testserver/simple/foo-bar/"),
        ("203.0.113.9", FORWARDED, "http://testserver/simple/foo-bar/"),
        ("10.0.0.5", FORWARDED, "http://testserver/simple/foo-bar/"),
        ("not-an-address", FORWARDED, "http://testserver/simple/foo-bar/"),
        # Even a trusted proxy cannot smuggle a different host or scheme through odd values.
        ("127.0.0.1", {"X-Forwarded-Host": "evil.example/path"}, "http://testserver/simple/foo-bar/"),
        ("127.0.0.1", {"X-Forwarded-Host": "a@evil.example"}, "http://testserver/simple/foo-bar/"),
        ("127.0.0.1", {"X-Forwarded-Prefix": "//evil.example"}, "http://testserver/simple/foo-bar/"),
        ("127.0.0.1", {"X-Forwarded-Prefix": "/a\r\nSet-Cookie: x"}, "http://testserver/simple/foo-bar/"),
        ("127.0.0.1", {"X-Forwarded-Proto": "javascript"}, "http://testserver/simple/foo-bar/"),
    ],
)
def test_forwarded_headers_only_from_trusted_peers(app, remote_addr, headers, location):
    status, response, _body = get(app, "/simple/Foo.Bar/", headers=headers, remote_addr=remote_addr)
    assert status == 301
    assert response["location"] == location


def test_trusted_proxies_setting(make_app, packages, tree):
    app = make_app(packages, trusted_proxies=("10.0.0.0/8",))
    trusted = get(app, "/simple/foo-bar", headers=FORWARDED, remote_addr="10.9.8.7")[1]["location"]
    loopback = get(app, "/simple/foo-bar", headers=FORWARDED, remote_addr="127.0.0.1")[1]["location"]
    assert trusted == "https://pypi.example.com/pypi/simple/foo-bar/"
    assert loopback == "http://testserver/simple/foo-bar/"


def test_server_base_url_overrides_headers(make_app, packages, tree):
    app = make_app(packages, server_base_url="https://index.example.org/base/")
    status, headers, _body = get(app, "/simple/Foo.Bar/", headers=FORWARDED)
    assert status == 301
    assert headers["location"] == "https://index.example.org/base/simple/foo-bar/"


def test_pages_use_relative_urls(app):
    # One rendering serves every host and prefix: nothing absolute, nothing from the headers.
    _s, _h, plain = get(app, "/simple/foo-bar/")
    _s, _h, proxied = get(app, "/simple/foo-bar/", headers=FORWARDED)
    assert plain == proxied
    assert b"http" not in plain


# --- unknown and malformed names ----------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/simple/no-such-project/",
        "/simple/-foo/",
        "/simple/foo-/",
        "/simple/foo!/",
        "/simple/foo bar/",
        "/simple/foo\x00/",
        "/simple/foo\x00",
        "/simple/\xc3\xa9t\xc3\xa9/",  # UTF-8 "été", as WSGI hands it over
        "/simple/\xff/",  # not UTF-8 at all
        "/simple/..%2F/",
        "/simple/../",
        "/simple/a/b/",
        "/simple/" + "a" * 5000 + "/",
        "/simple/foo-bar/extra",
        "/simple//",
    ],
)
@pytest.mark.parametrize("accept", [None, JSON_V1, "garbage"])
def test_bad_names_get_4xx(app, path, accept):
    status, headers, _body = get(app, path, accept)
    assert 400 <= status < 500, (path, status)
    assert headers["content-type"].startswith("text/plain")


def test_unknown_project_has_no_fallback_by_default(app):
    status, headers, _body = get(app, "/simple/requests/")
    assert status == 404
    assert "location" not in headers


def test_fallback_url_redirects_unknown_projects_when_asked(make_app, packages, tree):
    app = make_app(packages, fallback_url="https://pypi.org/simple/")
    status, headers, _body = get(app, "/simple/requests/")
    known = get(app, "/simple/foo-bar/")[0]
    assert status == 302
    assert headers["location"] == "https://pypi.org/simple/requests/"
    assert known == 200


# --- yanked files (PEP 592) ---------------------------------------------------------------------
@pytest.mark.parametrize(("reason", "html_value", "json_value"), [
    ("broken build", "broken build", "broken build"),
    ("", "", True),
    ('<script>alert("x")</script>', '<script>alert("x")</script>', '<script>alert("x")</script>'),
])
def test_yanked_rendering(app, tree, reason, html_value, json_value):
    catalog = app.config["wharf.catalog"]
    target = catalog.find_filename(tree["new"].name)
    before = get(app, "/simple/foo-bar/")[1]["etag"]
    assert catalog.set_yanked([target], reason) == 1

    status, headers, body = get(app, "/simple/foo-bar/")
    assert status == 200 and headers["etag"] != before
    anchors = Links(body).anchors
    assert anchors[tree["new"].name]["data-yanked"] == html_value
    assert b"<script>" not in body
    assert sum("data-yanked" in a for a in anchors.values()) == 1
    files = {f["filename"]: f for f in json.loads(get(app, "/simple/foo-bar/", JSON_V1)[2])["files"]}
    assert files[tree["new"].name]["yanked"] == json_value
    assert files[tree["old"].name]["yanked"] is False
    # A yanked file stays downloadable (PEP 592: pinned installs still work).
    assert get(app, "/packages/" + tree["new"].name)[0] == 200

    catalog.set_yanked([catalog.find_filename(tree["new"].name)], None)
    _s, _h, body = get(app, "/simple/foo-bar/")
    assert "data-yanked" not in Links(body).anchors[tree["new"].name]
    files = {f["filename"]: f for f in json.loads(get(app, "/simple/foo-bar/", JSON_V1)[2])["files"]}
    assert files[tree["new"].name]["yanked"] is False


def test_requires_python_is_escaped_whatever_it_holds(make_app, packages):
    # Metadata is whatever the uploader wrote; the page must stay well-formed.
    hostile = '>=3" onmouseover="alert(1)'
    settle(make_wheel(packages, "odd", "1.0", requires_python=hostile))
    app = make_app(packages)
    _s, _h, body = get(app, "/simple/odd/")
    (anchor,) = Links(body).anchors.values()
    assert anchor["data-requires-python"] == hostile
    assert "onmouseover" not in anchor
    assert b"&#34;" in body or b"&quot;" in body


def test_health(app):
    status, headers, body = get(app, "/health")
    assert status == 200
    assert headers["content-type"] == "application/json"
    data = json.loads(body)
    assert (data["status"], data["projects"], data["files"]) == ("ok", 3, 7)


def test_the_project_index_is_served_gzip_to_clients_that_take_it(app):
    import gzip

    from app.simple_api import accepts_gzip

    for accept in (None, JSON_V1):
        plain_status, plain, body = get(app, "/simple/", accept)
        status, headers, packed = get(app, "/simple/", accept, headers={"Accept-Encoding": "gzip, deflate"})
        assert (plain_status, status) == (200, 200)
        assert "content-encoding" not in plain and headers["content-encoding"] == "gzip"
        assert gzip.decompress(packed) == body and b"foo-bar" in body
        assert headers["etag"] == plain["etag"]
    assert accepts_gzip("gzip") and accepts_gzip("br, gzip;q=0.5") and accepts_gzip("*")
    assert not accepts_gzip("") and not accepts_gzip("identity") and not accepts_gzip("gzip;q=0")


@pytest.mark.parametrize("fmt", [JSON_V1, "text/html"])
def test_the_compressed_index_is_the_plain_page_and_is_updated_by_the_chunk(fmt):
    import zlib

    from app import templates
    from app.simple_pages import CompressedIndex, render_index

    env = templates()
    index = CompressedIndex(env, fmt)
    for names in [(), ("only",), tuple(f"p-{i:05d}" for i in range(5000))]:
        page = index.page(names)
        assert zlib.decompress(page.body, 31) == render_index(env, fmt, names), len(names)
    kept = dict(index._kept)
    grown = names[:2500] + ("p-02499-new",) + names[2500:]
    page = index.page(grown)
    assert zlib.decompress(page.body, 31) == render_index(env, fmt, grown)
    assert len(set(index._kept) - set(kept)) == 1, "one chunk recompressed, the others reused"
    assert CompressedIndex(env, fmt).page(grown).etag == page.etag, "the same ETag in every worker"
