"""`wharf migrate` for real: a single-node index (packages directory + SQLite) into SeaweedFS +
PostgreSQL, and back; a node on the target serves the same files, yank, status and token;
a second run copies nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from passlib.hash import bcrypt

from tests.integration.test_nodes import JSON, PASSWORD, files_on, post_form, upload
from tests.integration.test_publish import BOUNDARY, basic, form_body, upload_fields
from tests.support import ROOT, WharfProcess, http, make_wheel

pytestmark = pytest.mark.slow


def wharf(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, env={**os.environ, **env})
    assert done.returncode == 0, f"wharf {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def node(base: Path, name: str, place: list[str], env: dict[str, str]) -> WharfProcess:
    packages = base / f"{name}-packages"
    packages.mkdir(exist_ok=True)
    return WharfProcess(packages, *place, "--scan-interval", "0.2", "--s3-list-interval", "0.5",
                        "--password-file", str(base / "htpasswd"), "--login-failures-allowed", "100000",
                        env=env, log=base / f"{name}.log")


def check_same_index(server: WharfProcess, wheels: dict[str, bytes], token: str, version: str) -> None:
    listed = {f["filename"]: f for f in files_on(server, "moving")}
    assert set(listed) == set(wheels)
    for name, data in wheels.items():
        status, _h, got = http(f"{server.url}/packages/{name}")
        assert status == 200 and got == data and listed[name]["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert [f["yanked"] for n, f in sorted(listed.items())][0] == "old"
    status, _h, body = http(f"{server.url}/simple/moving/", headers=JSON)
    assert json.loads(body)["project-status"] == {"status": "deprecated", "reason": "moved"}
    later = make_wheel(Path(server.log_path).parent / f"later-{version}", "moving", version)
    data = later.read_bytes()
    status, _h, body = http(server.url + "/legacy/", "POST",
                            {"Authorization": basic("__token__", token),
                             "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                            form_body(upload_fields("moving", version, data), (later.name, data)))
    assert status == 200, body
    wheels[later.name] = data


def test_migrate_into_s3_and_postgresql_and_back(tmp_path: Path, seaweedfs, postgres):
    (tmp_path / "htpasswd").write_text(f"alice:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    database, bucket = postgres.new_database(), seaweedfs.make_bucket("wharf-migrate")
    local = ["--state-dir", str(tmp_path / "state")]
    wheels: dict[str, bytes] = {}
    with node(tmp_path, "single", local, {}) as single:
        for n in range(4):
            wheel = make_wheel(tmp_path / "dists", "moving", f"1.{n}", padding=n * 1000)
            assert upload(single, wheel, "moving", f"1.{n}")[0] == 200
            wheels[wheel.name] = wheel.read_bytes()
        assert post_form(single, {":action": "yank", "name": "moving", "version": "1.0", "reason": "old"})[0] == 200
    where = ["--packages", str(tmp_path / "single-packages"), *local]
    wharf({}, "status", "moving", "deprecated", "--reason", "moved", *where)
    token = wharf({}, "token", "create", "--user", "alice", "--password-file", str(tmp_path / "htpasswd"),
                  *local).strip()

    to_cloud = ["--to-storage-url", f"s3://{bucket}/pkgs", "--to-database-url", database]
    out = wharf(seaweedfs.env(), "migrate", *where, *to_cloud)
    assert "4 file(s) copied" in out and "1 yanks" in out and "1 tokens" in out, out
    out = wharf(seaweedfs.env(), "migrate", *where, *to_cloud)
    assert "0 file(s) copied (0 bytes), 4 already there; no new rows" in out, out
    keys = sorted(o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"pkgs/{name}" for name in wheels)

    cloud = ["--storage-url", f"s3://{bucket}/pkgs", "--database-url", database, "--state-dir", str(tmp_path / "cloud")]
    with node(tmp_path, "cloud", cloud, seaweedfs.env()) as server:
        check_same_index(server, wheels, token, "2.0")
        assert "Traceback" not in server.log()

    back = ["--to-storage-url", "", "--to-database-url", "", "--to-packages", str(tmp_path / "back-packages"),
            "--to-state-dir", str(tmp_path / "back-state")]
    out = wharf(seaweedfs.env(), "migrate", *cloud, *back)
    assert "5 file(s) copied" in out, out
    assert "0 file(s) copied" in wharf(seaweedfs.env(), "migrate", *cloud, *back)
    with node(tmp_path, "back", ["--state-dir", str(tmp_path / "back-state")], {}) as server:
        check_same_index(server, wheels, token, "3.0")
        assert "Traceback" not in server.log()
    assert sorted(p.name for p in (tmp_path / "back-packages").iterdir() if p.is_file()) == sorted(wheels)


def test_migrate_stops_at_a_file_with_other_bytes(tmp_path: Path):
    source, target = tmp_path / "a", tmp_path / "b"
    first = make_wheel(source, "clash", "1.0")
    make_wheel(target, "clash", "1.0", padding=5)
    done = subprocess.run([sys.executable, "-m", "app", "migrate", "--packages", str(source), "--to-packages",
                           str(target), "--to-state-dir", str(tmp_path / "state-b")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and f"{first.name} is already in the target with other bytes" in done.stderr
