"""A removed file's name keeps its bytes: other bytes are refused, also after the catalog was rebuilt."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth import set_password
from tests.support import WharfProcess, client_env, http, make_wheel

pytestmark = pytest.mark.slow


def twine(url: str, wheel: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                           "--repository-url", url + "/", "-u", "alice", "-p", "secret", str(wheel)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_removed_name_cannot_take_other_bytes(tmp_path: Path):
    packages = tmp_path / "packages"
    packages.mkdir()
    original = make_wheel(tmp_path / "a", "pinned", "1.0")
    changed = make_wheel(tmp_path / "b", "pinned", "1.0", summary="other bytes")
    assert original.read_bytes() != changed.read_bytes()
    htpasswd = tmp_path / "htpasswd"
    set_password(htpasswd, "alice", "secret", rounds=4)
    env = client_env(tmp_path / "home")
    args = ("--password-file", str(htpasswd))
    import base64
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    with WharfProcess(packages, *args) as wharf:
        assert twine(wharf.url, original, env).returncode == 0
        assert http(wharf.url + "/packages/" + original.name, "DELETE", auth)[0] == 200
        done = twine(wharf.url, changed, env)
        assert done.returncode != 0 and "cannot be reused" in done.stdout + done.stderr
    # The derived catalog is rebuilt from scratch: the rule holds all the same.
    for db in (packages / ".wharf").glob("catalog*"):
        db.unlink() if db.is_file() else shutil.rmtree(db)
    with WharfProcess(packages, *args) as wharf:
        done = twine(wharf.url, changed, env)
        assert done.returncode != 0 and "cannot be reused" in done.stdout + done.stderr
        assert twine(wharf.url, original, env).returncode == 0  # the same bytes again: accepted
        assert http(wharf.url + "/packages/" + original.name)[2] == original.read_bytes()
    # An index that allows overwriting allows this too.
    with WharfProcess(packages, *args, "--overwrite") as wharf:
        assert http(wharf.url + "/packages/" + original.name, "DELETE", auth)[0] == 200
        assert twine(wharf.url, changed, env).returncode == 0
