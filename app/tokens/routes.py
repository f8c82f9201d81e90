"""The HTTP side of tokens: the token API (/_/tokens) and trusted publishing (/_/oidc/, PEP 807 discovery).

``/_/tokens`` lets a user script their tokens: POST creates one (JSON in, the token once
in the answer), GET lists theirs, DELETE /_/tokens/<id> revokes one. It takes the user's
password, or a token with the ``manage`` action; a token made with a token gets no more
than that token has.

Trusted publishing answers where uv (and gh-action-pypi-publish) look, at the root of
the host: ``/_/oidc/audience``, ``/_/oidc/mint-token`` and ``/_/oidc/burn-token``, and
PEP 807's ``/.well-known/pytp/<sha256 of the upload path>``. Answers are JSON; failures
carry PEP 807's error shape ({"message", "errors": [{"code", "description"}]}).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from bottle import Bottle, HTTPResponse, request

from ..auth import Access, Throttled
from .oidc import OidcRefused
from .tokens import Grant, Tokens, parse_actions, parse_duration, parse_projects

audit = logging.getLogger("wharf.audit")

PYTP_TYPE = "application/vnd.pypi.pytp.v1+json"
ACCEPTED = (PYTP_TYPE, "application/json", "*/*", "application/*")
MAX_BODY = 64 * 1024
UPLOAD_PATHS = ("", "/", "/legacy", "/legacy/")


def client() -> str:
    """The client's address as the app sees it through trusted proxies (app/proxy.py)."""
    return request.environ.get("REMOTE_ADDR") or "?"


def answer(status: int, data: dict, content_type: str = "application/json") -> HTTPResponse:
    return HTTPResponse(json.dumps(data, indent=1) + "\n", status=status,
                        headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def failure(status: int, code: str, message: str) -> HTTPResponse:
    """PEP 807's error response; the message also says it in one line for clients that show only that."""
    return answer(status, {"message": message, "errors": [{"code": code, "description": message}]})


def read_json() -> dict:
    try:
        length = int(request.environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0 or length > MAX_BODY:
        raise failure(413 if length > MAX_BODY else 400, "invalid-request", "send a JSON body of at most 64 KiB")
    try:
        data = json.loads(request.environ["wsgi.input"].read(length) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise failure(400, "invalid-request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise failure(400, "invalid-request", "the body must be a JSON object")
    return data


def register_token_api(app: Bottle, access: Access, tokens: Tokens) -> None:
    def who() -> tuple[str, Grant | None]:
        """The user this request is from, with its token grant; 401/403 as JSON otherwise."""
        creds = access.credentials()
        if creds is None:
            raise failure(401, "unauthenticated", "give your user name and password, or a token with the manage action")
        try:
            ok = access.authenticate(*creds)
        except Throttled as refusal:
            raise failure(429, "throttled", str(refusal.body)) from None
        if not ok:
            raise failure(401, "unauthenticated", request.environ.get("wharf.token.refusal") or "invalid username or password")
        grant = access.grant()
        if grant is not None and (grant.record.kind != "user" or "manage" not in grant.record.actions):
            raise failure(403, "forbidden", f"{grant.describe()} does not allow manage")
        return (grant.user if grant else creds[0]), grant

    @app.post("/_/tokens")
    def create_token():
        user, grant = who()
        data = read_json()
        try:
            projects = parse_projects(data.get("projects", []))
            actions = parse_actions(data.get("actions", ["update"]))
            lifetime = data.get("expires")
            lifetime = parse_duration(str(lifetime)) if lifetime not in (None, "", "never") else None
        except ValueError as exc:
            raise failure(400, "invalid-request", str(exc)) from None
        if grant is not None:  # no more than the token it is made with
            record = grant.record
            wider = [a for a in actions if a not in record.actions]
            if wider or (record.projects and (not projects or set(projects) - set(record.projects))):
                raise failure(403, "forbidden", f"{grant.describe()} cannot make a token with more projects or "
                                                "actions than it has")
            if record.expires is not None:
                lifetime = min(lifetime or float("inf"), record.expires - time.time())
        token, record = tokens.create(user, projects=projects, actions=actions, lifetime=lifetime,
                                      description=str(data.get("description", "")),
                                      by=f"{grant.describe() if grant else user} over HTTP from {client()}")
        raise answer(201, {"token": token, **record.public()})

    @app.get("/_/tokens")
    def list_tokens():
        user, _ = who()
        raise answer(200, {"tokens": [r.public() for r in tokens.list(user)]})

    @app.delete("/_/tokens/<token_id>")
    def revoke_token(token_id: str):
        user, grant = who()
        record = tokens.store.get(token_id)
        if record is None or record.user != user:
            raise failure(404, "not-found", f"you have no token {token_id[:20]!r}")
        tokens.revoke(token_id, by=f"{grant.describe() if grant else user} over HTTP from {client()}")
        raise answer(200, {"revoked": token_id})


def register_trusted_publishing(app: Bottle, trusted) -> None:
    def accept_pytp() -> None:
        wanted = request.environ.get("HTTP_ACCEPT", "")
        if wanted and not any(kind.split(";")[0].strip() in ACCEPTED for kind in wanted.split(",")):
            raise failure(406, "not-acceptable", f"this endpoint answers {PYTP_TYPE}")

    def base() -> str:
        return request.urlparts.scheme + "://" + request.urlparts.netloc + request.script_name.rstrip("/")

    @app.get("/.well-known/pytp/<key>")
    def pytp_discovery(key: str):
        accept_pytp()
        prefix = request.script_name.rstrip("/")
        keys = {hashlib.sha256((prefix + path).encode()).hexdigest() for path in UPLOAD_PATHS}
        if key.lower() not in keys:
            raise HTTPResponse("", status=404, headers={"Cache-Control": "no-store"})
        raise answer(200, {"audience-endpoint": base() + "/_/oidc/audience",
                           "mint-token-endpoint": base() + "/_/oidc/mint-token"}, PYTP_TYPE)

    @app.get("/_/oidc/audience")
    def oidc_audience():
        accept_pytp()
        raise answer(200, {"audience": trusted.audience})

    @app.post("/_/oidc/mint-token")
    def oidc_mint_token():
        accept_pytp()
        data = read_json()
        identity = data.get("token")
        if not isinstance(identity, str) or not identity:
            raise failure(400, "invalid-payload", 'send {"token": "<the OIDC identity token>"}')
        try:
            minted = trusted.mint(identity, client())
        except OidcRefused as refusal:
            raise failure(422, refusal.code, f"trusted publishing refused: {refusal}") from None
        raise answer(200, {"success": True, "token": minted.token, "expires": minted.expires})

    @app.post("/_/oidc/burn-token")
    def oidc_burn_token():
        data = read_json()
        if isinstance(data.get("token"), str):
            trusted.burn(data["token"], client())
        raise answer(202, {"success": True})
