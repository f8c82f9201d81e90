"""A Wharf cluster under faults, for real: three app nodes behind one nginx, one PostgreSQL, SeaweedFS as a cluster.

Three `wharf serve` nodes (gunicorn, two workers each) share a PostgreSQL catalog and a
bucket on SeaweedFS (master, three volume servers at replication 001, filer, S3 gateway:
tests/seaweed_cluster.py); nginx rendered from deploy/nginx with ``app_servers`` = the three
nodes balances them over HTTPS (a throwaway CA) and takes the nodes' cache refreshes.

a. One node's whole process group is killed (kill -9) while 10 clients install with pip and
   uv and 5 publish with twine through nginx: no install fails (pip and uv retry nothing
   here), every acknowledged upload is listed and downloadable, the bucket holds exactly
   the listed files, nginx routed around the dead node; restarted, the node serves what
   was uploaded while it was down.
b. A volume server is killed: downloads of files never fetched before, every file read by a node
   from the store, and new uploads go on.
c. PostgreSQL is stopped and started again under reads and writes: no read fails, writes get
   503 with Retry-After during the outage and change nothing, then succeed; no node restarts.
d. An upload through node A is at once installable through nginx (its cached page was
   refreshed before the upload was acknowledged) and, within a second, through node B.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from passlib.hash import bcrypt

from app.serving import render
from app.settings import Settings
from tests.deploy.conftest import LocalCA, make_test_ca
from tests.integration.test_publish import BOUNDARY, basic, form_body, upload_fields
from tests.postgres import PostgresServer
from tests.seaweed_cluster import SeaweedCluster
from tests.integration.test_nodes import wait_until
from tests.support import ROOT, client_env, free_port, http, make_wheel, stop_process, wait_http

from .harness import children

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORD = "cluster secret"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
SEEDS = ("flt-seed-a", "flt-seed-b", "flt-seed-c", "flt-seed-d")


# --- the cluster ---------------------------------------------------------------------------------
class Node:
    """One `wharf serve` (gunicorn master + workers, its own process group) on a fixed loopback port."""

    def __init__(self, index: int, base: Path, args: list[str], env: dict[str, str], workers: int = 2):
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        packages = base / f"packages-{index}"
        packages.mkdir(parents=True, exist_ok=True)
        self.cmd = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(workers), "--state-dir", str(base / f"state-{index}"), *args, str(packages)]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")} | env
        self.log_path = base / f"node-{index}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            wait_http(self.url + "/health", timeout=60, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"node {self.index} did not start:\n{self.log()[-3000:]}")
        return self

    def pids(self) -> set[int]:
        """The gunicorn master and its workers."""
        return {self.proc.pid, *children(self.proc.pid)}

    def kill(self) -> None:
        """kill -9 of the whole process group (master and workers at once), as a crashed host would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class LoadBalancer:
    """nginx rendered from deploy/nginx (`wharf render`'s code) with app_servers = the nodes; HTTPS."""

    def __init__(self, base: Path, ca, app_servers: list[str], refresh_port: int, bucket: str):
        self.base = base
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.settings = Settings(
            listen=("127.0.0.1",), https_port=self.port, http_port=free_port(), app_servers=tuple(app_servers),
            refresh_listen=f"127.0.0.1:{refresh_port}", storage_url=f"s3://{bucket}/pkgs", tls_cert=ca.cert,
            tls_key=ca.key, ocsp_stapling=False, cache_path=base / "cache", log_dir=base / "logs",
            run_dir=base / "run", config_dir=base / "conf", run_user="root" if os.geteuid() == 0 else "",
        ).validated()
        for directory in (base / "cache", base / "logs", base / "run" / "nginx"):
            directory.mkdir(parents=True, exist_ok=True)
        render.write(self.settings, self.settings.config_dir, ("nginx",))
        self.conf = self.settings.config_dir / "nginx" / "nginx.conf"
        self.proc: subprocess.Popen | None = None

    def start(self) -> LoadBalancer:
        check = subprocess.run([NGINX, "-t", "-c", str(self.conf), "-e", str(self.base / "logs" / "nginx-error.log")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([NGINX, "-c", str(self.conf), "-e", str(self.base / "logs" / "nginx-error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            assert self.proc.poll() is None and time.monotonic() < deadline, self.error_log()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)

    def access_log(self) -> str:
        path = self.base / "logs" / "nginx-access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def error_log(self) -> str:
        path = self.base / "logs" / "nginx-error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclasses.dataclass
class Cluster:
    base: Path
    ca: Path  # the CA file clients trust
    tls: LocalCA
    postgres: PostgresServer
    store: SeaweedCluster
    bucket: str
    nodes: list[Node]
    lb: LoadBalancer

    def stop(self) -> None:
        for part in (self.lb, *self.nodes):
            with contextlib.suppress(Exception):
                part.stop()
        with contextlib.suppress(Exception):
            self.store.stop()
        self.postgres.remove()


def start_cluster(base: Path, nodes: int = 3, workers: int = 2) -> Cluster:
    """PostgreSQL, SeaweedFS (3 volume servers, 001), ``nodes`` app nodes and nginx in front; alice may upload."""
    ca = make_test_ca(base / "tls")
    postgres = PostgresServer()
    started: list = []
    try:
        postgres.start()
        store = SeaweedCluster(base / "seaweed")
        started.append(store)
        store.start()
        bucket = store.make_bucket("wharf-cluster")
        htpasswd = base / "htpasswd"
        htpasswd.write_text(f"alice:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
        refresh_port = free_port()
        args = ["--database-url", postgres.new_database(), "--storage-url", f"s3://{bucket}/pkgs",
                "--s3-list-interval", "0.5", "--scan-interval", "0.2", "--password-file", str(htpasswd),
                "--login-failures-allowed", "100000", "--cache-refresh", f"127.0.0.1:{refresh_port}"]
        app_nodes = [Node(i, base, args, store.env(), workers) for i in range(nodes)]
        for node in app_nodes:
            started.append(node)
            node.start()
        lb = LoadBalancer(base / "nginx", ca, [f"127.0.0.1:{n.port}" for n in app_nodes], refresh_port, bucket)
        started.append(lb)
        lb.start()
    except BaseException:
        for part in reversed(started):
            with contextlib.suppress(Exception):
                part.stop()
        postgres.remove()
        raise
    return Cluster(base, ca.ca, ca, postgres, store, bucket, app_nodes, lb)


# --- clients -------------------------------------------------------------------------------------
def request(cluster: Cluster, url: str, method: str = "GET", headers: dict[str, str] | None = None,
            data: bytes | None = None, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One request (HTTPS trusting the cluster's CA, no proxy, no redirects): status, headers, body."""
    return http(url, method, headers, data, timeout, ssl.create_default_context(cafile=str(cluster.ca)))


def post_upload(cluster: Cluster, base_url: str, wheel: Path, name: str, version: str):
    data = wheel.read_bytes()
    headers = {"Authorization": basic("alice", PASSWORD),
               "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return request(cluster, base_url + "/legacy/", "POST", headers,
                   form_body(upload_fields(name, version, data), (wheel.name, data)))


def listed(cluster: Cluster, base_url: str, project: str) -> dict[str, str]:
    """filename -> sha256 of a project's files as ``base_url`` lists them (none if it has no page)."""
    status, _headers, body = request(cluster, f"{base_url}/simple/{project}/", headers=JSON)
    return {f["filename"]: f["hashes"]["sha256"] for f in json.loads(body)["files"]} if status == 200 else {}


def all_listed(cluster: Cluster, base_url: str) -> dict[str, str]:
    status, _headers, body = request(cluster, f"{base_url}/simple/", headers=JSON)
    assert status == 200, body
    found: dict[str, str] = {}
    for project in json.loads(body)["projects"]:
        found |= listed(cluster, base_url, project["name"])
    return found


def bucket_files(cluster: Cluster) -> set[str]:
    client = cluster.store.client()
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket, Prefix="pkgs/"):
        keys |= {o["Key"].removeprefix("pkgs/") for o in page.get("Contents", ())}
    return {k for k in keys if not k.startswith(".")}  # .uploads/: multipart temporaries, never listed


def pip_install(cluster: Cluster, home: Path, base_url: str, requirement: str,
                tool: str) -> subprocess.CompletedProcess:
    """pip or uv, scrubbed, without retries of their own (a failed request fails the install)."""
    env = client_env(home, cluster.ca, UV_HTTP_RETRIES="0")
    target = home / f"target-{time.monotonic_ns()}"
    if tool == "pip":
        cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--retries", "0", "--timeout", "60",
               "--cert", str(cluster.ca), "--target", str(target), "--index-url", base_url + "/simple/", requirement]
    else:
        cmd = ["uv", "pip", "install", "--no-cache", "--target", str(target), "--index-url", base_url + "/simple/",
               requirement]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    shutil.rmtree(target, ignore_errors=True)
    return done


def twine(cluster: Cluster, home: Path, wheel: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                           "--cert", str(cluster.ca), "--repository-url", cluster.lb.url + "/", "-u", "alice",
                           "-p", PASSWORD, str(wheel)],
                          env=client_env(home, cluster.ca), capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)




def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the fixture -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    base = tmp_path_factory.mktemp("cluster")
    running = start_cluster(base)
    try:
        for project in SEEDS:
            wheel = make_wheel(base / "seed-dists", project, "1.0", padding=16 * 1024)
            status, _h, body = post_upload(running, running.lb.url, wheel, project, "1.0")
            assert status == 200, body
        yield running
    finally:
        running.stop()
    for node in running.nodes:
        log = node.log()
        assert "Traceback" not in log, f"node {node.index}:\n" + log[max(0, log.index("Traceback") - 600):][:4000]


def check_every_node_alive(cluster: Cluster) -> None:
    for node in cluster.nodes:
        assert node.proc.poll() is None, f"node {node.index} exited:\n{node.log()[-3000:]}"


# --- a. an app node dies under installs and uploads --------------------------------------------------
def test_a_node_killed_under_installs_and_uploads_loses_nothing(cluster: Cluster, tmp_path: Path, figures):
    stop = threading.Event()
    installs: list[tuple[float, str, str, int, str]] = []  # (end time, tool, project, returncode, output)
    attempts: list[tuple[float, str, int, str]] = []  # (end time, filename, returncode, output)
    acknowledged: dict[str, str] = {}  # filename -> sha256
    lock = threading.Lock()

    def installer(i: int) -> None:
        tool = ("pip", "uv")[i % 2]
        n = 0
        while not stop.is_set():
            project = SEEDS[(i + n) % len(SEEDS)]
            done = pip_install(cluster, tmp_path / f"installer-{i}", cluster.lb.url, project, tool)
            with lock:
                installs.append((time.monotonic(), tool, project, done.returncode, done.stdout + done.stderr))
            n += 1

    def uploader(j: int) -> None:
        n = 0
        while not stop.is_set():
            wheel = make_wheel(tmp_path / f"up-{j}-{n}", f"flt-up-{j}", f"1.{n}", padding=8 * 1024)
            for _attempt in range(3):  # as a CI job would: a failed upload is sent again
                done = twine(cluster, tmp_path / f"uploader-{j}", wheel)
                with lock:
                    attempts.append((time.monotonic(), wheel.name, done.returncode, done.stdout + done.stderr))
                if done.returncode == 0:
                    with lock:
                        acknowledged[wheel.name] = sha256(wheel)
                    break
            n += 1

    threads = [threading.Thread(target=installer, args=(i,)) for i in range(10)]
    threads += [threading.Thread(target=uploader, args=(j,)) for j in range(5)]
    victim = cluster.nodes[1]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(installs) >= 5 and len(acknowledged) >= 3, 120, "no load got through")
        killed_at = time.monotonic()
        victim.kill()
        acked_before = set(acknowledged)
        wait_until(lambda: len([a for a in attempts if a[0] > killed_at and a[2] == 0]) >= 5
                   and len([i for i in installs if i[0] > killed_at + 1]) >= 10, 120,
                   "the load did not go on without the killed node")
        down_uploads = set(acknowledged) - acked_before
        restarted_at = time.monotonic()
        victim.start()
        # It catches up: what was uploaded while it was down is listed and served by it directly.
        for filename in down_uploads:
            project = re.sub(r"_", "-", filename.split("-")[0])
            wait_until(lambda: filename in listed(cluster, victim.url, project), 10,
                       f"the restarted node does not list {filename}")
            status, _h, body = request(cluster, f"{victim.url}/packages/{filename}")
            assert status == 200 and hashlib.sha256(body).hexdigest() == acknowledged[filename]
        wait_until(lambda: len([i for i in installs if i[0] > restarted_at]) >= 5, 120, "no installs after the restart")
    finally:
        stop.set()
        for t in threads:
            t.join(300)

    failed = [i for i in installs if i[3] != 0]
    assert not failed, "\n".join(f"{tool} {project}: {out[-1500:]}" for _t, tool, project, _rc, out in failed[:3])
    # Every upload was acknowledged in the end; a failed attempt is nginx's 502 for a POST that
    # was in flight on the killed node (never sent twice), nothing else.
    bad = [a for a in attempts if a[2] != 0]
    names = {a[1] for a in attempts}
    assert names == set(acknowledged), names - set(acknowledged)
    for _t, _name, _rc, out in bad:
        assert "502" in out, out[-1500:]
    # Every acknowledged upload is listed by every node and downloadable through nginx.
    for node in cluster.nodes:
        wait_until(lambda: set(acknowledged) <= set(all_listed(cluster, node.url)), 10,
                   f"node {node.index} misses acknowledged uploads")
    for filename, digest in acknowledged.items():
        status, _h, body = request(cluster, f"{cluster.lb.url}/packages/{filename}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == digest, filename
    # Nothing half-published: the bucket holds exactly the files the catalog lists.
    wait_until(lambda: bucket_files(cluster) == set(all_listed(cluster, cluster.nodes[0].url)), 15,
               "the bucket and the listing differ")
    # nginx routed around the dead node: it saw the refusals, and no read got a 5xx.
    assert re.search(rf"connect\(\) failed \(111: Connection refused\).*upstream: \"http://127\.0\.0\.1:{victim.port}/",
                     cluster.lb.error_log()), cluster.lb.error_log()[-3000:]
    read_errors = re.findall(r'"(?:GET|HEAD) [^"]*" 5\d\d .*', cluster.lb.access_log())
    assert not read_errors, read_errors[:5]
    check_every_node_alive(cluster)
    # Pages through nginx list them too (every node does, above): a missing one is a stale
    # cached page, the refresh answered by a node that had not seen the upload yet.
    through_lb = all_listed(cluster, cluster.lb.url)
    stale = sorted(f for f, digest in acknowledged.items() if through_lb.get(f) != digest)
    figures.record("cluster_node_killed", {
        "installs": len(installs), "installs_after_kill": len([i for i in installs if i[0] > killed_at]),
        "uploads_acknowledged": len(acknowledged), "uploads_while_down": len(down_uploads),
        "upload_attempts_failed": len(bad), "seconds_down": round(restarted_at - killed_at, 1),
        "stale_pages_through_nginx": len(stale)})
    assert not stale, f"nginx's cached pages miss acknowledged uploads that every node lists: {stale}"


# --- b. a volume server dies ------------------------------------------------------------------------
def test_a_volume_server_killed_leaves_downloads_and_uploads_working(cluster: Cluster, tmp_path: Path, figures):
    lb = cluster.lb.url
    before = [make_wheel(tmp_path / f"before-{n}", "flt-volume", f"1.{n}", padding=64 * 1024) for n in range(6)]
    for n, wheel in enumerate(before):
        status, _h, body = post_upload(cluster, lb, wheel, "flt-volume", f"1.{n}")
        assert status == 200, body
    # Every volume of the bucket has two copies on two servers (001), and the server about to
    # die holds copies with files in them: reads must find the other copy.
    volumes = cluster.store.volumes(cluster.bucket)
    assert volumes and all(len(copies) == 2 for copies in volumes.values()), volumes
    victim = cluster.store.volume_address(0)
    wait_until(lambda: any(copies.get(victim, 0) > 0 for copies in cluster.store.volumes(cluster.bucket).values()),
               20, f"volume server {victim} holds no files of the bucket")
    cluster.store.kill_volume(0)
    try:
        # Never downloaded before: nginx has none of them cached, each comes from the store.
        for wheel in before:
            status, _h, body = request(cluster, f"{lb}/packages/{wheel.name}")
            assert status == 200 and body == wheel.read_bytes(), (status, body[:200])
        # Every file in the bucket, some with a copy on the dead server, read from the store by a
        # node itself (no nginx cache in between).
        everything = all_listed(cluster, cluster.nodes[0].url)
        for filename, digest in everything.items():
            status, _h, body = request(cluster, f"{cluster.nodes[0].url}/packages/{filename}")
            assert status == 200 and hashlib.sha256(body).hexdigest() == digest, (filename, status)
        after = [make_wheel(tmp_path / f"after-{n}", "flt-volume", f"2.{n}", padding=64 * 1024) for n in range(6)]
        for n, wheel in enumerate(after):
            status, _h, body = post_upload(cluster, lb, wheel, "flt-volume", f"2.{n}")
            assert status == 200, body
        for wheel in after:
            status, _h, body = request(cluster, f"{lb}/packages/{wheel.name}")
            assert status == 200 and body == wheel.read_bytes()
        done = pip_install(cluster, tmp_path / "pip", lb, "flt-volume==2.5", "pip")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        cluster.store.start_volume(0)
        cluster.store.wait_volumes(3)
    check_every_node_alive(cluster)
    figures.record("cluster_volume_killed", {"downloads_through_nginx": 12, "reads_by_a_node": len(everything),
                                             "uploads": 6})


# --- c. PostgreSQL restarts under load -------------------------------------------------------------
def test_postgres_restart_reads_never_fail_writes_get_503_then_succeed(cluster: Cluster, tmp_path: Path, figures):
    pids = {node.index: node.pids() for node in cluster.nodes}
    stop = threading.Event()
    reads: list[tuple[float, str, int]] = []
    writes: list[tuple[float, str, int, str | None, bytes]] = []  # (start, filename, status, Retry-After, body)
    seed = make_wheel(tmp_path / "seed", SEEDS[0], "1.0", padding=16 * 1024)
    targets = [cluster.lb.url, *(n.url for n in cluster.nodes)]  # the nodes directly: no nginx cache

    def reader(i: int) -> None:
        n = 0
        while not stop.is_set():
            base = targets[(i + n) % len(targets)]
            for path, headers in ((f"/simple/{SEEDS[n % len(SEEDS)]}/", JSON), ("/simple/", {}),
                                  (f"/packages/{seed.name}", {})):
                status = request(cluster, base + path, headers=headers)[0]
                reads.append((time.monotonic(), base + path, status))
            n += 1

    def writer() -> None:
        n = 0
        while not stop.is_set():
            wheel = make_wheel(tmp_path / f"w-{n}", "flt-pg", f"1.{n}")
            started = time.monotonic()
            status, headers, body = post_upload(cluster, cluster.lb.url, wheel, "flt-pg", f"1.{n}")
            writes.append((started, wheel.name, status, headers.get("retry-after"), body))
            n += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)] + [threading.Thread(target=writer)]
    try:
        for t in threads:
            t.start()
        time.sleep(2)
        stopped_at = time.monotonic()
        cluster.postgres.stop("fast")
        time.sleep(4)
        started_at = time.monotonic()
        cluster.postgres.start()
        wait_until(lambda: any(w[0] > started_at and w[2] == 200 for w in writes), 30,
                   "uploads did not succeed again after PostgreSQL came back")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(120)

    failed_reads = [r for r in reads if r[2] != 200]
    assert not failed_reads, failed_reads[:5]
    assert {w[2] for w in writes} <= {200, 503}, [(w[2], w[4][:200]) for w in writes if w[2] not in (200, 503)]
    refused = [w for w in writes if w[2] == 503]
    assert refused, "no upload met the outage"
    assert all(w[3] and int(w[3]) > 0 for w in refused), refused
    assert all(stopped_at - 1 <= w[0] <= started_at + 30 for w in refused), "a 503 outside the outage"
    first_ok = min(w[0] for w in writes if w[0] > started_at and w[2] == 200)
    assert all(w[2] == 200 for w in writes if w[0] >= first_ok), "uploads failed after they had recovered"
    # A 503 changed nothing; every 200 is listed, everywhere, and in the bucket.
    accepted = {w[1] for w in writes if w[2] == 200}
    for node in cluster.nodes:
        wait_until(lambda: set(listed(cluster, node.url, "flt-pg")) == accepted, 10,
                   f"node {node.index} does not list exactly the accepted uploads")
    wait_until(lambda: {f for f in bucket_files(cluster) if f.startswith("flt_pg-")} == accepted, 10,
               "the bucket does not hold exactly the accepted uploads")
    # No node was restarted: the same gunicorn masters and workers.
    assert {node.index: node.pids() for node in cluster.nodes} == pids
    check_every_node_alive(cluster)
    figures.record("cluster_postgres_restart", {"reads": len(reads), "writes": len(writes),
                                                "writes_refused_503": len(refused)})


# --- d. an upload through one node, read through the others -------------------------------------------
def test_an_upload_through_node_a_is_installable_through_node_b_and_nginx(cluster: Cluster, tmp_path: Path, figures):
    a, b = cluster.nodes[0], cluster.nodes[2]
    lb = cluster.lb.url
    project = "flt-fresh"
    first = make_wheel(tmp_path / "v0", project, "1.0")
    assert post_upload(cluster, a.url, first, project, "1.0")[0] == 200
    stale = []
    for n in range(1, 9):
        # The page is in nginx's cache (a second request is a HIT) before the upload.
        request(cluster, f"{lb}/simple/{project}/", headers=JSON)
        wheel = make_wheel(tmp_path / f"v{n}", project, f"1.{n}")
        status, _h, body = post_upload(cluster, a.url, wheel, project, f"1.{n}")
        assert status == 200, body
        got = listed(cluster, lb, project)
        if wheel.name not in got:
            stale.append(f"1.{n}")
        wait_until(lambda: wheel.name in listed(cluster, b.url, project), 1.0,
                   "node B did not list node A's upload within 1 s")
    figures.record("cluster_read_your_writes", {"uploads": 8, "stale_pages": len(stale)})
    # The latest upload, at once: pip and uv through node B and through nginx.
    wheel = make_wheel(tmp_path / "v9", project, "1.9")
    assert post_upload(cluster, a.url, wheel, project, "1.9")[0] == 200
    wait_until(lambda: wheel.name in listed(cluster, b.url, project), 1.0, "node B did not list node A's upload in 1 s")
    for base, tool in ((lb, "pip"), (b.url, "pip"), (lb, "uv"), (b.url, "uv")):
        done = pip_install(cluster, tmp_path / f"{tool}-{base[-5:]}", base, f"{project}==1.9", tool)
        assert done.returncode == 0, f"{tool} through {base}:\n{done.stdout}{done.stderr}"
    # A stale page is the refresh answered by a node that had not seen the change yet.
    assert not stale, f"nginx served a stale page after the upload of {stale} was acknowledged"
