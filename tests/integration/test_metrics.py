"""/metrics under real servers: `wharf serve` with 2 workers (prometheus_client's
multi-process mode) and `wharf stack` (nginx in front, its stub_status beside).

Traffic comes from real pip and twine; the page is read by prometheus_client's own
parser, and the counts must add up across the workers.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPSConnection
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.auth import set_password
from tests.deploy.test_render import needs_nginx
from tests.deploy.test_stack import Stack
from tests.support import WharfProcess, client_env, http, make_wheel

PASSWORD = "correct horse"


def parse(body: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_workers(url: str, count: int, timeout: float = 20) -> dict[tuple[str, tuple], float]:
    """The metrics page once ``count`` workers have loaded the app (they boot one after the other)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = http(url)
        assert status == 200, body
        samples = parse(body)
        if value(samples, "wharf_workers") == count or time.monotonic() > deadline:
            assert value(samples, "wharf_workers") == count
            return samples
        time.sleep(0.2)


def run_client(cmd: list[str], home: Path, ca: Path | None = None) -> None:
    result = subprocess.run(cmd, env=client_env(home, ca=ca), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd[:4])} failed:\n{result.stdout}\n{result.stderr}"


def test_two_workers_count_into_one_page(tmp_path: Path):
    packages = tmp_path / "packages"
    make_wheel(packages, "alpha", "1.0")
    users = tmp_path / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    state = tmp_path / "state"
    with WharfProcess(packages, "--state-dir", str(state), "--password-file", str(users), workers=2) as server:
        before = wait_for_workers(server.url + "/metrics", 2)  # a live gauge summed over both workers

        # 60 page requests over 6 connections at once: both workers take some.
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: http(server.url + "/simple/alpha/")[0], range(60)))
        assert answers == [200] * 60
        assert http(server.url + "/no/such/page")[0] == 404
        run_client([sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", f"{server.url}/simple/",
                    "--target", str(tmp_path / "target"), "alpha"], tmp_path / "pip-home")
        wheel = make_wheel(tmp_path / "dist", "beta", "2.0")
        run_client([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                    "--repository-url", f"{server.url}/", "-u", "alice", "-p", PASSWORD, str(wheel)],
                   tmp_path / "twine-home")

        after = parse(http(server.url + "/metrics")[2])
        pages = ("wharf_http_requests_total", {"route": "/simple/<name>/", "method": "GET", "status": "200"})
        assert value(after, pages[0], **pages[1]) - value(before, pages[0], **pages[1]) >= 61  # ours + pip's
        assert value(after, "wharf_http_requests_total", route="(unmatched)", method="GET", status="404") == 1
        assert value(after, "wharf_uploads_total") == 1
        assert value(after, "wharf_upload_bytes_total") == wheel.stat().st_size
        assert value(after, "wharf_downloads_total") == 1
        assert value(after, "wharf_download_bytes_total") == (packages / "alpha-1.0-py3-none-any.whl").stat().st_size
        assert value(after, "wharf_catalog_projects") == 2 and value(after, "wharf_catalog_files") == 2
        assert value(after, "wharf_http_request_duration_seconds_count", route="/simple/<name>/") >= 61
        # Both workers wrote their share: one counter file per worker process.
        # They live in shared memory (memory-mapped files die of SIGBUS on a full disk), named
        # after the state directory and the port (deploy/gunicorn/gunicorn.conf.py.j2).
        import hashlib
        tag = hashlib.sha256(str(state).encode()).hexdigest()[:12]
        counter_files = list(Path("/dev/shm", f"wharf-metrics-{tag}-{server.port}").glob("counter_*.db"))
        assert len(counter_files) == 2, counter_files


@pytest.mark.slow
@needs_nginx
def test_nginx_passes_metrics_and_keeps_its_status_to_loopback(tmp_path: Path):
    root = tmp_path / "stack"
    make_wheel(root / "packages", "alpha", "1.0")
    stack = Stack(root)
    try:
        def get(path: str, source: str) -> tuple[int, bytes]:
            context = ssl.create_default_context(cafile=str(stack.ca))
            conn = HTTPSConnection("127.0.0.1", stack.https_port, context=context,
                                   source_address=(source, 0), timeout=30)
            try:
                conn.request("GET", path)
                answer = conn.getresponse()
                return answer.status, answer.read()
            finally:
                conn.close()

        for _ in range(3):
            assert get("/simple/alpha/", "127.0.0.1")[0] == 200
        status, body = get("/metrics", "127.0.0.1")
        assert status == 200
        samples = parse(body)
        assert value(samples, "wharf_http_requests_total", route="/simple/<name>/", method="GET", status="200") >= 1
        # Another address (the app sees it in X-Forwarded-For): not in metrics_allow.
        assert get("/metrics", "127.0.0.2")[0] == 401
        status, body = get("/nginx_status", "127.0.0.1")
        assert status == 200 and b"Active connections:" in body
        assert get("/nginx_status", "127.0.0.2")[0] == 403
    finally:
        stack.stop()
