"""The whole stack as users run it: `wharf stack` (supervisord, gunicorn, nginx with TLS and cache).

Real nginx, supervisord, gunicorn, pip, uv and twine on loopback, through HTTPS. Cache
behaviour is observed through X-Cache-Status, never assumed; nothing is timed.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from app.auth import set_password
from app.simple_api import JSON_V1, negotiate
from tests.support import ROOT, client_env, free_port, free_port_pair, make_wheel, stop_process

from .conftest import LocalCA
from .test_render import needs_nginx

pytestmark = [pytest.mark.slow, needs_nginx]

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
PASSWORD = "correct horse"


class Stack:
    """``wharf stack DIR`` started as a user starts it, stopped by its PID."""

    def __init__(self, root: Path, *args: str, ca: Path | None = None, env: dict[str, str] | None = None):
        self.root = root
        self.https_port, self.http_port, self.app_port = free_port_pair(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.https_port}"
        self.log_path = root.parent / f"{root.name}.log"
        self._log = open(self.log_path, "wb")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}, **(env or {})}
        cmd = [sys.executable, "-m", "app", "stack", str(root), "--https-port", str(self.https_port),
               "--http-port", str(self.http_port), "--port", str(self.app_port), "--workers", "2", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.ca = ca or root / "tls" / "ca.crt"
        try:
            self.wait_until(lambda: self.request("/health")[0] == 200, "the stack answers /health", 60)
        except Exception:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, path: str, headers: dict[str, str] | None = None, *, url: str | None = None,
                method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request trusting only the stack's CA, without following redirects."""
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        context = ssl.create_default_context(cafile=str(self.ca))
        opener = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        req = urllib.request.Request(url or self.url + path, method=method, headers=headers or {})
        try:
            with opener.open(req, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wharf stack exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{what}: not within {timeout}s\n{self.log()[-3000:]}")

    def ctl(self, *args: str) -> str:
        conf = self.root / "conf" / "supervisor" / "supervisord.conf"
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args],
                                capture_output=True, text=True, timeout=60)
        return result.stdout

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        self._log.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def observe_hit(stack: Stack, path: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """Repeat a request until the cache answers it (a hot page); the HIT response's headers."""
    seen = []
    for _ in range(20):
        status, response_headers, _ = stack.request(path, headers)
        assert status == 200, (path, status)
        seen.append(response_headers.get("x-cache-status"))
        if seen[-1] == "HIT":
            return response_headers
    raise AssertionError(f"{path} never came from the cache: {seen}")


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def run_client(cmd: list[str], home: Path, ca: Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=client_env(home, ca=ca), capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(cmd[:4])} failed:\n{result.stdout}\n{result.stderr}"
    return result


def seed(packages: Path) -> None:
    make_wheel(packages, "alpha", "1.0")
    for n in range(15):  # an index page big enough to be worth compressing
        make_wheel(packages, f"project-{n:02d}", "0.1")


# --- a public index (uploads need a user), with the stack's own local CA --------------------------
@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("public") / "stack"
    seed(root / "packages")
    users = root.parent / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    # These tests watch cached pages expire and get revalidated: nginx keeps index pages
    # 1 s here instead of index_cache_lifetime's hour (refreshes stay on; see
    # tests/robustness/test_read_your_writes.py for the default lifetime).
    stack = Stack(root, "--password-file", str(users), "--index-cache-lifetime", "1")
    yield stack
    stack.stop()


def test_supervisord_runs_gunicorn_and_nginx(public: Stack):
    def states() -> list[list[str]]:
        return [line.split()[:2] for line in public.ctl("status").splitlines()]

    # STARTING until each has stayed up for its startsecs.
    public.wait_until(lambda: all(state != "STARTING" for _, state in states()), "supervisord's start")
    assert states() == [["nginx", "RUNNING"], ["wharf", "RUNNING"]]
    assert (public.root / "tls" / "ca.crt").is_file()  # made by the stack: the public tests trust it


def test_plain_http_redirects_to_https(public: Stack):
    status, headers, _ = public.request("", url=f"http://127.0.0.1:{public.http_port}/simple/alpha/?x=1")
    assert status == 301
    assert headers["location"] == f"https://127.0.0.1:{public.https_port}/simple/alpha/?x=1"


def test_https_speaks_http2_and_sends_hsts(public: Stack):
    context = ssl.create_default_context(cafile=str(public.ca))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", public.https_port)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    for path in ("/simple/alpha/", "/packages/alpha-1.0-py3-none-any.whl", "/simple/no-such-project/"):
        _, headers, _ = public.request(path)
        assert headers["strict-transport-security"] == "max-age=63072000"


def test_the_app_sees_the_clients_scheme_host_and_port(public: Stack):
    spoofed = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Prefix": "/evil",
               "X-Forwarded-Proto": "http", "X-Forwarded-Port": "1", "Forwarded": "host=evil.example"}
    status, headers, _ = public.request("/simple/Alpha/", spoofed)
    assert status == 301
    assert headers["location"] == f"https://127.0.0.1:{public.https_port}/simple/alpha/"


