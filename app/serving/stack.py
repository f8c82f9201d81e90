"""The whole stack on one machine without root: local CA, nginx on high ports, supervisord, gunicorn.

``wharf stack DIR`` keeps everything under DIR (certificates in tls/, rendered configs in
conf/, logs/, run/, cache/, and packages/ unless package directories are given), renders
the same templates as a server deployment, checks the nginx config, then becomes
supervisord in the foreground, which runs gunicorn and nginx. Ctrl-C stops all of it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

from ..settings import Settings
from . import render
from .local_ca import SetupError, make_local_ca
from .preflight import root_warning, wharf_flag

# Unprivileged ports; any of them can be set (--https-port ...).
HTTPS_PORT = 8443
HTTP_PORT = 8880
# What each port setting is for, in "port ... is taken" messages.
_PORT_ROLES = {"https_port": "nginx's HTTPS", "http_port": "nginx's HTTP redirect", "port": "gunicorn (the app)"}


def stack_settings(settings: Settings, root: Path, explicit: Collection[str] = ()) -> Settings:
    """``settings`` with everything not set explicitly placed under ``root`` and on high ports."""
    root = root.resolve()
    chosen: dict[str, object] = {
        "https_port": HTTPS_PORT,
        "http_port": HTTP_PORT,
        "listen": ("127.0.0.1",),
        "packages": (root / "packages",),
        "tls_cert": root / "tls" / "server.crt",
        "tls_key": root / "tls" / "server.key",
        "cache_path": root / "cache",
        "log_dir": root / "logs",
        "run_dir": root / "run",
        "config_dir": root / "conf",
        "python": sys.executable,
        "nginx_path": shutil.which("nginx") or "/usr/sbin/nginx",
        # A local CA runs no OCSP responder.
        "ocsp_stapling": False,
        # Everything runs as the caller; for root that must be said, or nginx's workers
        # would run as "nobody" and could not reach the cache under a private directory.
        "run_user": "root" if os.geteuid() == 0 else "",
    }
    changes = {name: value for name, value in chosen.items() if name not in explicit}
    changes["supervise_nginx"] = True
    return _absolute(dataclasses.replace(settings, **changes)).validated()


def _absolute(settings: Settings) -> Settings:
    # supervisord's children do not run in the caller's directory.
    changes: dict[str, object] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, Path):
            changes[f.name] = value.resolve()
        elif isinstance(value, tuple) and value and all(isinstance(v, Path) for v in value):
            changes[f.name] = tuple(v.resolve() for v in value)
    if settings.password_file not in ("", "."):
        changes["password_file"] = str(Path(settings.password_file).resolve())
    return dataclasses.replace(settings, **changes)


def ensure_certificate(settings: Settings, root: Path) -> Path | None:
    """The CA file clients should trust, making a local CA when no certificate exists yet."""
    tls = root.resolve() / "tls"
    default_pair = (settings.tls_cert == tls / "server.crt" and settings.tls_key == tls / "server.key")
    if settings.tls_cert.is_file() and settings.tls_key.is_file():
        return tls / "ca.crt" if default_pair and (tls / "ca.crt").is_file() else None
    if not default_pair:
        raise SetupError(f"certificate {settings.tls_cert} or key {settings.tls_key} does not exist")
    ca, _, _ = make_local_ca(tls, settings.server_name)
    return ca


def check_ports(settings: Settings) -> None:
    """Fail early, and clearly, if a port the stack needs is taken."""
    wanted = ([(a, settings.https_port, "https_port") for a in settings.listen]
              + [(a, settings.http_port, "http_port") for a in settings.listen])
    if not settings.app_servers:
        wanted.append((settings.host, settings.port, "port"))
    for address, port, name in wanted:
        host = "0.0.0.0" if address == "*" else address.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                what = _PORT_ROLES[name]
                raise SetupError(f"cannot use {host} port {port} for {what}: {exc.strerror}; "
                                 f"choose another with {wharf_flag(name)} PORT") from None


def prepare(settings: Settings) -> Path:
    """Directories and rendered configs; the path of supervisord's config."""
    if shutil.which(settings.nginx_path) is None:
        raise SetupError(f"nginx not found at {settings.nginx_path} (apt-get install nginx, or --nginx-path)")
    # The logs name every project and user that was asked for, and the cache holds the pages
    # themselves: on a private index neither is for the machine's other users.
    private = (settings.log_dir, settings.cache_path)
    for directory in (settings.log_dir, settings.run_dir / "nginx", settings.cache_path, *settings.packages):
        if not directory.exists():
            directory.mkdir(parents=True)
            if directory in private:
                directory.chmod(0o750)
    render.write(settings, settings.config_dir)
    nginx_conf = settings.config_dir / "nginx" / "nginx.conf"
    error_log = "stderr" if settings.log_stdout else str(settings.log_dir / "nginx-error.log")
    check = subprocess.run([settings.nginx_path, "-t", "-q", "-c", str(nginx_conf), "-e", error_log],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise SetupError(f"nginx rejects {nginx_conf}:\n{check.stderr.strip()}")
    return settings.config_dir / "supervisor" / "supervisord.conf"


def public_url(settings: Settings) -> str:
    """The index's HTTPS address as clients reach it (no trailing slash)."""
    host = settings.server_name if settings.server_name not in ("", "_") else "localhost"
    port = settings.public_https_port or settings.https_port
    return f"https://{host}" + (f":{port}" if port != 443 else "")


def trust_commands(base: str, ca: Path | str) -> list[str]:
    """How pip, uv and twine use the index through a CA file they must trust."""
    return [f"pip install --cert {ca} --index-url {base}/simple/ PACKAGE",
            f"SSL_CERT_FILE={ca} uv pip install --index-url {base}/simple/ PACKAGE",
            f"twine upload --cert {ca} --repository-url {base}/ dist/*"]


def describe(settings: Settings, ca: Path | None, supervisord_conf: Path) -> str:
    """What the stack serves, where its files are, and how clients use it."""
    host = settings.server_name if settings.server_name not in ("", "_") else "localhost"
    base = public_url(settings)
    lines = [
        f"Wharf stack: {base}/simple/  (http://{host}:{settings.http_port}/ redirects there)",
        f"  packages:  {', '.join(str(p) for p in settings.packages)}",
        f"  configs:   {settings.config_dir}   logs: {settings.log_dir}",
    ]
    if ca:
        lines += [f"  local CA:  {ca}"] + [f"  {line}" for line in trust_commands(base, ca)]
    lines += [f"  status:    {sys.executable} -m supervisor.supervisorctl -c {supervisord_conf} status",
              "Ctrl-C stops the stack."]
    return "\n".join(lines)


def run(settings: Settings, root: Path) -> None:
    """Prepare the stack under ``root`` and become supervisord (does not return)."""
    if importlib.util.find_spec("supervisor") is None:
        raise SetupError("wharf stack needs supervisor: pip install 'wharf[stack]'")
    ca = ensure_certificate(settings, root)
    if ca is not None and not settings.client_ca_file:
        settings = dataclasses.replace(settings, client_ca_file=str(ca))  # the home page's commands name it
    check_ports(settings)
    warning = root_warning("run wharf stack as an unprivileged user (no part of the stack needs root), "
                           "or give --run-user USER to have supervisord start gunicorn as that user")
    if warning and settings.run_user in ("", "root"):
        print(f"wharf stack: warning: {warning}", file=sys.stderr, flush=True)
    conf = prepare(settings)
    print(describe(settings, ca, conf), file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)])
