"""PEP 792 project statuses: set over HTTP and on the command line, read by pypi-simple, enforced on uploads and downloads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pypi_simple import PyPISimple

from app.auth import set_password
from tests.support import ROOT, WharfProcess, client_env, http, make_wheel

pytestmark = pytest.mark.slow
CREDS = ("-u", "alice", "-p", "secret")


def twine(url: str, wheel: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                           "--repository-url", url + "/", *CREDS, str(wheel)], env=env, capture_output=True,
                          text=True, timeout=120)


def set_status(url: str, project: str, status: str, reason: str = "") -> int:
    import base64
    from urllib.parse import urlencode

    auth = "Basic " + base64.b64encode(b"alice:secret").decode()
    return http(f"{url}/_/status/{project}", "POST", {"Authorization": auth,
                "Content-Type": "application/x-www-form-urlencoded"},
                urlencode({"status": status, "reason": reason}).encode())[0]


def test_statuses_are_shown_enforced_and_durable(tmp_path: Path):
    packages = tmp_path / "packages"
    make_wheel(packages, "demo", "1.0")
    htpasswd = tmp_path / "htpasswd"
    set_password(htpasswd, "alice", "secret", rounds=4)
    env = client_env(tmp_path / "home")
    with WharfProcess(packages, "--password-file", str(htpasswd)) as wharf:
        index = wharf.url + "/simple/"
        for status in ("deprecated", "archived", "quarantined", "active"):
            assert set_status(wharf.url, "demo", status, f"because {status}") == 200
            for accept in ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+html"):
                with PyPISimple(index, accept=accept) as client:
                    page = client.get_project_page("demo")
                assert (str(page.status), page.status_reason) == (status, f"because {status}")
                assert page.repository_version == "1.4"
                assert len(page.packages) == (0 if status == "quarantined" else 1)
            assert f"because {status}".encode() in http(wharf.url + "/project/demo/")[2] or status == "active"

        # Cross-site posts are refused like every other change.
        assert http(wharf.url + "/_/status/demo", "POST", {"Origin": "https://evil.example"},
                    b"status=archived")[0] == 403
        assert set_status(wharf.url, "demo", "bogus") == 400

        assert set_status(wharf.url, "demo", "archived", "read-only now") == 200
        done = twine(wharf.url, make_wheel(tmp_path / "v2", "demo", "2.0"), env)
        assert done.returncode != 0 and "archived" in done.stdout + done.stderr
        uv = shutil.which("uv") or "uv"
        reqs = tmp_path / "req.in"
        reqs.write_text("demo\n")
        resolved = subprocess.run([uv, "pip", "compile", "--no-header", "--index-url", index, str(reqs)],
                                  env=client_env(tmp_path / "uv-home"), capture_output=True, text=True, timeout=120)
        assert resolved.returncode == 0 and "demo==1.0" in resolved.stdout, resolved.stderr

        # wharf status on the command line, seen by the running index.
        subprocess.run([sys.executable, "-m", "app", "status", "demo", "quarantined", "--reason", "malware",
                        "--packages", str(packages)], cwd=ROOT, check=True, capture_output=True)
        status, _h, body = http(wharf.url + "/packages/demo-1.0-py3-none-any.whl")
        assert status == 403 and b"quarantined: malware" in body
        assert http(wharf.url + "/packages/demo-1.0-py3-none-any.whl.metadata")[0] == 403
        done = twine(wharf.url, make_wheel(tmp_path / "v3", "demo", "3.0"), env)
        assert done.returncode != 0 and "quarantined" in done.stdout + done.stderr
        assert "refused upload demo-3.0-py3-none-any.whl: project demo is quarantined" in wharf.log()