def test_index_pages_are_served_from_the_cache_and_revalidated(public: Stack):
    headers = observe_hit(public, "/simple/alpha/")
    assert "max-age=1" in headers["cache-control"] and headers["etag"]
    # Once the page's max-age has passed, nginx asks the app with If-None-Match, and the
    # unchanged page costs a 304.
    seen = []

    def renewed() -> bool:
        status, headers, _ = public.request("/simple/alpha/")
        assert status == 200
        seen.append(headers["x-cache-status"])
        return seen[-1] != "HIT"

    public.wait_until(renewed, "the cached page expires", 10)
    assert seen[-1] == "REVALIDATED", seen


@pytest.mark.parametrize("which", ["public", "private"])
def test_a_cached_index_page_never_outlives_its_max_age(which: str, request: pytest.FixtureRequest):
    """The app gives nginx the page's last second (X-Accel-Expires, kept from clients): a page
    renewed in second S is a HIT only within S (max-age=1), never in the next second, which
    with max-age alone nginx would allow. Observed over three second boundaries, with listing
    open and protected (where nginx ignores the private page's Cache-Control)."""
    stack: Stack = request.getfixturevalue(which)
    credentials = basic("alice", PASSWORD) if which == "private" else None
    renewed_by = None  # the latest second in which the cached copy could have been made
    statuses = []
    end = time.time() + 3.2
    while time.time() < end:
        before = time.time()
        status, headers, _ = stack.request("/simple/alpha/", credentials)
        after = time.time()
        assert status == 200 and "x-accel-expires" not in headers
        statuses.append(headers["x-cache-status"])
        if statuses[-1] == "HIT":
            # (a copy cached before this test began is not judged: its second is unknown)
            assert renewed_by is None or int(before) <= renewed_by, (statuses, before, renewed_by)
        else:
            renewed_by = int(after)
    assert statuses.count("HIT") > 10 and {"REVALIDATED", "EXPIRED"} & set(statuses), statuses


def test_package_files_are_cached_long_and_never_compressed(public: Stack):
    path = "/packages/alpha-1.0-py3-none-any.whl"
    headers = observe_hit(public, path, {"Accept-Encoding": "gzip"})
    assert "immutable" in headers["cache-control"] and "max-age=31536000" in headers["cache-control"]
    assert "content-encoding" not in headers
    data = (public.root / "packages" / "alpha-1.0-py3-none-any.whl").read_bytes()
    _, _, body = public.request(path, {"Accept-Encoding": "gzip"})
    assert body == data
    # Ranges (uv, pip's lazy wheels) are cut from the cached file.
    status, headers, body = public.request(path, {"Range": "bytes=10-29"})
    assert (status, body, headers["x-cache-status"]) == (206, data[10:30], "HIT")


