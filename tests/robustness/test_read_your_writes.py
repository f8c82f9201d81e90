"""Read-your-writes through nginx (issue 15; issue 14 point 13: no stale bytes).

A real ``wharf stack`` (supervisord, gunicorn, nginx) and a second nginx rendered from the
same templates (its own cache, ports and refresh server) in front of the same app servers.
Each round makes the pages hot in both caches (HIT), changes something (an upload, a
removal, a yank, a file copied in by hand) and reads at once through both: a read that
misses the change is stale. Figures: stale reads per round, what an upload pays for the
refreshes, and the hit ratio of a busy index page.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.serving import render
from app.serving.stack import stack_settings
from app.settings import Settings
from tests.deploy.test_render import NGINX
from tests.deploy.test_stack import PIP_ACCEPT, Stack, run_client
from tests.support import free_port, free_port_pair, make_wheel, stop_process

from .harness import PASSWORD, Client, basic, form

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")]

ALICE = basic("alice", PASSWORD)
HTML = {"Accept": "text/html"}
JSON = {"Accept": PIP_ACCEPT}
ROUNDS = 100  # uploads, yanks and removals through the index, each read at once


class SecondNginx:
    """Another nginx in front of the stack's app servers, from the same templates."""

    def __init__(self, stack: Stack, root: Path, refresh_port: int):
        self.https_port = free_port_pair()
        base = Settings(app_servers=(f"127.0.0.1:{stack.app_port}",), https_port=self.https_port,
                        http_port=free_port(), refresh_listen=f"127.0.0.1:{refresh_port}",
                        tls_cert=stack.root / "tls" / "server.crt", tls_key=stack.root / "tls" / "server.key")
        explicit = {"https_port", "http_port", "tls_cert", "tls_key"}
        settings = stack_settings(base, root, explicit)
        render.write(settings, settings.config_dir, ["nginx"])
        for directory in (settings.log_dir, settings.run_dir / "nginx", settings.cache_path):
            directory.mkdir(parents=True, exist_ok=True)
        self.cache = settings.cache_path
        self.proc = subprocess.Popen([NGINX, "-c", str(settings.config_dir / "nginx" / "nginx.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.client = Client(self.https_port, stack.ca)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and self.proc.poll() is None, "the second nginx did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory):
    """(stack, [client of nginx 1, client of nginx 2]); the app refreshes both."""
    from app.auth import set_password

    base = tmp_path_factory.mktemp("read-your-writes")
    root = base / "stack"
    make_wheel(root / "packages", "seed", "1.0")
    users = base / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    refresh_1, refresh_2 = free_port(), free_port()
    # --overwrite: a removed file's name may be published again with other bytes (the
    # "no stale bytes" rounds); without it the name keeps its bytes (app/policy).
    stack = Stack(root, "--password-file", str(users), "--overwrite", "--refresh-listen", f"127.0.0.1:{refresh_1}",
                  "--cache-refresh", f"127.0.0.1:{refresh_1},127.0.0.1:{refresh_2}", "--scan-interval", "0.3")
    second = SecondNginx(stack, base / "second", refresh_2)
    stack.refresh_ports = (refresh_1, refresh_2)
    try:
        yield stack, [Client(stack.https_port, stack.ca), second.client]
    finally:
        second.stop()
        stack.stop()


def hot(clients: list[Client], *paths: tuple[str, dict]) -> None:
    """Read each page until both caches answer it (HIT)."""
    for client in clients:
        for path, headers in paths:
            for _ in range(10):
                status, got, _ = client.get(path, headers)
                if got.get("x-cache-status") == "HIT":
                    break
            else:
                raise AssertionError(f"{path} {headers} never came from the cache")


def versions(client: Client, project: str) -> list[str]:
    status, _, body = client.get(f"/simple/{project}/", JSON)
    return json.loads(body)["versions"] if status == 200 else []


def wheel_bytes(tmp: Path, project: str, version: str, padding: int = 0) -> tuple[str, bytes]:
    path = make_wheel(tmp, project, version, padding=padding)
    return path.name, path.read_bytes()


def post(client: Client, fields: list[tuple[str, str]]) -> int:
    status, _, _ = client.request("POST", "/", {
        "Content-Type": "multipart/form-data; boundary=robustness-7d0c2f", "Authorization": ALICE}, form(fields))
    return status


def stale_reads(clients: list[Client], project: str, filename: str, data: bytes | None) -> list[str]:
    """What each nginx serves now that is not the state after the change (data None: removed)."""
    stale = []
    for n, client in enumerate(clients, 1):
        status, _, body = client.get(f"/simple/{project}/", JSON)
        listed = status == 200 and any(f["filename"] == filename for f in json.loads(body)["files"])
        html = client.get(f"/simple/{project}/", HTML)[2]
        flat = client.get("/packages/")[2]
        status, _, got = client.get(f"/packages/{filename}")
        meta = client.get(f"/packages/{filename}.metadata")[0]
        if data is None:
            checks = {"json": not listed, "html": filename.encode() not in html, "flat": filename.encode() not in flat,
                      "file": status == 404, "metadata": meta == 404}
        else:
            sha = hashlib.sha256(data).hexdigest()
            checks = {"json": listed and sha in body.decode(), "html": filename.encode() in html,
                      "flat": filename.encode() in flat, "file": status == 200 and got == data, "metadata": meta == 200}
        stale += [f"nginx {n} {what}" for what, fresh in checks.items() if not fresh]
    return stale


def test_uploads_removals_and_yanks_are_read_at_once_through_both_nginx(front, tmp_path: Path, figures):
    stack, clients = front
    stale: dict[str, list] = {"upload": [], "remove": [], "yank": [], "reupload": []}
    upload_seconds = []
    for i in range(ROUNDS):
        project = f"ryw-{i % 5}"
        filename, data = wheel_bytes(tmp_path / f"u{i}", project, f"1.{i}")
        if i >= 5:  # the project's pages exist: make them hot everywhere first
            hot(clients, (f"/simple/{project}/", JSON), (f"/simple/{project}/", HTML), ("/packages/", {}))
        hot(clients, ("/simple/", {}))
        start = time.monotonic()
        status, _ = clients[i % 2].upload(filename, data, project, f"1.{i}", ALICE)
        upload_seconds.append(time.monotonic() - start)
        assert status == 200
        stale["upload"] += [(i, s) for s in stale_reads(clients, project, filename, data)]
        if i < 5:  # a new project: in the index at once, on both
            stale["upload"] += [(i, f"nginx {n} index") for n, c in enumerate(clients, 1)
                                if f"{project}/".encode() not in c.get("/simple/", HTML)[2]]

    for i in range(ROUNDS):  # yank, then remove, each read at once
        project, version = f"ryw-{i % 5}", f"1.{i}"
        filename = f"ryw_{i % 5}-{version}-py3-none-any.whl"
        hot(clients, (f"/simple/{project}/", JSON), (f"/packages/{filename}", {}), (f"/packages/{filename}.metadata", {}))
        assert post(clients[i % 2], [(":action", "yank"), ("filename", filename), ("reason", "broken")]) == 200
        for n, client in enumerate(clients, 1):
            files = json.loads(client.get(f"/simple/{project}/", JSON)[2])["files"]
            if not any(f["filename"] == filename and f.get("yanked") == "broken" for f in files):
                stale["yank"].append((i, f"nginx {n}"))
        hot(clients, (f"/simple/{project}/", JSON), (f"/simple/{project}/", HTML), ("/packages/", {}))
        if i % 2:
            status = clients[0].request("DELETE", f"/packages/{filename}", {"Authorization": ALICE})[0]
        else:
            status = post(clients[1], [(":action", "remove_file"), ("filename", filename)])
        assert status == 200
        stale["remove"] += [(i, s) for s in stale_reads(clients, project, filename, None)]

    # Issue 14.13: a name removed and uploaded again with other bytes; nobody gets the old ones.
    for i in range(10):
        filename, old = wheel_bytes(tmp_path / f"a{i}", "reused", "1.0", padding=1000 + i)
        _, new = wheel_bytes(tmp_path / f"b{i}", "reused", "1.0", padding=2000 + i)
        assert clients[0].upload(filename, old, "reused", "1.0", ALICE)[0] == 200
        hot(clients, (f"/packages/{filename}", {}), (f"/packages/{filename}.metadata", {}), ("/simple/reused/", JSON))
        assert post(clients[i % 2], [(":action", "remove_file"), ("filename", filename)]) == 200
        assert clients[(i + 1) % 2].upload(filename, new, "reused", "1.0", ALICE)[0] == 200
        stale["reupload"] += [(i, s) for s in stale_reads(clients, "reused", filename, new)]
        assert post(clients[0], [(":action", "remove_file"), ("filename", filename)]) == 200

    figures.record("read_your_writes", {
        "upload_rounds": ROUNDS, "yank_rounds": ROUNDS, "remove_rounds": ROUNDS, "reupload_rounds": 10, "nginx": 2,
        "stale_reads": {kind: len(found) for kind, found in stale.items()},
        "upload_seconds_median": round(statistics.median(upload_seconds), 4)})
    assert stale == {"upload": [], "remove": [], "yank": [], "reupload": []}, stale


TOOL_ROUNDS = 50  # of each client: 100 real publishes, each read at once through both nginx


def test_twine_and_uv_publish_are_read_at_once(front, tmp_path: Path, figures):
    stack, clients = front
    stale = []
    for i in range(TOOL_ROUNDS):
        for tool in ("twine", "uv"):
            project, version = f"tool-{tool}", f"2.{i}"
            wheel = make_wheel(tmp_path / f"{tool}{i}", project, version)
            if i:
                hot(clients, (f"/simple/{project}/", JSON))
            if tool == "twine":
                cmd = [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                       "--repository-url", f"{stack.url}/", "--cert", str(stack.ca), "-u", "alice", "-p", PASSWORD,
                       str(wheel)]
            else:
                cmd = ["uv", "publish", "--publish-url", f"{stack.url}/", "-u", "alice", "-p", PASSWORD, str(wheel)]
            run_client(cmd, tmp_path / f"{tool}-home", stack.ca)
            stale += [(tool, i, n) for n, c in enumerate(clients, 1) if version not in versions(c, project)]
    figures.record("read_your_writes_real_clients", {"twine_rounds": TOOL_ROUNDS, "uv_rounds": TOOL_ROUNDS,
                                                     "nginx": 2, "stale_reads": len(stale)})
    assert stale == []


def test_a_file_copied_in_by_hand_shows_within_the_scan_interval_then_never_stale(front, tmp_path: Path, figures):
    stack, clients = front
    seconds, stale = [], []
    for i in range(5):
        project = "by-hand"
        if i:
            hot(clients, (f"/simple/{project}/", JSON), ("/packages/", {}))
        wheel = make_wheel(tmp_path / f"h{i}", project, f"3.{i}")
        start = time.monotonic()
        shutil.copy(wheel, stack.root / "packages" / f".{wheel.name}.part")  # as cp to a temporary name, then mv
        (stack.root / "packages" / f".{wheel.name}.part").rename(stack.root / "packages" / wheel.name)
        deadline = start + 5
        while not all(f"3.{i}" in versions(c, project) for c in clients):
            assert time.monotonic() < deadline, "the file copied in by hand never showed"
            time.sleep(0.05)
        seconds.append(time.monotonic() - start)
        for _ in range(20):  # once shown, never stale again
            stale += [(i, n) for n, c in enumerate(clients, 1) if f"3.{i}" not in versions(c, project)]
    figures.record("read_your_writes_by_hand", {"files": 5, "seconds_to_show_max": round(max(seconds), 2),
                                                "stale_reads_after_shown": len(stale)})
    assert stale == []


def test_a_busy_index_page_is_answered_by_nginx(front, tmp_path: Path, figures):
    stack, clients = front
    filename, data = wheel_bytes(tmp_path / "busy", "busy", "4.0")
    assert clients[0].upload(filename, data, "busy", "4.0", ALICE)[0] == 200
    statuses = []
    for i in range(500):
        if i % 100 == 50:
            filename, data = wheel_bytes(tmp_path / f"busy{i}", "busy", f"4.{i}")
            assert clients[0].upload(filename, data, "busy", f"4.{i}", ALICE)[0] == 200
        status, headers, _ = clients[0].get("/simple/busy/", JSON)
        assert status == 200
        statuses.append(headers.get("x-cache-status"))
    ratio = statuses.count("HIT") / len(statuses)
    figures.record("read_your_writes_hit_ratio", {"requests": 500, "uploads_meanwhile": 5, "hit_ratio": round(ratio, 3)})
    assert ratio > 0.95, statuses


def test_what_an_upload_pays_for_the_refreshes(front, tmp_path: Path, figures):
    """The HEAD requests an upload of a new version sends each nginx, timed from outside."""
    stack, clients = front
    import http.client
    timings = []
    for i in range(20):
        start = time.monotonic()
        for port in stack.refresh_ports:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            for path, accept in [("/simple/ryw-1/", a) for a in ("text/html", JSON["Accept"], "application/vnd.pypi.simple.v1+html")] + \
                    [("/packages/", None), ("/packages/x.whl", None), ("/packages/x.whl.metadata", None)]:
                conn.request("HEAD", path, headers={"Accept": accept} if accept else {})
                response = conn.getresponse()
                response.read()
                assert response.status in (200, 404)
            conn.close()
        timings.append(time.monotonic() - start)
    figures.record("read_your_writes_refresh_cost", {"nginx": 2, "requests_per_upload": 12,
                                                     "seconds_median": round(statistics.median(timings), 4)})


def test_errors_say_how_long_caches_may_keep_them(front):
    stack, clients = front
    status, headers, _ = clients[0].get("/simple/no-such-project/")
    assert status == 404 and headers["cache-control"] == "max-age=5"
    status, headers, _ = clients[0].request("POST", "/", {"Content-Type": "multipart/form-data; boundary=x"}, b"")
    assert status == 401 and headers["cache-control"] == "no-store"
    status, headers, _ = clients[0].request("POST", "/", {"Authorization": basic("alice", "wrong"),
                                                         "Content-Type": "multipart/form-data; boundary=x"}, b"")
    assert status in (401, 429) and headers["cache-control"] == "no-store"


def test_the_refresh_server_is_not_reachable_from_outside_the_allowed_addresses(front):
    """Only loopback is allowed here: a request from another local address is refused."""
    stack, _ = front
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", stack.refresh_ports[0], timeout=5, source_address=("127.0.0.9", 0))
    conn.request("HEAD", "/simple/")
    assert conn.getresponse().status == 403
