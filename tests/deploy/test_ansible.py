"""The Ansible role, run for real: `ansible-playbook site.yml` on a fresh Debian container.

The target is a podman container from a local Debian base (tests/deploy/podman.py) with
nothing but Python 3 added; Ansible reaches it with `podman exec` (the podman_exec
connection plugin in tests/deploy/ansible_plugins/, which pipelines). The role
installs Wharf from a wheel built from this checkout, with a wheelhouse for its
dependencies (pip inside the container cannot reach an index). Clients then use the
index from outside, through the container's published HTTPS port, trusting the CA the role
made and fetched.
"""

from __future__ import annotations

import base64
import grp
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.podman import Podman, cache_lock, ensure_base_image
from tests.support import ROOT, client_env, free_port, make_wheel

pytestmark = pytest.mark.slow

ANSIBLE_DIR = ROOT / "ansible"
TARGET_IMAGE = "localhost/wharf-test/debian-python3:bookworm"
CONNECTION_PLUGINS = Path(__file__).parent / "ansible_plugins" / "connection"
HOST = "target"
# A target with nothing but Python: the role must bring everything else.
TARGET_CONTAINERFILE = """\
FROM {base}
RUN apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 \\
 && rm -rf /var/lib/apt/lists/*
"""


def _tool(name: str) -> str:
    # The one next to this Python first: a pyenv shim costs a shell and pyenv per call.
    path = Path(sys.executable).parent / name
    if not path.exists():
        path = Path(shutil.which(name) or name)
    if not path.exists():
        pytest.skip(f"{name} is not installed (pip install ansible-core ansible-lint)")
    return str(path)


# --- what an ansible-playbook run did -------------------------------------------------------
@dataclass
class Run:
    """One ansible-playbook run: its output, recap and what each task reported."""

    returncode: int
    output: str
    recap: dict[str, int] = field(default_factory=dict)
    # (section, task name, item or ""), section "TASK" or "HANDLER", for every "changed" line.
    changed: list[tuple[str, str, str]] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def parse(cls, returncode: int, output: str, host: str = HOST) -> Run:
        run = cls(returncode, output)
        section, task = "", ""
        for line in output.splitlines():
            header = re.match(r"^(TASK|RUNNING HANDLER) \[(?:[\w.]+ : )?(.+?)\] \*+$", line)
            if header:
                section = "HANDLER" if header.group(1) != "TASK" else "TASK"
                task = header.group(2)
                if section == "HANDLER":
                    run.handlers.append(task)
                continue
            status = re.match(rf"^changed: \[{host}\](?: => \(item=(.*?)\))?", line)
            if status:
                run.changed.append((section, task, status.group(1) or ""))
            recap = re.match(rf"^{host}\s+:\s+(.*)$", line)
            if recap:
                run.recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}
        return run

    def explain(self) -> str:
        return f"ansible-playbook exited {self.returncode}; last output:\n{self.output[-6000:]}"


# --- fixtures: the connection plugin, the wheels, the target, the provisioned index --------
@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """Wharf's wheel built from this checkout, with wheels of all its dependencies."""
    scratch = tmp_path_factory.mktemp("wharf-build")
    # Build from a copy: the checkout's build/ is shared with whoever else builds in it.
    source = scratch / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "examples")
    for name in ("app", "deploy"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    wheels = scratch / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], check=True, capture_output=True, timeout=600)
    return wheels


@dataclass
class Target:
    name: str
    https_port: int


@pytest.fixture(scope="module")
def target(podman: Podman, tmp_path_factory) -> Iterator[Target]:
    """A fresh Debian container with nothing but Python, its HTTPS port published on loopback."""
    context = tmp_path_factory.mktemp("target-image")
    (context / "Containerfile").write_text(TARGET_CONTAINERFILE.format(
        base=ensure_base_image(podman, tmp_path_factory.mktemp("base"))))
    with cache_lock("ansible-target-image"):
        podman("build", "--pull=never", "--tag", TARGET_IMAGE, str(context), timeout=900)
    name = f"wharf-ansible-{secrets.token_hex(4)}"
    # The same port inside and out, so the redirects and URLs nginx makes are right outside.
    # slirp4netns forwards it in user space: podman's shared bridge is also used by other
    # tests' containers, and one of them tearing it down would cut this one off.
    port = free_port()
    podman("run", "--detach", "--init", "--name", name, "--hostname", "wharf-target",
           "--network", "slirp4netns:port_handler=slirp4netns",
           "--publish", f"127.0.0.1:{port}:{port}", TARGET_IMAGE, "sleep", "infinity")
    try:
        yield Target(name, port)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


