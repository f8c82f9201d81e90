"""Downloads (app/files.py): HEAD, Range, validators, content types, and nothing outside the index."""

from __future__ import annotations

import bz2
import hashlib
import os
import time
import zipfile
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.support import call_wsgi, make_sdist, make_wheel


def settle(*paths: Path) -> None:
    past = time.time() - 3600
    for path in paths:
        os.utime(path, (past, past))


@pytest.fixture
def tree(packages: Path) -> dict[str, Path]:
    legacy = packages / "legacy-0.9.tar.bz2"
    legacy.write_bytes(bz2.compress(b"not really a tar, but served as-is"))
    egg = packages / "old-1.0-py2.7.egg"
    with zipfile.ZipFile(egg, "w") as archive:
        archive.writestr("EGG-INFO/PKG-INFO", "Name: old\nVersion: 1.0\n")
    zipped = packages / "zipped-1.0.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("zipped-1.0/PKG-INFO", "Metadata-Version: 2.1\nName: zipped\nVersion: 1.0\n")
    files = {
        "wheel": make_wheel(packages, "demo", "1.0", padding=50_000),
        "sdist": make_sdist(packages, "demo", "1.0"),
        "nested": make_sdist(packages / "deep" / "er", "nested", "2.0"),
        "legacy": legacy,
        "egg": egg,
        "zip": zipped,
    }
    (packages / "README.txt").write_text("not a package")
    (packages / ".hidden").mkdir()
    files["hidden"] = make_wheel(packages / ".hidden", "secret", "1.0")
    settle(*files.values())
    return files


@pytest.fixture
def app(make_app, tree):
    return make_app()


def get(app, path, headers=None, method="GET"):
    return call_wsgi(app, path, method=method, headers=headers)


@pytest.mark.parametrize(
    ("key", "path", "content_type"),
    [
        ("wheel", "demo-1.0-py3-none-any.whl", "application/zip"),
        ("sdist", "demo-1.0.tar.gz", "application/gzip"),
        ("nested", "deep/er/nested-2.0.tar.gz", "application/gzip"),
        ("legacy", "legacy-0.9.tar.bz2", "application/x-bzip2"),
        ("egg", "old-1.0-py2.7.egg", "application/zip"),
        ("zip", "zipped-1.0.zip", "application/zip"),
    ],
)
def test_download(app, tree, key, path, content_type):
    data = tree[key].read_bytes()
    status, headers, body = get(app, "/packages/" + path)
    assert status == 200
    assert body == data
    assert headers["content-type"] == content_type
    # A .tar.gz is the bytes its hash describes, never "gzip-encoded" (clients would unpack it).
    assert "content-encoding" not in headers
    assert headers["content-length"] == str(len(data))
    assert headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert headers["last-modified"] == formatdate(tree[key].stat().st_mtime, usegmt=True)
    assert headers["accept-ranges"] == "bytes"
    cache = [part.strip() for part in headers["cache-control"].split(",")]
    assert "immutable" in cache and "max-age=31536000" in cache and "public" in cache


def test_tar_gz_is_served_compressed(app, tree):
    _s, headers, body = get(app, "/packages/demo-1.0.tar.gz")
    assert body[:2] == b"\x1f\x8b"
    assert "content-encoding" not in headers