@pytest.mark.parametrize("accept", [JSON_V1, "text/html"])
def test_index_pages_are_gzipped(public: Stack, accept: str):
    status, headers, body = public.request("/simple/", {"Accept": accept, "Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert "project-14" in text
    # The cache holds the app's gzip copy; a client that takes no gzip gets it inflated.
    status, plain, inflated = public.request("/simple/", {"Accept": accept, "Accept-Encoding": "identity"})
    assert status == 200 and "content-encoding" not in plain and inflated.decode() == text
    assert plain["x-cache-status"] == "HIT"


def test_json_and_html_variants_never_mix(public: Stack):
    accepts = [PIP_ACCEPT, "text/html", UV_ACCEPT, BROWSER_ACCEPT, JSON_V1, "application/vnd.pypi.simple.v1+html",
               "*/*", "application/vnd.pypi.simple.latest+json", "text/html, application/vnd.pypi.simple.v1+json;q=0.5"]
    statuses: dict[str, set] = {a: set() for a in accepts}
    for _ in range(2):
        for accept in [a for a in accepts for _ in range(2)]:  # each twice in a row: the second is hot
            status, headers, body = public.request("/simple/alpha/", {"Accept": accept})
            assert status == 200
            expected = negotiate(accept)
            assert headers["content-type"].split(";")[0] == expected, accept
            if expected == JSON_V1:
                assert json.loads(body)["name"] == "alpha"
            else:
                assert body.lstrip().lower().startswith(b"<!doctype html")
            statuses[accept].add(headers.get("x-cache-status"))
    # The cache did answer: the check above ran against cached copies, not only the app.
    assert sum("HIT" in seen for seen in statuses.values()) >= len(accepts) // 2, statuses


def test_pip_and_uv_install_through_nginx(public: Stack, tmp_path: Path):
    index = f"{public.url}/simple/"
    run_client([sys.executable, "-m", "pip", "install", "--cert", str(public.ca), "--index-url", index,
                "--target", str(tmp_path / "pip-target"), "alpha"], tmp_path / "pip-home", public.ca)
    assert (tmp_path / "pip-target" / "alpha" / "__init__.py").is_file()
    run_client(["uv", "pip", "install", "--index-url", index, "--target", str(tmp_path / "uv-target"),
                "--python", sys.executable, "alpha"], tmp_path / "uv-home", public.ca)
    assert (tmp_path / "uv-target" / "alpha" / "__init__.py").is_file()


def test_an_upload_is_installable_at_once_and_shows_within_a_second(public: Stack, tmp_path: Path):
    observe_hit(public, "/simple/")  # the index page is hot in the cache
    observe_hit(public, "/simple/alpha/", {"Accept": PIP_ACCEPT})
    big = make_wheel(tmp_path / "dist", "bigwheel", "1.0", padding=30 * 1024 * 1024)
    newer = make_wheel(tmp_path / "dist", "alpha", "2.0")
    run_client([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                "--repository-url", f"{public.url}/", "--cert", str(public.ca),
                "-u", "alice", "-p", PASSWORD, str(big), str(newer)], tmp_path / "twine-home", public.ca)
    assert (public.root / "packages" / big.name).stat().st_size == big.stat().st_size

    # A project the cache has not seen: installable right away (30 MB through nginx).
    run_client([sys.executable, "-m", "pip", "install", "--cert", str(public.ca), "--index-url",
                f"{public.url}/simple/", "--target", str(tmp_path / "target"), "--no-deps", "bigwheel==1.0"],
               tmp_path / "pip-home", public.ca)
    assert (tmp_path / "target" / "bigwheel" / "padding.bin").stat().st_size == 30 * 1024 * 1024
    # Pages that were cached show the uploads once their max-age (1 s) has passed.
    public.wait_until(lambda: b"bigwheel" in public.request("/simple/")[2], "bigwheel in the cached index", 10)
    public.wait_until(lambda: "2.0" in json.loads(public.request("/simple/alpha/", {"Accept": PIP_ACCEPT})[2])["versions"],
                      "alpha 2.0 in the cached project page", 10)
    # And the big file is now served by nginx from its cache.
    headers = observe_hit(public, f"/packages/{big.name}")
    assert int(headers["content-length"]) == big.stat().st_size


def test_a_killed_worker_is_replaced_and_the_index_keeps_answering(public: Stack):
    master = int(public.ctl("pid", "wharf").strip())
    workers = children(master)
    assert len(workers) == 2, workers
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    public.wait_until(lambda: len(children(master) - {victim}) == 2, "gunicorn replaces the killed worker")
    for n in range(6):  # past the cache: a URL with a query string always goes to the app
        status, headers, body = public.request(f"/simple/alpha/?after-kill={n}")
        assert status == 200 and headers["x-cache-status"] == "BYPASS" and b"alpha-1.0" in body
    assert "wharf                            RUNNING" in public.ctl("status")
    assert int(public.ctl("pid", "wharf").strip()) == master


def test_a_stopped_app_leaves_cached_pages_served_stale(public: Stack):
    observe_hit(public, "/simple/alpha/")
    observe_hit(public, "/packages/alpha-1.0-py3-none-any.whl")
    public.ctl("stop", "wharf")
    try:
        status, _, _ = public.request("/health")
        assert status == 502
        # Past the page's max-age nginx must ask the app, which is gone: the old copy is served.
        public.wait_until(lambda: public.request("/simple/alpha/")[1]["x-cache-status"] != "HIT",
                          "the cached page expires", 10)
        status, headers, body = public.request("/simple/alpha/")
        assert status == 200 and headers["x-cache-status"] == "STALE" and b"alpha-1.0" in body
        status, headers, _ = public.request("/packages/alpha-1.0-py3-none-any.whl")
        assert status == 200 and headers["x-cache-status"] == "HIT"
    finally:
        public.ctl("start", "wharf")
    public.wait_until(lambda: public.request("/health")[0] == 200, "the app is back")


# --- a private index (every action needs a user), with the test's own CA ---------------------------
@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, test_ca: LocalCA):
    root = tmp_path_factory.mktemp("private") / "stack"
    seed(root / "packages")
    users = root.parent / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    set_password(users, "bob", "another secret", rounds=4)
    stack = Stack(root, "--password-file", str(users), "--index-cache-lifetime", "1", "--authenticate", "update,download,list",
                  "--tls-cert", str(test_ca.cert), "--tls-key", str(test_ca.key), "--file-recheck", "2",
                  ca=test_ca.ca)
    yield stack
    stack.stop()


PROTECTED = [("/simple/alpha/", {}), ("/simple/alpha/", {"Accept": PIP_ACCEPT}), ("/simple/", {}),
             ("/packages/", {}), ("/packages/alpha-1.0-py3-none-any.whl", {}),
             ("/packages/alpha-1.0-py3-none-any.whl.metadata", {})]


@pytest.mark.parametrize("path,headers", PROTECTED)
def test_cached_protected_content_never_reaches_anonymous_clients(private: Stack, path: str, headers: dict):
    observe_hit(private, path, {**headers, **basic("alice", PASSWORD)})  # the cache holds it now
    for credentials in ({}, basic("alice", "wrong"), basic("mallory", PASSWORD),
                        {"Authorization": "Basic bm90LWJhc2U2NA=="}, {"Authorization": "Bearer x"}):
        status, response_headers, body = private.request(path, {**headers, **credentials})
        assert status == 401, (path, credentials, status)
        assert response_headers["www-authenticate"].startswith("Basic ")
        assert b"alpha-1.0" not in body and b"project-00" not in body
    status, _, body = private.request(path, {**headers, **basic("bob", "another secret")})
    assert status == 200 and body


def test_a_removed_file_stops_being_served_from_the_cache(private: Stack):
    """Package files are cached long, but nginx asks the app again every file_recheck
    seconds (2 here, 60 by default): a kept file costs a 304, a removed one is gone."""
    alice = basic("alice", PASSWORD)
    kept, removed = "/packages/project_01-0.1-py3-none-any.whl", "/packages/project_02-0.1-py3-none-any.whl"
    for path in (kept, removed):
        observe_hit(private, path, alice)
    kept_body = private.request(kept, alice)[2]
    (private.root / "packages" / removed.rsplit("/", 1)[1]).unlink()  # by hand, as an admin would
    private.wait_until(lambda: private.request(removed, alice)[0] == 404, "the removed file is 404 through nginx", 15)
    seen = []

    def rechecked() -> bool:
        status, headers, body = private.request(kept, alice)
        assert status == 200 and body == kept_body and "x-accel-expires" not in headers
        seen.append(headers["x-cache-status"])
        return seen[-1] != "HIT"

    private.wait_until(rechecked, "the kept file is checked again", 15)
    assert seen[-1] == "REVALIDATED", seen


def test_the_credential_check_is_not_reachable_from_outside(private: Stack):
    status, _, _ = private.request("/_auth/list", basic("alice", PASSWORD))
    assert status == 404


def test_pip_installs_from_the_private_index_with_credentials(private: Stack, tmp_path: Path):
    index = f"https://alice:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{private.https_port}/simple/"
    run_client([sys.executable, "-m", "pip", "install", "--cert", str(private.ca), "--index-url", index,
                "--target", str(tmp_path / "target"), "alpha"], tmp_path / "home", private.ca)
    assert (tmp_path / "target" / "alpha" / "__init__.py").is_file()


# sslyze's bundled trust stores hold an old root with a negative serial number.
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_tls_is_compliant_with_mozilla_intermediate(private: Stack):
    from sslyze import (Scanner, ScanCommandsExtraArguments, ServerNetworkLocation, ServerScanRequest,
                        ServerScanStatusEnum)
    from sslyze.mozilla_tls_profile.tls_config_checker import (SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
                                                               MozillaTlsConfiguration, TlsConfigurationEnum,
                                                               check_server_against_tls_configuration)
    from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument

    request = ServerScanRequest(
        server_location=ServerNetworkLocation("localhost", private.https_port, ip_address="127.0.0.1"),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=private.ca)),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    result = next(iter(scanner.get_results()))
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    # Raises ServerNotCompliantWithTlsConfiguration, listing the issues, if it is not.
    check_server_against_tls_configuration(result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
    assert result.scan_result.tls_1_1_cipher_suites.result.accepted_cipher_suites == []
    assert result.scan_result.tls_1_3_cipher_suites.result.accepted_cipher_suites
