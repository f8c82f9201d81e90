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
