"""Several real `wharf serve` nodes on one PostgreSQL database and one storage, for real.

Three nodes share a SeaweedFS bucket and a database: twine uploads through one, pip and uv
install through the others, a yank through one shows on the others within a second, two
uploads of one name with different bytes through two nodes end as one 200 and one 409
with one file, PEP 658 metadata, Range and 304 come from any node. Two nodes on one local
packages directory do the same. With PostgreSQL killed, uploads answer 503 with
Retry-After, reads keep working from memory, and after a restart every node takes
uploads again without being restarted.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from passlib.hash import bcrypt

from tests.integration.test_publish import BOUNDARY, basic, form_body, upload_fields
from tests.integration.test_s3_storage import PASSWORD, run, twine_upload
from tests.support import WharfProcess, client_env, http, make_sdist, make_wheel

pytestmark = pytest.mark.slow

VISIBLE_WITHIN = 1.0  # the promise: a change through one node shows on every other within 1 s
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def post_form(node: WharfProcess, fields: dict[str, str], file: tuple[str, bytes] | None = None):
    headers = {"Authorization": basic("alice", PASSWORD), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return http(node.url + "/legacy/", "POST", headers, form_body(fields, file))


def upload(node: WharfProcess, wheel: Path, name: str, version: str):
    data = wheel.read_bytes()
    return post_form(node, upload_fields(name, version, data), (wheel.name, data))


def files_on(node: WharfProcess, project: str) -> list[dict]:
    status, _headers, body = http(f"{node.url}/simple/{project}/", headers=JSON)
    return json.loads(body)["files"] if status == 200 else []


def wait_until(check, within: float, what: str) -> float:
    """Seconds until ``check()`` held; fails after ``within``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, what
        time.sleep(0.02)
    return time.monotonic() - started


def start_nodes(base: Path, count: int, database_url: str, storage: list[str], env: dict[str, str] | None = None,
                packages: Path | None = None, scan_interval: str = "0.2") -> list[WharfProcess]:
    """``count`` nodes on one database; each its own state directory (and packages dir unless given)."""
    htpasswd = base / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    nodes: list[WharfProcess] = []
    try:
        for i in range(count):
            own = packages or base / f"packages-{i}"
            own.mkdir(exist_ok=True)
            nodes.append(WharfProcess(own, *storage, "--database-url", database_url, "--state-dir",
                                      str(base / f"state-{i}"), "--scan-interval", scan_interval,
                                      "--password-file", str(htpasswd), "--login-failures-allowed", "100000",
                                      env=env, log=base / f"node-{i}.log"))
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def stop_nodes(nodes: list[WharfProcess]) -> None:
    for node in nodes:
        node.stop()
    for node in nodes:
        log = node.log()
        assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def s3_nodes(tmp_path_factory, seaweedfs, postgres):
    base = tmp_path_factory.mktemp("s3-nodes")
    bucket = seaweedfs.make_bucket("wharf-nodes")
    nodes = start_nodes(base, 3, postgres.new_database(), ["--storage-url", f"s3://{bucket}/pkgs",
                                                           "--s3-list-interval", "0.5"], env=seaweedfs.env())
    yield nodes, bucket
    stop_nodes(nodes)
    for node in nodes:
        assert not re.search(r'" 5\d\d ', node.log()), node.log()


@pytest.fixture(scope="module")
def local_nodes(tmp_path_factory, postgres):
    base = tmp_path_factory.mktemp("local-nodes")
    shared = base / "packages"
    shared.mkdir()
    nodes = start_nodes(base, 2, postgres.new_database(), [], packages=shared)
    yield nodes, shared
    stop_nodes(nodes)


def objects(seaweedfs, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in seaweedfs.client().list_objects_v2(Bucket=bucket).get("Contents", ()))