def test_head(app, tree):
    status, headers, body = get(app, "/packages/demo-1.0-py3-none-any.whl", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(tree["wheel"].stat().st_size)
    assert headers["content-type"] == "application/zip"
    assert headers["etag"] == get(app, "/packages/demo-1.0-py3-none-any.whl")[1]["etag"]


def test_overwrite_means_files_are_not_immutable(make_app, tree):
    _s, headers, _b = get(make_app(overwrite=True), "/packages/demo-1.0.tar.gz")
    assert "immutable" not in headers["cache-control"]


@pytest.mark.parametrize("recheck", [60, 0])
def test_nginx_is_told_when_to_check_a_cached_file_again(make_app, tree, recheck):
    """A removed file must not live on in the proxy cache for file_max_age (a year)."""
    app = make_app(file_recheck=recheck)
    _s, headers, _b = get(app, "/packages/demo-1.0-py3-none-any.whl")
    status, revalidated, _b = get(app, "/packages/demo-1.0-py3-none-any.whl",
                                  headers={"If-None-Match": headers["etag"]})
    assert status == 304
    for response in (headers, revalidated):
        assert response.get("x-accel-expires") == (str(recheck) if recheck else None)
        assert "max-age=31536000" in response["cache-control"]  # clients still keep it long


@pytest.mark.parametrize("size", [64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024])
def test_small_and_large_files_are_sent_whole(make_app, packages, size):
    """Files up to 64 KiB are sent as bytes, larger ones as a file (sendfile): same bytes."""
    wheel = make_wheel(packages, "sized", "1.0")
    wheel.write_bytes(wheel.read_bytes().ljust(size, b"\0"))  # a zip may carry trailing bytes
    app = make_app()
    for method in ("GET", "HEAD"):
        status, headers, body = get(app, f"/packages/{wheel.name}", method=method)
        assert status == 200 and headers["content-length"] == str(size)
        assert body == (wheel.read_bytes() if method == "GET" else b"")


# --- Range -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-5", (5, 5)),
        ("bytes=100-", (100, None)),
        ("bytes=-22", (-22, None)),  # suffix: the last 22 bytes (the zip end record)
        ("bytes=-1", (-1, None)),
        ("bytes=0-", (0, None)),
        ("bytes=10-999999999", (10, None)),
        ("bytes=-999999999", (0, None)),
        ("bytes = 0-9", (0, 9)),
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_single_range(app, tree, header, span, method):
    data = tree["wheel"].read_bytes()
    size = len(data)
    first, last = span
    first = first % size if first < 0 else first
    last = size - 1 if last is None else last
    status, headers, body = get(app, "/packages/demo-1.0-py3-none-any.whl", {"Range": header}, method=method)
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert headers["content-length"] == str(last - first + 1)
    assert body == (data[first:last + 1] if method == "GET" else b"")
    assert "content-encoding" not in headers


def test_uv_style_range_read_of_the_zip_directory(app, tree):
    # uv reads a wheel's METADATA by fetching the end of the zip and then the member itself.
    data = tree["wheel"].read_bytes()
    _s, _h, tail = get(app, "/packages/demo-1.0-py3-none-any.whl", {"Range": "bytes=-4096"})
    assert tail == data[-4096:]
    with zipfile.ZipFile(tree["wheel"]) as archive:
        info = archive.getinfo("demo-1.0.dist-info/METADATA")
        start = info.header_offset
        end = start + 30 + len(info.filename) + len(info.extra) + info.compress_size - 1
    _s, _h, member = get(app, "/packages/demo-1.0-py3-none-any.whl", {"Range": f"bytes={start}-{end}"})
    assert member == data[start:end + 1]


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=-0", "bytes={size}-", "bytes={size}-{size}"])
def test_unsatisfiable_range_is_416(app, tree, header):
    size = tree["wheel"].stat().st_size
    status, headers, _body = get(app, "/packages/demo-1.0-py3-none-any.whl", {"Range": header.format(size=size)})
    assert status == 416
    assert headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    "header",
    ["bytes=0-1,5-6", "bytes=0-1, -5", "bytes=5-2", "items=0-5", "bytes=abc", "bytes=", "bytes=-", "0-5",
     "bytes=0x10-20", "bytes=1-2-3", "bytes=--5", "bytes=\u00e9-1"],
)
def test_multiple_or_malformed_ranges_send_the_whole_file(app, tree, header):
    status, headers, body = get(app, "/packages/demo-1.0-py3-none-any.whl", {"Range": header})
    assert status == 200
    assert body == tree["wheel"].read_bytes()
    assert "content-range" not in headers


@pytest.mark.parametrize(
    ("if_range", "partial"),
    [
        ("{etag}", True),
        ('"0000"', False),
        ("W/{etag}", False),  # If-Range needs a strong match
        ("{date}", True),
        ("Thu, 01 Jan 1970 00:00:00 GMT", False),
        ("not a date", False),
    ],
)
def test_if_range(app, tree, if_range, partial):
    path = "/packages/demo-1.0-py3-none-any.whl"
    _s, headers, _b = get(app, path)
    value = if_range.format(etag=headers["etag"], date=headers["last-modified"])
    status, response, body = get(app, path, {"Range": "bytes=0-9", "If-Range": value})
    data = tree["wheel"].read_bytes()
    if partial:
        assert (status, body) == (206, data[:10])
    else:
        assert (status, body) == (200, data)
        assert "content-range" not in response


