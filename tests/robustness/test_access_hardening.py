"""Access under attack (issue 14, points 3, 5, 6 and 10), through ``wharf stack`` (nginx, gunicorn).

- 3: a permissions file of any shape but the documented one refuses every update, and says
  why in the log and in /health; the documented shape works again at once.
- 5: a request that could change something is refused before nginx reads its body: a
  1 GiB anonymous upload gets 401 at once with nothing spooled; a big upload with a wrong
  password gets 401, never 502; a trickled request head is cut off.
- 6: a guessing client is throttled (429, Retry-After) while a user on another address is
  served, and a user already logged in is still let through from the noisy address.
- 10: after authenticated traffic (pages, files, twine uploads, wrong passwords), no cache
  file and no log holds the password or anything computed from the Authorization header.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from app.auth import set_password
from tests.support import client_env, make_wheel

from .harness import PASSWORD, BOUNDARY, basic

pytestmark = pytest.mark.slow

ALICE = basic("alice", PASSWORD)
GOOD_RULES = "[projects]\nalice = alpha, gated-*\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, test_ca):
    from tests.deploy.test_render import NGINX
    from tests.deploy.test_stack import Stack

    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    base = tmp_path_factory.mktemp("access")
    root = base / "stack"
    make_wheel(root / "packages", "alpha", "1.0")
    users = base / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    rules = base / "permissions.ini"
    rules.write_text(GOOD_RULES)
    stack = Stack(root, "--password-file", str(users), "--permissions-file", str(rules),
                  "--authenticate", "update,download,list",
                  "--tls-cert", str(test_ca.cert), "--tls-key", str(test_ca.key), ca=test_ca.ca)
    stack.rules = rules
    yield stack
    stack.stop()


def connect(stack, source: str, timeout: float = 30) -> http.client.HTTPSConnection:
    """An HTTPS connection from ``source`` (another loopback address is another client)."""
    context = ssl.create_default_context(cafile=str(stack.ca))
    return http.client.HTTPSConnection("127.0.0.1", stack.https_port, context=context, timeout=timeout,
                                       source_address=(source, 0))


def call(stack, method: str, path: str, headers: dict[str, str], *, source: str = "127.0.0.1",
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = connect(stack, source)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def twine(stack, wheel: Path, home: Path, password: str = PASSWORD) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                           "--repository-url", f"{stack.url}/", "--cert", str(stack.ca), "-u", "alice",
                           "-p", password, str(wheel)], env=client_env(home, ca=stack.ca), capture_output=True,
                          text=True, timeout=180)


def spooled(stack) -> list[Path]:
    return [p for p in (stack.root / "run" / "nginx" / "client_body").rglob("*") if p.is_file()]


# --- 3: the permissions file fails closed ---------------------------------------------------------
BROKEN_RULES = {
    "misnamed section": "[project]\nalice = alpha\n",
    "no section": "alice = alpha\n",
    "empty section": "[projects]\n",
    "empty file": "",
    "second section": "[projects]\nalice = alpha\n[users]\nbob = x\n",
    "DEFAULT section": "[DEFAULT]\nalice = *\n[projects]\nbob = x\n",
    "not an ini file": "{\"projects\": {\"alice\": [\"alpha\"]}}\n",
    "bad pattern": "[projects]\nalice = alpha; rm -rf\n",
    "duplicate user": "[projects]\nalice = alpha\nalice = beta\n",
}


def test_a_permissions_file_not_in_the_documented_shape_refuses_every_update(stack, tmp_path: Path, figures):
    outcomes = {}
    wheel = make_wheel(tmp_path / "dist", "alpha", "2.0")
    for label, text in BROKEN_RULES.items():
        stack.rules.write_text(text)
        done = twine(stack, wheel, tmp_path / "home")
        assert done.returncode != 0 and "403" in done.stdout + done.stderr, (label, done.stdout + done.stderr)
        status, _, body = call(stack, "GET", "/health", {"Authorization": ALICE})
        health = json.loads(body)
        assert status == 200 and health["status"] == "degraded", (label, health)
        assert any("permissions file" in p and "refused" in p for p in health["problems"]), (label, health)
        # Anonymous callers of this private index learn only up or down.
        assert json.loads(call(stack, "GET", "/health", {})[2]).keys() == {"status", "time"}
        outcomes[label] = 403
    assert not (stack.root / "packages" / wheel.name).exists()
    log = (stack.root / "logs" / "wharf.log").read_text(errors="replace")
    assert "not in the documented shape" in log and "refusing all updates" in log
    # Fixed: updates work again at once, and health is ok.
    stack.rules.write_text(GOOD_RULES)
    done = twine(stack, wheel, tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(call(stack, "GET", "/health", {"Authorization": ALICE})[2])["status"] == "ok"
    figures.record("permissions_fail_closed", {"broken_shapes_tried": len(BROKEN_RULES),
                                               "uploads_accepted_while_broken": 0, "outcomes": outcomes})


# --- 5: no body is read before the update right is known ----------------------------------------
def head_only(stack, headers: list[tuple[str, str]], method: str = "POST", path: str = "/",
              source: str = "127.0.0.1") -> tuple[int | None, float]:
    """Send a request head that announces a body, never send the body; the status and how long it took."""
    context = ssl.create_default_context(cafile=str(stack.ca))
    raw = socket.create_connection(("127.0.0.1", stack.https_port), timeout=20, source_address=(source, 0))
    sock = context.wrap_socket(raw, server_hostname="localhost")
    started = time.monotonic()
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        response.read()
        return response.status, time.monotonic() - started
    except (OSError, http.client.HTTPException):
        return None, time.monotonic() - started
    finally:
        sock.close()


def test_updates_are_refused_before_any_body_is_read(stack, tmp_path: Path, figures):
    gib = str(1 << 30)
    upload = [("Content-Type", f"multipart/form-data; boundary={BOUNDARY.decode()}"), ("Content-Length", str(1 << 29))]
    tried = Counter()
    for label, extra in {"anonymous": [], "wrong password": [("Authorization", basic("alice", "nope"))],
                         "garbled": [("Authorization", "Basic !!!")]}.items():
        for path in ("/", "/legacy/", "/projects/"):
            status, took = head_only(stack, upload + extra, path=path)
            tried[f"POST {label}"] += 1
            assert status == 401 and took < 5, (label, path, status, took)
        status, took = head_only(stack, [("Content-Length", gib)] + extra, method="DELETE",
                                 path="/packages/alpha-1.0-py3-none-any.whl")
        tried[f"DELETE {label}"] += 1
        assert status in (401, 413) and took < 5, (label, status)
    assert not spooled(stack)
    # Straight to gunicorn, too: the app answers before it reads.
    conn = socket.create_connection(("127.0.0.1", stack.app_port), timeout=20)
    conn.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {gib}\r\n"
                 f"Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode())
    assert conn.recv(100).startswith(b"HTTP/1.1 401")
    conn.close()
    tried["gunicorn anonymous"] += 1
    # A real client with a big wheel and a wrong password: 401, not 502.
    big = make_wheel(tmp_path / "dist", "gated-big", "1.0", padding=24 << 20)
    done = twine(stack, big, tmp_path / "home", password="wrong password")
    assert done.returncode != 0 and "401" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "502" not in done.stdout + done.stderr and "500" not in done.stdout + done.stderr
    tried["twine 24 MiB wrong password"] += 1
    # ... and the right password still uploads it.
    done = twine(stack, big, tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    figures.record("refused_before_body", {"requests": dict(tried), "bytes_spooled_for_refused": 0})


def test_a_trickled_request_head_is_cut_off(stack, figures):
    sock = socket.create_connection(("127.0.0.1", stack.http_port), timeout=30)
    started = time.monotonic()
    closed_after = None
    try:
        for byte in b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40:
            sock.sendall(bytes([byte]))
            time.sleep(0.5)
    except OSError:
        closed_after = time.monotonic() - started
    else:
        sock.settimeout(10)
        try:
            data = sock.recv(100)
        except OSError:
            data = b""
        closed_after = time.monotonic() - started if not data or b"408" in data else None
    finally:
        sock.close()
    assert closed_after is not None and closed_after < 20, closed_after
    figures.record("trickle", {"header_trickle_cut_after_s": round(closed_after, 1)})


# --- 6: guessing is throttled per address ------------------------------------------------------------
def test_password_guessing_is_throttled_per_address(stack, figures):
    noisy, other = "127.0.0.2", "127.0.0.3"
    # alice logged in from the noisy address before the flood.
    assert call(stack, "GET", "/simple/", {"Authorization": ALICE}, source=noisy)[0] == 200
    statuses = []
    retry_after = None
    for n in range(40):
        status, headers, _ = call(stack, "GET", "/simple/", {"Authorization": basic("alice", f"guess-{n}")},
                                  source=noisy)
        statuses.append(status)
        if status == 429:
            retry_after = headers.get("retry-after")
        if n % 10 == 9:  # a user elsewhere is served throughout
            assert call(stack, "GET", "/simple/alpha/", {"Authorization": ALICE}, source=other)[0] == 200
    assert set(statuses) <= {401, 429}, Counter(statuses)
    first = statuses.index(429)
    # Each of the 2 workers counts its own: at most 2 x 10 guesses a minute are checked,
    # wherever they fall among the 40 (a worker may get its tenth late), the rest are 429.
    assert statuses.count(401) <= 2 * 10 and statuses.count(429) >= 20, str(statuses)
    assert retry_after and 1 <= int(retry_after) <= 60
    # The logged-in user is still let through from the noisy address; a new login there waits.
    assert call(stack, "GET", "/simple/", {"Authorization": ALICE}, source=noisy)[0] == 200
    assert call(stack, "GET", "/simple/", {"Authorization": ALICE}, source=other)[0] == 200
    # Also the upload check (nginx's 403 with the app's hint becomes 429).
    status, _ = head_only(stack, [("Content-Length", "100"), ("Authorization", basic("alice", "again"))],
                          source=noisy)
    assert status == 429
    figures.record("guessing", {"guesses": len(statuses), "refused_401": statuses.count(401),
                                "throttled_429": statuses.count(429), "first_429_at": first + 1,
                                "other_address_refused": 0})


# --- 10: nothing derived from a credential on disk ------------------------------------------------
def credential_forms(user: str, password: str) -> dict[str, bytes]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    header = f"Basic {token}"
    forms = {"password": password.encode(), "base64": token.encode(), "user:password": f"{user}:{password}".encode()}
    for label, value in (("header", header), ("base64", token), ("user:password", f"{user}:{password}")):
        for algorithm in ("md5", "sha1", "sha256"):
            digest = hashlib.new(algorithm, value.encode())
            forms[f"{algorithm}({label}) hex"] = digest.hexdigest().encode()
            forms[f"{algorithm}({label}) raw"] = digest.digest()
    return forms


def nginx_variants(cache_file: bytes, headers: list[dict[str, str]]) -> dict[str, bytes]:
    """The variant digests nginx would write for these requests if a response varied on Authorization.

    nginx names a response's variant by md5(md5(key) + "name:value\r\n" for each Vary field),
    the value being the request's header (ngx_http_file_cache_vary); that digest is kept in
    the cache file, so with "Vary: Authorization" a password can be tested against it.
    """
    found = {}
    start = cache_file.find(b"\nKEY: ")
    if start < 0:
        return found
    key = cache_file[start + 6:cache_file.index(b"\n", start + 6)]
    main = hashlib.md5(key).digest()
    for request_headers in headers:
        lower = {k.lower(): v for k, v in request_headers.items()}
        for vary in (["accept", "authorization"], ["authorization"], ["authorization", "accept"]):
            digest = hashlib.md5(main)
            for name in vary:
                digest.update(f"{name}:{lower.get(name, '')}\r\n".encode())
            found[f"variant {vary} {sorted(lower)}"] = digest.digest()
    return found


def test_no_credential_or_its_hash_in_cache_files_or_logs(stack, tmp_path: Path, figures):
    wrong = basic("alice", "wrong-Password-4711")
    json_accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    seen = Counter()
    for _ in range(3):
        for path in ("/simple/", "/simple/alpha/", "/packages/", "/packages/alpha-1.0-py3-none-any.whl",
                     "/projects/", "/project/alpha/"):
            for extra in ({}, json_accept):
                status, headers, _ = call(stack, "GET", path, {"Authorization": ALICE, **extra}, source="127.0.0.4")
                assert status == 200, (path, status)
                seen[headers.get("x-cache-status", "-")] += 1
            call(stack, "GET", path, {"Authorization": wrong}, source="127.0.0.5")
    done = twine(stack, make_wheel(tmp_path / "dist", "gated-disk", "1.0"), tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen["HIT"] >= 5, seen  # the cache really holds authenticated responses
    files = [p for p in (stack.root / "cache").rglob("*") if p.is_file()]
    files += [p for p in (stack.root / "logs").iterdir() if p.is_file()] + [stack.log_path]
    assert len([p for p in files if "cache" in p.parts]) >= 5
    secrets = {**credential_forms("alice", PASSWORD), **{f"wrong {k}": v for k, v in
                                                        credential_forms("alice", "wrong-Password-4711").items()}}
    found = [f"{p.name}: {label}" for p in files for label, value in secrets.items() if value in p.read_bytes()]
    sent = [{"Authorization": ALICE}, {"Authorization": ALICE, **json_accept}]
    for path in (p for p in files if "cache" in p.parts):
        data = path.read_bytes()
        head = data[:data.find(b"\r\n\r\n")].lower()
        if b"vary:" in head and b"authorization" in head.split(b"vary:", 1)[1].split(b"\r\n", 1)[0]:
            found.append(f"{path.name}: a response stored varying on Authorization")
        found += [f"{path.name}: {label}" for label, value in nginx_variants(data, sent).items() if value in data]
    assert not found, found
    figures.record("credentials_on_disk", {"files_searched": len(files), "forms_searched": len(secrets),
                                           "cache_hits": seen["HIT"], "found": 0})
