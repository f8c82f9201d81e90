"""Publishing for real: twine and uv publish into a running index, pip and uv install from it,
a client that hangs up mid-upload, memory during a big upload, and the auth matrix."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
from passlib.hash import apr_md5_crypt, bcrypt, ldap_sha1, sha256_crypt, sha512_crypt

from tests.support import WharfProcess, client_env, http, make_sdist, make_wheel

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
# One user per htpasswd scheme; low costs keep the many wrong-password checks quick.
SCHEMES = {
    "bcrypt": bcrypt.using(rounds=4, ident="2y"),
    "sha256_crypt": sha256_crypt.using(rounds=1000),
    "sha512_crypt": sha512_crypt.using(rounds=1000),
    "apr_md5_crypt": apr_md5_crypt,
    "ldap_sha1": ldap_sha1,
}
BOUNDARY = "wharf-integration-boundary"


def password(user: str) -> str:
    return f"pw of {user}!"


def write_htpasswd(path: Path, extra: dict[str, str] | None = None) -> Path:
    lines = [f"u_{scheme}:{handler.hash(password('u_' + scheme))}" for scheme, handler in SCHEMES.items()]
    lines += [f"{user}:{bcrypt.using(rounds=4).hash(password(user))}" for user in (extra or {})]
    path.write_text("\n".join(lines) + "\n")
    return path


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def form_body(fields: dict[str, str], file: tuple[str, bytes] | None = None) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    if file:
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="{file[0]}"\r\n\r\n'.encode()
                     + file[1] + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def upload_fields(name: str, version: str, data: bytes) -> dict[str, str]:
    return {":action": "file_upload", "protocol_version": "1", "name": name, "version": version,
            "sha256_digest": hashlib.sha256(data).hexdigest()}


def run(cmd: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, **kwargs)


def twine(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar", *args], env)


# These tests try wrong credentials on purpose, many times, from one address: the login
# throttle (tested in tests/robustness/test_access_hardening.py) would answer 429.
NO_THROTTLE = ("--login-failures-allowed", "100000")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One index (uploads need a user; ``ci`` may only publish ``ci-*``) for the publishing tests."""
    base = tmp_path_factory.mktemp("publish")
    packages = base / "packages"
    packages.mkdir()
    htpasswd = write_htpasswd(base / "htpasswd", {"alice": "", "ci": ""})
    (base / "permissions.ini").write_text("[projects]\nci = ci-*\n")
    with WharfProcess(packages, "--password-file", str(htpasswd), *NO_THROTTLE, "--permissions-file", str(base / "permissions.ini"),
                      "--state-dir", str(base / "state")) as server:
        server.base, server.packages = base, packages
        yield server


