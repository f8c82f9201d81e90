"""/health tells the truth (issue 14, point 12): gunicorn running the index, asked as a load balancer asks.

The index runs as root without the capabilities that let root ignore file modes
(``setpriv``), so a mode change makes a file unreadable or a directory unwritable for it, as
for any service user. Each fault must turn "ok" into "degraded" with its reason, and
undoing it must turn it back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.auth import set_password
from tests.support import ROOT, free_port, make_wheel, stop_process

pytestmark = pytest.mark.slow


def health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def test_unreadable_password_file_and_unwritable_directories_are_reported(tmp_path: Path, figures):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    packages, state = tmp_path / "packages", tmp_path / "state"
    make_wheel(packages, "alpha", "1.0")
    users = tmp_path / "htpasswd"
    set_password(users, "alice", "pw", rounds=4)
    port = free_port()
    log = open(tmp_path / "wharf.log", "wb")
    proc = subprocess.Popen(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "app",
                             "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--password-file", str(users), "--state-dir", str(state), str(packages)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    faults = {
        "password file unreadable": (lambda: users.chmod(0o000), lambda: users.chmod(0o640), "password file"),
        "password file missing": (lambda: users.rename(users.with_suffix(".gone")),
                                  lambda: users.with_suffix(".gone").rename(users), "password file"),
        "packages directory read-only": (lambda: packages.chmod(0o555), lambda: packages.chmod(0o755),
                                         "packages directory"),
        "state directory read-only": (lambda: state.chmod(0o555), lambda: state.chmod(0o755), "state directory"),
    }
    seen = {}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if health(port)["status"] == "ok":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "wharf.log").read_text()
            time.sleep(0.2)
        for label, (break_it, fix_it, reason) in faults.items():
            break_it()
            try:
                report = health(port)
            finally:
                fix_it()
            assert report["status"] == "degraded", (label, report)
            assert any(reason in problem for problem in report["problems"]), (label, report)
            seen[label] = report["problems"]
            assert health(port)["status"] == "ok", label
    finally:
        stop_process(proc)
        log.close()
    figures.record("health", {"faults_tried": len(faults), "reported_ok_while_faulty": 0, "reasons": seen})
