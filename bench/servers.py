"""The servers under test, each started on a free loopback port and stopped by its PID.

The three Python servers run under the same gunicorn command line (``GUNICORN_ARGS``:
2 sync workers, no access log); the two nginx instances run from private prefixes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jinja2

from tests.support import ROOT, free_port, free_port_pair, stop_process

BENCH = Path(__file__).resolve().parent
PYPISERVER_VENV = BENCH / ".venv-pypiserver"
PYPISERVER_REQUIREMENT = "pypiserver[cache]==2.4.2"
WORKERS = 2


def gunicorn_args(port: int) -> list[str]:
    """The same gunicorn settings for every Python server."""
    return ["--workers", str(WORKERS), "--worker-class", "sync", "--bind", f"127.0.0.1:{port}",
            "--timeout", "300", "--graceful-timeout", "5", "--log-level", "warning",
            "--no-control-socket"]


def ensure_pypiserver() -> Path:
    """pypiserver in its own venv (its ``pypi-server`` script would shadow Wharf's)."""
    gunicorn = PYPISERVER_VENV / "bin" / "gunicorn"
    if not gunicorn.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PYPISERVER_VENV)], check=True)
        subprocess.run([str(PYPISERVER_VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                        PYPISERVER_REQUIREMENT, "gunicorn==27.*"], check=True)
    return gunicorn


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def opener(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    handlers: list = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def first_answer(url: str, timeout: float, proc: subprocess.Popen, context: ssl.SSLContext | None = None) -> float:
    """Seconds until ``url`` answers 200 (polled every 10 ms)."""
    start = time.monotonic()
    deadline = start + timeout
    request = urllib.request.Request(url)
    opener_ = opener(context)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with opener_.open(request, timeout=min(timeout, 60)) as r:
                r.read()
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


class Server:
    """One running server: its URL, processes, start time and memory."""

    name = "server"
    kind = "python"  # or "nginx"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        self.ca: Path | None = None  # the CA to trust, for an HTTPS server
        self.context: ssl.SSLContext | None = None
        self.log_path = workdir / f"{self.name}-{self.port}.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self, probe: str, timeout: float = 900.0) -> Server:
        """Start and time until ``probe`` (a path) first answers 200."""
        cmd, env = self.command()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        try:
            first_answer(self.url + probe, timeout, self.proc, self.context)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.log()[-3000:]}") from None
        self.start_seconds = time.monotonic() - started
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 600.0) -> tuple[int, dict, bytes]:
        from .load import fetch

        return fetch(self.url + path, headers, timeout, self.context)

    def workers(self) -> list[int]:
        return children(self.proc.pid) if self.proc else []

    def cpu(self) -> float:
        """CPU seconds used so far by the master and its workers."""
        if self.proc is None:
            return 0.0
        return sum(cpu_seconds(pid) for pid in (self.proc.pid, *self.workers()))

    def memory(self) -> dict:
        """Resident memory (MiB) of the master and each worker."""
        if self.proc is None:
            return {}
        workers = [rss_kib(pid) for pid in self.workers()]
        workers = [w / 1024 for w in workers if w is not None]
        master = rss_kib(self.proc.pid)
        return {"master_mib": round(master / 1024, 1) if master else None,
                "workers_mib": [round(w, 1) for w in workers],
                "max_worker_mib": round(max(workers), 1) if workers else None}

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)
            self.proc = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "BENCH_"))}
    env.update(extra)
    return env


class Wharf(Server):
    """Wharf as gunicorn's ``app.wsgi:application``, configured by WHARF_* variables."""

    name = "wharf"

    def __init__(self, workdir: Path, packages: list[Path], state_dir: Path, password_file: Path | None = None,
                 name: str = "wharf"):
        self.name = name
        super().__init__(workdir)
        self.packages = packages
        self.state_dir = state_dir
        self.password_file = password_file

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = _python_env(
            WHARF_PACKAGES=",".join(str(p) for p in self.packages),
            WHARF_STATE_DIR=str(self.state_dir),
            WHARF_LOG_LEVEL="warning",
        )
        if self.password_file:
            env["WHARF_PASSWORD_FILE"] = str(self.password_file)
        return [sys.executable, "-m", "gunicorn", *gunicorn_args(self.port), "app.wsgi:application"], env


