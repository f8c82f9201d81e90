"""Real pip and uv against Wharf under gunicorn: installs, downloads, files coming and going, bad input.

One server for the module; the dependency tree is built once with ``python -m build``:

    Top.Level 1.0 -> mid-lib>=1.0 -> leaf_pkg
    leaf_pkg 1.0 (uploaded in 2020), 1.1 (now), 2.0 (Requires-Python >=4: never for us)
"""

from __future__ import annotations

import hashlib
from http.client import HTTPConnection
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, WharfProcess, build_project, client_env, http, make_wheel

pytestmark = pytest.mark.slow

JSON_V1 = "application/vnd.pypi.simple.v1+json"
DEADLINE = 20.0  # for files copied in by hand; they normally show within a second
OLD = time.mktime((2020, 6, 1, 0, 0, 0, 0, 0, -1))


def run(cmd: list[str], env: dict[str, str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """Every built file by name, in a directory of its own."""
    base = tmp_path_factory.mktemp("build")
    out = base / "dist"
    build_project(base / "src-top", out, "Top.Level", "1.0", requires=("mid-lib>=1.0",))
    build_project(base / "src-mid", out, "mid-lib", "1.0", requires=("leaf_pkg",))
    build_project(base / "src-leaf10", out, "leaf_pkg", "1.0")
    build_project(base / "src-leaf11", out, "leaf_pkg", "1.1")
    build_project(base / "src-leaf20", out, "leaf_pkg", "2.0", requires_python=">=4")
    files = {p.name: p for p in out.iterdir()}
    assert len(files) == 10, sorted(files)
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory, dists):
    packages = tmp_path_factory.mktemp("index") / "packages"
    packages.mkdir()
    for name, path in dists.items():
        # Top.Level's files in a subdirectory: the catalog is recursive.
        target = packages / ("apps" if name.startswith("top_level") else "") / name
        target.parent.mkdir(exist_ok=True)
        shutil.copy2(path, target)
        # Everything but the newer leaf releases was "uploaded" in 2020 (for uv --exclude-newer).
        if not name.startswith(("leaf_pkg-1.1", "leaf_pkg-2.0")):
            os.utime(target, (OLD, OLD))
    with WharfProcess(packages, "--scan-interval", "0.2") as wharf:
        wharf.packages = packages
        yield wharf
        log = wharf.log()
    # Nothing any test sent, however odd, made the server fail.
    assert not re.search(r'" 5\d\d ', log), "a request got a 5xx:\n" + log
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("client-home")


def pip_env(home: Path) -> dict[str, str]:
    return client_env(home)


def index_url(server) -> str:
    return server.url + "/simple/"


def venv_python(path: Path, with_pip: bool) -> Path:
    cmd = [sys.executable, "-m", "venv", str(path)]
    if not with_pip:
        cmd.insert(3, "--without-pip")
    subprocess.run(cmd, check=True, capture_output=True)
    return path / "bin" / "python"


def installed(python: Path, env: dict[str, str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    return json.loads(run([str(python), "-c", code], env).stdout)


# --- installing ---------------------------------------------------------------------------------
def test_pip_install_resolves_the_tree(server, dists, tmp_path, home):
    env = pip_env(home)
    python = venv_python(tmp_path / "venv", with_pip=True)
    run([str(python), "-m", "pip", "install", "--no-cache-dir", "--index-url", index_url(server), "Top.Level"], env)
    got = installed(python, env)
    assert got["Top.Level"] == "1.0"
    assert got["mid-lib"] == "1.0"
    assert got["leaf_pkg"] == "1.1"  # not 2.0: its Requires-Python excludes this interpreter
    version = run([str(python), "-c", "import leaf_pkg, top_level; print(leaf_pkg.__version__)"], env).stdout
    assert version.strip() == "1.1"
    log = server.log()
    assert "/simple/top-level/" in log
    # pip read the dependencies from the PEP 658 metadata files.
    assert re.search(r'"GET /packages/mid_lib-1\.0-py3-none-any\.whl\.metadata HTTP/1\.1" 200 .*pip/', log)


def test_pip_install_of_the_excluded_release_is_refused(server, tmp_path, home):
    env = pip_env(home)
    proc = run([sys.executable, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "-d", str(tmp_path / "d"),
                "--index-url", index_url(server), "leaf_pkg==2.0"], env, check=False)
    assert proc.returncode != 0
    assert "Requires-Python" in proc.stdout + proc.stderr or "requires a different Python" in proc.stdout + proc.stderr


def test_pip_download_gets_the_exact_bytes(server, dists, tmp_path, home):
    env = pip_env(home)
    dest = tmp_path / "downloads"
    run([sys.executable, "-m", "pip", "download", "--no-cache-dir", "-d", str(dest),
         "--index-url", index_url(server), "TOP_level"], env)
    got = {p.name for p in dest.iterdir()}
    assert got == {"top_level-1.0-py3-none-any.whl", "mid_lib-1.0-py3-none-any.whl", "leaf_pkg-1.1-py3-none-any.whl"}
    for name in got:
        assert (dest / name).read_bytes() == dists[name].read_bytes()


def test_pip_download_of_an_sdist_passes_its_hash_check(server, dists, tmp_path, home):
    # A .tar.gz served with Content-Encoding: gzip would be unpacked in transit and fail
    # the #sha256 check; pip verifies the fragment on every download.
    env = pip_env(home)
    dest = tmp_path / "sdists"
    run([sys.executable, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", "-d", str(dest), "--index-url", index_url(server), "leaf-pkg==1.0"], env)
    assert (dest / "leaf_pkg-1.0.tar.gz").read_bytes() == dists["leaf_pkg-1.0.tar.gz"].read_bytes()


def _uv() -> list[str]:
    return [shutil.which("uv")] if shutil.which("uv") else [sys.executable, "-m", "uv"]


def test_uv_pip_install_resolves_the_tree(server, tmp_path):
    env = client_env(tmp_path / "uv-home")
    python = venv_python(tmp_path / "uv-venv", with_pip=False)
    run([*_uv(), "pip", "install", "--python", str(python), "--index-url", index_url(server), "Top.Level"], env)
    got = installed(python, env)
    assert (got["Top.Level"], got["mid-lib"], got["leaf_pkg"]) == ("1.0", "1.0", "1.1")
    assert re.search(r'"GET /simple/top-level/ HTTP/1\.1" 200 .*uv/', server.log())


def test_uv_exclude_newer_uses_upload_times(server, tmp_path):
    # PEP 700 upload-time: leaf_pkg 1.1 arrived after the cut-off, so uv must take 1.0.
    env = client_env(tmp_path / "uv-home")
    python = venv_python(tmp_path / "uv-venv", with_pip=False)
    run([*_uv(), "pip", "install", "--python", str(python), "--index-url", index_url(server),
         "--exclude-newer", "2021-01-01T00:00:00Z", "Top.Level"], env)
    assert installed(python, env)["leaf_pkg"] == "1.0"


# --- files added and removed by hand while the server runs -----------------------------------------
def wait_status(url: str, wanted: int, deadline: float = DEADLINE, in_a_row: int = 8) -> None:
    """Poll until ``in_a_row`` requests in a row (on new connections, so across the
    workers) answer ``wanted``: every worker has caught up, not just the first."""
    end = time.monotonic() + deadline
    status, streak = None, 0
    while time.monotonic() < end:
        status = http(url)[0]
        streak = streak + 1 if status == wanted else 0
        if streak >= in_a_row:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} still answers {status}, not {wanted}, after {deadline}s")


def test_files_copied_in_and_deleted_by_hand(server, tmp_path, home):
    env = pip_env(home)
    wheel = make_wheel(tmp_path / "made", "Hand.Made", "1.0")
    target = server.packages / "later" / wheel.name
    target.parent.mkdir()
    shutil.copy(wheel, target)  # like cp or scp: a new file with a fresh mtime
    wait_status(server.url + "/simple/hand-made/", 200)
    dest = tmp_path / "got"
    run([sys.executable, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "-d", str(dest),
         "--index-url", index_url(server), "hand.made"], env)
    assert (dest / wheel.name).read_bytes() == wheel.read_bytes()

    target.unlink()
    wait_status(server.url + "/simple/hand-made/", 404)
    assert http(server.url + "/packages/later/" + wheel.name)[0] == 404
    proc = run([sys.executable, "-m", "pip", "download", "--no-cache-dir", "--no-deps", "-d", str(tmp_path / "none"),
                "--index-url", index_url(server), "hand.made"], env, check=False)
    assert proc.returncode != 0
    assert "No matching distribution" in proc.stderr


# --- the HTTP surface of a real server ----------------------------------------------------------
def test_redirects_through_gunicorn(server):
    status, headers, _ = http(server.url + "/simple/Top.Level/?format=" + JSON_V1.replace("+", "%2B"))
    assert status == 301
    assert headers["location"] == f"{server.url}/simple/top-level/?format={JSON_V1.replace('+', '%2B')}"
    status, headers, _ = http(server.url + "/simple/Top.Level",
                              headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pypi.example.com",
                                       "X-Forwarded-Prefix": "/py"})
    assert status == 301
    assert headers["location"] == "https://pypi.example.com/py/simple/top-level/"


def test_json_page_and_metadata_through_gunicorn(server, dists):
    status, headers, body = http(server.url + "/simple/leaf-pkg/", headers={"Accept": JSON_V1})
    assert status == 200 and headers["content-type"] == JSON_V1 and headers["vary"] == "Accept"
    data = json.loads(body)
    assert data["versions"] == ["1.0", "1.1", "2.0"]
    files = {f["filename"]: f for f in data["files"]}
    assert files["leaf_pkg-2.0-py3-none-any.whl"]["requires-python"] == ">=4"
    assert files["leaf_pkg-1.0.tar.gz"]["upload-time"].startswith("2020-06-01T") or \
        files["leaf_pkg-1.0.tar.gz"]["upload-time"].startswith("2020-05-31T")
    entry = files["leaf_pkg-1.1-py3-none-any.whl"]
    status, headers, metadata = http(server.url + "/packages/leaf_pkg-1.1-py3-none-any.whl.metadata")
    assert status == 200
    assert hashlib.sha256(metadata).hexdigest() == entry["core-metadata"]["sha256"]
    status, headers, tarball = http(server.url + "/packages/leaf_pkg-1.0.tar.gz", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and "content-encoding" not in headers
    assert headers["content-type"] == "application/gzip"
    assert hashlib.sha256(tarball).hexdigest() == files["leaf_pkg-1.0.tar.gz"]["hashes"]["sha256"]
    status, headers, part = http(server.url + "/packages/leaf_pkg-1.0.tar.gz", headers={"Range": "bytes=-10"})
    assert (status, part) == (206, tarball[-10:])


def raw_request(server, method: str, target: str, headers: dict[str, str] | None = None) -> int:
    """Send a request line exactly as given (no client-side normalization); return the status."""
    conn = HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/simple/-bad-/", None),
        ("GET", "/simple/foo%00bar/", None),
        ("GET", "/simple/%ff%fe/", None),
        ("GET", "/simple/%3Cscript%3E/", None),
        ("GET", "/simple/..%2F..%2Fetc%2Fpasswd/", None),
        pytest.param("GET", "/simple/" + "a" * 3000 + "/", None, id="long-name"),
        ("GET", "/simple/no-such-project/", None),
        ("GET", "/packages/../../../etc/passwd", None),
        ("GET", "/packages/%2e%2e/%2e%2e/etc/passwd", None),
        ("GET", "/packages/..%2f..%2fetc%2fpasswd", None),
        ("GET", "/packages//etc/passwd", None),
        ("GET", "/packages/.wharf/catalog.sqlite3", None),
        ("GET", "/packages/leaf_pkg-9.9.tar.gz", None),
        ("GET", "/packages/leaf_pkg-1.0.tar.gz%00", None),
        ("GET", "/packages/%ff.whl", None),
        ("HEAD", "/packages/nothing.whl", None),
        ("GET", "/packages/leaf_pkg-1.0.tar.gz.metadata", None),
        ("GET", "/packages/leaf_pkg-1.0.tar.gz", {"Range": "bytes=999999-"}),
        ("GET", "/simple/leaf-pkg/", {"Accept": "application/json"}),
        ("GET", "/simple/leaf-pkg/", {"Accept": "garbage;;;q=x"}),
        ("GET", "/simple/", {"Accept": "text/html;q=0, application/*;q=0"}),
        ("GET", "/simple/leaf-pkg/?format=nonsense", None),
        ("PUT", "/simple/leaf-pkg/", None),
        ("GET", "/%ff", None),
    ],
)
def test_bad_input_gets_4xx(server, method, target, headers):
    status = raw_request(server, method, target, headers)
    assert 400 <= status < 500, (target, status)


def test_server_still_healthy_after_bad_input(server):
    status, _, body = http(server.url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


# --- the command line -----------------------------------------------------------------------------
def test_serve_help_explains_every_option():
    import dataclasses

    from app.settings import Settings

    proc = subprocess.run([sys.executable, "-m", "app", "serve", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for f in dataclasses.fields(Settings):
        if f.name != "packages":
            assert "--" + f.name.replace("_", "-") in proc.stdout, f.name
    assert "PACKAGES_DIR" in proc.stdout and "WHARF_PORT" in proc.stdout


def test_pypi_server_help_runs():
    proc = subprocess.run([sys.executable, "-c", "import sys; from app.serving.pypiserver_cli import main; sys.exit(main())",
                           "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("-p", "-P", "-a", "--fallback-url", "--disable-fallback", "--hash-algo", "--health-endpoint",
                   "--server-base-url", "--log-file", "--welcome", "--cache-control", "--overwrite"):
        assert option in proc.stdout, option
