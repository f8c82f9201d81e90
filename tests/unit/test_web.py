"""The pages for people, driven in-process: content, search, auth, safety and valid HTML."""

from __future__ import annotations

import base64
import dataclasses
import html.parser
import os
import re
import time
import zipfile
from pathlib import Path

import html5lib
import pytest
from passlib.apache import HtpasswdFile

from app.catalog import Catalog, View
from app.settings import Settings
from app.storage import LocalStorage
from app.web.details import human_size
from app.web.readme import render_description
from app.web.routes import PER_PAGE
from app.web.search import CurrentSearch
from tests.support import call_wsgi, make_sdist, make_wheel

BASIC = "Basic " + base64.b64encode(b"alice:secret").decode()


def settled(packages: Path) -> Path:
    """Date the files back, so the catalog does not wait for them to finish being copied."""
    past = time.time() - 10
    for path in [packages, *packages.rglob("*")] if packages.is_dir() else [packages]:
        os.utime(path, (past, past))
    return packages


def raw_wheel(directory: Path, name: str, version: str, metadata: str) -> Path:
    """A wheel whose METADATA is exactly ``metadata`` (fields make_wheel does not offer)."""
    module = name.replace("-", "_").lower()
    path = directory / f"{module}-{version}-py3-none-any.whl"
    info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{module}/__init__.py", "")
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


RICH_METADATA = """\
Metadata-Version: 2.4
Name: Rich-Lib
Version: 2.1.0
Summary: A library with   every field filled in
Home-page: https://example.org/rich
Author: Ada Lovelace
License-Expression: MIT OR Apache-2.0
Requires-Python: >=3.10
Requires-Dist: packaging>=24
Requires-Dist: rich>=13; extra == "cli"
Project-URL: Source, https://git.example.org/rich
Project-URL: Evil, javascript:alert(1)
Classifier: Programming Language :: Python :: 3
Description-Content-Type: text/markdown

# Rich Lib

Some **bold** text and a [link](https://example.org/docs).

<script>document.title = "owned"</script>
<img src="x.png" onerror="alert(1)" alt="picture">
<a href="javascript:alert(2)">click</a>

| a | b |
|---|---|
| 1 | 2 |
"""


@pytest.fixture
def filled(packages: Path) -> Path:
    raw_wheel(packages, "Rich-Lib", "2.1.0", RICH_METADATA)
    make_wheel(packages, "rich-lib", "1.0", description="old")
    make_wheel(packages, "rich-lib", "3.0b1", description="beta")
    make_sdist(packages, "rst-doc", "0.3", content_type="text/x-rst",
               description="Title\n=====\n\nSome *emphasis*.\n\n.. raw:: html\n\n   <script>bad()</script>\n")
    make_sdist(packages, "rst-good", "1.0", content_type="text/x-rst",
               description="Heading\n=======\n\nA list:\n\n* one\n* two\n")
    make_wheel(packages, "plain-doc", "1.0", content_type="text/plain", description="<b>not bold</b>\n  indented")
    make_wheel(packages, "no-doc", "1.0")
    return settled(packages)


@pytest.fixture
def app_for(make_app):
    def make(packages: Path, **settings):
        """An app on ``packages``; a second app on the same directory replaces the first."""
        make_app.close()
        return make_app(packages, **settings)
    return make


def get(app, path: str, **kwargs) -> tuple[int, dict[str, str], str]:
    path, _, query = path.partition("?")
    status, headers, body = call_wsgi(app, path, query=query, **kwargs)
    return status, headers, body.decode("utf-8")


def readme_of(page: str) -> str:
    match = re.search(r'<div class="readme">(.*?)</div>\n</section>', page, re.S)
    assert match, "no rendered README on the page"
    return match.group(1)


# --- home -----------------------------------------------------------------------------------
def test_home_counts_and_snippets_use_the_request_url(app_for, filled: Path):
    status, headers, page = get(app_for(filled), "/", host="pypi.test:8080")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "<strong>5</strong> projects" in page and "<strong>7</strong> files" in page
    index = "http://pypi.test:8080/simple/"
    assert f"pip install --index-url {index} PACKAGE" in page
    assert f"[global]\nindex-url = {index}" in page
    assert f'[[tool.uv.index]]\nname = "wharf"\nurl = "{index}"' in page
    assert f"export UV_DEFAULT_INDEX={index}" in page
    assert "[wharf]\nrepository = http://pypi.test:8080/\n" in page
    assert "uv publish --publish-url http://pypi.test:8080/ --username YOUR-USER dist/*" in page
    assert 'href="/project/rich-lib/"' in page  # recently updated


