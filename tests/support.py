"""Shared test helpers: real servers on free loopback ports, scrubbed clients, test dists.

Client subprocesses (pip, uv, twine) must run with ``client_env()``: this machine points
pip at local wheel folders and a proxy CA, which would let a broken index look fine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SCRUB_PREFIXES = ("PIP_", "UV_", "TWINE_")
_SCRUB = {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "PYTHONPATH",
          "VIRTUAL_ENV", "NIX_SSL_CERT_FILE", "AWS_CA_BUNDLE", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
          "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"}


def client_env(home: Path, ca: Path | None = None, **extra: str) -> dict[str, str]:
    """An environment for pip/uv/twine that can only reach the index named on its command line."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith(_SCRUB_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    env.update({
        "HOME": str(home),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_CACHE_DIR": str(home / "uv-cache"),
        "UV_NO_CONFIG": "1",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "NO_PROXY": "*",
    })
    if ca is not None:
        env["SSL_CERT_FILE"] = str(ca)  # uv has no --cert
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A free port whose next port is free too (a stack's HTTPS port: nginx takes cache
    refreshes on the next one unless told otherwise)."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row on 127.0.0.1")


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout}s: {last}")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a server we started, by its PID (and its process group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class WharfProcess:
    """``python -m app serve`` on a free loopback port, stopped by its PID."""

    def __init__(self, packages: Path | list[Path], *args: str, workers: int = 2,
                 env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        dirs = packages if isinstance(packages, list) else [packages]
        cmd = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", str(workers), *args, *map(str, dirs)]
        self.log_path = log or (dirs[0].parent / f"wharf-{self.port}.log")
        self._log = open(self.log_path, "wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_http(self.url + "/health", proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"wharf did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def __enter__(self) -> WharfProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None,
         timeout: float = 30, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request without redirects (HTTPS trusting ``context``): (status, headers with lower-case names, body)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    handlers: list = [_NoRedirect, urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


# --- distributions made on the fly (fast, valid, with real METADATA) ----------------------
def core_metadata(name: str, version: str, *, requires_python: str | None = None,
                  requires: tuple[str, ...] = (), summary: str | None = None,
                  description: str | None = None, content_type: str = "text/markdown") -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
             f"Summary: {summary or f'The {name} test package'}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {req}" for req in requires]
    if description is not None:
        lines.append(f"Description-Content-Type: {content_type}")
        return "\n".join(lines) + "\n\n" + description
    return "\n".join(lines) + "\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(directory: Path, name: str, version: str, *, tag: str = "py3-none-any",
               padding: int = 0, **metadata) -> Path:
    """A valid pure-Python wheel; ``padding`` adds that many incompressible bytes."""
    module = name.replace("-", "_").replace(".", "_").lower()
    dist = f"{module}-{version}"
    files = {
        f"{module}/__init__.py": f"__version__ = {version!r}\n".encode(),
        f"{dist}.dist-info/METADATA": core_metadata(name, version, **metadata).encode(),
        f"{dist}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: wharf-tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode(),
    }
    if padding:
        files[f"{module}/padding.bin"] = os.urandom(padding)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dist}-{tag}.whl"
    record = [_record_line(p, d) for p, d in files.items()] + [f"{dist}.dist-info/RECORD,,"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for p, d in files.items():
            archive.writestr(p, d)
        archive.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def make_sdist(directory: Path, name: str, version: str, **metadata) -> Path:
    """A valid setuptools-buildable .tar.gz sdist with PKG-INFO."""
    module = name.replace("-", "_").replace(".", "_").lower()
    base = f"{module}-{version}"
    requires = metadata.get("requires", ())
    files = {
        f"{base}/PKG-INFO": core_metadata(name, version, **metadata).encode(),
        f"{base}/pyproject.toml": (
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
            + (f'requires-python = "{metadata["requires_python"]}"\n' if metadata.get("requires_python") else "")
            + f"dependencies = {list(requires)!r}\n".replace("'", '"')
        ).encode(),
        f"{base}/{module}/__init__.py": f"__version__ = {version!r}\n".encode(),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for p, d in files.items():
            info = tarfile.TarInfo(p)
            info.size = len(d)
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(d))
    return path


def build_project(src: Path, out: Path, name: str, version: str, *, requires: tuple[str, ...] = (),
                  requires_python: str | None = None, readme: str | None = None) -> list[Path]:
    """Write a real setuptools project and build its sdist and wheel with ``python -m build``."""
    src.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_").replace(".", "_").lower()
    (src / module).mkdir(exist_ok=True)
    (src / module / "__init__.py").write_text(f"__version__ = {version!r}\n")
    lines = ["[build-system]", 'requires = ["setuptools"]', 'build-backend = "setuptools.build_meta"',
             "[project]", f'name = "{name}"', f'version = "{version}"',
             "dependencies = [" + ", ".join(f'"{r}"' for r in requires) + "]"]
    if requires_python:
        lines.append(f'requires-python = "{requires_python}"')
    if readme is not None:
        (src / "README.md").write_text(readme)
        lines.append('readme = "README.md"')
    lines += ["[tool.setuptools]", f'packages = ["{module}"]']
    (src / "pyproject.toml").write_text("\n".join(lines) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check", "--outdir", str(out), str(src)],
                   check=True, capture_output=True)
    return sorted(set(out.iterdir()) - before)


# --- the app without a server -----------------------------------------------------------
def call_wsgi(app, path: str, method: str = "GET", headers: dict[str, str] | None = None, *,
              query: str = "", remote_addr: str = "127.0.0.1", body: bytes = b"",
              host: str = "testserver") -> tuple[int, dict[str, str], bytes]:
    """One request straight into a WSGI app: (status, headers with lower-case names, body).

    ``path`` is PATH_INFO as a server hands it over (already percent-decoded, bytes as
    latin-1 characters), so tests can send what a URL parser would never produce.
    """
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": host, "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": host,
        "REMOTE_ADDR": remote_addr, "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(), "wsgi.multithread": False,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    seen: dict = {}

    def start_response(status: str, response_headers: list, exc_info=None):
        seen["status"] = int(status.split()[0])
        seen["headers"] = {k.lower(): v for k, v in response_headers}

    result = app(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return seen["status"], seen["headers"], data
