"""The `pypi-server` command starts a working index, as pypiserver's users run it."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile

from tests.support import ROOT, client_env, free_port, http, make_wheel, stop_process, wait_http


# `pypi-server` from this checkout (the console script on PATH may belong to another).
PYPI_SERVER_CODE = "import sys; from app.serving.pypiserver_cli import main; sys.exit(main())"


def start(argv: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", PYPI_SERVER_CODE, "-p", str(port), "-i", "127.0.0.1", *argv],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc=proc)
    return proc, url


def test_protected_index(tmp_path: Path):
    packages = tmp_path / "packages"
    make_wheel(packages, "demo", "1.0")
    htpasswd = HtpasswdFile(str(tmp_path / "htpasswd.txt"), new=True)
    htpasswd.set_password("alice", "s3cret")
    htpasswd.save()
    proc, url = start(["-P", str(tmp_path / "htpasswd.txt"), "-a", "update,download,list", str(packages)],
                      tmp_path / "server.log")
    try:
        status, headers, _ = http(url + "/simple/demo/")
        assert status == 401
        assert headers["www-authenticate"].startswith("Basic")
        token = base64.b64encode(b"alice:s3cret").decode()
        status, _, body = http(url + "/simple/demo/", headers={"Authorization": f"Basic {token}"})
        assert status == 200
        assert b"demo-1.0-py3-none-any.whl" in body
        status, _, _ = http(url + "/packages/demo-1.0-py3-none-any.whl")
        assert status == 401
    finally:
        stop_process(proc)


def test_open_index_with_run_subcommand(tmp_path: Path):
    packages = tmp_path / "packages"
    make_wheel(packages, "demo", "2.0")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    with open(tmp_path / "server.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", PYPI_SERVER_CODE, "run", "-p", str(port), "-i", "127.0.0.1",
                                 "-a", ".", "-P", ".", "--hash-algo", "md5", str(packages)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        status, _, body = http(f"http://127.0.0.1:{port}/simple/demo/")
        assert status == 200
        assert b"#md5=" in body
        status, _, _ = http(f"http://127.0.0.1:{port}/packages/demo-2.0-py3-none-any.whl")
        assert status == 200
    finally:
        stop_process(proc)


# --- issue 15: what a pypiserver user sees --------------------------------------------------


def wait_for_log(log: Path, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text(errors="replace")
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.1)


def test_where_it_listens_uploads_and_removals_are_logged_by_default(tmp_path: Path):
    packages = tmp_path / "packages"
    packages.mkdir()
    dist = make_wheel(tmp_path / "dist", "logged", "1.0")
    htpasswd = HtpasswdFile(str(tmp_path / "htpasswd.txt"), new=True)
    htpasswd.set_password("alice", "s3cret")
    htpasswd.save()
    log = tmp_path / "server.log"
    proc, url = start(["-P", str(tmp_path / "htpasswd.txt"), str(packages)], log)  # no -v
    try:
        assert f"serving 0 projects (0 files) from {packages} on {url}/" in log.read_text()
        upload = subprocess.run([sys.executable, "-m", "twine", "upload", "--repository-url", url + "/",
                                 "-u", "alice", "-p", "s3cret", "--disable-progress-bar", str(dist)],
                                env=client_env(tmp_path / "home"), capture_output=True, text=True, timeout=120)
        assert upload.returncode == 0, upload.stdout + upload.stderr
        assert "uploaded logged-1.0-py3-none-any.whl" in wait_for_log(log, "uploaded logged")
        token = base64.b64encode(b"alice:s3cret").decode()
        status, _, _ = http(url + "/", method="POST", headers={
            "Authorization": f"Basic {token}", "Content-Type": "application/x-www-form-urlencoded"},
            data=b":action=remove_pkg&name=logged&version=1.0")
        assert status == 200
        assert "removed logged 1.0" in wait_for_log(log, "removed logged")
        if os.geteuid() == 0:
            assert "running as root" in log.read_text() and "runuser -u wharf -- pypi-server" in log.read_text()
    finally:
        stop_process(proc)


def serve_restricted(wrapper: list[str], packages: Path, home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """pypi-server started through ``wrapper`` (a read-only mount, fewer capabilities)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    env["HOME"] = str(home)
    with open(log, "wb") as out:
        proc = subprocess.Popen([*wrapper, sys.executable, "-c", PYPI_SERVER_CODE, "-p", str(port), "-i", "127.0.0.1",
                                 "-a", ".", "-P", ".", str(packages)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", proc=proc)
    except Exception:
        stop_process(proc)
        raise AssertionError(log.read_text(errors="replace"))
    return proc, url


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a read-only mount")
def test_a_read_only_packages_directory_is_served_with_the_state_elsewhere(tmp_path: Path):
    packages = tmp_path / "packages"
    make_wheel(packages, "frozen", "1.0")
    # The server alone sees the directory read-only: a bind mount in its own mount namespace.
    wrapper = ["unshare", "-m", "sh", "-c",
               f'mount --bind "{packages}" "{packages}" && mount -o remount,bind,ro "{packages}" && exec "$@"', "-"]
    log = tmp_path / "server.log"
    proc, url = serve_restricted(wrapper, packages, tmp_path / "home", log)
    try:
        status, _, body = http(url + "/simple/frozen/")
        assert status == 200 and b"frozen-1.0-py3-none-any.whl" in body
        assert http(url + "/packages/frozen-1.0-py3-none-any.whl")[0] == 200
        text = log.read_text(errors="replace")
        state = tmp_path / "home" / ".local" / "state" / "wharf"
        assert f"cannot write the catalog into {packages / '.wharf'} (Read-only file system" in text
        assert f"keeping it in {state}/" in text and "give --state-dir DIR" in text
        assert "uploads will fail" in text and "Traceback" not in text
        assert list(state.iterdir())[0].joinpath("catalog.sqlite3").is_file()
        assert not (packages / ".wharf").exists()
    finally:
        stop_process(proc)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to play another user")
def test_a_state_directory_left_by_a_sudo_start_does_not_stop_the_server(tmp_path: Path):
    packages = tmp_path / "packages"
    make_wheel(packages, "owned", "1.0")
    # `sudo pypi-server` once left .wharf owned by another user; now a user without root's
    # override of file permissions starts it.
    (packages / ".wharf").mkdir()
    (packages / ".wharf" / "catalog.sqlite3").write_bytes(b"")
    for path in (packages / ".wharf", packages / ".wharf" / "catalog.sqlite3"):
        os.chown(path, 65534, 65534)
    (packages / ".wharf").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    wrapper = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
               "--bounding-set=-dac_override,-dac_read_search", "--"]
    log = tmp_path / "server.log"
    proc, url = serve_restricted(wrapper, packages, home, log)
    try:
        status, _, body = http(url + "/simple/owned/")
        assert status == 200 and b"owned-1.0-py3-none-any.whl" in body
        text = log.read_text(errors="replace")
        assert f"cannot write the catalog into {packages / '.wharf'} (Permission denied" in text
        assert "give --state-dir DIR" in text and "Traceback" not in text and "PermissionError" not in text
    finally:
        stop_process(proc)