def test_home_honours_a_trusted_proxy_scheme_host_and_prefix(app_for, filled: Path):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pkgs.example.com",
                 "X-Forwarded-Prefix": "/python"}
    _, _, page = get(app_for(filled), "/", headers=forwarded)
    assert "pip install --index-url https://pkgs.example.com/python/simple/ PACKAGE" in page
    assert 'href="/python/projects/"' in page and 'href="/python/static/wharf.css?v=' in page
    _, _, untrusted = get(app_for(filled), "/", headers=forwarded, remote_addr="203.0.113.9")
    assert "pkgs.example.com" not in untrusted and "/python/" not in untrusted


def test_welcome_file_replaces_the_home_page_with_pypiserver_placeholders(app_for, filled: Path, tmp_path: Path):
    welcome = tmp_path / "welcome.html"
    welcome.write_text("<html><body><h1>Ours</h1><p>{{NUMPKGS}} files at {{ URL }}simple/ "
                       "and {{SIMPLE}}</p><p>{{ unknown }} % not code</p></body></html>")
    status, _, page = get(app_for(filled, welcome_file=welcome), "/", host="h.test")
    assert status == 200
    assert page == ("<html><body><h1>Ours</h1><p>7 files at http://h.test/simple/ and "
                    "/simple/</p><p>{{ unknown }} % not code</p></body></html>")
    # the other pages stay
    assert get(app_for(filled, welcome_file=welcome), "/projects/")[0] == 200


# --- list and search ------------------------------------------------------------------------
def test_project_list_is_paginated(app_for, packages: Path):
    for i in range(PER_PAGE * 2 + 5):
        make_wheel(packages, f"pkg-{i:03d}", "1.0")
    app = app_for(settled(packages))
    _, _, first = get(app, "/projects/")
    names = re.findall(r'href="/project/(pkg-\d+)/"', first)
    assert names == [f"pkg-{i:03d}" for i in range(PER_PAGE)]
    assert "Page 1 of 3" in first and 'href="?page=2" rel="next"' in first and 'rel="prev"' not in first
    _, _, last = get(app, "/projects/?page=3")
    assert re.findall(r'href="/project/(pkg-\d+)/"', last) == [f"pkg-{i:03d}" for i in range(100, 105)]
    assert 'href="?page=2" rel="prev"' in last and 'rel="next"' not in last
    status, _, beyond = get(app, "/projects/?page=4")
    assert status == 404 and "There is no page 4" in beyond


def test_search_pages_keep_the_query(app_for, packages: Path):
    for i in range(PER_PAGE + 1):
        make_wheel(packages, f"tool-{i:03d}", "1.0")
    make_wheel(packages, "other", "1.0")
    _, _, page = get(app_for(settled(packages)), "/projects/?q=tool")
    assert f"{PER_PAGE + 1} of {PER_PAGE + 2} projects match" in page
    assert 'href="?q=tool&amp;page=2" rel="next"' in page
    assert 'value="tool"' in page


@pytest.mark.parametrize("query, status", [
    ("page=0", 400), ("page=-1", 400), ("page=x", 400), ("page=1.5", 400), ("page=99999999", 400),
    ("q=" + "a" * 201, 400), ("q=%FF%FE", 400), ("q=ok", 200), ("q=%3Cscript%3E", 200),
])
def test_bad_list_parameters_are_refused(app_for, filled: Path, query: str, status: int):
    assert get(app_for(filled), f"/projects/?{query}")[0] == status


def test_search_query_is_escaped_in_the_page(app_for, filled: Path):
    _, _, page = get(app_for(filled), '/projects/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E')
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _view(closing, packages: Path, tmp_path: Path) -> tuple[Catalog, View]:
    settings = Settings.from_env({}, packages=(packages,), state_dir=tmp_path / "state")
    catalog = closing(Catalog(settings, LocalStorage(settings.packages)).open())
    return catalog, catalog.view


