"""API tokens with real clients: twine, uv publish and poetry with ``__token__``; scopes, expiry and
revocation refused at once; the token HTTP API."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from passlib.hash import bcrypt

from tests.support import ROOT, WharfProcess, client_env, http, make_sdist, make_wheel

pytestmark = pytest.mark.slow

# .ci/run installs poetry in a venv of its own (.venv-poetry), as the pypiserver tutorial test uses it.
POETRY = shutil.which("poetry") or next((str(p) for p in (ROOT / ".venv-poetry" / "bin" / "poetry",) if p.exists()), None)


def run(cmd: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, **kwargs)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("tokens")
    packages = base / "packages"
    packages.mkdir()
    (base / "htpasswd").write_text(f"alice:{bcrypt.using(rounds=4).hash('alice pw')}\n")
    with WharfProcess(packages, "--password-file", str(base / "htpasswd"), "--state-dir", str(base / "state"),
                      "--authenticate", "update,download,list") as server:
        server.base, server.packages = base, packages
        yield server


def wharf_cli(site, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent), "HOME": str(site.base)}
    return subprocess.run([sys.executable, "-m", "app", *args, "--state-dir", str(site.base / "state"),
                           "--password-file", str(site.base / "htpasswd")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def create(site, *args: str) -> str:
    done = wharf_cli(site, "token", "create", "--user", "alice", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def twine(site, token: str, dist: Path, home: Path, user: str = "__token__") -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                "--repository-url", site.url + "/legacy/", "-u", user, "-p", token, str(dist)], client_env(home))


def uv_publish(site, token: str, dist: Path, home: Path) -> subprocess.CompletedProcess:
    return run(["uv", "publish", "--publish-url", site.url + "/legacy/", "--username", "__token__",
                "--password", token, str(dist)], client_env(home))


def test_twine_and_uv_publish_with_a_scoped_token(site, tmp_path: Path):
    token = create(site, "--projects", "mylib,mylib-*", "--actions", "update", "--expires", "90d",
                   "--description", "CI for mylib")
    assert token.startswith("wharf_")
    whl, sdist = make_wheel(tmp_path / "d", "mylib", "1.0"), make_sdist(tmp_path / "d", "mylib-extra", "1.0")
    done = twine(site, token, whl, tmp_path / "h1")
    assert done.returncode == 0, done.stdout + done.stderr
    done = uv_publish(site, token, sdist, tmp_path / "h2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site.packages / whl.name).exists() and (site.packages / sdist.name).exists()
    # The owner's name works as the user name too.
    other = make_wheel(tmp_path / "d", "mylib", "1.1")
    assert twine(site, token, other, tmp_path / "h3", user="alice").returncode == 0

    # Scoped to mylib*: another project is refused with a clear 403, by both clients.
    stranger = make_wheel(tmp_path / "d", "otherlib", "1.0")
    done = twine(site, token, stranger, tmp_path / "h4")
    assert done.returncode != 0 and "403" in done.stdout + done.stderr
    assert "may not update project 'otherlib'" in done.stdout + done.stderr
    done = uv_publish(site, token, stranger, tmp_path / "h5")
    assert done.returncode != 0 and "may not update project 'otherlib': it is scoped to mylib, mylib-*" in done.stderr
    assert not (site.packages / stranger.name).exists()

    # An update-only token cannot read this index (list and download need a user here).
    status, _, body = http(site.url + "/simple/", headers={
        "Authorization": "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()})
    assert status == 403 and b"does not allow list" in body
    listing = wharf_cli(site, "token", "list")
    assert "CI for mylib" in listing.stdout and "mylib,mylib-*" in listing.stdout
    assert token.split("_")[2] not in listing.stdout  # never the secret


def test_expired_and_revoked_tokens_are_refused_at_once(site, tmp_path: Path):
    short = create(site, "--expires", "2s")
    revoked = create(site)
    first = make_wheel(tmp_path / "d", "fresh", "1.0")
    assert twine(site, revoked, first, tmp_path / "h0").returncode == 0
    token_id = revoked.split("_")[1]
    done = wharf_cli(site, "token", "revoke", token_id)
    assert done.returncode == 0 and f"wharf.audit: token {token_id} revoked by" in done.stderr
    dist = make_wheel(tmp_path / "d", "fresh", "2.0")
    done = twine(site, revoked, dist, tmp_path / "h1")  # the very next request, whichever worker takes it
    assert done.returncode != 0 and f"token {token_id} was revoked" in done.stdout + done.stderr
    time.sleep(2.2)
    done = uv_publish(site, short, dist, tmp_path / "h2")
    assert done.returncode != 0 and "expired" in done.stderr, done.stderr
    assert not (site.packages / dist.name).exists()
    log = site.log()
    assert f"wharf.audit: refused a token from 127.0.0.1: token {token_id} was revoked" in log
    assert "expired" in log


@pytest.mark.skipif(POETRY is None, reason="poetry is not installed (pip install poetry)")
def test_poetry_publish_with_a_token(site, tmp_path: Path):
    token = create(site, "--projects", "poetic")
    project = tmp_path / "poetic"
    (project / "poetic").mkdir(parents=True)
    (project / "poetic" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "poetic"\nversion = "0.1.0"\ndescription = "x"\nauthors = [{name = "A", email = "a@example.com"}]\n'
        '[tool.poetry]\npackages = [{include = "poetic"}]\n'
        '[build-system]\nrequires = ["poetry-core>=2"]\nbuild-backend = "poetry.core.masonry.api"\n')
    dist = project / "dist"
    dist.mkdir()
    shutil.copy(make_wheel(tmp_path / "w", "poetic", "0.1.0"), dist)
    env = client_env(tmp_path / "home", POETRY_REPOSITORIES_WHARF_URL=site.url + "/legacy/",
                     POETRY_HTTP_BASIC_WHARF_USERNAME="__token__", POETRY_HTTP_BASIC_WHARF_PASSWORD=token,
                     POETRY_NO_INTERACTION="1", POETRY_CACHE_DIR=str(tmp_path / "poetry-cache"))
    done = run([POETRY, "publish", "-r", "wharf", "--no-interaction"], env, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site.packages / "poetic-0.1.0-py3-none-any.whl").exists()


def test_token_http_api(site, tmp_path: Path):
    password = "Basic " + base64.b64encode(b"alice:alice pw").decode()
    body = json.dumps({"projects": ["apilib"], "actions": ["update", "list", "manage"], "expires": "1d",
                       "description": "made over HTTP"}).encode()
    status, _, raw = http(site.url + "/_/tokens", "POST", {"Authorization": password,
                                                          "Content-Type": "application/json"}, body)
    assert status == 201, raw
    made = json.loads(raw)
    manage = "Basic " + base64.b64encode(f"__token__:{made['token']}".encode()).decode()
    # A token with manage lists and makes tokens, but none wider than itself.
    status, _, raw = http(site.url + "/_/tokens", headers={"Authorization": manage})
    assert status == 200 and made["id"] in raw.decode() and made["token"] not in raw.decode()
    wider = json.dumps({"projects": ["*"], "actions": ["update"]}).encode()
    status, _, raw = http(site.url + "/_/tokens", "POST", {"Authorization": manage}, wider)
    assert status == 403 and b"more projects or actions" in raw
    status, _, raw = http(site.url + "/_/tokens/" + made["id"], "DELETE", {"Authorization": password})
    assert status == 200
    status, _, raw = http(site.url + "/_/tokens", headers={"Authorization": manage})
    assert status == 401 and b"was revoked" in raw