# --- twine and uv publish, then pip and uv install -----------------------------------------
def test_twine_and_uv_publish_then_pip_and_uv_install(site, tmp_path: Path):
    env = client_env(tmp_path / "home")
    dists = tmp_path / "dists"
    alpha_whl, alpha_sdist = make_wheel(dists, "alpha-lib", "1.0"), make_sdist(dists, "alpha-lib", "1.0")
    beta_whl, beta_sdist = make_wheel(dists, "beta-lib", "2.0"), make_sdist(dists, "beta-lib", "2.0")

    done = twine("--repository-url", site.url + "/", "-u", "alice", "-p", password("alice"), str(alpha_whl), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "home" / ".pypirc").write_text(
        f"[distutils]\nindex-servers =\n    wharf\n\n[wharf]\nrepository = {site.url}/legacy/\n"
        f"username = alice\npassword = {password('alice')}\n")
    done = twine("-r", "wharf", str(alpha_sdist), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run(["uv", "publish", "--publish-url", site.url + "/legacy/", "--username", "alice",
                "--password", password("alice"), str(beta_whl), str(beta_sdist)], env)
    assert done.returncode == 0, done.stdout + done.stderr

    for path in (alpha_whl, alpha_sdist, beta_whl, beta_sdist):
        assert (site.packages / path.name).read_bytes() == path.read_bytes()

    index = site.url + "/simple/"
    target = tmp_path / "pip-target"
    done = run([sys.executable, "-m", "pip", "install", "--no-input", "--target", str(target), "--index-url", index,
                "alpha-lib==1.0", "beta-lib==2.0"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "__version__ = '1.0'" in (target / "alpha_lib" / "__init__.py").read_text()
    assert "__version__ = '2.0'" in (target / "beta_lib" / "__init__.py").read_text()

    target = tmp_path / "uv-target"
    done = run(["uv", "pip", "install", "--target", str(target), "--index-url", index, "alpha-lib==1.0", "beta-lib==2.0"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "alpha_lib" / "__init__.py").exists() and (target / "beta_lib" / "__init__.py").exists()

    # The sdist as uploaded by uv, built and installed by pip.
    target = tmp_path / "sdist-target"
    done = run([sys.executable, "-m", "pip", "install", "--no-input", "--no-binary", ":all:", "--no-build-isolation",
                "--no-deps", "--target", str(target), "--index-url", index, "beta-lib==2.0"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "__version__ = '2.0'" in (target / "beta_lib" / "__init__.py").read_text()


def test_clients_show_why_an_upload_was_refused(site, tmp_path: Path):
    env = client_env(tmp_path / "home")
    original = make_wheel(tmp_path / "a", "gamma", "1.0")
    changed = make_wheel(tmp_path / "b", "gamma", "1.0", summary="rebuilt with other bytes")
    creds = ["-u", "alice", "-p", password("alice")]
    assert twine("--repository-url", site.url + "/", *creds, str(original), env=env).returncode == 0
    before = snapshot(site.packages)

    # A byte-identical upload is fine (CI re-runs), a changed one is refused: twine shows the reason phrase.
    assert twine("--repository-url", site.url + "/", *creds, str(original), env=env).returncode == 0
    done = twine("--repository-url", site.url + "/", *creds, str(changed), env=env)
    assert done.returncode != 0 and "already exists" in done.stdout + done.stderr
    # (twine 6+ allows --skip-existing only for PyPI; older twine skips on this 409 or "already exists".)

    # uv shows the body; with --check-url it skips files the index already has.
    uv_publish = ["uv", "publish", "--publish-url", site.url + "/legacy/", "-u", "alice", "-p", password("alice")]
    done = run([*uv_publish, str(changed)], env)
    assert done.returncode != 0 and "already exists with different content" in done.stderr
    done = run([*uv_publish, "--check-url", site.url + "/simple/", str(original)], env)
    assert done.returncode == 0, done.stderr

    # A CI token for one project cannot publish another.
    other = make_wheel(tmp_path / "c", "gamma", "1.1")
    done = twine("--repository-url", site.url + "/", "-u", "ci", "-p", password("ci"), str(other), env=env)
    assert done.returncode != 0 and "may not update project 'gamma'" in done.stdout + done.stderr
    done = twine("--repository-url", site.url + "/", "-u", "alice", "-p", "wrong", str(other), env=env)
    assert done.returncode != 0 and "invalid username or password" in done.stdout + done.stderr
    assert snapshot(site.packages) == before


def test_yank_shows_at_once_over_http_and_from_the_cli(site, tmp_path: Path):
    wheel = make_wheel(tmp_path, "delta", "1.0")
    data = wheel.read_bytes()
    alice = {"Authorization": basic("alice", password("alice")), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    status, _, body = http(site.url + "/", "POST", alice, form_body(upload_fields("delta", "1.0", data), (wheel.name, data)))
    assert status == 200, body

    def yanked() -> list:
        # Two workers: every request may land on either; each must answer the same at once.
        answers = set()
        for _ in range(6):
            status, _, body = http(site.url + "/simple/delta/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
            answers.add(json.dumps([f["yanked"] for f in json.loads(body)["files"]]))
        assert len(answers) == 1, answers
        return json.loads(answers.pop())

    assert yanked() == [False]
    status, _, body = http(site.url + "/", "POST", alice, form_body({":action": "yank", "name": "delta", "version": "1.0",
                                                                     "reason": "broken"}))
    assert status == 200, body
    assert yanked() == ["broken"]
    status, _, _ = http(site.url + "/legacy/", "POST", alice, form_body({":action": "unyank", "filename": wheel.name}))
    assert status == 200 and yanked() == [False]

    # The CLI writes the catalog directly; the running index shows it within its scan interval.
    wharf = [sys.executable, "-m", "app"]
    where = ["--packages", str(site.packages), "--state-dir", str(site.base / "state")]
    done = subprocess.run([*wharf, "yank", "delta", "1.0", "--reason", "cli says no", *where], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "yanked delta 1.0" in done.stderr and "by " in done.stderr and "command line" in done.stderr  # the log line
    deadline = time.monotonic() + 5
    while yanked() != ["cli says no"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert yanked() == ["cli says no"]
    done = subprocess.run([*wharf, "remove", wheel.name, *where], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert not (site.packages / wheel.name).exists()
    log = site.log()
    assert f"uploaded {wheel.name}" in log and "by alice from 127.0.0.1" in log
    assert "yanked delta 1.0" in log and "unyanked" in log


# --- a client that hangs up --------------------------------------------------------------
def test_disconnect_mid_upload_leaves_nothing(site, tmp_path: Path):
    before = snapshot(site.packages)
    size = 50 * MiB
    head = form_body({":action": "file_upload", "protocol_version": "1", "name": "huge", "version": "1.0",
                      "sha256_digest": "0" * 64})[: -len(f"--{BOUNDARY}--\r\n")]
    head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="huge-1.0-py3-none-any.whl"\r\n\r\n'.encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    port = int(site.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    request = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {basic('alice', password('alice'))}\r\n"
               f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
               f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n").encode()
    sock.sendall(request + head)
    chunk = os.urandom(MiB)
    for _ in range(20):
        sock.sendall(chunk)
    # The file is arriving on disk, hidden, not in memory.
    deadline = time.monotonic() + 20
    partial = []
    while time.monotonic() < deadline:
        partial = [p for p in site.packages.iterdir() if p.name.startswith(".upload-") and p.stat().st_size > MiB]
        if partial:
            break
        time.sleep(0.05)
    assert partial, "the upload never reached the disk"
    sock.close()

    def cleaned_up() -> bool:
        # The worker logs the refusal after it has removed the temporary file.
        return "incomplete request body" in site.log() and not any(
            p.name.startswith(".upload-") for p in site.packages.iterdir())

    deadline = time.monotonic() + 20
    while not cleaned_up() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cleaned_up()
    assert snapshot(site.packages) == before
    assert http(site.url + "/simple/huge/")[0] == 404
    assert http(site.url + "/health")[0] == 200


# --- memory stays flat -------------------------------------------------------------------
def _big_wheel(directory: Path, name: str, size: int) -> Path:
    """A valid wheel of about ``size`` bytes, written in pieces (stored, incompressible)."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"{name}-1.0"
    path = directory / f"{dist}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{dist}.dist-info/METADATA", metadata)
        archive.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        with archive.open(f"{name}/blob.bin", "w", force_zip64=True) as stream:
            block = os.urandom(MiB)
            for _ in range(size // MiB):
                stream.write(block)
        archive.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_big_upload_keeps_worker_memory_flat(tmp_path: Path):
    packages = tmp_path / "packages"
    packages.mkdir()
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": ""})
    wheel = _big_wheel(tmp_path / "dists", "bigone", 200 * MiB)
    with WharfProcess(packages, "--password-file", str(htpasswd), *NO_THROTTLE, "--state-dir", str(tmp_path / "state"),
                      workers=1) as server:
        worker = int(Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()[0])
        assert http(server.url + "/simple/")[0] == 200  # warm up the worker
        before = _peak_rss_kib(worker)
        digest = hashlib.sha256()
        with wheel.open("rb") as stream:
            while block := stream.read(MiB):
                digest.update(block)
        env = client_env(tmp_path / "home")
        done = twine("--repository-url", server.url + "/", "-u", "alice", "-p", password("alice"), str(wheel), env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        after = _peak_rss_kib(worker)
        print(f"worker peak RSS {before} KiB before, {after} KiB after a {wheel.stat().st_size // MiB} MiB upload")
        assert after - before < 40 * 1024, (before, after)
        assert hashlib.sha256((packages / wheel.name).read_bytes()).hexdigest() == digest.hexdigest()


# --- who may do what -----------------------------------------------------------------------
MODES = {
    "update": ("update",),
    "update,download,list": ("update", "download", "list"),
    ".": (),
}


@pytest.mark.parametrize("mode", MODES)
def test_auth_matrix(tmp_path: Path, mode: str):
    """Every route, anonymous / wrong password / unknown user / right password, for each scheme."""
    packages = tmp_path / "packages"
    seed = make_wheel(packages, "seed", "1.0")
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    protected = set(MODES[mode]) | {"update"}  # uploads always need a user
    problems = []
    with WharfProcess(packages, "--password-file", str(htpasswd), *NO_THROTTLE, "--authenticate", mode,
                      "--state-dir", str(tmp_path / "state")) as server:
        for number, scheme in enumerate(SCHEMES):
            user = f"u_{scheme}"
            wheel = make_wheel(tmp_path / "dists", "seed", f"2.{number}")
            data = wheel.read_bytes()
            upload = form_body(upload_fields("seed", f"2.{number}", data), (wheel.name, data))
            yank = form_body({":action": "yank", "filename": seed.name})
            unyank = form_body({":action": "unyank", "filename": seed.name})
            multipart = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
            routes = [  # (action, method, path, body, headers, the status when allowed)
                ("list", "GET", "/simple/", None, {}, 200),
                ("list", "GET", "/simple/seed/", None, {"Accept": "application/vnd.pypi.simple.v1+json"}, 200),
                ("list", "GET", "/packages/", None, {}, 200),
                ("list", "GET", "/", None, {}, 200),
                ("download", "GET", f"/packages/{seed.name}", None, {}, 200),
                ("download", "GET", f"/packages/{seed.name}.metadata", None, {}, 200),
                ("update", "POST", "/", upload, multipart, 200),
                ("update", "POST", "/legacy/", yank, multipart, 200),
                ("update", "POST", "/", unyank, multipart, 200),
                ("update", "DELETE", f"/packages/{wheel.name}", None, {}, 200),
                (None, "GET", "/health", None, {}, 200),
            ]
            creds = {"anonymous": None, "wrong password": basic(user, "not it"),
                     "unknown user": basic("nobody", password(user)), "right": basic(user, password(user))}
            for kind, auth in creds.items():
                for action, method, path, body, headers, ok in routes:
                    before = snapshot(packages)
                    sent = dict(headers, **({"Authorization": auth} if auth else {}))
                    status, answer_headers, answer = http(server.url + path, method, sent, body)
                    expected = ok if action not in protected or kind == "right" else 401
                    if status != expected:
                        problems.append(f"{scheme} {kind} {method} {path}: {status} (expected {expected}) {answer[:100]!r}")
                    if status == 401 and not answer_headers.get("www-authenticate", "").startswith("Basic "):
                        problems.append(f"{scheme} {kind} {method} {path}: 401 without a Basic challenge")
                    if status != 200 and snapshot(packages) != before:
                        problems.append(f"{scheme} {kind} {method} {path}: refused, yet the directory changed")
            assert not (packages / wheel.name).exists()  # uploaded by the right user, then deleted
    assert not problems, "\n".join(problems)


def test_pip_and_uv_with_and_without_credentials(tmp_path: Path):
    packages = tmp_path / "packages"
    make_wheel(packages, "secret-lib", "1.0")
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    env = client_env(tmp_path / "home")
    with WharfProcess(packages, "--password-file", str(htpasswd), *NO_THROTTLE, "--authenticate", "update,download,list",
                      "--state-dir", str(tmp_path / "state")) as server:
        hostport = server.url.split("//", 1)[1]
        pip = [sys.executable, "-m", "pip", "install", "--no-deps"]
        with_creds = f"http://u_bcrypt:{quote(password('u_bcrypt'), safe='')}@{hostport}/simple/"
        done = run([*pip, "--no-input", "--target", str(tmp_path / "t1"), "--index-url", with_creds, "secret-lib"], env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (tmp_path / "t1" / "secret_lib" / "__init__.py").exists()

        # Without credentials the index challenges: pip asks for a user (and fails, nobody answers).
        done = run([*pip, "--target", str(tmp_path / "t2"), "--index-url", server.url + "/simple/", "secret-lib"], env)
        assert done.returncode != 0 and f"User for {hostport}" in done.stdout
        done = run([*pip, "--no-input", "--target", str(tmp_path / "t3"), "--index-url",
                    f"http://u_bcrypt:wrong@{hostport}/simple/", "secret-lib"], env)
        assert done.returncode != 0 and "401 Error, Credentials not correct" in done.stderr
        assert not (tmp_path / "t2").exists() and not (tmp_path / "t3").exists()

        uv = ["uv", "pip", "install", "--no-deps"]
        done = run([*uv, "--target", str(tmp_path / "t4"), "--index-url", with_creds, "secret-lib"], env)
        assert done.returncode == 0, done.stderr
        # A fresh uv cache: uv may reuse the pages it just fetched with credentials (its own
        # private cache; the index no longer varies them on Authorization, issue 14.10).
        fresh = {**env, "UV_CACHE_DIR": str(tmp_path / "uv-cache-anonymous")}
        done = run([*uv, "--target", str(tmp_path / "t5"), "--index-url", server.url + "/simple/", "secret-lib"], fresh)
        assert done.returncode != 0 and "401 Unauthorized" in done.stderr
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
