"""The credential check for nginx's auth_request (app/auth_request.py): 204 or 401, never cached."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from app import create_app
from app.auth import set_password
from app.settings import Settings
from tests.support import call_wsgi


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def protected(make_app):
    return make_app(users={"alice": "s3cret"}, authenticate=("update", "list"))


def test_valid_credentials_pass(protected):
    status, headers, body = call_wsgi(protected, "/_auth/list", headers=basic("alice", "s3cret"))
    assert (status, body) == (204, b"")
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("headers", [
    {},
    basic("alice", "wrong"),
    basic("mallory", "s3cret"),
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Bearer abc"},
])
def test_missing_or_bad_credentials_get_401_with_a_challenge(protected, headers):
    status, response_headers, _ = call_wsgi(protected, "/_auth/list", headers=headers)
    assert status == 401
    assert response_headers["www-authenticate"].startswith("Basic ")


def test_an_open_action_passes_without_credentials(protected):
    status, _, _ = call_wsgi(protected, "/_auth/download")
    assert status == 204


@pytest.mark.parametrize("action", ["delete", "LIST", "list/extra", ""])
def test_unknown_actions_are_404(protected, action):
    status, _, _ = call_wsgi(protected, f"/_auth/{action}", headers=basic("alice", "s3cret"))
    assert status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_a_request_that_could_change_something_needs_the_update_right(tmp_path: Path, packages: Path, method):
    users = tmp_path / "htpasswd"
    set_password(users, "alice", "s3cret", rounds=4)
    rules = tmp_path / "permissions.ini"
    rules.write_text("[projects]\nalice = mine\n")
    app = create_app(Settings(packages=(packages,), password_file=str(users), authenticate=("update",),
                              permissions_file=rules), watch=False)
    try:
        assert call_wsgi(app, "/_auth/download", headers={"X-Original-Method": "GET"})[0] == 204
        assert call_wsgi(app, "/_auth/download", headers={"X-Original-Method": method})[0] == 401
        ok = {"X-Original-Method": method, **basic("alice", "s3cret")}
        assert call_wsgi(app, "/_auth/download", headers=ok)[0] == 204
        rules.write_text("[project]\nalice = mine\n")  # misnamed: every update refused, with the reason for nginx
        status, headers, _ = call_wsgi(app, "/_auth/update", headers=ok)
        assert status == 403 and "permissions file" in headers["x-wharf-refusal"]
        for n in range(12):
            call_wsgi(app, "/_auth/update", headers={"X-Original-Method": method, **basic("alice", f"x{n}")})
        status, headers, _ = call_wsgi(app, "/_auth/update", headers={"X-Original-Method": method,
                                                                       **basic("alice", "y")})
        assert status == 403 and int(headers["x-wharf-retry-after"]) >= 1  # nginx answers 429 from this
    finally:
        app.config["wharf.catalog"].close()
