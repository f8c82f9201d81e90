"""The container's start (``wharf container``, the image's entrypoint), as the unprivileged wharf user.

  1. a TLS certificate: a mounted one is used as is; without one, a local CA and a server
     certificate are made in the TLS volume (local_ca.py, as ``wharf stack`` does);
  2. the first user, if WHARF_FIRST_USER asks for one (what ``wharf passwd`` does);
  3. nginx, supervisord and gunicorn configs rendered from the settings (WHARF_* variables)
     and checked, as ``wharf stack`` prepares them;
  4. supervisord replaces this process (PID 1): it runs gunicorn and nginx, and SIGTERM
     stops both and the container.
WHARF_FIRST_USER, WHARF_FIRST_PASSWORD and WHARF_FIRST_PASSWORD_FILE are not settings:
they are read here only, and the password is dropped before the servers start.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from passlib.apache import HtpasswdFile

from ..auth import set_password
from ..settings import Settings
from .local_ca import SetupError, make_local_ca
from .stack import prepare, public_url, trust_commands

_IMAGE_UID = "10001:10001"
_THIRTY_DAYS = 30 * 24 * 3600
# What the start's log tells clients to call their copy of a local CA (the home page's commands use it).
CLIENT_CA_COPY = "wharf-ca.crt"


def log(message: str) -> None:
    print(f"wharf: {message}", file=sys.stderr, flush=True)


def _uid() -> int:
    return os.getuid()


def _openssl_says(cert: Path, *args: str) -> subprocess.CompletedProcess:
    openssl = shutil.which("openssl") or "openssl"
    return subprocess.run([openssl, "x509", "-in", str(cert), "-noout", *args], capture_output=True, text=True)


def _names(cert: Path, server_name: str) -> bool:
    """Whether the certificate names ``server_name`` (a host name or an IP address)."""
    is_ip = ":" in server_name or all(c in "0123456789." for c in server_name)
    result = _openssl_says(cert, "-checkip" if is_ip else "-checkhost", server_name)
    return " does match " in result.stdout


def _log_trust(settings: Settings, ca: Path) -> None:
    fingerprint = _openssl_says(ca, "-fingerprint", "-sha256").stdout.strip().partition("=")[2]
    cert, key = settings.tls_cert, settings.tls_key
    log(f"clients trust this index through its local CA {ca} (SHA-256 {fingerprint}):")
    log(f"  docker compose cp wharf:{ca} {CLIENT_CA_COPY}   (plain docker: docker cp CONTAINER:{ca} {CLIENT_CA_COPY})")
    for line in trust_commands(public_url(settings), CLIENT_CA_COPY):
        log(f"  {line}")
    log(f"a certificate of your own replaces it: mount it at {cert}, its key at {key}")


def _readable(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and os.access(path, os.R_OK)


def ensure_certificate(settings: Settings) -> Path | None:
    """Use the mounted certificate, or make a local CA where the image expects one; that CA, if any."""
    cert, key = settings.tls_cert, settings.tls_key
    tls_dir = cert.parent
    ca = tls_dir / "ca.crt"
    if tls_dir.is_dir() and not os.access(tls_dir, os.R_OK | os.X_OK):
        raise SetupError(f"cannot read {tls_dir} as uid {_uid()}: make it readable (the image runs as {_IMAGE_UID})")
    if _readable(cert) and _readable(key):
        local = ca if _readable(ca) and _readable(tls_dir / "ca.key") else None
        if local:
            _log_trust(settings, ca)
            renew = "remove server.crt, server.key and ca.* from the TLS volume to get new ones"
        else:
            log(f"using the certificate {cert}")
            renew = "mount a new one"
        if not _names(cert, settings.server_name):
            log(f"warning: {cert} does not name {settings.server_name}; {renew}")
        if _openssl_says(cert, "-checkend", str(_THIRTY_DAYS)).returncode != 0:
            log(f"warning: {cert} expires within 30 days; {renew}")
        return local
    elif cert.exists() and key.exists():
        raise SetupError(f"cannot read {cert} or {key} as uid {_uid()}, or one is empty: "
                         f"the image runs as {_IMAGE_UID}")
    elif cert.exists() or key.exists():
        raise SetupError(f"found only one of {cert} and {key}: provide both, or neither to get a local CA")
    elif cert.name != "server.crt" or key != tls_dir / "server.key":
        raise SetupError(f"no certificate at {cert} (a local CA is made only for {tls_dir}/server.crt and server.key)")
    else:
        if not os.access(tls_dir, os.W_OK | os.X_OK):
            raise SetupError(f"no certificate in {tls_dir}, and uid {_uid()} cannot write one there: "
                             "mount a certificate or a writable volume")
        try:
            make_local_ca(tls_dir, settings.server_name)
        except SetupError as exc:
            raise SetupError(f"could not make a local CA in {tls_dir}: {exc}") from None
        log(f"made a local certificate authority and a certificate for {settings.server_name} in {tls_dir}")
        _log_trust(settings, ca)
        return ca


def _first_password(environ: Mapping[str, str]) -> str:
    password = environ.get("WHARF_FIRST_PASSWORD", "")
    source = environ.get("WHARF_FIRST_PASSWORD_FILE", "")
    if source:
        try:
            password = Path(source).read_text(encoding="utf-8")
        except OSError:
            raise SetupError(f"cannot read {source}") from None
    # One line, as `wharf passwd` reads it from standard input.
    return password.split("\n", 1)[0].rstrip("\r")


def ensure_users(settings: Settings, environ: Mapping[str, str]) -> None:
    """The htpasswd file in the users volume, and the first user if one is asked for."""
    users = Path(settings.password_file) if settings.password_file not in ("", ".") else None
    if users is not None and not users.exists():
        # An empty file: no users yet, uploads refused until `wharf passwd` adds one.
        try:
            users.touch()
        except OSError:
            raise SetupError(f"cannot create {users}: is the users volume writable by uid {_uid()}?") from None
    user = environ.get("WHARF_FIRST_USER", "")
    if not user:
        return
    if users is None:
        raise SetupError("WHARF_FIRST_USER needs WHARF_PASSWORD_FILE")
    if user in HtpasswdFile(str(users)).users():
        # The file wins over the variable: a password changed since is not reset.
        log(f"user {user} exists in {users}")
        return
    password = _first_password(environ)
    if not password:
        raise SetupError("WHARF_FIRST_USER needs WHARF_FIRST_PASSWORD or WHARF_FIRST_PASSWORD_FILE")
    set_password(users, user, password)
    log(f"added user {user} to {users}")


def start(settings: Settings) -> None:
    """Certificate, users, configs; then become supervisord (does not return)."""
    if ensure_certificate(settings) is not None and not settings.client_ca_file:
        settings = dataclasses.replace(settings, client_ca_file=CLIENT_CA_COPY)
    ensure_users(settings, os.environ)
    # The servers have no use for the first password.
    os.environ.pop("WHARF_FIRST_PASSWORD", None)
    conf = prepare(settings)
    log(f"serving {public_url(settings)}/simple/ (in the container: HTTPS on {settings.https_port}, "
        f"HTTP on {settings.http_port})")
    os.execvp("supervisord", ["supervisord", "--configuration", str(conf)])
