"""Trusted publishing for real: ``uv publish --trusted-publishing always`` in a simulated GitHub
Actions job, against Wharf over HTTPS (uv asks https://<host>/_/oidc/...), with a test OIDC
issuer on loopback; then each refusal, and a GitLab-style exchange made by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.serving.local_ca import make_local_ca
from tests.oidc_issuer import REQUEST_TOKEN, TestIssuer, gitlab_claims
from tests.support import ROOT, client_env, free_port, make_wheel, stop_process

pytestmark = pytest.mark.slow

AUDIENCE = "wharf-test"


class HttpsWharf:
    """Wharf under gunicorn with TLS on a free loopback port (stopped by PID)."""

    def __init__(self, base: Path, issuer: TestIssuer):
        self.base = base
        self.packages = base / "packages"
        self.packages.mkdir()
        self.ca, cert, key = make_local_ca(base / "tls", "127.0.0.1")
        (base / "htpasswd").write_text("")
        self.publishers = base / "publishers.ini"
        self.publishers.write_text(
            f"[mylib-release]\nprojects = mylib\nissuer = {issuer.url}\nrepository = acme/mylib\n"
            "job_workflow_ref = acme/mylib/.github/workflows/release.yml@*\nenvironment = release\n\n"
            f"[other-release]\nprojects = otherlib\nissuer = {issuer.url}\nrepository = acme/otherlib\n\n"
            f"[gitlab-release]\nprojects = gitlib\nissuer = {issuer.url}\nproject_path = acme/gitlib\n"
            "ref = v*\nci_config_ref_uri = gitlab.com/acme/gitlib//.gitlab-ci.yml@refs/tags/*\n")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("WHARF_")}
        env.update({"WHARF_PACKAGES": str(self.packages), "WHARF_STATE_DIR": str(base / "state"),
                    "WHARF_PASSWORD_FILE": str(base / "htpasswd"), "WHARF_PUBLISHERS_FILE": str(self.publishers),
                    "WHARF_OIDC_AUDIENCE": AUDIENCE, "WHARF_LOG_FILE": str(base / "wharf.log")})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{self.port}", "--certfile", str(cert),
             "--keyfile", str(key), "app.wsgi:application"], cwd=ROOT, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(base / "gunicorn.log", "wb"))
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=str(self.ca))
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                                  urllib.request.ProxyHandler({}))
        deadline = __import__("time").monotonic() + 30
        while True:
            try:
                self.request("/health")
                break
            except OSError:
                if self.proc.poll() is not None or __import__("time").monotonic() > deadline:
                    raise RuntimeError((base / "gunicorn.log").read_text())
                __import__("time").sleep(0.2)

    def request(self, path: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
        import urllib.error
        import urllib.request

        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(self.url + path, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")
        try:
            with self.opener.open(req, timeout=30) as answer:
                raw = answer.read()
                return answer.status, json.loads(raw) if raw.strip().startswith(b"{") else {"text": raw.decode()}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw.strip().startswith(b"{") else {"text": raw.decode()}

    def audit(self) -> str:
        return (self.base / "wharf.log").read_text()

    def published(self) -> list[str]:
        return sorted(p.name for p in self.packages.iterdir() if not p.name.startswith("."))

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def issuer():
    issuer = TestIssuer()
    yield issuer
    issuer.close()


@pytest.fixture(scope="module")
def wharf(tmp_path_factory, issuer):
    server = HttpsWharf(tmp_path_factory.mktemp("tp"), issuer)
    yield server
    server.stop()


def uv_publish(wharf: HttpsWharf, issuer: TestIssuer, home: Path, dist: Path) -> subprocess.CompletedProcess:
    env = client_env(home, ca=wharf.ca, GITHUB_ACTIONS="true", ACTIONS_ID_TOKEN_REQUEST_TOKEN=REQUEST_TOKEN,
                     ACTIONS_ID_TOKEN_REQUEST_URL=f"{issuer.url}/token?api-version=2.0")
    return subprocess.run(["uv", "publish", "--trusted-publishing", "always", "--publish-url", wharf.url + "/legacy/",
                           str(dist)], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_uv_publish_with_trusted_publishing_lands(wharf, issuer, tmp_path: Path):
    issuer.claims = {**issuer.claims, "repository": "acme/mylib"}
    dist = make_wheel(tmp_path / "dist", "mylib", "1.0")
    done = uv_publish(wharf, issuer, tmp_path / "home", dist)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (wharf.packages / dist.name).read_bytes() == dist.read_bytes()
    # uv asked the token endpoint for our audience, and the index minted, used and burned a token.
    assert any(f"audience={AUDIENCE}" in path for path in issuer.requests)
    log = wharf.audit()
    assert "minted token" in log and "publisher mylib-release" in log
    assert "used to update mylib" in log
    assert "revoked by its holder" in log  # uv burns the minted token when done (POST /_/oidc/burn-token)


@pytest.mark.parametrize("repository, version, expected", [
    # The token matches otherlib's publisher: its minted token cannot upload mylib.
    ("acme/otherlib", "2.0", ["403", "may not update project 'mylib'"]),
    # No publisher matches: the exchange itself is refused, saying which claim differs.
    ("mallory/mylib", "3.0", ["422", "no trusted publisher matches",
                              "claim repository is 'mallory/mylib', not 'acme/mylib'"]),
])
def test_uv_publish_refused(wharf, issuer, tmp_path: Path, repository: str, version: str, expected: list[str]):
    issuer.claims = {**issuer.claims, "repository": repository}
    try:
        dist = make_wheel(tmp_path / "dist", "mylib", version)
        done = uv_publish(wharf, issuer, tmp_path / "home", dist)
    finally:
        issuer.claims = {**issuer.claims, "repository": "acme/mylib"}
    assert done.returncode != 0
    assert all(text in done.stderr for text in expected), done.stderr
    assert dist.name not in wharf.published()


def mint(wharf: HttpsWharf, token: str) -> tuple[int, dict]:
    return wharf.request("/_/oidc/mint-token", {"token": token})


@pytest.mark.parametrize("case", ["wrong-audience", "expired", "bad-signature", "unknown-issuer", "not-yet-valid",
                                  "unknown-key"])
def test_mint_refusals(wharf, issuer, case: str):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "wrong-audience": lambda: issuer.sign(aud="pypi"),
        "expired": lambda: issuer.sign(aud=AUDIENCE, iat_offset=-900, lifetime=300),
        "bad-signature": lambda: issuer.sign(aud=AUDIENCE, key=other_key),
        "unknown-issuer": lambda: issuer.sign(aud=AUDIENCE, iss="https://token.example.org"),
        "not-yet-valid": lambda: issuer.sign(aud=AUDIENCE, iat_offset=600),
        "unknown-key": lambda: issuer.sign(aud=AUDIENCE, key=other_key, kid="key-2"),
    }[case]()
    before = wharf.published()
    status, body = mint(wharf, token)
    assert 400 <= status < 500 and "token" not in body
    expected = {"wrong-audience": "invalid-audience", "expired": "expired-token", "bad-signature": "invalid-signature",
                "unknown-issuer": "unknown-issuer", "not-yet-valid": "invalid-token", "unknown-key": "invalid-token"}
    assert body["errors"][0]["code"] == expected[case], body
    assert body["message"].startswith("trusted publishing refused")
    assert wharf.published() == before
    assert "refused trusted publishing" in wharf.audit()


def test_an_identity_token_is_exchanged_once(wharf, issuer):
    token = issuer.sign(aud=AUDIENCE)
    status, body = mint(wharf, token)
    assert status == 200 and body["token"].startswith("wharf_") and body["expires"] > 0
    status, body = mint(wharf, token)
    assert status == 422 and body["errors"][0]["code"] == "replayed-token", body


def test_gitlab_style_exchange_then_upload(wharf, issuer, tmp_path: Path):
    """A GitLab CI job posts its id_token (GitLab's claim names) by hand, then uploads with twine."""
    status, body = mint(wharf, issuer.sign(aud=AUDIENCE, base=gitlab_claims("acme/gitlib")))
    assert status == 200, body
    dist = make_wheel(tmp_path / "dist", "gitlib", "1.0")
    env = client_env(tmp_path / "home")
    done = subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                           "--cert", str(wharf.ca), "--repository-url", wharf.url + "/legacy/", "-u", "__token__",
                           "-p", body["token"], str(dist)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert dist.name in wharf.published()
    # A ref the publisher does not trust is refused.
    status, body = mint(wharf, issuer.sign(aud=AUDIENCE, base=gitlab_claims("acme/gitlib", ref="main")))
    assert status == 422 and "claim ref is 'main', not 'v*'" in body["message"], body


def test_discovery_document_and_audience(wharf):
    import hashlib

    status, body = wharf.request("/.well-known/pytp/" + hashlib.sha256(b"/legacy/").hexdigest())
    assert status == 200
    assert body == {"audience-endpoint": wharf.url + "/_/oidc/audience",
                    "mint-token-endpoint": wharf.url + "/_/oidc/mint-token"}
    status, _ = wharf.request("/.well-known/pytp/" + hashlib.sha256(b"/elsewhere/").hexdigest())
    assert status == 404
    assert wharf.request("/_/oidc/audience") == (200, {"audience": AUDIENCE})
    status, _ = wharf.request("/_/oidc/audience", headers={"Accept": "text/html"})
    assert status == 406
