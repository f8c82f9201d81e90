"""The health endpoint: up or down for anyone, details only where listing is allowed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from passlib.apache import HtpasswdFile

from app import create_app
from app.settings import Settings
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
