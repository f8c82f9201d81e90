"""The pull-through cache with real pip, a real upstream on loopback, and an upstream that lies."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from http.client import IncompleteRead
from pathlib import Path

import pytest

from tests.support import WharfProcess, client_env, http, make_wheel
from tests.upstreams import TinyIndex, build_upstream, make_ca_and_leaf

pytestmark = pytest.mark.slow


def pip_install(env: dict[str, str], venv: Path, index: str, *reqs: str) -> subprocess.CompletedProcess:
    """pip install into a fresh venv (made without pip: the running pip installs into it)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--retries", "0", "--index-url", index, *reqs],
                          env=env, capture_output=True, text=True, timeout=300)


def cached(cache: Path) -> set[str]:
    return {p.name for p in (cache / "files").rglob("*") if p.is_file()}


def health(url: str) -> dict:
    status, _headers, body = http(url + "/health")
    assert status == 200  # an unreachable upstream never makes the index unhealthy
    return json.loads(body)["upstream"]


def test_install_through_cache_survives_upstream_outage_and_local_projects_shadow(tmp_path: Path):
    upstream_dir, local_dir = tmp_path / "upstream", tmp_path / "local"
    build_upstream(upstream_dir)
    make_wheel(upstream_dir, "shadowed-pkg", "1.0")
    make_wheel(local_dir, "Shadowed_Pkg", "9.0")  # same normalized name, hosted here
    cache = local_dir / ".wharf" / "upstream"
    env = client_env(tmp_path / "home")

    upstream = WharfProcess(upstream_dir)
    try:
        with WharfProcess(local_dir, "--upstream-url", upstream.url + "/simple/", "--upstream-max-age", "0",
                          "--upstream-deny", "other*") as wharf:
            index = wharf.url + "/simple/"
            first = pip_install(env, tmp_path / "venv1", index, "toplib")
            assert first.returncode == 0, first.stdout + first.stderr
            assert "Successfully installed leaflib-1.0 midlib-1.0 toplib-1.0" in first.stdout
            assert cached(cache) == {"toplib-1.0-py3-none-any.whl", "midlib-1.0-py3-none-any.whl",
                                     "leaflib-1.0-cp311-none-any.whl"}
            for name in cached(cache):
                assert next(cache.rglob(name)).read_bytes() == (upstream_dir / name).read_bytes()
            state = health(wharf.url)
            assert state["reachable"] is True and state["cached_files"] == 3
            status, _h, home = http(wharf.url + "/")
            assert status == 200 and b"<strong>3</strong> cached files" in home and b"is reachable" in home

            # The page is upstream's, rewritten so that files come through Wharf.
            status, _h, body = http(index + "toplib/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            page = json.loads(body)
            assert status == 200 and page["versions"] == ["1.0", "2.0"]
            assert all(f["url"].startswith("../../upstream/toplib/") for f in page["files"])

            # A local project shadows the upstream one: its page, its files, what pip installs.
            status, _h, body = http(index + "shadowed-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            assert [f["filename"] for f in json.loads(body)["files"]] == ["shadowed_pkg-9.0-py3-none-any.whl"]
            assert http(wharf.url + "/upstream/shadowed-pkg/shadowed_pkg-1.0-py3-none-any.whl")[0] == 404
            shadow = pip_install(env, tmp_path / "venv-shadow", index, "shadowed-pkg")
            assert shadow.returncode == 0, shadow.stdout + shadow.stderr
            version = subprocess.run([str(tmp_path / "venv-shadow" / "bin" / "python"), "-c",
                                      "import shadowed_pkg; print(shadowed_pkg.__version__)"],
                                     capture_output=True, text=True, check=True).stdout.strip()
            assert version == "9.0"
            assert "/simple/toplib/" in upstream.log()
            assert "/simple/shadowed-pkg/" not in upstream.log()  # the private name never went upstream

            # The deny-list keeps a project out entirely.
            assert http(index + "otherlib/")[0] == 404
            assert http(wharf.url + "/upstream/otherlib/otherlib-1.0-py3-none-any.whl")[0] == 404

            upstream.stop()
            second = pip_install(env, tmp_path / "venv2", index, "toplib")
            assert second.returncode == 0, second.stdout + second.stderr
            assert "Successfully installed leaflib-1.0 midlib-1.0 toplib-1.0" in second.stdout
            state = health(wharf.url)
            assert state["reachable"] is False and "refused" in state["error"].lower()
            assert state["cached_files"] == 3
            assert b"<strong>unreachable</strong>" in http(wharf.url + "/")[2]

            # Offline, the page offers only what is cached; a project never fetched is a 502.
            status, _h, body = http(index + "toplib/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            assert [f["filename"] for f in json.loads(body)["files"]] == ["toplib-1.0-py3-none-any.whl"]
            status, _h, body = http(index + "never-fetched/")
            assert status == 502 and b"unreachable" in body
    finally:
        upstream.stop()


def test_bytes_that_do_not_match_upstream_hash_are_refused_and_not_stored(tmp_path: Path):
    ca, leaf, key = make_ca_and_leaf(tmp_path / "tls")
    src = tmp_path / "src"
    honest = make_wheel(src, "honest", "1.0")
    liar = make_wheel(src, "liar", "1.0")
    # Large enough to be passed on while downloading (app.upstream.pull_through.STREAM_AFTER).
    big = make_wheel(src, "big", "1.0", padding=5_000_000)
    big_liar = make_wheel(src, "big-liar", "1.0", padding=5_000_000)
    big_lie = big_liar.read_bytes()[:-10] + b"0123456789"
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    cache = tmp_path / "cache"
    env = client_env(tmp_path / "home")
    # The upstream needs a password and has a certificate from a private CA.
    with TinyIndex([honest, liar, big, big_liar], leaf, key, "wharf", "pa:ss@word",
                   lies={liar.name: liar.read_bytes().replace(b"liar", b"LIAR"), big_liar.name: big_lie}) as upstream:
        with WharfProcess(local_dir, "--upstream-url", upstream.url("wharf", "pa:ss@word"),
                          "--upstream-cert", str(ca), "--upstream-cache-dir", str(cache)) as wharf:
            good = pip_install(env, tmp_path / "venv-good", wharf.url + "/simple/", "honest")
            assert good.returncode == 0, good.stdout + good.stderr
            assert cached(cache) == {honest.name}

            status, _h, body = http(f"{wharf.url}/upstream/liar/{liar.name}")
            assert status == 502 and b"refused" in body and b"sha256" in body
            assert cached(cache) == {honest.name}
            assert not [p for p in cache.rglob(".*")]  # no temporary file left behind

            bad = pip_install(env, tmp_path / "venv-bad", wharf.url + "/simple/", "liar")
            assert bad.returncode != 0
            assert cached(cache) == {honest.name}

            # A large file is relayed as it arrives; a lie is cut off before its last bytes.
            good = pip_install(env, tmp_path / "venv-big", wharf.url + "/simple/", "big")
            assert good.returncode == 0, good.stdout + good.stderr
            assert (cache / "files" / "big" / big.name).read_bytes() == big.read_bytes()
            with pytest.raises((IncompleteRead, ConnectionError)):
                http(f"{wharf.url}/upstream/big-liar/{big_liar.name}")
            bad = pip_install(env, tmp_path / "venv-big-bad", wharf.url + "/simple/", "big-liar")
            assert bad.returncode != 0
            assert cached(cache) == {honest.name, big.name}
            assert not [p for p in cache.rglob(".*")]

            # The true bytes, once upstream stops lying, are taken.
            upstream.lies.clear()
            status, _h, body = http(f"{wharf.url}/upstream/liar/{liar.name}")
            assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(liar.read_bytes()).digest()
            assert cached(cache) == {honest.name, big.name, liar.name}
            assert "pa:ss@word" not in wharf.log()
        assert all(upstream.authorized(sent) for _path, sent in upstream.requests)