class Pypiserver(Server):
    """pypiserver 2.4 with its cached-dir backend, under the same gunicorn settings."""

    name = "pypiserver"

    def __init__(self, workdir: Path, packages: Path):
        super().__init__(workdir)
        self.packages = packages

    def command(self) -> tuple[list[str], dict[str, str]]:
        gunicorn = ensure_pypiserver()
        target = f"pypiserver:app(root={str(self.packages)!r}, backend_arg='cached-dir', disable_fallback=True)"
        return [str(gunicorn), *gunicorn_args(self.port), target], _python_env()


class Floor(Server):
    """The bare bottle app returning the captured bytes from memory."""

    name = "floor"

    def __init__(self, workdir: Path, static: Path):
        super().__init__(workdir)
        self.static = static

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = _python_env(BENCH_STATIC=str(self.static))
        return [sys.executable, "-m", "gunicorn", *gunicorn_args(self.port), "bench.floor:app"], env


def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(BENCH / "nginx"), trim_blocks=True,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


class Nginx(Server):
    """A private nginx from a config bench renders (``nginx -p PREFIX -c CONF``, in the foreground)."""

    kind = "nginx"

    def __init__(self, workdir: Path, name: str, template: str, **values):
        self.name = name
        super().__init__(workdir)
        self.prefix = workdir / f"{name}-nginx"
        if self.prefix.exists():
            shutil.rmtree(self.prefix)
        self.prefix.mkdir(parents=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "cache", "logs"):
            (self.prefix / sub).mkdir()
        # Started as root, workers keep root's identity so they can read the private
        # (0700) work directories; otherwise nginx would run them as "nobody".
        user = "root root" if os.geteuid() == 0 else ""
        config = _templates().get_template(template).render(prefix=str(self.prefix), port=self.port, user=user,
                                                            **values)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(config)
        if values.get("tls_conf"):
            self.use_tls(values["ca"])
        self.check()

    def use_tls(self, ca: Path) -> None:
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = ca
        self.context = ssl.create_default_context(cafile=str(ca))

    def check(self) -> None:
        check = subprocess.run(["nginx", "-t", "-p", str(self.prefix), "-c", str(self.conf)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"{self.name}: nginx -t failed:\n{check.stderr}\n{self.conf.read_text()}")

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ["nginx", "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"], dict(os.environ)


class DeployedNginx(Nginx):
    """nginx with the configuration ``wharf render`` writes (deploy/nginx: TLS, HTTP/2,
    the cache, access log), in front of an already running Wharf."""

    def __init__(self, workdir: Path, upstream_port: int, name: str = "wharf_nginx"):
        from app.serving import render as deploy
        from app.settings import Settings
        from app.serving.local_ca import make_local_ca

        self.name = name
        Server.__init__(self, workdir)
        self.port = free_port_pair()  # nginx takes refreshes on the next port
        self.url = f"https://127.0.0.1:{self.port}"
        root = workdir / f"{name}-stack"
        if root.exists():
            shutil.rmtree(root)
        ca, cert, key = make_local_ca(root / "tls", "localhost")
        self.settings = dataclasses.replace(
            Settings(), listen=("127.0.0.1",), https_port=self.port, http_port=free_port(),
            app_servers=(f"127.0.0.1:{upstream_port}",), tls_cert=cert, tls_key=key, ocsp_stapling=False,
            cache_path=root / "cache", log_dir=root / "logs", run_dir=root / "run", config_dir=root / "conf",
            run_user="root" if os.geteuid() == 0 else "", supervise_nginx=True,
            nginx_path=shutil.which("nginx") or "/usr/sbin/nginx").validated()
        for directory in (root / "cache", root / "logs", root / "run" / "nginx"):
            directory.mkdir(parents=True, exist_ok=True)
        deploy.write(self.settings, self.settings.config_dir)
        self.prefix = root
        self.conf = self.settings.config_dir / "nginx" / "nginx.conf"
        self.tls_conf = self.settings.config_dir / "nginx" / "tls.conf"
        self.use_tls(ca)
        self.check()

    def command(self) -> tuple[list[str], dict[str, str]]:
        # The rendered nginx.conf says "daemon off" itself (supervisord runs it so).
        return ["nginx", "-p", str(self.prefix), "-c", str(self.conf)], dict(os.environ)