def test_a_large_catalog_prepares_its_search_in_the_background(closing, packages: Path, tmp_path: Path):
    for n in range(4):
        make_wheel(packages, f"big-{n}", "1.0", summary=f"number {n}")
    settings = Settings.from_env({}, packages=(settled(packages),), state_dir=tmp_path / "state", catalog_cache_files=2)
    catalog = closing(Catalog(settings, LocalStorage(settings.packages)).open())
    small = CurrentSearch(closing(Catalog(dataclasses.replace(settings, catalog_cache_files=50_000),
                                          LocalStorage(settings.packages)).open()))
    small.prepare_in_background()
    search = CurrentSearch(catalog)
    search.prepare_in_background()
    deadline = time.monotonic() + 10
    while search._index is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert search._index is not None and search._index.names == tuple(f"big-{n}" for n in range(4))
    assert small._index is None, "a catalog held whole builds its search on first use"
    assert [e.name for e in search.search("number 2")[:]] == ["big-2"]


def test_search_matches_names_and_summaries_and_ranks_names_first(closing, packages: Path, tmp_path: Path):
    make_wheel(packages, "requests", "2.0", summary="HTTP for humans")
    make_wheel(packages, "requests-toolbelt", "1.0", summary="Utilities")
    make_wheel(packages, "httpx", "0.27", summary="A next-generation HTTP client")
    make_wheel(packages, "my_requests_helper", "1.0", summary="Glue")
    make_wheel(packages, "zeta", "1.0", summary="Talks to requests-based services")
    catalog, view = _view(closing, settled(packages), tmp_path)
    search = CurrentSearch(catalog)
    index = search.index()
    names = lambda q: [e.name for e in search.search(q)[:]]  # noqa: E731
    assert names("requests") == ["requests", "requests-toolbelt", "my-requests-helper", "zeta"]
    assert names("REQUESTS_TOOLBELT") == ["requests-toolbelt"]  # separators and case do not matter
    assert names("http client") == ["httpx"]  # every word must match, in name or summary
    assert names("humans") == ["requests"]
    assert names("nothing-like-this") == []
    assert len(names("")) == 5
    # a new view updates the lines of projects that changed, and keeps the others
    settled(make_wheel(packages, "httpx", "0.28", summary="An HTTP client, faster"))
    settled(make_wheel(packages, "brand-new", "1.0", summary="fresh"))
    catalog.refresh()
    catalog.sync()
    again = search.index()
    assert again is not index and again.names == ("brand-new", *index.names)
    assert again.lines[again.names.index("requests")] is index.lines[index.names.index("requests")]
    assert names("faster") == ["httpx"] and names("fresh") == ["brand-new"]
    assert search.search("httpx")[0].latest == "0.28"
    catalog.close()


# --- project pages --------------------------------------------------------------------------
def test_project_page_shows_metadata_versions_and_files(app_for, filled: Path):
    app = app_for(filled)
    status, headers, page = get(app, "/project/rich-lib/", host="idx.test")
    assert status == 200
    assert "<h1>Rich-Lib <span class=\"version\">2.1.0</span></h1>" in page
    assert "A library with every field filled in" in page
    assert "<code>&gt;=3.10</code>" in page and "MIT OR Apache-2.0" in page and "Ada Lovelace" in page
    assert "<code>packaging&gt;=24</code>" in page
    assert "Optional dependencies" in page and "rich&gt;=13; extra == &#34;cli&#34;" in page
    assert '<a href="https://git.example.org/rich" rel="nofollow noopener noreferrer">Source</a>' in page
    assert '<a href="https://example.org/rich" rel="nofollow noopener noreferrer">Homepage</a>' in page
    assert "<li>Evil</li>" in page and "javascript:alert(1)" not in page
    assert "pip install --index-url http://idx.test/simple/ Rich-Lib</code>" in page
    assert "pip install --index-url http://idx.test/simple/ Rich-Lib==3.0b1</code>" in page
    versions = re.findall(r'<details class="release" id="v([^"]+)"( open)?>', page)
    assert versions == [("3.0b1", ""), ("2.1.0", " open"), ("1.0", "")]
    project = app.config["wharf.catalog"].project("rich-lib")
    for f in project.files:
        assert f'href="/packages/{f.relpath}#sha256={f.sha256}">{f.filename}</a>' in page
        assert f"<code>{f.sha256}</code>" in page
    assert "pre-release" in page and "uploaded <time datetime=" in page


