"""app/tokens: the token format and store, scopes, Access's token hook, the publishers file, PEP 807 discovery."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

from app.tokens import open_tokens
from app.tokens.publishers import Publishers, make_publisher, parse_publishers
from app.tokens.tokens import TokenRefused, parse_duration, parse_projects, server_secret
from app.settings import Settings
from tests.oidc_issuer import TestIssuer
from tests.support import call_wsgi


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def test_tokens_are_stored_as_keyed_hashes_and_checked_by_id(tmp_path: Path):
    tokens = open_tokens(Settings(state_dir=tmp_path))
    token, record = tokens.create("alice", projects=("mylib",))
    assert token.startswith(f"wharf_{record.id}_")
    secret = token.split("_", 2)[2]
    data = b"".join(p.read_bytes() for p in tmp_path.glob("tokens.sqlite3*"))  # the WAL too
    assert secret.encode() not in data and record.digest.encode() in data
    assert stat.S_IMODE(os.stat(tmp_path / "token-secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "tokens.sqlite3").st_mode) == 0o600
    assert server_secret(tmp_path) == server_secret(tmp_path)  # made once
    assert tokens.check(token).record.id == record.id
    with pytest.raises(TokenRefused, match="unknown token"):
        tokens.check(token[:-2] + "xx")
    with pytest.raises(TokenRefused, match="malformed"):
        tokens.check("wharf_nope")
    assert tokens.revoke(record.id, by="test") and not tokens.revoke(record.id, by="test")
    with pytest.raises(TokenRefused, match="revoked"):
        tokens.check(token)


@pytest.mark.parametrize("text, seconds", [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45", 45), ("2w", 1209600)])
def test_durations(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "0d", "soon", "-1d", "3y"])
def test_bad_durations(bad: str):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_project_patterns_normalize():
    assert parse_projects("My_Lib, mylib-*") == ("my-lib", "mylib-*")
    assert parse_projects("*") == ()
    with pytest.raises(ValueError):
        parse_projects("my lib/..")


def test_tokens_through_access(make_app):
    app = make_app(users={"alice": "pw", "bob": "pw2"}, authenticate=("update", "list"))
    tokens = open_tokens(app.config["wharf.settings"])
    token, record = tokens.create("alice", actions=("update", "list"))
    assert call_wsgi(app, "/simple/", headers=basic("__token__", token))[0] == 200
    assert call_wsgi(app, "/simple/", headers=basic("alice", token))[0] == 200
    status, _, body = call_wsgi(app, "/simple/", headers=basic("bob", token))
    assert status == 401 and b"use the user name __token__" in body
    upload_only, _ = tokens.create("alice", actions=("update",))
    status, _, body = call_wsgi(app, "/simple/", headers=basic("__token__", upload_only))
    assert status == 403 and b"does not allow list" in body
    # nginx's auth_request check takes tokens too.
    assert call_wsgi(app, "/_auth/list", headers=basic("__token__", token))[0] == 204
    expiring, _ = tokens.create("alice", actions=("list",), lifetime=0.01)
    time.sleep(0.05)
    status, _, body = call_wsgi(app, "/simple/", headers=basic("__token__", expiring))
    assert status == 401 and b"expired" in body
    tokens.revoke(record.id, by="test")
    status, _, body = call_wsgi(app, "/simple/", headers=basic("__token__", token))
    assert status == 401 and b"was revoked" in body


def test_a_token_never_outlives_its_user(make_app, tmp_path: Path):
    app = make_app(users={"alice": "pw", "bob": "pw2"}, authenticate=("update", "list"))
    token, _ = open_tokens(app.config["wharf.settings"]).create("bob", actions=("list",))
    assert call_wsgi(app, "/simple/", headers=basic("__token__", token))[0] == 200
    htpasswd = Path(app.config["wharf.settings"].password_file)
    htpasswd.write_text("".join(line for line in htpasswd.read_text().splitlines(True) if not line.startswith("bob:")))
    status, _, body = call_wsgi(app, "/simple/", headers=basic("__token__", token))
    assert status == 401 and b"no longer a user" in body


@pytest.mark.parametrize("section, error", [
    ("projects = mylib\nissuer = github\nenvironment = release\n", "give repository or repository_id"),
    ("projects = mylib\nissuer = gitlab\nref = main\n", "give project_path or project_id"),
    ("projects = *\nissuer = github\nrepository = a/b\n", "name the projects"),
    ("projects = mylib\nissuer = https://ci.example.org\n", "at least one claim"),
    ("projects = mylib\nissuer = github\nrepository = a/b\naud = x\n", "'aud' cannot be a required claim"),
    ("projects = mylib\nissuer = ftp://x\nsub = y\n", "not an issuer"),
])
def test_publishers_that_would_trust_too_much_are_refused(section: str, error: str):
    with pytest.raises(ValueError, match=error):
        parse_publishers("[p]\n" + section)


def test_publisher_claims_match_exactly_or_by_pattern():
    publisher = make_publisher("p", "github", "mylib", {"repository": "acme/mylib",
                                                        "job_workflow_ref": "acme/mylib/.github/workflows/release.yml@*"})
    good = {"repository": "acme/mylib", "job_workflow_ref": "acme/mylib/.github/workflows/release.yml@refs/tags/v1"}
    assert publisher.mismatches(good) == []
    assert publisher.mismatches({**good, "repository": "acme/mylib2"}) == ["claim repository is 'acme/mylib2', not 'acme/mylib'"]
    assert publisher.mismatches({"repository": "acme/mylib"}) == ["claim job_workflow_ref is missing"]


def test_a_broken_publishers_file_trusts_nobody_until_fixed(tmp_path: Path):
    path = tmp_path / "publishers.ini"
    path.write_text("[p]\nprojects = mylib\nissuer = github\nrepository = acme/mylib\n")
    publishers = Publishers(path)
    assert [p.name for p in publishers.current()] == ["p"]
    path.write_text("[p]\nprojects = mylib\nissuer = github\n")
    assert publishers.current() == [] and "repository" in publishers.problem
    path.write_text("[q]\nprojects = mylib\nissuer = github\nrepository = acme/mylib\n\n")
    assert [p.name for p in publishers.current()] == ["q"]


def test_mint_and_discovery_in_process(make_app, tmp_path: Path):
    issuer = TestIssuer()
    try:
        publishers = tmp_path / "publishers.ini"
        publishers.write_text(f"[p]\nprojects = mylib\nissuer = {issuer.url}\nrepository = acme/mylib\n")
        app = make_app(users={"alice": "pw"}, publishers_file=publishers, server_name="pkg.example.com")
        status, _, body = call_wsgi(app, "/_/oidc/audience")
        assert status == 200 and json.loads(body) == {"audience": "pkg.example.com"}
        status, _, body = call_wsgi(app, "/_/oidc/mint-token", "POST",
                                    body=json.dumps({"token": issuer.sign(aud="pkg.example.com")}).encode())
        assert status == 200, body
        assert json.loads(body)["expires"] - time.time() == pytest.approx(900, abs=5)
        status, _, body = call_wsgi(app, "/_/oidc/mint-token", "POST", body=b"{}")
        assert status == 400 and json.loads(body)["errors"][0]["code"] == "invalid-payload"
        key = hashlib.sha256(b"/").hexdigest()
        status, headers, body = call_wsgi(app, "/.well-known/pytp/" + key, host="pkg.example.com")
        assert status == 200 and headers["content-type"] == "application/vnd.pypi.pytp.v1+json"
        assert json.loads(body)["mint-token-endpoint"] == "http://pkg.example.com/_/oidc/mint-token"
    finally:
        issuer.close()


def test_no_publishers_file_no_trusted_publishing(make_app):
    app = make_app(users={"alice": "pw"})
    assert call_wsgi(app, "/_/oidc/audience")[0] == 404
    assert call_wsgi(app, "/.well-known/pytp/" + hashlib.sha256(b"/").hexdigest())[0] == 404