def check_publish_install_and_reads(nodes: list[WharfProcess], tmp_path: Path, project: str) -> tuple[Path, Path]:
    """twine through the first node, pip and uv through the others, 658/Range/304 through the last."""
    env = client_env(tmp_path / "home")
    dists = tmp_path / "dists"
    whl, sdist = make_wheel(dists, project, "1.0"), make_sdist(dists, project, "1.0")
    done = twine_upload(nodes[0].url, env, whl, sdist)
    assert done.returncode == 0, done.stdout + done.stderr
    for node in nodes[1:]:
        wait_until(lambda: len(files_on(node, project)) == 2, VISIBLE_WITHIN, f"the upload did not reach {node.url}")
    module = project.replace("-", "_")
    target = tmp_path / "pip-target"
    run([sys.executable, "-m", "pip", "install", "--no-input", "--target", str(target), "--index-url",
         nodes[1].url + "/simple/", f"{project}==1.0"], env)
    assert (target / module / "__init__.py").exists()
    target = tmp_path / "uv-target"
    run(["uv", "pip", "install", "--target", str(target), "--index-url", nodes[-1].url + "/simple/",
         f"{project}==1.0"], env)
    assert (target / module / "__init__.py").exists()

    last = nodes[-1]
    with zipfile.ZipFile(whl) as archive:
        metadata = archive.read(f"{module}-1.0.dist-info/METADATA")
    status, _headers, got = http(f"{last.url}/packages/{whl.name}.metadata")
    assert status == 200 and got == metadata
    data = whl.read_bytes()
    status, headers, got = http(f"{last.url}/packages/{whl.name}", headers={"Range": "bytes=5-49"})
    assert status == 206 and got == data[5:50] and headers["content-range"] == f"bytes 5-49/{len(data)}"
    status, headers, got = http(f"{last.url}/packages/{whl.name}")
    assert status == 200 and got == data and headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert http(f"{last.url}/packages/{whl.name}", headers={"If-None-Match": headers["etag"]})[0] == 304
    return whl, sdist


def check_yank_reaches_every_node(nodes: list[WharfProcess], project: str) -> None:
    def yanked_everywhere(value) -> bool:
        return all({f["yanked"] for f in files_on(node, project)} == {value} for node in nodes)

    status, _headers, body = post_form(nodes[1], {":action": "yank", "name": project, "version": "1.0",
                                                  "reason": "broken build"})
    assert status == 200, body
    wait_until(lambda: yanked_everywhere("broken build"), VISIBLE_WITHIN, "a yank did not reach every node in 1 s")
    status, _headers, body = post_form(nodes[-1], {":action": "unyank", "name": project, "version": "1.0"})
    assert status == 200, body
    wait_until(lambda: yanked_everywhere(False), VISIBLE_WITHIN, "an unyank did not reach every node in 1 s")


