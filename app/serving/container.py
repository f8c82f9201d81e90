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

In a cluster (compose.cluster.yaml) each container runs one part, chosen by
WHARF_COMPONENTS: ``app`` runs gunicorn alone (steps 2 and 3 for gunicorn; no
certificate, no nginx), after waiting for a PostgreSQL database_url to accept
connections, since a compose file starts the database and the app servers together;
``proxy`` runs nginx alone in front of WHARF_APP_SERVERS (steps 1 and 3 for nginx). A
cluster's app servers must hold the same keys (nginx's refresh key, the upload-token key;
each keeps them in its own state directory): with a volume shared by them mounted at
/etc/wharf/keys, the first app server makes the keys there and every app server copies
them into its state directory at start. A proxy for object storage fetches files from
the store by host name (site.conf's /_s3/), so without WHARF_RESOLVER it asks the name
server the container runtime wrote first into /etc/resolv.conf (Docker's 127.0.0.11,
podman's network gateway).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from passlib.apache import HtpasswdFile

from ..atomic import shared_secret, write_file
from ..auth import set_password
from ..settings import Settings
from . import render
from .local_ca import SetupError, make_local_ca
from .stack import prepare, public_url, trust_commands

_IMAGE_UID = "10001:10001"
_THIRTY_DAYS = 30 * 24 * 3600
# What the start's log tells clients to call their copy of a local CA (the home page's commands use it).
CLIENT_CA_COPY = "wharf-ca.crt"
# How long an app container waits for its database before starting anyway (its requests
# then get 503 until the database answers).
DATABASE_WAIT = 120.0
RESOLV_CONF = Path("/etc/resolv.conf")
# The secrets every app server of a cluster must hold alike, as the app names them in its
# state directory (cache_refresh.KEY_FILE, tokens' key), and where a shared volume brings them.
SHARED_KEYS = ("nginx-refresh.key", "token-secret")
KEYS_DIR = Path("/etc/wharf/keys")


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


def runtime_resolver(resolv_conf: Path = RESOLV_CONF) -> str:
    """The container runtime's name server, as nginx's ``resolver`` takes it ("" if none).

    Only the first: Docker's (127.0.0.11) or podman's (the network's gateway) knows the
    other containers' names, and nginx would ask every server listed in turn, so a
    host's resolver listed after it would make every other lookup fail.
    """
    try:
        lines = resolv_conf.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = fields[1].split("%", 1)[0]  # a link-local zone means nothing to nginx
            return f"[{address}]" if ":" in address else address
    return ""


def wait_for_database(settings: Settings, timeout: float = DATABASE_WAIT) -> bool:
    """Wait until a PostgreSQL database_url accepts a connection; whether it did."""
    if not settings.database_url:
        return True
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    where = conninfo_to_dict(settings.database_url)
    name = f"{where.get('host', 'localhost')}:{where.get('port', 5432)}"
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            psycopg.connect(settings.database_url, connect_timeout=3).close()
            if said:
                log(f"PostgreSQL at {name} answers")
            return True
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                log(f"warning: PostgreSQL at {name} still refuses ({reason}); "
                    "starting anyway: requests get 503 until it answers")
                return False
            if not said:
                log(f"waiting for PostgreSQL at {name}")
                said = True
            time.sleep(1)


def share_keys(settings: Settings, keys_dir: Path = KEYS_DIR) -> None:
    """The app servers' common keys, made once in ``keys_dir`` and copied into this one's state directory.

    ``shared_secret`` makes each key race-free, so app servers starting together agree on
    the first one made. A state directory's own, different key is replaced (said in the log).
    """
    if not os.access(keys_dir, os.W_OK | os.X_OK) and not all((keys_dir / n).is_file() for n in SHARED_KEYS):
        raise SetupError(f"cannot make the app servers' keys in {keys_dir} as uid {_uid()}: "
                         f"make the keys volume writable by {_IMAGE_UID}")
    state = Path(settings.state_path)
    for name in SHARED_KEYS:
        value = shared_secret(keys_dir / name)
        target = state / name
        try:
            current: str | None = target.read_text().strip()
        except FileNotFoundError:
            current = None
        if current == value:
            continue
        state.mkdir(parents=True, exist_ok=True)
        write_file(target, (value + "\n").encode(), mode=0o600)
        if current is not None:
            log(f"replaced {target} with the app servers' shared key from {keys_dir}")
    log(f"using the app servers' shared keys in {keys_dir}")


def _prepare_app(settings: Settings) -> Path:
    """gunicorn's and supervisord's configs alone (an app container runs no nginx)."""
    for directory in (settings.log_dir, settings.run_dir, *settings.packages):
        directory.mkdir(parents=True, exist_ok=True)
    render.write(settings, settings.config_dir, ("supervisor", "gunicorn"))
    return settings.config_dir / "supervisor" / "supervisord.conf"


def start(settings: Settings) -> None:
    """Certificate, users, configs for the components asked for; then become supervisord (does not return)."""
    proxy, app = "proxy" in settings.components, "app" in settings.components
    if proxy and not app and not settings.app_servers:
        raise SetupError("WHARF_COMPONENTS=proxy runs nginx alone: WHARF_APP_SERVERS must name the app servers "
                         "(host:port, comma-separated)")
    if proxy:
        if ensure_certificate(settings) is not None and not settings.client_ca_file:
            settings = dataclasses.replace(settings, client_ca_file=CLIENT_CA_COPY)
        if settings.storage_url.startswith("s3://") and not settings.resolver:
            settings = dataclasses.replace(settings, resolver=runtime_resolver())
    if app:
        ensure_users(settings, os.environ)
        if os.path.ismount(KEYS_DIR):  # a volume the app servers share; else each keeps its own keys
            share_keys(settings)
    # The servers have no use for the first password.
    os.environ.pop("WHARF_FIRST_PASSWORD", None)
    if proxy:
        conf = prepare(settings)
        log(f"serving {public_url(settings)}/simple/ (in the container: HTTPS on {settings.https_port}, "
            f"HTTP on {settings.http_port})" + ("" if app else f"; app servers: {', '.join(settings.app_servers)}"))
    else:
        conf = _prepare_app(settings)
        wait_for_database(settings)
        log(f"app server on {settings.host}:{settings.port} (HTTP, for the proxy in front of it)")
    os.execvp("supervisord", ["supervisord", "--configuration", str(conf)])
