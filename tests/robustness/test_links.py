"""Nothing outside the packages directories is ever listed or served (issue 14, point 2).

Links and special files are dropped into the packages directory of a real ``wharf stack``
(nginx, TLS, gunicorn): links named like distributions that point at the TLS key, the
password file and ``/etc/passwd``, a linked directory holding a valid wheel, a link to a
real file inside the roots, a FIFO, and a listed file that is swapped for a link after it
was indexed. None may appear in any listing or be served, through nginx or straight from
gunicorn, while the real files keep working.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import make_wheel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from app.auth import set_password
    from tests.deploy.test_render import NGINX
    from tests.deploy.test_stack import Stack

    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    root = tmp_path_factory.mktemp("links") / "stack"
    make_wheel(root / "packages", "honest", "1.0")
    make_wheel(root / "packages", "swapped", "1.0")
    users = root.parent / "htpasswd"
    set_password(users, "alice", "link-test-password", rounds=4)
    stack = Stack(root, "--password-file", str(users))
    yield stack
    stack.stop()


def _app(stack, path: str) -> tuple[int, bytes]:
    """Straight to gunicorn, bypassing nginx and its cache."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.app_port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_links_and_special_files_are_never_listed_or_served(stack, tmp_path: Path, figures):
    packages = stack.root / "packages"
    secret_dir = tmp_path / "outside"
    secret_dir.mkdir()
    make_wheel(secret_dir, "smuggled", "1.0")
    bait = {
        "tlskey-1.0.tar.gz": stack.root / "tls" / "server.key",
        "users-1.0.tar.gz": stack.root.parent / "htpasswd",
        "passwd-1.0-py3-none-any.whl": Path("/etc/passwd"),
        "inside-1.0-py3-none-any.whl": packages / "honest-1.0-py3-none-any.whl",
    }
    for name, target in bait.items():
        os.symlink(target, packages / name)
    os.symlink(secret_dir, packages / "linked-dir")
    os.mkfifo(packages / "fifo-1.0.tar.gz")
    # A file the index has listed, then swapped for a link between two requests.
    swapped = packages / "swapped-1.0-py3-none-any.whl"
    stack.wait_until(lambda: stack.request("/simple/swapped/")[0] == 200, "swapped is listed")
    os.replace(swapped, tmp_path / "swapped-original.whl")
    os.symlink(stack.root / "tls" / "server.key", swapped)
    time.sleep(2)  # several scans of the directory

    secrets = [p.read_bytes() for p in bait.values() if p.name != "honest-1.0-py3-none-any.whl"]
    secrets.append((stack.root / "tls" / "server.key").read_bytes())
    tried = leaked = 0
    paths = ["/simple/", "/packages/", "/", "/simple/tlskey/", "/simple/users/", "/simple/passwd/",
             "/simple/inside/", "/simple/fifo/", "/simple/smuggled/", "/project/smuggled/", "/projects/?q=smuggled"]
    paths += [f"/packages/{name}" for name in (*bait, "fifo-1.0.tar.gz", "linked-dir/smuggled-1.0-py3-none-any.whl",
                                                "swapped-1.0-py3-none-any.whl")]
    for path in paths:
        for fetch in (lambda p: stack.request(p)[::2], lambda p: _app(stack, p)):
            status, body = fetch(path)
            tried += 1
            assert status < 500, (path, status)
            if path.startswith("/packages/") and path != "/packages/":
                assert status == 404, (path, status)
            for secret in secrets:
                if secret in body:
                    leaked += 1
            if path in ("/simple/", "/packages/", "/"):  # listings name none of them
                for name in ("tlskey", "users-1.0", "passwd", "inside-1.0", "fifo", "smuggled"):
                    assert name.encode() not in body, (path, name)
            elif path.startswith("/simple/"):
                assert status == 404, (path, status)
    assert leaked == 0
    # The real files are untouched by all this.
    status, _, body = stack.request("/simple/honest/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    assert status == 200 and [f["filename"] for f in json.loads(body)["files"]] == ["honest-1.0-py3-none-any.whl"]
    assert stack.request("/packages/honest-1.0-py3-none-any.whl")[0] == 200
    figures.record("links and special files in the packages directory",
                   {"planted": len(bait) + 3, "requests": tried, "protected_bytes_served": leaked, "5xx": 0})


def test_the_index_still_starts_with_links_in_place(stack):
    """A restart indexes the directory afresh: still nothing but the real files."""
    stack.ctl("restart", "wharf")
    stack.wait_until(lambda: stack.request("/health")[0] == 200, "the app is back")
    status, _, body = stack.request("/simple/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    names = sorted(p["name"] for p in json.loads(body)["projects"])
    assert names == ["honest"], names
