"""The health endpoint: up or down for anyone, details only where listing is allowed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from passlib.apache import HtpasswdFile

from tests.support import call_wsgi, make_wheel


def _app(make_app, packages: Path, **options):
    make_wheel(packages, "demo", "1.0")
    return make_app(**options), packages


def test_open_index_reports_counts(make_app, packages):
    app, _ = _app(make_app, packages)
    status, headers, body = call_wsgi(app, "/health")
    data = json.loads(body)
    assert status == 200 and headers["cache-control"] == "no-store"
    assert data["status"] == "ok" and data["projects"] == 1 and data["files"] == 1


def test_private_index_tells_anonymous_callers_only_up_or_down(make_app, packages):
    app, _ = _app(make_app, packages, users={"alice": "pw"}, authenticate=("update", "download", "list"))
    status, _, body = call_wsgi(app, "/health")
    assert status == 200 and set(json.loads(body)) == {"status", "time"}
    token = base64.b64encode(b"alice:pw").decode()
    status, _, body = call_wsgi(app, "/health", headers={"Authorization": f"Basic {token}"})
    assert json.loads(body)["files"] == 1


def test_unreadable_packages_directory_is_unhealthy(make_app, packages):
    app, packages = _app(make_app, packages)
    for item in packages.rglob("*"):
        if item.is_file():
            item.unlink()
    for item in sorted(packages.rglob("*"), reverse=True):
        item.rmdir()
    packages.rmdir()
    status, _, body = call_wsgi(app, "/health")
    data = json.loads(body)
    assert status == 503 and data["status"] == "error" and data["problems"]


def test_unreadable_password_file_and_broken_permissions_are_degraded_with_reasons(make_app, packages, tmp_path):
    users = tmp_path / "htpasswd"
    HtpasswdFile(str(users), new=True).save()
    rules = tmp_path / "permissions.ini"
    rules.write_text("[projects]\nalice = mine\n")
    app, _ = _app(make_app, packages, password_file=str(users), permissions_file=rules)
    assert json.loads(call_wsgi(app, "/health")[2])["status"] == "ok"
    rules.write_text("[project]\nalice = mine\n")
    status, _, body = call_wsgi(app, "/health")
    data = json.loads(body)
    assert status == 200 and data["status"] == "degraded"
    assert any("permissions file" in p and "refused" in p for p in data["problems"])
    rules.write_text("[projects]\nalice = mine\n")
    users.unlink()
    data = json.loads(call_wsgi(app, "/health")[2])
    assert data["status"] == "degraded" and any("password file" in p for p in data["problems"])


def test_private_index_nobody_can_log_in_to_is_down_for_anonymous_callers(make_app, packages, tmp_path):
    users = tmp_path / "htpasswd"
    HtpasswdFile(str(users), new=True).save()
    app, _ = _app(make_app, packages, password_file=str(users), authenticate=("update", "download", "list"))
    users.unlink()
    status, _, body = call_wsgi(app, "/health")
    assert status == 503 and json.loads(body).keys() == {"status", "time"} and json.loads(body)["status"] == "error"


def test_a_stalled_scanner_is_degraded_and_says_what_it_reads(make_app, packages):
    import os
    import time

    app, _ = _app(make_app, packages, watch=True)
    heartbeat = app.config["wharf.catalog"].state_dir / "scanner.heartbeat"
    deadline = time.monotonic() + 10
    while not heartbeat.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(call_wsgi(app, "/health")[2])["status"] == "ok"
    app.config["wharf.catalog"].close()  # the scanner stops beating, as a stuck one would
    heartbeat.write_text("/data/packages/huge-1.0.tar.gz")
    old = time.time() - 120
    os.utime(heartbeat, (old, old))
    data = json.loads(call_wsgi(app, "/health")[2])
    assert data["status"] == "degraded"
    assert any("scanner" in p and "huge-1.0.tar.gz" in p and "for 12" in p for p in data["problems"]), data