def race_uploads(first: WharfProcess, second: WharfProcess, tmp_path: Path, project: str, rounds: int) -> list[str]:
    """Same-name uploads with different bytes through two nodes at once; the names that won."""
    winners = []
    for n in range(rounds):
        version = f"0.{n}"
        wheels = [make_wheel(tmp_path / f"race-{n}-{side}", project, version, padding=64 + side)
                  for side in (0, 1)]
        answers: list = [None, None]
        start = threading.Barrier(2)

        def send(side: int) -> None:
            start.wait()
            answers[side] = upload((first, second)[side], wheels[side], project, version)

        threads = [threading.Thread(target=send, args=(side,)) for side in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = sorted(a[0] for a in answers)
        assert statuses == [200, 409], [(a[0], a[2][:200]) for a in answers]
        won = wheels[[a[0] for a in answers].index(200)]
        winners.append(won)
        for node in (first, second):
            wait_until(lambda: [f["filename"] for f in files_on(node, project)
                                if f["filename"].startswith(f"{project.replace('-', '_')}-{version}-")]
                       == [won.name], VISIBLE_WITHIN, "the race's winner is not the one listed file")
            status, _headers, got = http(f"{node.url}/packages/{won.name}")
            assert status == 200 and got == won.read_bytes()
    return winners


def test_three_s3_nodes_publish_install_and_read_through_any_node(s3_nodes, seaweedfs, tmp_path: Path):
    nodes, bucket = s3_nodes
    whl, sdist = check_publish_install_and_reads(nodes, tmp_path, "fleet-alpha")
    assert {f"pkgs/{whl.name}", f"pkgs/{sdist.name}"} <= set(objects(seaweedfs, bucket))


def test_a_yank_through_one_s3_node_shows_on_the_others_within_a_second(s3_nodes, tmp_path: Path):
    nodes, _bucket = s3_nodes
    wheel = make_wheel(tmp_path, "fleet-yank", "1.0")
    assert upload(nodes[0], wheel, "fleet-yank", "1.0")[0] == 200
    check_yank_reaches_every_node(nodes, "fleet-yank")


def test_same_name_uploads_through_two_s3_nodes_one_wins(s3_nodes, seaweedfs, tmp_path: Path):
    nodes, bucket = s3_nodes
    winners = race_uploads(nodes[0], nodes[1], tmp_path, "fleet-race", rounds=5)
    keys = objects(seaweedfs, bucket)
    assert [k for k in keys if "fleet_race" in k] == sorted(f"pkgs/{w.name}" for w in winners)
    for won in winners:
        body = seaweedfs.client().get_object(Bucket=bucket, Key=f"pkgs/{won.name}")["Body"].read()
        assert body == won.read_bytes()
    assert not [k for k in keys if ".wharf-uploads/" in k]


def test_two_local_nodes_on_one_packages_directory(local_nodes, tmp_path: Path):
    nodes, shared = local_nodes
    check_publish_install_and_reads(nodes, tmp_path, "local-fleet")
    check_yank_reaches_every_node(nodes, "local-fleet")
    winners = race_uploads(nodes[0], nodes[1], tmp_path, "local-race", rounds=5)
    on_disk = sorted(p.name for p in shared.rglob("local_race-*"))
    assert on_disk == sorted(w.name for w in winners)
    for won in winners:
        assert (shared / won.name).read_bytes() == won.read_bytes()


def test_nodes_ride_out_a_database_outage(tmp_path: Path):
    from tests.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        database = server.new_database()
        shared = tmp_path / "packages"
        shared.mkdir()
        nodes = start_nodes(tmp_path, 2, database, [], packages=shared)
        try:
            before = make_wheel(tmp_path / "d", "outage", "1.0")
            assert upload(nodes[0], before, "outage", "1.0")[0] == 200
            wait_until(lambda: len(files_on(nodes[1], "outage")) == 1, VISIBLE_WITHIN, "the upload did not spread")
            time.sleep(1)  # every worker of every node follows the journal (each scan_interval)

            server.kill()
            for n, node in enumerate(nodes):
                wheel = make_wheel(tmp_path / f"down-{n}", "outage", f"2.{n}")
                started = time.monotonic()
                status, headers, body = upload(node, wheel, "outage", f"2.{n}")
                assert status == 503 and headers.get("retry-after"), (status, headers, body)
                assert time.monotonic() - started < 15
                assert not (shared / wheel.name).exists()
                # Reads keep working from memory: pages, files, metadata.
                assert [f["filename"] for f in files_on(node, "outage")] == [before.name]
                status, _headers, got = http(f"{node.url}/packages/{before.name}")
                assert status == 200 and got == before.read_bytes()
                assert http(f"{node.url}/simple/")[0] == 200

            server.start()
            for n, node in enumerate(nodes):
                wheel = make_wheel(tmp_path / f"up-{n}", "outage", f"3.{n}")
                deadline = time.monotonic() + 30
                while (status := upload(node, wheel, "outage", f"3.{n}")[0]) == 503:
                    assert time.monotonic() < deadline, f"{node.url} still refuses uploads after the restart"
                    time.sleep(0.5)
                assert status == 200
            for node in nodes:
                wait_until(lambda: len(files_on(node, "outage")) == 3, 5, "the uploads after the restart did not spread")
        finally:
            for node in nodes:
                node.stop()
        for node in nodes:
            assert "Traceback" not in node.log(), node.log()
    finally:
        server.remove()
