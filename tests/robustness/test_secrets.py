"""Secrets and access: a private index (downloads and listing protected) leaks nothing.

A sweep of every route x method x a few header tricks, made anonymously, through nginx
(HTTPS) and straight to gunicorn, first with nothing cached and again after an
authenticated client has warmed nginx's cache: no response may carry a protected byte
(a file's bytes or hash, its metadata, the name of a project the request did not name).
Then the files that hold secrets (htpasswd, TLS keys, the cache, the logs) are checked for
modes no wider than needed, and every log is searched for the password and the
Authorization header values used.
"""

from __future__ import annotations

import itertools
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from app.auth import set_password
from tests.support import ROOT, client_env, make_sdist, make_wheel

from .harness import PASSWORD, Client, Session, basic, sha256

pytestmark = pytest.mark.slow

ALICE = basic("alice", PASSWORD)
WRONG = "wrong-Password-4711"
SECRET = "topsecret-lib"
WHEEL = "alpha-1.0-py3-none-any.whl"
SECRET_WHEEL = "topsecret_lib-2.0-py3-none-any.whl"

# Every route the app and nginx have, in the spellings nginx normalizes or passes on.
ROUTES = [
    "/", "/projects/", "/projects", "/projects/?q=alpha", "/project/alpha/", "/project/alpha", "/project/Alpha/",
    "/simple/", "/simple", "/simple/alpha/", "/simple/alpha", "/simple/Alpha/", "/simple/alpha/?format=json",
    "/simple/./alpha/", "/simple//alpha/", "/%73imple/alpha/", "/simple/%61lpha/",
    "/packages/", "/packages", f"/packages/{WHEEL}", f"/packages/{WHEEL}.metadata", "/packages/alpha-1.0.tar.gz",
    f"/packages/{SECRET_WHEEL}", "/packages/%61lpha-1.0-py3-none-any.whl", f"/packages//{WHEEL}",
    f"/static/../packages/{WHEEL}", f"/packages/{WHEEL}?x=1", "/_auth/list", "/_auth/download",
    f"/upstream/alpha/{WHEEL}", "/legacy/", "/health", "/static/wharf.css", "/no-such-page",
]
PUBLIC = {"/health", "/static/wharf.css"}  # counts and stylesheets: no names, no files
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]


class Secrets:
    """What must not reach an anonymous client."""

    def __init__(self, packages: Path):
        self.files = {p.name: p.read_bytes() for p in packages.iterdir() if p.is_file()}
        self.hashes = {sha256(data) for data in self.files.values()}
        self.texts = [b"The alpha test package", b"The topsecret-lib test package", SECRET.encode(), b"topsecret_lib"]

    def leaks(self, path: str, headers: dict[str, str], body: bytes) -> list[str]:
        found = []
        if len(body) >= 16 and any(body in data for data in self.files.values()):
            found.append("file bytes")
        head = " ".join(v for k, v in headers.items() if k != "location")
        found += [f"hash {h[:12]}" for h in self.hashes if h in head or h.encode() in body]
        found += [f"text {t!r}" for t in self.texts if t in body and t.decode().lower() not in path.lower()]
        return found


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, test_ca):
    from tests.deploy.test_render import NGINX
    from tests.deploy.test_stack import Stack

    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    root = tmp_path_factory.mktemp("private") / "stack"
    make_wheel(root / "packages", "alpha", "1.0")
    make_sdist(root / "packages", "alpha", "1.0")
    make_wheel(root / "packages", SECRET, "2.0")
    users = root.parent / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    stack = Stack(root, "--password-file", str(users), "--authenticate", "update,download,list",
                  "--tls-cert", str(test_ca.cert), "--tls-key", str(test_ca.key), ca=test_ca.ca)
    stack.secrets = Secrets(root / "packages")
    yield stack
    stack.stop()


def anonymous_variants(method: str) -> list[dict[str, str]]:
    if method != "GET":
        return [{}]
    return [{}, {"Accept": "application/vnd.pypi.simple.v1+json"}, {"Range": "bytes=0-99"},
            {"If-None-Match": "*"}, {"Authorization": basic("alice", WRONG)}, {"Authorization": "Basic \u00e9"}]


def sweep(stack, session: Session, label: str, tally: Counter) -> list[str]:
    problems = []
    for path, method in itertools.product(ROUTES, METHODS):
        for headers in anonymous_variants(method):
            body = b"x=1" if method in ("POST", "PUT", "PATCH") else None
            status, response_headers, data = session.request(method, path, headers, body)
            tally[label] += 1
            if status >= 500:
                problems.append(f"{label} {method} {path} {headers}: {status}")
            leaked = stack.secrets.leaks(path, response_headers, data)
            if leaked:
                problems.append(f"{label} {method} {path} {headers}: {status} leaks {leaked}")
            if method == "GET" and not headers and path not in PUBLIC and 200 <= status < 300:
                problems.append(f"{label} GET {path}: {status} for an anonymous client")
    return problems