def test_project_page_renders_markdown_safely(app_for, filled: Path):
    _, headers, page = get(app_for(filled), "/project/rich-lib/")
    readme = readme_of(page)
    assert '<h1 id="user-content-rich-lib">Rich Lib</h1>' in readme
    assert "<strong>bold</strong>" in readme and "<table>" in readme
    assert "<script" not in readme and "onerror" not in readme and "javascript:" not in readme
    assert "&lt;script&gt;" in readme  # shown as text, as PyPI does
    assert "script-src 'self'" in headers["content-security-policy"]


@pytest.mark.parametrize("name, expect, absent", [
    ("rst-good", ["<h1>Heading</h1>", "<li><p>one</p></li>"], []),
    # reST with a raw directive does not render: PyPI then shows the text, escaped
    ("rst-doc", ["<pre>Title<br>=====", "&lt;script&gt;bad()&lt;/script&gt;"], ["<script"]),
    ("plain-doc", ["<pre>&lt;b&gt;not bold&lt;/b&gt;<br>  indented</pre>"], ["<b>"]),
])
def test_project_page_renders_rst_and_plain_text(app_for, filled: Path, name: str, expect: list[str], absent: list[str]):
    readme = readme_of(get(app_for(filled), f"/project/{name}/")[2])
    for text in expect:
        assert text in readme
    for text in absent:
        assert text not in readme


def test_project_without_description_says_so(app_for, filled: Path):
    _, _, page = get(app_for(filled), "/project/no-doc/")
    assert "This project has no description." in page


def test_unreadable_archives_still_get_a_page(app_for, packages: Path):
    (packages / "broken-1.0.tar.gz").write_bytes(b"not a tarball at all")
    (packages / "broken-1.0-py3-none-any.whl").write_bytes(b"PK not a zip")
    app = app_for(settled(packages))
    status, _, page = get(app, "/project/broken/")
    assert status == 200 and "This project has no description." in page and "None known." in page
    assert "broken-1.0.tar.gz" in page and "broken-1.0-py3-none-any.whl" in page
    check_html(page)


def test_license_from_classifiers_with_long_text_folded(app_for, packages: Path):
    long_text = "Permission is hereby granted, free of charge, to any person\n        obtaining a copy"
    raw_wheel(packages, "licensed", "1.0", "Metadata-Version: 2.1\nName: licensed\nVersion: 1.0\n"
              f"License: {long_text}\nClassifier: License :: OSI Approved :: MIT License\n")
    _, _, page = get(app_for(settled(packages)), "/project/licensed/")
    assert "<dd>MIT License<details><summary>License text</summary>" in page
    assert "Permission is hereby granted" in page


def test_head_answers_without_a_body(app_for, filled: Path):
    status, headers, body = get(app_for(filled), "/project/rich-lib/", method="HEAD")
    assert status == 200 and body == "" and headers["content-type"] == "text/html; charset=utf-8"


def test_sdist_only_project_reads_pkg_info(app_for, filled: Path):
    _, _, page = get(app_for(filled), "/project/rst-good/")
    assert "From the core metadata of <code>rst_good-1.0.tar.gz</code>" in page


def test_project_names_redirect_to_the_normalized_page(app_for, filled: Path):
    status, headers, _ = get(app_for(filled), "/project/Rich_Lib/", host="a.test")
    assert status == 301 and headers["location"] == "http://a.test/project/rich-lib/"
    status, headers, _ = get(app_for(filled), "/project/Rich.Lib", host="a.test")
    assert status == 301 and headers["location"] == "http://a.test/project/rich-lib/"
    status, _, page = get(app_for(filled), "/project/missing/")
    assert status == 404 and "No project named “missing”" in page
    assert get(app_for(filled), "/project/-bad-/")[0] == 404


def test_yanked_files_and_versions_are_marked(app_for, filled: Path):
    app = app_for(filled)
    catalog = app.config["wharf.catalog"]
    old = [f for f in catalog.project("rich-lib").files if f.version == "1.0"]
    catalog.set_yanked(old, "broken build")
    _, _, page = get(app, "/project/rich-lib/")
    assert '<span class="badge yanked">yanked</span>' in page
    assert "This version was yanked: broken build." in page
    assert '<span class="badge yanked">yanked: broken build</span>' in page


def test_pages_follow_catalog_changes(app_for, filled: Path):
    app = app_for(filled)
    catalog = app.config["wharf.catalog"]
    assert "9.0" not in get(app, "/project/no-doc/")[2]
    settled(make_wheel(filled, "no-doc", "9.0", description="now with *docs*"))
    catalog.refresh()
    catalog.sync()
    page = get(app, "/project/no-doc/")[2]
    assert '<span class="version">9.0</span>' in page and "<em>docs</em>" in readme_of(page)
    assert 'href="/project/no-doc/">no-doc</a> <span class="version">9.0</span>' in get(app, "/projects/")[2]