# --- validators ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({"If-None-Match": "{etag}"}, 304),
        ({"If-None-Match": "W/{etag}"}, 304),
        ({"If-None-Match": '"x", {etag}'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"x"'}, 200),
        ({"If-Modified-Since": "{date}"}, 304),
        ({"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}, 200),
        ({"If-Modified-Since": "yesterday-ish"}, 200),
        # If-None-Match decides when both are present (RFC 9110 13.2.2).
        ({"If-None-Match": '"x"', "If-Modified-Since": "{date}"}, 200),
        ({"If-None-Match": "{etag}", "If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}, 304),
    ],
)
@pytest.mark.parametrize("path", ["/packages/demo-1.0-py3-none-any.whl", "/packages/demo-1.0-py3-none-any.whl.metadata",
                                  "/packages/deep/er/nested-2.0.tar.gz"])
def test_conditional_requests(app, path, conditions, expected):
    _s, first, body = get(app, path)
    headers = {k: v.format(etag=first["etag"], date=first["last-modified"]) for k, v in conditions.items()}
    status, response, again = get(app, path, headers)
    assert status == expected
    if expected == 304:
        assert again == b""
        assert response["etag"] == first["etag"]
        assert "immutable" in response["cache-control"]
    else:
        assert again == body


def test_metadata_file(app, tree):
    with zipfile.ZipFile(tree["wheel"]) as archive:
        inside = archive.read("demo-1.0.dist-info/METADATA")
    status, headers, body = get(app, "/packages/demo-1.0-py3-none-any.whl.metadata")
    assert status == 200
    assert body == inside
    assert headers["etag"] == f'"{hashlib.sha256(inside).hexdigest()}"'
    assert "content-encoding" not in headers
    status, _h, body = get(app, "/packages/demo-1.0-py3-none-any.whl.metadata", method="HEAD")
    assert (status, body) == (200, b"")


def test_file_removed_behind_the_catalogs_back_is_404(app, tree):
    tree["sdist"].unlink()
    status, headers, _body = get(app, "/packages/demo-1.0.tar.gz")
    assert status == 404
    assert headers["content-type"].startswith("text/plain")


def test_flat_listing_for_find_links(app, tree):
    status, headers, body = get(app, "/packages/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    for href in ("demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "deep/er/nested-2.0.tar.gz"):
        assert f'href="{href}"'.encode() in body
    assert b"secret" not in body and b"README" not in body
    status, _h, empty = get(app, "/packages/", {"If-None-Match": headers["etag"]})
    assert (status, empty) == (304, b"")


def test_a_large_index_streams_the_same_flat_listing(make_app, tree):
    small = get(make_app(), "/packages/")
    make_app.close()
    large = make_app(catalog_cache_files=1)  # beyond the worker's cache: the list is streamed from the database
    assert not large.config["wharf.catalog"].holds_everything()
    status, headers, body = get(large, "/packages/")
    assert (status, body) == (200, small[2])
    assert headers["content-type"] == "text/html; charset=utf-8" and "max-age" in headers["cache-control"]


# --- nothing else can be named -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/packages/nope-1.0.tar.gz",
        "/packages/demo-1.0.tar.gz.metadata",  # sdists have no PEP 658 file here
        "/packages/demo-1.0-py3-none-any.whl.metadata.metadata",
        "/packages/demo-1.0-py3-none-any.whl/",
        "/packages/DEMO-1.0.tar.gz",
        "/packages/README.txt",
        "/packages/.hidden/secret-1.0-py3-none-any.whl",
        "/packages/.wharf/catalog.sqlite3",
        "/packages/.wharf/scan.lock",
        "/packages/deep/er",
        "/packages/deep/er/",
        "/packages/nested-2.0.tar.gz",
        "/packages/../packages/demo-1.0.tar.gz",
        "/packages/./demo-1.0.tar.gz",
        "/packages/deep/../demo-1.0.tar.gz",
        "/packages/../../../../etc/passwd",
        "/packages/..%2F..%2Fetc%2Fpasswd",
        "/packages/%2e%2e/%2e%2e/etc/passwd",
        "/packages/%252e%252e/etc/passwd",
        "/packages/..\\..\\etc\\passwd",
        "/packages//etc/passwd",
        "/packages/" + "/etc/passwd",
        "/packages/demo-1.0.tar.gz\x00",
        "/packages/demo-1.0.tar.gz\x00.whl",
        "/packages/\x00",
        "/packages/\xff\xfe.whl",  # not UTF-8
        "/packages/" + "a" * 10000 + ".whl",
        "/packages",
        "/../../etc/passwd",
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_nothing_outside_the_catalog_is_served(app, path, method):
    status, headers, body = get(app, path, method=method)
    assert 400 <= status < 500, (path, status)
    assert b"root:" not in body and b"SQLite" not in body


def test_state_directory_is_never_listed(app, packages):
    assert (packages / ".wharf" / "catalog.sqlite3").exists()
    catalog = app.config["wharf.catalog"]
    assert not any(".wharf" in url or ".hidden" in url for url in catalog.relpaths())
