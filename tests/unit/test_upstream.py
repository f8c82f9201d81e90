"""app/upstream/: reading upstream listings, verified downloads, and the pull-through app routes."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from app.settings import Settings
from app.upstream.client import UpstreamIndex, redact
from app.upstream.listings import (
    HashMismatch,
    Listing,
    UpstreamError,
    UpstreamFile,
    parse_html_listing,
    parse_json_listing,
)
from app.upstream.pull_through import PullThrough
from tests.support import call_wsgi, free_port, make_wheel
from tests.upstreams import TinyIndex

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
BASE = "https://up.example/simple/demo/"


def test_json_listing_resolves_urls_and_reads_pep_691_700_714_fields():
    body = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "versions": ["1.0", "0.9"], "files": [
        {"filename": "demo-1.0-py3-none-any.whl", "url": "../../files/demo-1.0-py3-none-any.whl",
         "hashes": {"sha256": "AB12"}, "requires-python": ">=3.8", "yanked": False,
         "core-metadata": {"sha256": "cd34"}, "size": 10, "upload-time": "2024-01-01T00:00:00Z"},
        {"filename": "demo-1.0.tar.gz", "url": "https://files.example/demo-1.0.tar.gz",
         "hashes": {"md5": "00"}, "yanked": "broken", "dist-info-metadata": True},
        {"filename": "demo-0.9.tar.gz", "url": "/f/demo-0.9.tar.gz", "hashes": {}, "yanked": True},
        {"filename": "../../etc/passwd.whl", "url": "/x"},
        {"filename": ".hidden-1.0.tar.gz", "url": "/y"},
        {"filename": "README.txt", "url": "/z"},
    ]}).encode()
    listing = parse_json_listing("demo", body, BASE)
    assert [f.filename for f in listing.files] == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "demo-0.9.tar.gz"]
    wheel, sdist, old = listing.files
    assert wheel.url == "https://up.example/files/demo-1.0-py3-none-any.whl"
    assert wheel.requires_python == ">=3.8" and wheel.yanked is None and wheel.size == 10
    assert wheel.core_metadata == {"sha256": "cd34"} and wheel.check_hashes() == {"sha256": "ab12"}
    assert sdist.url == "https://files.example/demo-1.0.tar.gz"
    assert sdist.yanked == "broken" and sdist.core_metadata is None  # "true" gives no hash to check
    assert old.url == "https://up.example/f/demo-0.9.tar.gz" and old.yanked == ""
    assert listing.versions == ("0.9", "1.0")
    with pytest.raises(HashMismatch):
        sdist.check_hashes()  # md5 alone is not good enough to trust bytes


def test_html_listing_reads_fragments_base_and_data_attributes():
    body = b"""<!DOCTYPE html><html><head><base href="https://cdn.example/pkgs/"></head><body>
    <a href="demo-1.0-py3-none-any.whl#sha256=ab12" data-requires-python="&gt;=3.8"
       data-dist-info-metadata="sha256=cd34">demo-1.0-py3-none-any.whl</a>
    <a href="demo%2B-1.0.tar.gz" data-yanked="">x</a>
    <a href="sub/demo-0.9.tar.gz#sha512=ff" data-yanked="bad &amp; old" data-core-metadata="true">y</a>
    <a href="../../">up</a><a>no href</a>
    </body></html>"""
    listing = parse_html_listing("demo", body, BASE)
    files = {f.filename: f for f in listing.files}
    assert set(files) == {"demo-1.0-py3-none-any.whl", "demo+-1.0.tar.gz", "demo-0.9.tar.gz"}
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert wheel.url == "https://cdn.example/pkgs/demo-1.0-py3-none-any.whl"
    assert wheel.hashes == {"sha256": "ab12"} and wheel.requires_python == ">=3.8"
    assert wheel.core_metadata == {"sha256": "cd34"} and wheel.yanked is None
    assert files["demo+-1.0.tar.gz"].yanked == "" and files["demo+-1.0.tar.gz"].hashes == {}
    assert files["demo-0.9.tar.gz"].yanked == "bad & old" and files["demo-0.9.tar.gz"].core_metadata is None
    assert files["demo-0.9.tar.gz"].url == "https://cdn.example/pkgs/sub/demo-0.9.tar.gz"


def test_listing_survives_a_round_trip_to_disk():
    listing = Listing("demo", (UpstreamFile("demo-1.0.tar.gz", "https://x/demo-1.0.tar.gz", {"sha256": "ab"},
                                            ">=3", "why", {"sha256": "cd"}, 3, "2024"),), ("1.0",), 12.5)
    assert Listing.from_json(listing.to_json()) == listing


@pytest.mark.parametrize("url, shown", [
    ("https://user:secret@pypi.example/simple/", "https://user:***@pypi.example/simple/"),
    ("https://token@pypi.example:8443/simple/", "https://token@pypi.example:8443/simple/"),
    ("https://pypi.example/simple/", "https://pypi.example/simple/"),
])
def test_redact_hides_passwords(url: str, shown: str):
    assert redact(url) == shown


@pytest.mark.parametrize("allow, deny, name, allowed", [
    ((), (), "anything", True),
    (("requests", "django-*"), (), "django-rest", True),
    (("requests", "django-*"), (), "flask", False),
    ((), ("evil*",), "evil-pkg", False),
    (("*",), ("internal-*",), "internal-tools", False),
    (("Requests",), (), "requests", True),  # patterns are matched on normalized names
])
def test_allow_and_deny_lists(tmp_path: Path, allow, deny, name, allowed):
    settings = Settings(packages=(tmp_path,), upstream_url="http://127.0.0.1:9/simple/",
                        upstream_allow=allow, upstream_deny=deny)
    assert PullThrough(settings, catalog=None, templates=None).allowed(name) is allowed


def test_files_without_a_checkable_hash_are_not_offered(tmp_path: Path):
    files = (UpstreamFile("a-1.0.tar.gz", "u", {"md5": "00"}), UpstreamFile("b-1.0.tar.gz", "u", {}),
             UpstreamFile("c-1.0.tar.gz", "u", {"sha512": "ff"}))
    settings = Settings(packages=(tmp_path,), upstream_url="http://127.0.0.1:9/simple/")
    cache = PullThrough(settings, catalog=None, templates=None)
    offered, _until = cache._servable(Listing("a", files))
    assert [f.filename for f in offered] == ["c-1.0.tar.gz"]


@pytest.mark.slow
def test_credentials_go_only_to_the_upstream_origin_and_bytes_are_verified(tmp_path: Path):
    wheel = make_wheel(tmp_path / "src", "demo", "1.0")
    with TinyIndex([wheel]) as file_host, \
            TinyIndex([wheel], user="bot", password="p@ss", files_url=file_host.base + "files/") as index_host:
        index = UpstreamIndex(index_host.url("bot", "p@ss"))
        listing = index.project("demo")
        entry = listing.file(wheel.name)
        assert entry.url.startswith(file_host.base)
        out = io.BytesIO()
        index.download(entry, out)
        assert out.getvalue() == wheel.read_bytes()
        assert index_host.requests and all(index_host.authorized(sent) for _p, sent in index_host.requests)
        assert file_host.requests and all(sent is None for _p, sent in file_host.requests)  # other origin

        file_host.lies[wheel.name] = b"tampered"
        with pytest.raises(HashMismatch):
            index.download(entry, io.BytesIO())
        assert index.project("nothing-here") is None
        with pytest.raises(UpstreamError, match="401"):
            UpstreamIndex(index_host.url("bot", "wrong")).project("demo")
    with pytest.raises(UpstreamError):
        UpstreamIndex(f"http://127.0.0.1:{free_port()}/simple/", timeout=2).project("demo")


def _app(make_app, tmp_path: Path, upstream_url: str, **extra):
    packages = tmp_path / "packages"
    packages.mkdir(exist_ok=True)
    app = make_app(packages, upstream_url=upstream_url, upstream_max_age=0,
                   upstream_cache_dir=tmp_path / "cache", **extra)
    return app, packages, tmp_path / "cache"


@pytest.mark.slow
def test_pull_through_routes(make_app, tmp_path: Path):
    wheel = make_wheel(tmp_path / "src", "demo", "1.0", requires_python=">=3.8")
    local_twin = make_wheel(tmp_path / "src2", "local-lib", "2.0")
    upstream_twin = make_wheel(tmp_path / "src3", "local-lib", "1.0")
    (tmp_path / "packages").mkdir(exist_ok=True)
    (tmp_path / "packages" / local_twin.name).write_bytes(local_twin.read_bytes())
    with TinyIndex([wheel, upstream_twin]) as upstream:
        app, _packages, cache = _app(make_app, tmp_path, upstream.url(), upstream_deny=("blocked",))

        status, headers, body = call_wsgi(app, "/simple/demo/", headers=JSON)
        assert status == 200 and headers["vary"].startswith("Accept")
        page = json.loads(body)
        (entry,) = page["files"]
        assert entry["url"] == f"../../upstream/demo/{wheel.name}"
        assert entry["hashes"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert entry["requires-python"] == ">=3.8" and entry["core-metadata"]
        assert call_wsgi(app, "/simple/demo/", headers={"If-None-Match": headers["etag"], **JSON})[0] == 304
        status, _h, html = call_wsgi(app, "/simple/demo/")
        assert status == 200 and f'href="../../upstream/demo/{wheel.name}#sha256='.encode() in html

        status, headers, body = call_wsgi(app, f"/upstream/demo/{wheel.name}")
        assert status == 200 and body == wheel.read_bytes()
        assert "immutable" in headers["cache-control"] and headers["content-type"] == "application/zip"
        assert headers["etag"].startswith('"') and "content-encoding" not in headers
        revalidated = call_wsgi(app, f"/upstream/demo/{wheel.name}", headers={"If-None-Match": headers["etag"]})
        assert revalidated[0] == 304
        status, headers, body = call_wsgi(app, f"/upstream/demo/{wheel.name}", method="HEAD")
        assert status == 200 and body == b"" and headers["content-length"] == str(wheel.stat().st_size)
        status, _h, body = call_wsgi(app, f"/upstream/demo/{wheel.name}", headers={"Range": "bytes=0-3"})
        assert status == 206 and body == wheel.read_bytes()[:4]
        status, _h, meta = call_wsgi(app, f"/upstream/demo/{wheel.name}.metadata")
        assert status == 200 and hashlib.sha256(meta).hexdigest() == entry["core-metadata"]["sha256"]

        # Local wins, unknown and denied names are 404s, odd names never reach the disk.
        status, _h, body = call_wsgi(app, "/simple/local-lib/", headers=JSON)
        assert [f["filename"] for f in json.loads(body)["files"]] == [local_twin.name]
        assert call_wsgi(app, f"/upstream/local-lib/{upstream_twin.name}")[0] == 404
        assert not any("/simple/local-lib/" in path for path, _ in upstream.requests)
        assert call_wsgi(app, "/simple/no-such-thing/")[0] == 404
        assert call_wsgi(app, "/simple/blocked/")[0] == 404
        for path in ("/upstream/demo/..%2fx.whl", "/upstream/demo/.hidden.whl", "/upstream/Demo/x.whl",
                     "/upstream/demo/not-listed-1.0.tar.gz", "/upstream/demo/demo.txt"):
            assert call_wsgi(app, path)[0] == 404, path

        health = json.loads(call_wsgi(app, "/health")[2])["upstream"]
        assert health["reachable"] is True and health["cached_files"] == 1 and health["cached_projects"] == 1
        assert app.config["wharf.upstream"].status()["cached_bytes"] == wheel.stat().st_size

    # Upstream gone: what is cached is still served, the rest is a clear 502.
    status, _h, body = call_wsgi(app, "/simple/demo/", headers=JSON)
    assert status == 200 and [f["filename"] for f in json.loads(body)["files"]] == [wheel.name]
    assert call_wsgi(app, f"/upstream/demo/{wheel.name}")[0] == 200
    status, headers, body = call_wsgi(app, "/simple/never-seen/")
    assert status == 502 and b"unreachable" in body and headers["cache-control"] == "no-store"
    assert json.loads(call_wsgi(app, "/health")[2])["upstream"]["reachable"] is False


def test_without_upstream_url_nothing_changes(make_app, tmp_path: Path):
    app, _packages, cache = _app(make_app, tmp_path, "")
    assert app.config["wharf.upstream"] is None
    assert call_wsgi(app, "/simple/demo/")[0] == 404
    assert call_wsgi(app, "/upstream/demo/demo-1.0.tar.gz")[0] == 404
    assert "upstream" not in json.loads(call_wsgi(app, "/health")[2])
    assert not cache.exists()


@pytest.mark.slow
def test_large_files_are_relayed_while_verified_and_a_lie_is_cut_short(make_app, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("app.upstream.pull_through.STREAM_AFTER", 1024)
    big = make_wheel(tmp_path / "src", "big", "1.0", padding=2_500_000)  # three 1 MiB chunks
    data = big.read_bytes()
    with TinyIndex([big]) as upstream:
        app, _packages, cache = _app(make_app, tmp_path, upstream.url())
        upstream.lies[big.name] = data[:-10] + b"0123456789"  # same length, other bytes
        with pytest.raises(HashMismatch):
            call_wsgi(app, f"/upstream/big/{big.name}")  # the server cuts the connection short
        assert not [p for p in cache.rglob("*") if p.is_file() and p.parent.name == "big"]

        upstream.lies.clear()
        status, headers, body = call_wsgi(app, f"/upstream/big/{big.name}")
        assert status == 200 and body == data and headers["content-length"] == str(len(data))
        assert (cache / "files" / "big" / big.name).read_bytes() == data
        assert sorted(p.name for p in (cache / "files" / "big").iterdir()) == [big.name]
        asked = len(upstream.requests)
        assert call_wsgi(app, f"/upstream/big/{big.name}")[2] == data  # from the cache now
        assert len(upstream.requests) == asked