# --- caching, assets, auth -----------------------------------------------------------------
def test_pages_answer_304_to_a_current_etag(app_for, filled: Path):
    app = app_for(filled)
    status, headers, _ = get(app, "/project/rich-lib/")
    assert status == 200 and headers["cache-control"] == "no-cache"
    status, _, body = get(app, "/project/rich-lib/", headers={"If-None-Match": headers["etag"]})
    assert status == 304 and body == ""


def test_static_assets_are_served_with_caching_headers(app_for, filled: Path):
    app = app_for(filled)
    page = get(app, "/")[2]
    css = re.search(r'href="(/static/wharf\.css\?v=\w+)"', page).group(1)
    status, headers, body = get(app, css)
    assert status == 200 and headers["content-type"] == "text/css; charset=utf-8"
    assert headers["cache-control"] == "public, max-age=31536000, immutable" and ".readme" in body
    status, headers, _ = get(app, "/static/wharf.css")
    assert status == 200 and "immutable" not in headers["cache-control"]
    assert get(app, "/static/wharf.css", headers={"If-None-Match": headers["etag"]})[0] == 304
    js = re.search(r'src="(/static/wharf\.js\?v=\w+)"', page).group(1)
    assert get(app, js)[1]["content-type"] == "text/javascript; charset=utf-8"
    status, headers, body = get(app, "/static/favicon.svg", method="HEAD")
    assert status == 200 and body == "" and int(headers["content-length"]) > 100
    for bad in ("/static/nope.css", "/static/..%2Fweb.py", "/static/.hidden"):
        assert get(app, bad)[0] == 404