@dataclass
class Provisioned:
    """The target after two runs of site.yml, and how to run it again."""

    podman: Podman
    target: Target
    ca: Path
    user: str
    password: str
    first: Run
    second: Run
    inventory: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.target.https_port}"

    def playbook(self, *args: str) -> Run:
        return run_playbook(self.inventory, self.env, *args)

    def shell(self, command: str) -> str:
        return self.podman("exec", self.target.name, "sh", "-c", command).stdout


def run_playbook(inventory: Path, env: dict[str, str], *args: str) -> Run:
    started = time.monotonic()
    result = subprocess.run([_tool("ansible-playbook"), "-i", str(inventory), "site.yml", *args],
                            cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=900)
    run = Run.parse(result.returncode, result.stdout + result.stderr)
    run.seconds = time.monotonic() - started
    print(f"ansible-playbook {' '.join(args)}: {run.seconds:.0f} s, {run.recap}")
    return run


@pytest.fixture(scope="module")
def provisioned(podman: Podman, target: Target, wheelhouse: Path, tmp_path_factory) -> Provisioned:
    work = tmp_path_factory.mktemp("ansible")
    user, password = "uploader", secrets.token_urlsafe(18)
    wheel = next(wheelhouse.glob("wharf-*.whl"))
    inventory = work / "inventory.yml"
    # JSON is YAML: every value keeps its type.
    inventory.write_text(json.dumps({"wharf": {
        "hosts": {HOST: {
            "ansible_connection": "podman_exec",
            "ansible_host": target.name,
            "ansible_python_interpreter": "/usr/bin/python3",
            # Already root in the container, which has no sudo.
            "ansible_become": False,
        }},
        "vars": {
            "wharf_server_name": "localhost",
            "wharf_tls_alt_names": ["IP:127.0.0.1"],
            "wharf_https_port": target.https_port,
            "wharf_workers": 2,
            "wharf_wheel": str(wheel),
            "wharf_wheelhouse": str(wheelhouse),
            "wharf_users": [{"name": user, "password": password}],
            "wharf_tls_ca_fetch": str(work / "ca.crt"),
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
    return Provisioned(podman, target, work / "ca.crt", user, password, first, second, inventory, env)


# --- HTTPS from outside the target ------------------------------------------------------------
def _request(url: str, ca: Path, method: str = "GET", data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                         urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _upload_form(path: Path, name: str, version: str) -> tuple[bytes, str]:
    """A minimal twine-style multipart upload body (what an anonymous client would send)."""
    boundary = "wharf-ansible-" + secrets.token_hex(8)
    fields = {":action": "file_upload", "protocol_version": "1", "name": name, "version": version,
              "filetype": "bdist_wheel", "pyversion": "py3", "metadata_version": "2.1"}
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{path.name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --- tests -------------------------------------------------------------------------------------
def test_ansible_lint_passes_on_role_and_playbook() -> None:
    result = subprocess.run([_tool("ansible-lint"), "--offline", "--nocolor", "site.yml", "roles/wharf",
                             "inventory/example.yml"],
                            cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failure(s), 0 warning(s)" in result.stdout + result.stderr


def run_role_locally(work: Path, tasks_from: str, extra: dict, facts: bool = False) -> Run:
    """One task file of the role against this machine, inside ``work``, without its handlers."""
    playbook = work / f"{tasks_from}.yml"
    playbook.write_text(json.dumps([{
        "name": f"Run the role's {tasks_from} tasks", "hosts": "localhost",
        "gather_facts": facts, "gather_subset": ["min"],
        "tasks": [{"name": "Run them", "ansible.builtin.include_role": {"name": "wharf", "tasks_from": tasks_from}},
                  # No handlers: there are no services here to reload.
                  {"name": "Stop before the handlers", "ansible.builtin.meta": "end_play"}],
    }]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "ANSIBLE_"))}
    env.update(ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"), ANSIBLE_NOCOLOR="1", ANSIBLE_HOME=str(work / ".ansible"))
    result = subprocess.run([_tool("ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "-e", f"ansible_python_interpreter={sys.executable}", "-e", json.dumps(extra),
                             str(playbook)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    return Run.parse(result.returncode, result.stdout + result.stderr, host="localhost")


def test_role_writes_what_wharf_render_writes(tmp_path: Path) -> None:
    """The role's configs are byte for byte what `wharf render` makes of the app's settings."""
    from app.serving import render as deploy
    from app.settings import Settings

    config_dir = tmp_path / "etc"
    extra = {
        "wharf_config_dir": str(config_dir),
        "wharf_group": grp.getgrgid(os.getgid()).gr_name,
        "wharf_server_name": "pypi.example.com",
        "wharf_app_servers": ["10.0.0.11:8080", "10.0.0.12:8080"],
        "wharf_authenticate": ["update", "download", "list"],
        "wharf_max_upload_size": 123456789,
        "wharf_scan_interval": 2,
        "wharf_ocsp_stapling": False,
        "wharf_listen": ["*", "::"],
    }
    run = run_role_locally(tmp_path, "configs", extra)
    assert run.returncode == 0, run.explain()

    # The settings the app will run with are those of the env file the role wrote.
    environ = dict(line.split("=", 1) for line in (config_dir / "wharf.env").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert environ["WHARF_APP_SERVERS"] == "10.0.0.11:8080,10.0.0.12:8080"
    assert environ["WHARF_AUTHENTICATE"] == "update,download,list"
    assert environ["WHARF_SCAN_INTERVAL"] == "2.0"  # read as the app reads it: a float
    assert environ["WHARF_RUN_USER"] == "wharf"
    settings = Settings.from_env(environ)
    rendered = deploy.render(settings)
    written = {str(p.relative_to(config_dir)) for p in config_dir.rglob("*") if p.is_file()}
    # nginx.conf and supervisord.conf are the self-contained stack's, not a server's.
    assert written == set(rendered) - {"nginx/nginx.conf", "supervisor/supervisord.conf"}
    for relpath in sorted(written):
        assert (config_dir / relpath).read_text() == rendered[relpath], relpath
    assert oct((config_dir / "wharf.env").stat().st_mode & 0o777) == "0o640"


def test_tls_tasks_issue_reissue_copy_and_check(tmp_path: Path, test_ca) -> None:
    """The certificate tasks, run here on files under tmp_path (openssl is the real one)."""
    tls = tmp_path / "tls"
    paths = {"wharf_tls_cert": str(tls / "server.crt"), "wharf_tls_key": str(tls / "server.key"),
             "wharf_tls_ca_dir": str(tmp_path / "ca"), "wharf_tls_ca_fetch": str(tmp_path / "fetched-ca.crt")}

    def verify(*names: str) -> None:
        for name in names:
            check = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "fetched-ca.crt"),
                                    "-verify_hostname", name, str(tls / "server.crt")], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr

    # A local CA and a certificate it signed for the server name; the key is the owner's only.
    first = run_role_locally(tmp_path, "tls", {**paths, "wharf_server_name": "pypi.example.com"}, facts=True)
    assert first.returncode == 0, first.explain()
    verify("pypi.example.com")
    assert oct((tls / "server.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "ca/ca.key").stat().st_mode & 0o777) == "0o600"
    issued = (tls / "server.crt").read_bytes()
    # (A second run changing nothing is shown on the container, below.)
    # Another name: a new certificate from the same CA (which clients already trust).
    ca = (tmp_path / "ca/ca.crt").read_bytes()
    renamed = run_role_locally(tmp_path, "tls", {**paths, "wharf_server_name": "pypi.example.com",
                                                 "wharf_tls_alt_names": ["DNS:pypi"]}, facts=True)
    assert renamed.returncode == 0, renamed.explain()
    assert ("TASK", "Issue the server certificate from the local CA", "") in renamed.changed
    assert (tls / "server.crt").read_bytes() != issued and (tmp_path / "ca/ca.crt").read_bytes() == ca
    verify("pypi.example.com", "pypi")

    # A certificate of the user's own is copied as it is.
    own = {**paths, "wharf_tls_cert_src": str(test_ca.cert), "wharf_tls_key_src": str(test_ca.key)}
    copied = run_role_locally(tmp_path, "tls", own, facts=True)
    assert copied.returncode == 0, copied.explain()
    assert (tls / "server.crt").read_bytes() == test_ca.cert.read_bytes()
    assert (tls / "server.key").read_bytes() == test_ca.key.read_bytes()
    assert oct((tls / "server.key").stat().st_mode & 0o777) == "0o600"
    assert test_ca.key.read_text() not in copied.output

    # Managed elsewhere (certbot): only checked, and a missing one is a clear failure.
    elsewhere = {"wharf_tls_local_ca": False, "wharf_tls_cert": str(tmp_path / "none.crt"),
                 "wharf_tls_key": str(tmp_path / "none.key")}
    missing = run_role_locally(tmp_path, "tls", elsewhere, facts=True)
    assert missing.returncode != 0 and "must already be at" in missing.output


def test_htpasswd_module_changes_only_what_differs(tmp_path: Path) -> None:
    """The role's wharf_htpasswd module: bcrypt entries, kept while they verify."""
    from passlib.apache import HtpasswdFile

    path = tmp_path / "htpasswd"
    path.write_text("bob:s3cret-3\n")  # plaintext, which the app refuses
    steps = [  # (arguments, changed?)
        ({"name": "alice", "password": "s3cret-1", "mode": "0640"}, True),
        ({"name": "alice", "password": "s3cret-1", "mode": "0640"}, False),  # no new salt
        ({"name": "alice", "password": "s3cret-2"}, True),
        ({"name": "bob", "password": "s3cret-3"}, True),  # verifies, but is not bcrypt
        ({"name": "carol", "state": "absent"}, False),
        ({"name": "alice", "state": "absent"}, True),
        ({"name": "alice", "state": "absent"}, False),
    ]
    playbook = tmp_path / "htpasswd.yml"
    playbook.write_text(json.dumps([{
        "name": "Use wharf_htpasswd", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": f"Step {i}", "wharf_htpasswd": {"path": str(path), **args}, "no_log": True}
                  for i, (args, _) in enumerate(steps)],
    }]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_LIBRARY=str(ANSIBLE_DIR / "roles/wharf/library"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOME=str(tmp_path / "home"))
    result = subprocess.run([_tool("ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
                            env=env, capture_output=True, text=True, timeout=300)
    run = Run.parse(result.returncode, result.stdout + result.stderr, host="localhost")
    assert run.returncode == 0, run.explain()
    assert "s3cret" not in run.output
    assert [task for _, task, _ in run.changed] == [f"Step {i}" for i, (_, changed) in enumerate(steps) if changed]
    users = HtpasswdFile(str(path))
    assert users.users() == ["bob"] and users.get_hash("bob").startswith(b"$2")
    assert users.check_password("bob", "s3cret-3")
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_first_run_provisions_and_second_changes_nothing(provisioned: Provisioned) -> None:
    first, second = provisioned.first, provisioned.second
    assert first.recap["failed"] == 0 and first.recap["changed"] > 0, first.explain()
    assert second.recap["changed"] == 0, f"second run changed: {second.changed}\n{second.explain()}"
    assert second.recap["failed"] == 0 and second.handlers == []
    # The password went into the role's variables but never into its output.
    assert provisioned.password not in first.output + second.output
    # The services the role started: gunicorn as the wharf user under supervisord, nginx.
    status = provisioned.shell("supervisorctl status wharf")
    assert "RUNNING" in status, status
    # (No ps in a minimal Debian: the owners of the gunicorn processes, from /proc.)
    owners = provisioned.podman("exec", provisioned.target.name, "python3", "-c", (
        "import os, pwd\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit() and int(p) != os.getpid() and b'gunicorn' in open(f'/proc/{p}/cmdline', 'rb').read():\n"
        "        print(pwd.getpwuid(os.stat(f'/proc/{p}').st_uid).pw_name)\n")).stdout
    assert set(owners.split()) == {"wharf"}, owners
    htpasswd = provisioned.shell("stat -c '%U:%G %a' /etc/wharf/htpasswd; cut -d: -f1,2 /etc/wharf/htpasswd")
    assert htpasswd.startswith("root:wharf 640"), htpasswd
    assert f"{provisioned.user}:$2" in htpasswd, "the user's entry is not a bcrypt hash"
    # The CA the role made signs the certificate nginx presents (checked by every client below).
    assert b"BEGIN CERTIFICATE" in provisioned.ca.read_bytes()


def test_clients_use_the_index_over_https(provisioned: Provisioned, tmp_path: Path) -> None:
    url, ca = provisioned.url, provisioned.ca
    dist = make_wheel(tmp_path / "dist", "ansible-demo", "1.0")
    env = client_env(tmp_path / "home")

    # twine, as the user the role created.
    upload = subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                             "--repository-url", f"{url}/", "--cert", str(ca),
                             "-u", provisioned.user, "-p", provisioned.password, str(dist)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert upload.returncode == 0, upload.stdout + upload.stderr

    # pip installs it through nginx (TLS with the role's CA) and its cache.
    target_dir = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target_dir),
                              "--index-url", f"{url}/simple/", "--cert", str(ca), "ansible-demo==1.0"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    assert list(target_dir.glob("ansible_demo-1.0.dist-info"))

    # Wrong password: twine fails and nothing is stored.
    other = make_wheel(tmp_path / "other", "ansible-demo", "2.0")
    wrong = subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                            "--repository-url", f"{url}/", "--cert", str(ca),
                            "-u", provisioned.user, "-p", "not-the-password", str(other)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert wrong.returncode != 0
    # Anonymous upload: refused with a challenge, and nothing is stored.
    body, content_type = _upload_form(other, "ansible-demo", "2.0")
    status, headers, _ = _request(f"{url}/", ca, "POST", body, {"Content-Type": content_type})
    assert status == 401 and headers.get("www-authenticate", "").startswith("Basic")
    status, _, page = _request(f"{url}/simple/ansible-demo/", ca)
    assert status == 200 and b"ansible_demo-1.0-py3-none-any.whl" in page and b"2.0" not in page
    assert "ansible_demo-2.0" not in provisioned.shell("ls -R /srv/wharf/packages")

    # Plain HTTP is only a redirect to HTTPS (inside the target: only HTTPS is published).
    redirect = provisioned.shell("python3 -c \"import http.client as h; c=h.HTTPConnection('127.0.0.1', 80); "
                                 "c.request('GET', '/simple/', headers={'Host': 'localhost'}); r=c.getresponse(); "
                                 "print(r.status, r.getheader('Location'))\"")
    assert redirect.split() == ["301", f"{url}/simple/"]


def test_changing_a_setting_changes_and_reloads_only_what_uses_it(provisioned: Provisioned,
                                                                   tmp_path: Path) -> None:
    limit = 200_000
    run = provisioned.playbook("-e", json.dumps({"wharf_max_upload_size": limit}))
    assert run.returncode == 0, run.explain()
    # The limit lives in nginx's site (client_max_body_size) and in the app's settings (its
    # own 413), so exactly those two files change: nginx is reloaded (not restarted) and
    # gunicorn restarted to read the new settings; supervisord's program, the certificate,
    # the packages and the users are untouched.
    assert sorted(run.changed) == sorted([
        ("TASK", "Render the nginx configs", "nginx/site.conf.j2"),
        ("TASK", "Render the gunicorn config and the app's settings", "wharf.env.j2"),
        ("HANDLER", "Reload nginx", ""),
        ("HANDLER", "Restart wharf", ""),
    ]), run.explain()
    assert run.handlers == ["Restart wharf", "Check the nginx config", "Reload nginx"]
    # And the new limit holds: the app answers 413 through nginx for a bigger upload.
    big = make_wheel(tmp_path / "big", "ansible-big", "1.0", padding=limit + 50_000)
    body, content_type = _upload_form(big, "ansible-big", "1.0")
    auth = base64.b64encode(f"{provisioned.user}:{provisioned.password}".encode()).decode()
    status, _, text = _request(f"{provisioned.url}/", provisioned.ca, "POST", body,
                               {"Content-Type": content_type, "Authorization": f"Basic {auth}"})
    assert status == 413, text
