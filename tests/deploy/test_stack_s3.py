"""`wharf stack` on object storage: nginx fetches package files from the bucket itself.

Real SeaweedFS, nginx, supervisord, gunicorn and pip on loopback. The app answers a
download through nginx with X-Accel-Redirect to nginx's internal /_s3/ location and a
presigned URL; nginx fetches the object, caches it and serves it with the app's headers,
so no worker streams a file. Observed through the access logs and X-Cache-Status.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest

from app.auth import set_password
from tests.support import http, make_wheel

from .test_render import needs_nginx
from .test_stack import PASSWORD, Stack, basic, run_client

pytestmark = [pytest.mark.slow, needs_nginx]


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, seaweedfs):
    root = tmp_path_factory.mktemp("s3-stack") / "stack"
    (root / "packages").mkdir(parents=True)
    users = root.parent / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    bucket = seaweedfs.make_bucket("wharf-stack")
    wheel = make_wheel(root.parent / "seed", "from-bucket", "1.0", padding=300_000)
    seaweedfs.client().put_object(Bucket=bucket, Key=f"pkgs/{wheel.name}", Body=wheel.read_bytes())
    stack = Stack(root, "--password-file", str(users), "--storage-url", f"s3://{bucket}/pkgs",
                  "--s3-list-interval", "0.5", env=seaweedfs.env())
    stack.wheel, stack.bucket = wheel, bucket
    stack.wait_until(lambda: stack.request(f"/packages/{wheel.name}", method="HEAD")[0] == 200,
                     "the hand-put object is indexed")
    yield stack
    stack.stop()


def log_lines(stack: Stack, name: str, path: str) -> list[str]:
    """The lines of one of the stack's logs (nginx-access.log, wharf.log) for a GET of ``path``."""
    text = (stack.root / "logs" / name).read_text(errors="replace")
    return [line for line in text.splitlines() if f'"GET {path} HTTP/' in line]


def test_downloads_are_fetched_and_cached_by_nginx_not_streamed_by_a_worker(s3_stack: Stack, seaweedfs):
    wheel = s3_stack.wheel
    data = wheel.read_bytes()
    path = f"/packages/{wheel.name}"
    # The app itself, asked as nginx asks it, answers with the redirect and no body.
    app = f"http://127.0.0.1:{s3_stack.app_port}{path}"
    status, headers, body = http(app, headers={"X-Wharf-Accel": "s3", "X-Forwarded-Proto": "https"})
    sha256 = hashlib.sha256(data).hexdigest()
    assert status == 200 and body == b""
    assert headers["x-accel-redirect"] == f"/_s3/{sha256}/{wheel.name}"
    assert headers["x-wharf-s3-url"].startswith(seaweedfs.endpoint) and "Signature" in headers["x-wharf-s3-url"]
    # Through nginx: the bytes, with the app's headers, then from nginx's cache.
    statuses = []
    for _ in range(3):
        status, headers, body = s3_stack.request(path)
        assert status == 200 and body == data
        statuses.append(headers["x-cache-status"])
    assert statuses[-1] == "HIT", statuses  # (the fixture's HEAD, a GET for nginx, filled the cache)
    assert headers["etag"] == f'"{sha256}"' and headers["content-type"] == "application/zip"
    assert "immutable" in headers["cache-control"]
    assert not any(h.startswith("x-amz") or h in ("x-wharf-s3-url", "x-accel-redirect") for h in headers)
    # Ranges are cut from the cached object; the app's 304 still works through nginx.
    status, headers, body = s3_stack.request(path, {"Range": "bytes=100-199"})
    assert (status, body) == (206, data[100:200])
    assert s3_stack.request(path, {"If-None-Match": f'"{sha256}"'})[0] == 304
    # nginx sent the whole file each time; every answer of the app was an empty redirect.
    served = [line for line in log_lines(s3_stack, "nginx-access.log", path) if '" 200 ' in line]
    assert len(served) >= 3 and all(f'" 200 {len(data)} ' in line for line in served)
    answered = log_lines(s3_stack, "wharf.log", path)
    assert answered and all(re.search(r'" (200|206|304) 0 ', line) for line in answered), answered


def test_pip_installs_and_twine_uploads_through_nginx_on_s3(s3_stack: Stack, seaweedfs, tmp_path: Path):
    home = tmp_path / "home"
    new = make_wheel(tmp_path / "d", "uploaded-s3", "2.0")
    run_client([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                "--repository-url", s3_stack.url + "/", "--cert", str(s3_stack.ca), "-u", "alice", "-p", PASSWORD,
                str(new)], home, s3_stack.ca, stdin=__import__("subprocess").DEVNULL)
    got = seaweedfs.client().get_object(Bucket=s3_stack.bucket, Key=f"pkgs/{new.name}")["Body"].read()
    assert got == new.read_bytes()
    target = tmp_path / "target"
    run_client([sys.executable, "-m", "pip", "install", "--no-input", "--target", str(target), "--cert",
                str(s3_stack.ca), "--index-url", s3_stack.url + "/simple/", "uploaded-s3==2.0", "from-bucket==1.0"],
               home, s3_stack.ca)
    assert (target / "uploaded_s3" / "__init__.py").exists() and (target / "from_bucket" / "__init__.py").exists()
    assert basic  # (the module's helpers are shared with test_stack.py)
