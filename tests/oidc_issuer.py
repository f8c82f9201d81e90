"""A test OIDC issuer on loopback: discovery document, JWKS, and a GitHub-Actions-like token endpoint.

It plays both the CI system's identity provider (signing JWTs with its RSA key) and the
runner's token service uv asks (``ACTIONS_ID_TOKEN_REQUEST_URL`` with ``&audience=`` and
``Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN``). A real HTTP server on a free
port, stopped by ``close()``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

REQUEST_TOKEN = "runner-request-token"


def github_claims(repository: str = "acme/mylib", **extra) -> dict:
    """Claims shaped like a GitHub Actions identity token's."""
    owner = repository.split("/")[0]
    claims = {
        "sub": f"repo:{repository}:environment:release", "repository": repository, "repository_owner": owner,
        "repository_owner_id": "1001", "repository_id": "2002", "ref": "refs/tags/v1.0",
        "job_workflow_ref": f"{repository}/.github/workflows/release.yml@refs/tags/v1.0",
        "workflow_ref": f"{repository}/.github/workflows/release.yml@refs/tags/v1.0",
        "environment": "release", "event_name": "push",
    }
    claims.update(extra)
    return claims


def gitlab_claims(project_path: str = "acme/mylib", **extra) -> dict:
    """Claims shaped like a GitLab CI id_token's."""
    claims = {
        "sub": f"project_path:{project_path}:ref_type:tag:ref:v1.0", "project_path": project_path,
        "namespace_path": project_path.split("/")[0], "project_id": "3003", "ref": "v1.0", "ref_type": "tag",
        "environment": "release",
        "ci_config_ref_uri": f"gitlab.com/{project_path}//.gitlab-ci.yml@refs/tags/v1.0",
    }
    claims.update(extra)
    return claims


class TestIssuer:
    __test__ = False  # not a test class, whatever its name

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "key-1"
        self.claims = github_claims()  # what the token endpoint signs next
        self.requests: list[str] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send_json(self, status: int, data: dict) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                issuer.requests.append(self.path)
                parts = urlsplit(self.path)
                if parts.path == "/.well-known/openid-configuration":
                    return self.send_json(200, {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks",
                                                "id_token_signing_alg_values_supported": ["RS256"]})
                if parts.path == "/jwks":
                    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(issuer.key.public_key(), as_dict=True)
                    return self.send_json(200, {"keys": [{**jwk, "kid": issuer.kid, "use": "sig", "alg": "RS256"}]})
                if parts.path == "/token":
                    if self.headers.get("Authorization", "").lower() != f"bearer {REQUEST_TOKEN}":
                        return self.send_json(401, {"message": "bad request token"})
                    audience = parse_qs(parts.query).get("audience", [""])[-1]
                    return self.send_json(200, {"value": issuer.sign(aud=audience)})
                self.send_json(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, *, aud: str, key=None, kid: str | None = None, lifetime: int = 300, iat_offset: int = 0,
             iss: str | None = None, jti: str | None = None, base: dict | None = None, **claims) -> str:
        """A token for ``aud`` with ``base`` (default: this issuer's claims) and ``claims`` on top."""
        now = int(time.time()) + iat_offset
        payload = {**(self.claims if base is None else base), **claims, "iss": iss or self.url, "aud": aud, "iat": now, "nbf": now,
                   "exp": now + lifetime, "jti": jti or str(uuid.uuid4())}
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
