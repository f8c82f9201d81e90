"""The `pypi-server` command starts a working index, as pypiserver's users run it."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

from passlib.apache import HtpasswdFile

from tests.support import ROOT, free_port, http, make_wheel, stop_process, wait_http


def start(argv: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    code = "import sys; from app.serving.pypiserver_cli import main; sys.exit(main())"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, "-p", str(port), "-i", "127.0.0.1", *argv],
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
    code = "import sys; from app.serving.pypiserver_cli import main; sys.exit(main())"
    with open(tmp_path / "server.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, "run", "-p", str(port), "-i", "127.0.0.1",
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
