"""Wharf on S3-compatible object storage for real: `wharf serve --storage-url s3://...` on SeaweedFS.

twine and uv publish into the bucket, pip and uv install from it, objects put into (and
removed from) the bucket by hand appear (and disappear), PEP 658 metadata, Range and 304
are served from the objects; with the gateway stopped, downloads and uploads fail
quickly and cleanly (503) and nothing is half-published.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from passlib.hash import bcrypt

from tests.s3 import SeaweedFS
from tests.support import WharfProcess, client_env, http, make_sdist, make_wheel

pytestmark = pytest.mark.slow

DEADLINE = 20.0
PASSWORD = "s3 secret"


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done


def twine_upload(url: str, env: dict[str, str], *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                           "--repository-url", url + "/", "-u", "alice", "-p", PASSWORD, *map(str, files)],
                          env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def serve(base: Path, store: SeaweedFS, bucket: str, *args: str) -> WharfProcess:
    htpasswd = base / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    state = base / "packages"
    state.mkdir(exist_ok=True)
    return WharfProcess(state, "--storage-url", f"s3://{bucket}/pkgs", "--s3-list-interval", "0.5",
                        "--scan-interval", "0.2", "--password-file", str(htpasswd), *args, env=store.env())


def objects(store: SeaweedFS, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in store.client().list_objects_v2(Bucket=bucket).get("Contents", ()))


def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture(scope="module")
def site(tmp_path_factory, seaweedfs):
    base = tmp_path_factory.mktemp("s3-site")
    bucket = seaweedfs.make_bucket("wharf-s3-site")
    with serve(base, seaweedfs, bucket) as wharf:
        wharf.bucket = bucket
        yield wharf
        log = wharf.log()
    assert "Traceback" not in log, log
    assert not re.search(r'" 5\d\d ', log), log


def test_publish_install_metadata_range_and_304_from_the_bucket(site, seaweedfs, tmp_path: Path):
    env = client_env(tmp_path / "home")
    dists = tmp_path / "dists"
    whl, sdist = make_wheel(dists, "s3-alpha", "1.0"), make_sdist(dists, "s3-alpha", "1.0")
    beta = make_wheel(dists, "s3-beta", "2.0")
    done = twine_upload(site.url, env, whl, sdist)
    assert done.returncode == 0, done.stdout + done.stderr
    run(["uv", "publish", "--publish-url", site.url + "/legacy/", "--username", "alice", "--password", PASSWORD,
         str(beta)], env)
    assert objects(seaweedfs, site.bucket) == sorted(f"pkgs/{p.name}" for p in (whl, sdist, beta))
    body = seaweedfs.client().get_object(Bucket=site.bucket, Key=f"pkgs/{whl.name}")["Body"].read()
    assert body == whl.read_bytes()

    index = site.url + "/simple/"
    target = tmp_path / "pip-target"
    run([sys.executable, "-m", "pip", "install", "--no-input", "--target", str(target), "--index-url", index,
         "s3-alpha==1.0", "s3-beta==2.0"], env)
    assert (target / "s3_alpha" / "__init__.py").exists() and (target / "s3_beta" / "__init__.py").exists()
    target = tmp_path / "uv-target"
    run(["uv", "pip", "install", "--target", str(target), "--index-url", index, "s3-alpha==1.0"], env)
    assert (target / "s3_alpha" / "__init__.py").exists()

    # PEP 658: the wheel's METADATA, byte for byte, read from the object with ranged GETs.
    with zipfile.ZipFile(whl) as archive:
        metadata = archive.read("s3_alpha-1.0.dist-info/METADATA")
    status, _headers, got = http(f"{site.url}/packages/{whl.name}.metadata")
    assert status == 200 and got == metadata
    # Range and 304 on the file itself.
    data = whl.read_bytes()
    status, headers, got = http(f"{site.url}/packages/{whl.name}", headers={"Range": "bytes=10-99"})
    assert status == 206 and got == data[10:100] and headers["content-range"] == f"bytes 10-99/{len(data)}"
    status, headers, got = http(f"{site.url}/packages/{whl.name}")
    assert status == 200 and got == data and headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    status, _headers, got = http(f"{site.url}/packages/{whl.name}", headers={"If-None-Match": headers["etag"]})
    assert status == 304 and got == b""
    # The same name with other bytes: 409, and the object is unchanged.
    other = make_wheel(tmp_path / "other", "s3-alpha", "1.0", padding=100)
    done = twine_upload(site.url, env, other)
    assert done.returncode != 0 and "409" in done.stdout + done.stderr
    assert seaweedfs.client().get_object(Bucket=site.bucket, Key=f"pkgs/{whl.name}")["Body"].read() == data
    assert not [k for k in objects(seaweedfs, site.bucket) if ".wharf-uploads/" in k]


def test_objects_put_into_the_bucket_by_hand_appear_and_removed_ones_disappear(site, seaweedfs, tmp_path: Path):
    whl = make_wheel(tmp_path, "by-hand", "3.0")
    client = seaweedfs.client()
    client.put_object(Bucket=site.bucket, Key=f"pkgs/sub/{whl.name}", Body=whl.read_bytes())
    page = f"{site.url}/simple/by-hand/"
    wait_for(lambda: whl.name in http(page)[2].decode(), "a hand-put object did not appear")
    status, _headers, got = http(f"{site.url}/packages/sub/{whl.name}")
    assert status == 200 and got == whl.read_bytes()
    client.delete_object(Bucket=site.bucket, Key=f"pkgs/sub/{whl.name}")
    wait_for(lambda: http(page)[0] == 404, "a removed object did not disappear")
    assert http(f"{site.url}/packages/sub/{whl.name}")[0] == 404


def test_with_the_gateway_stopped_downloads_and_uploads_fail_fast_and_nothing_is_half_published(tmp_path: Path):
    store = SeaweedFS(tmp_path / "weed").start()
    try:
        bucket = store.make_bucket("wharf-outage")
        env = client_env(tmp_path / "home")
        first, later = make_wheel(tmp_path / "d", "outage", "1.0"), make_wheel(tmp_path / "d", "outage", "2.0")
        with serve(tmp_path, store, bucket) as wharf:
            assert twine_upload(wharf.url, env, first).returncode == 0
            store.stop()
            started = time.monotonic()
            status, _headers, _body = http(f"{wharf.url}/packages/{first.name}")
            assert status in (502, 503) and time.monotonic() - started < 10
            started = time.monotonic()
            done = twine_upload(wharf.url, env, later)
            assert done.returncode != 0 and "503" in done.stdout + done.stderr
            assert time.monotonic() - started < 30
            # The index still lists what it had; the refused file is not listed.
            page = http(f"{wharf.url}/simple/outage/")[2].decode()
            assert first.name in page and later.name not in page
            store.start()
            assert objects(store, bucket) == [f"pkgs/{first.name}"]
            # Back up: the same upload now goes through.
            done = twine_upload(wharf.url, env, later)
            assert done.returncode == 0, done.stdout + done.stderr
            assert objects(store, bucket) == sorted(f"pkgs/{p.name}" for p in (first, later))
    finally:
        store.stop()


def test_s3_redirect_clients_sends_clients_to_a_presigned_url(seaweedfs, tmp_path: Path):
    bucket = seaweedfs.make_bucket("wharf-redirect")
    whl = make_wheel(tmp_path / "d", "redirected", "1.0")
    seaweedfs.client().put_object(Bucket=bucket, Key=f"pkgs/{whl.name}", Body=whl.read_bytes())
    with serve(tmp_path, seaweedfs, bucket, "--s3-redirect-clients") as wharf:
        wait_for(lambda: http(f"{wharf.url}/packages/{whl.name}", method="HEAD")[0] == 200, "not indexed")
        status, headers, _body = http(f"{wharf.url}/packages/{whl.name}")
        assert status == 302 and headers["location"].startswith(seaweedfs.endpoint + f"/{bucket}/pkgs/{whl.name}?")
        assert headers["cache-control"] == "no-store"
        status, _headers, body = http(headers["location"])  # no credentials needed
        assert status == 200 and body == whl.read_bytes()
        env = client_env(tmp_path / "home")
        target = tmp_path / "target"
        run([sys.executable, "-m", "pip", "install", "--no-input", "--target", str(target), "--index-url",
             wharf.url + "/simple/", "redirected==1.0"], env)
        assert (target / "redirected" / "__init__.py").exists()
