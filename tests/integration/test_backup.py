"""`wharf backup` while uploads keep coming, then `wharf restore` into a fresh node, for real.

On SQLite (the default) and on PostgreSQL: a running index with files, a yank, a project
status and an API token is backed up while a thread keeps uploading; the backup is
restored into a fresh packages directory and state directory (or database); a node
started on the restored state serves the same files (same bytes), the yank, the status,
and accepts the token.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from passlib.hash import bcrypt

from tests.integration.test_nodes import JSON, PASSWORD, files_on, post_form, upload
from tests.support import ROOT, WharfProcess, http, make_wheel
from tests.integration.test_publish import BOUNDARY, basic, form_body, upload_fields

pytestmark = pytest.mark.slow


def wharf(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"wharf {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def where(packages: Path, state: Path, database_url: str, *, packages_option: bool = True) -> list[str]:
    found = ["--packages", str(packages)] if packages_option else []
    return [*found, "--state-dir", str(state), "--database-url", database_url]


def start(base: Path, packages: Path, state: Path, database_url: str) -> WharfProcess:
    htpasswd = base / "htpasswd"
    if not htpasswd.exists():
        htpasswd.write_text(f"alice:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    packages.mkdir(parents=True, exist_ok=True)
    return WharfProcess(packages, "--state-dir", str(state), "--database-url", database_url, "--scan-interval", "0.2",
                        "--password-file", str(htpasswd), "--login-failures-allowed", "100000",
                        log=base / f"wharf-{packages.name}.log")


def check_backup_and_restore(tmp_path: Path, database_url: str, restored_url: str) -> None:
    packages, state = tmp_path / "packages", tmp_path / "state"
    with start(tmp_path, packages, state, database_url) as node:
        early = [make_wheel(tmp_path / "dists", "keep", f"1.{n}") for n in range(3)]
        for n, wheel in enumerate(early):
            assert upload(node, wheel, "keep", f"1.{n}")[0] == 200
        status, _h, body = post_form(node, {":action": "yank", "name": "keep", "version": "1.0", "reason": "bad"})
        assert status == 200, body
        wharf("status", "keep", "deprecated", "--reason", "use keep2", *where(packages, state, database_url))
        token = wharf("token", "create", "--user", "alice", "--projects", "keep",
                      *where(packages, state, database_url, packages_option=False),
                      "--password-file", str(tmp_path / "htpasswd")).stdout.strip()

        # Uploads keep coming while the backup runs.
        answers: list[int] = []
        stop = threading.Event()

        def keep_uploading() -> None:
            n = 0
            while not stop.is_set() and n < 200:
                wheel = make_wheel(tmp_path / "busy", "busy", f"2.{n}", padding=20_000)
                answers.append(upload(node, wheel, "busy", f"2.{n}")[0])
                n += 1

        thread = threading.Thread(target=keep_uploading)
        thread.start()
        try:
            while len(answers) < 3:
                threading.Event().wait(0.05)
            done = wharf("backup", str(tmp_path / "backup"), *where(packages, state, database_url))
            during = len(answers)
        finally:
            stop.set()
            thread.join(120)
        assert "file(s) copied" in done.stdout
        assert set(answers) == {200} and len(answers) > during >= 3  # uploads went on around the backup
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    saved = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert {w.name for w in early} <= set(saved)
    assert 3 <= len([p for p in saved if p.startswith("busy-")]) < len(answers)

    fresh_packages, fresh_state = tmp_path / "restored" / "packages", tmp_path / "restored" / "state"
    wharf("restore", str(tmp_path / "backup"), *where(fresh_packages, fresh_state, restored_url))
    with start(tmp_path, fresh_packages, fresh_state, restored_url) as node:
        # The same files, byte for byte, each listed once and served.
        listed = {f["filename"]: f for p in ("keep", "busy") for f in files_on(node, p)}
        assert set(listed) == set(saved)
        for name, digest in saved.items():
            status, _h, got = http(f"{node.url}/packages/{name}")
            assert status == 200 and hashlib.sha256(got).hexdigest() == digest == listed[name]["hashes"]["sha256"]
        # The yank, the status and the token came along.
        assert listed[early[0].name]["yanked"] == "bad" and listed[early[1].name]["yanked"] is False
        status, _h, body = http(f"{node.url}/simple/keep/", headers=JSON)
        assert json.loads(body)["project-status"] == {"status": "deprecated", "reason": "use keep2"}
        later = make_wheel(tmp_path / "later", "keep", "3.0")
        data = later.read_bytes()
        status, _h, body = http(node.url + "/legacy/", "POST",
                                {"Authorization": basic("__token__", token),
                                 "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                                form_body(upload_fields("keep", "3.0", data), (later.name, data)))
        assert status == 200, body
        # An upload record came along too: the same name with other bytes is refused.
        other = make_wheel(tmp_path / "other", "keep", "1.1", padding=10)
        assert upload(node, other, "keep", "1.1")[0] == 409
    assert "Traceback" not in node.log()


def test_backup_while_uploading_and_restore_on_sqlite(tmp_path: Path):
    check_backup_and_restore(tmp_path, "", "")


def test_backup_while_uploading_and_restore_on_postgresql(tmp_path: Path, postgres):
    check_backup_and_restore(tmp_path, postgres.new_database(), postgres.new_database())


def test_restore_refuses_a_state_that_is_not_fresh_and_an_unfinished_backup(tmp_path: Path):
    state = tmp_path / "state"
    packages = tmp_path / "packages"
    packages.mkdir()
    wharf("backup", str(tmp_path / "b"), "--packages", str(packages), "--state-dir", str(state))
    refused = subprocess.run([sys.executable, "-m", "app", "restore", str(tmp_path / "b"), "--packages",
                              str(packages), "--state-dir", str(state)], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 1 and "fresh state directory" in refused.stderr
    (tmp_path / "b" / "manifest.json").unlink()
    refused = subprocess.run([sys.executable, "-m", "app", "restore", str(tmp_path / "b"), "--packages",
                              str(packages), "--state-dir", str(tmp_path / "new")], cwd=ROOT, capture_output=True,
                             text=True)
    assert refused.returncode == 1 and "unfinished" in refused.stderr