def test_pages_need_a_user_when_list_is_protected(app_for, filled: Path, tmp_path: Path):
    passwords = tmp_path / "htpasswd"
    users = HtpasswdFile(str(passwords), new=True)
    users.set_password("alice", "secret")
    users.save()
    app = app_for(filled, password_file=str(passwords), authenticate=("update", "list"))
    for path in ("/", "/projects/", "/projects/?q=rich", "/project/rich-lib/", "/project/missing/"):
        status, headers, _ = get(app, path)
        assert status == 401 and headers["www-authenticate"].startswith("Basic"), path
        status, headers, _ = get(app, path, headers={"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()})
        assert status == 401, path
        status, headers, _ = get(app, path, headers={"Authorization": BASIC})
        assert status in (200, 404) and "private" in headers["cache-control"], path
    assert get(app, "/static/wharf.css")[0] == 200  # the stylesheet holds nothing private
    page = get(app, "/", headers={"Authorization": BASIC})[2]
    assert "asks for a user name and password" in page


def test_home_says_whether_uploads_are_taken(app_for, filled: Path, tmp_path: Path):
    page = get(app_for(filled), "/")[2]
    assert "This index takes no uploads yet" in page
    passwords = tmp_path / "htpasswd"
    users = HtpasswdFile(str(passwords), new=True)
    users.set_password("alice", "secret")
    users.save()
    page = get(app_for(filled, password_file=str(passwords)), "/")[2]
    assert "Publishing needs a user of this index" in page and "takes no uploads" not in page


# --- rendering helpers -----------------------------------------------------------------------
@pytest.mark.parametrize("text, content_type, expect", [
    ("# T", "text/markdown", '<h1 id="user-content-t">T</h1>'),
    ("# T", "text/markdown; charset=UTF-8; variant=CommonMark", "<h1>T</h1>"),
    ("*e*", None, "<p><em>e</em></p>"),  # no type: reST, as on PyPI
    ("*e*", "text/x-rst", "<p><em>e</em></p>"),
    ("*e*", "application/x-unknown", "<pre>*e*</pre>"),
    ("a < b", "text/plain", "<pre>a &lt; b</pre>"),
    ("   ", "text/markdown", None),
    (None, "text/markdown", None),
])
def test_render_description(text, content_type, expect):
    rendered = render_description(text, content_type)
    if expect is None:
        assert rendered is None
    else:
        assert expect in rendered


def test_human_size():
    assert [human_size(n) for n in (0, 999, 1000, 1_234_567, 5 * 10**9)] == [
        "0 bytes", "999 bytes", "1.0 kB", "1.2 MB", "5.0 GB"]


# --- HTML validity --------------------------------------------------------------------------
class Structure(html.parser.HTMLParser):
    """What an HTML5 parser does not check: unique ids, labels, alt text, landmarks."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: list[str] = []
        self.labels: set[str] = set()
        self.inputs: list[str] = []
        self.problems: list[str] = []
        self.tags: set[str] = set()
        self.lang = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "html":
            self.lang = attrs.get("lang")
        if tag == "label":
            self.labels.add(attrs.get("for", ""))
        if tag in ("input", "select", "textarea") and attrs.get("type") not in ("hidden", "submit"):
            self.inputs.append(attrs.get("id", ""))
        if tag == "img" and "alt" not in attrs:
            self.problems.append(f"img without alt: {attrs}")
        if tag == "a" and "href" in attrs and not attrs["href"]:
            self.problems.append("empty href")


def check_html(page: str) -> None:
    # html5lib in strict mode raises on every parse error the HTML standard defines.
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)
    structure = Structure()
    structure.feed(page)
    duplicates = {i for i in structure.ids if structure.ids.count(i) > 1}
    assert not duplicates, f"duplicate ids {duplicates}"
    assert structure.lang == "en"
    assert {"header", "nav", "main", "footer"} <= structure.tags
    assert all(i and i in structure.labels for i in structure.inputs), "an input without a label"
    assert not structure.problems, structure.problems


def test_every_page_is_valid_html(app_for, filled: Path):
    app = app_for(filled)
    paths = ["/", "/projects/", "/projects/?q=rich", "/projects/?q=%3Cb%3E", "/projects/?q=nothing-matches",
             "/projects/?page=9", "/project/missing/"]
    paths += [f"/project/{name}/" for name in app.config["wharf.catalog"].view.names]
    for path in paths:
        status, _, page = get(app, path)
        assert status in (200, 404), path
        try:
            check_html(page)
        except Exception as exc:
            raise AssertionError(f"{path}: {exc}") from exc


def test_the_validity_check_can_fail():
    with pytest.raises(html5lib.html5parser.ParseError):
        check_html("<!DOCTYPE html><html lang=en><p>unclosed <b>bold</p></html>")
    with pytest.raises(AssertionError):
        check_html('<!DOCTYPE html><html lang="en"><head><title>t</title></head><body><header></header>'
                   '<nav></nav><main id="a"><p id="a">x</p></main><footer></footer></body></html>')


# --- colour contrast ------------------------------------------------------------------------
def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _schemes() -> dict[str, dict[str, str]]:
    css = (Path(__file__).resolve().parents[2] / "app" / "web" / "static" / "wharf.css").read_text()
    blocks = re.findall(r":root\s*\{([^}]*)\}", css)
    assert len(blocks) == 2, "expected a light and a dark :root block"
    return {name: dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", block))
            for name, block in zip(("light", "dark"), blocks)}


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("fg, bg", [
    ("fg", "bg"), ("muted", "bg"), ("link", "bg"), ("fg", "soft"), ("muted", "soft"), ("link", "soft"),
    ("warn-fg", "warn-bg"), ("badge-fg", "badge-bg"), ("bar-fg", "bar"),
])
def test_text_colours_meet_wcag_aa(scheme: str, fg: str, bg: str):
    colours = _schemes()[scheme]
    assert contrast(colours[fg], colours[bg]) >= 4.5, f"{scheme}: {fg} on {bg}"


def test_button_and_search_colours_meet_wcag_aa():
    css = (Path(__file__).resolve().parents[2] / "app" / "web" / "static" / "wharf.css").read_text()
    for literal in ("#2f74c0", "#0f2d4a", "#e8eef5", "#5f6b77", "#1b1f24"):
        assert literal in css  # the colours checked below are the ones the stylesheet uses
    assert contrast("#ffffff", _schemes()["light"]["accent"]) >= 4.5  # buttons, light
    assert contrast("#ffffff", "#2f74c0") >= 4.5  # buttons, dark
    assert contrast("#0f2d4a", "#e8eef5") >= 4.5  # the search button
    assert contrast("#5f6b77", "#ffffff") >= 4.5  # the search field's placeholder
    assert contrast("#1b1f24", "#ffffff") >= 4.5  # the search field's text