def warm(stack, session: Session) -> Counter:
    """Authenticated requests until nginx serves each cacheable page from its cache."""
    seen: Counter = Counter()
    for path in ROUTES:
        for headers in ({"Authorization": ALICE}, {"Authorization": ALICE, "Accept": "application/vnd.pypi.simple.v1+json"}):
            for _ in range(3):
                status, response_headers, _ = session.request("GET", path, headers)
                seen[response_headers.get("x-cache-status", "-")] += 1
    return seen


def test_no_protected_byte_reaches_an_anonymous_client(private, figures):
    nginx = Session(Client(private.https_port, private.ca))
    direct = Session(Client(private.app_port, private.ca, tls=False))
    tally: Counter = Counter()
    problems = sweep(private, nginx, "nginx cold", tally) + sweep(private, direct, "gunicorn", tally)
    cache = warm(private, nginx)
    assert cache["HIT"] >= 10, cache  # the cache really holds protected pages now
    problems += sweep(private, nginx, "nginx warm", tally)
    # Credentials still work after all that.
    status, _, data = nginx.request("GET", f"/packages/{WHEEL}", {"Authorization": ALICE})
    assert status == 200 and data == private.secrets.files[WHEEL]
    assert not problems, "\n".join(problems[:40])
    figures.record("secrets", {"anonymous_requests": sum(tally.values()), "by_pass": dict(tally),
                               "routes": len(ROUTES), "methods": len(METHODS), "cache_hits_warmed": cache["HIT"],
                               "protected_bytes_served": 0})


def test_no_password_or_authorization_value_in_any_log(private, tmp_path: Path, figures):
    nginx = Session(Client(private.https_port, private.ca))
    for path in ("/simple/alpha/", f"/packages/{WHEEL}", "/projects/", "/packages/"):
        assert nginx.request("GET", path, {"Authorization": ALICE})[0] == 200
        assert nginx.request("GET", path, {"Authorization": basic("alice", WRONG)})[0] == 401
    # A real client with the password on its command line.
    wheel = make_wheel(tmp_path / "dist", "logged", "1.0")
    done = subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                           "--repository-url", f"{private.url}/", "--cert", str(private.ca), "-u", "alice", "-p", PASSWORD,
                           str(wheel)], env=client_env(tmp_path / "home", ca=private.ca), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    nginx.close()
    private.wait_until(lambda: "logged-1.0" in (private.root / "logs" / "nginx-access.log").read_text()
                       or "POST / " in (private.root / "logs" / "nginx-access.log").read_text(), "the access log", 10)
    secrets = {
        "password": PASSWORD, "wrong password": WRONG,
        "Authorization value": ALICE.split()[1], "wrong Authorization value": basic("alice", WRONG).split()[1],
        "password, URL-encoded": PASSWORD.replace(" ", "%20"), "password, +-encoded": PASSWORD.replace(" ", "+"),
    }
    logs = sorted(p for p in (private.root / "logs").iterdir() if p.is_file()) + [private.log_path]
    assert any("nginx-access" in p.name for p in logs) and any(p.name == "wharf.log" for p in logs)
    found = []
    for log in logs:
        text = log.read_text(errors="replace")
        found += [f"{log.name}: {what}" for what, value in secrets.items() if value in text]
        if "authorization:" in text.lower():
            found.append(f"{log.name}: an Authorization header")
    assert not found, found
    figures.record("secrets", {"logs_searched": [p.name for p in logs], "secrets_found_in_logs": 0})


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_are_not_readable_more_than_needed(private, public_stack, tmp_path: Path, figures):
    modes = {}
    # wharf stack's own CA and server keys, and what it writes for the app.
    for name in ("tls/server.key", "tls/ca.key", "conf/wharf.env", "logs", "cache", "run/supervisor.sock"):
        path = public_stack.root / name
        modes[f"stack {name}"] = oct(_mode(path))
    assert _mode(public_stack.root / "tls/server.key") & 0o077 == 0
    assert _mode(public_stack.root / "tls/ca.key") & 0o077 == 0
    assert _mode(public_stack.root / "conf/wharf.env") & 0o007 == 0
    assert _mode(public_stack.root / "logs") & 0o007 == 0  # the logs name private projects
    assert _mode(public_stack.root / "cache") & 0o007 == 0  # and the cache holds their pages
    cached = [p for p in (private.root / "cache").rglob("*") if p.is_file()]
    assert cached and all(_mode(p) & 0o077 == 0 for p in cached)
    # An htpasswd file as `wharf passwd` makes it, and as it keeps it when it changes.
    users = tmp_path / "htpasswd"
    for password in ("first password", "second password"):
        done = subprocess.run([sys.executable, "-m", "app", "passwd", str(users), "bob", "--rounds", "4"],
                              input=password + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        modes["htpasswd (wharf passwd)"] = oct(_mode(users))
        assert _mode(users) & 0o037 == 0  # the app's group may read it, nobody else anything
        assert "password" not in users.read_text()
    users.chmod(0o600)
    subprocess.run([sys.executable, "-m", "app", "passwd", str(users), "carol", "--rounds", "4"], input="pw\n",
                   capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    assert _mode(users) == 0o600  # a tighter mode chosen by the owner is kept
    figures.record("secrets", {"file_modes": modes})
