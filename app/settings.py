"""Every Wharf option, with its default, in one place.

One name, three spellings: the field ``server_name`` is ``WHARF_SERVER_NAME`` in the
environment, ``--server-name`` on the command line and ``wharf_server_name`` in Ansible.

Adding an option:
  1. add a field below with its default and its help text (the CLI --help shows it);
  2. if the field has a type not yet handled by ``_parse``, teach ``_parse`` about it;
  3. use it through ``settings.<name>``; never read ``os.environ`` anywhere else;
  4. if a deploy template needs it, it already can: templates get every field by name;
  5. mention it in ``ansible/roles/wharf/defaults/main.yml`` when it matters to servers.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ENV_PREFIX = "WHARF_"

ACTIONS = ("update", "download", "list")
# The parts of the stack one server may run (the ``components`` setting).
COMPONENTS = ("app", "proxy")


def _path_tuple(*items: str) -> tuple[Path, ...]:
    return tuple(Path(item) for item in items)


@dataclass(frozen=True)
class Settings:
    """The configuration of one Wharf index (app, CLI and deploy templates)."""

    # --- the index -------------------------------------------------------------------
    packages: tuple[Path, ...] = field(default_factory=lambda: _path_tuple("packages"), metadata={"help": "Package directories; the first one receives uploads. Searched recursively, dot-folders skipped."})
    state_dir: Path | None = field(default=None, metadata={"help": "Where the file catalog (SQLite) lives; empty means \"<first packages dir>/.wharf\"."})
    storage_url: str = field(default="", metadata={"help": "Where package files live: empty means the packages directories; s3://BUCKET/PREFIX means S3-compatible object storage (AWS S3, MinIO, Ceph RGW, SeaweedFS, R2), with credentials and region the way boto3 finds them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE)."})
    s3_endpoint_url: str = field(default="", metadata={"help": "The S3 endpoint (e.g. http://minio:9000) for a store other than AWS; empty means AWS_ENDPOINT_URL, else AWS's own."})
    s3_list_interval: float = field(default=10.0, metadata={"help": "Seconds between listings of the bucket prefix that find objects added or removed by hand (one LIST request per 1,000 objects per folder each time)."})
    s3_redirect_clients: bool = field(default=False, metadata={"help": "Answer downloads with a 302 to a presigned URL of the object (a CDN or a bucket near the clients) instead of serving them through nginx."})
    s3_url_lifetime: int = field(default=3600, metadata={"help": "Seconds a presigned download URL stays valid."})
    scan_interval: float = field(default=0.5, metadata={"help": "Seconds between checks of the packages directories for files added by hand."})
    full_scan_interval: float = field(default=300.0, metadata={"help": "Seconds between full sweeps that also catch files rewritten in place."})
    catalog_cache_files: int = field(default=50_000, metadata={"help": "How many files' worth of projects each worker keeps in memory (least recently used out; ~0.4 KB a file); others are read from the catalog database when asked for. Indexes smaller than this are served wholly from memory."})
    database_url: str = field(default="", metadata={"help": "The database of the catalog and the durable state (yanks, upload records, statuses, tokens): empty means SQLite files in the state directory; postgresql://USER:PASSWORD@HOST:PORT/DB means one PostgreSQL database that any number of app nodes share (docs/database.md)."})
    hash_algo: str = field(default="sha256", metadata={"help": "Hash in the simple API's URL fragments: sha256 (default), md5, sha1, sha384, sha512, blake2b_256, or \"off\". JSON always carries sha256."})
    index_max_age: int = field(default=1, metadata={"help": "Cache-Control max-age (seconds) of index pages; validators make them cheap to renew."})
    file_max_age: int = field(default=31536000, metadata={"help": "Cache-Control max-age (seconds) of package files (immutable once published)."})
    file_recheck: int = field(default=60, metadata={"help": "Seconds a proxy cache (nginx) serves a package file before asking again (a 304 that reads no file), so a removed file stops being served within this; 0 keeps it for file_max_age."})
    index_cache_lifetime: int = field(default=3600, metadata={"help": "Seconds nginx keeps an index page (simple pages, the /packages/ list) while the app refreshes every nginx after each change (cache_refresh): a safety net, since changes show at once. With cache_refresh off, nginx keeps pages index_max_age."})
    cache_refresh: tuple[str, ...] = field(default=(), metadata={"help": "The refresh address (host:port) of every nginx in front of the app servers: after an upload, removal, yank or hand-dropped file, and before answering, the app has each of them fetch again the pages the change touched. Empty means this server's own nginx (refresh_listen); \"off\" sends none."})
    refresh_listen: str = field(default="", metadata={"help": "Address:port where nginx takes cache refreshes from the app servers; empty means 127.0.0.1 on https_port + 1."})
    refresh_allow: tuple[str, ...] = field(default=(), metadata={"help": "Addresses (IP or CIDR) of app servers on other hosts that may send this nginx refreshes; loopback always may."})
    refresh_timeout: float = field(default=2.0, metadata={"help": "Seconds a change waits for the nginx refreshes; an nginx slower than that, or unreachable, is logged and may serve the old page until index_cache_lifetime."})
    fallback_url: str = field(default="", metadata={"help": "Redirect unknown projects to this index (e.g. https://pypi.org/simple/). Off by default: sending unknown names elsewhere is how dependency confusion works."})
    health_endpoint: str = field(default="/health", metadata={"help": "Path of the health check endpoint."})
    metrics_allow: tuple[str, ...] = field(default=("127.0.0.1", "::1"), metadata={"help": "Addresses (IP or CIDR) that may read /metrics (Prometheus) without credentials: the scrapers. Anyone else needs a user with the list right."})
    metrics_public: bool = field(default=False, metadata={"help": "On an index whose lists are public, let anyone read /metrics; off, a public index shows them only to metrics_allow and to users."})
    trusted_proxies: tuple[str, ...] = field(default=("127.0.0.1", "::1"), metadata={"help": "Peers whose X-Forwarded-Proto/-Host/-Prefix/-For headers are believed."})
    server_base_url: str = field(default="", metadata={"help": "Fixed external base URL (e.g. https://pypi.example.com/prefix); overrides headers."})
    welcome_file: Path | None = field(default=None, metadata={"help": "An HTML file shown as the home page instead of the built-in one."})
    client_ca_file: str = field(default="", metadata={"help": "The CA certificate (PEM) clients must trust to reach this index over HTTPS (a private CA), as they name it on their machines (e.g. ~/wharf-ca.crt); set, the home page's pip, uv and twine commands include it. wharf stack and the container set it to their local CA."})

    # --- upstream index: pull-through cache and `wharf mirror` ---------------------------
    upstream_url: str = field(default="", metadata={"help": "Upstream simple index (e.g. https://pypi.org/simple/; user:password@ in the URL if it needs them). Set, it turns on the pull-through cache for projects not hosted here, and is `wharf mirror`'s default --index-url. Off by default."})
    upstream_cert: Path | None = field(default=None, metadata={"help": "CA bundle (PEM) that verifies the upstream's TLS certificate instead of the system's."})
    upstream_allow: tuple[str, ...] = field(default=(), metadata={"help": "Upstream projects that may be cached: fnmatch patterns on normalized names (e.g. \"requests,django-*\"); empty means all."})
    upstream_deny: tuple[str, ...] = field(default=(), metadata={"help": "Upstream projects that are never cached: fnmatch patterns on normalized names; wins over upstream_allow."})
    upstream_timeout: float = field(default=15.0, metadata={"help": "Seconds to wait for the upstream to connect or send data."})
    upstream_max_age: int = field(default=600, metadata={"help": "Seconds an upstream project listing is reused before asking upstream again."})
    upstream_cache_dir: Path | None = field(default=None, metadata={"help": "Where pulled-through files and listings are kept; empty means \"<state dir>/upstream\"."})
    upstream_min_age: str = field(default="0", metadata={"help": "Cooldown: upstream files younger than this (e.g. 7d, 12h, 30m; 0 = off) are hidden from pages and refused, in the pull-through cache and `wharf mirror`. Local projects are never held back."})
    upstream_exclude_newer: str = field(default="", metadata={"help": "Cooldown: upstream files uploaded after this RFC 3339 time (e.g. 2026-11-01T00:00:00Z) are hidden and refused; empty means no cutoff."})
    upstream_untimed: str = field(default="hide", metadata={"help": "Upstream files without an upload time while a cooldown is on: \"hide\" (treated as too new) or \"allow\"."})
    upstream_exempt: tuple[str, ...] = field(default=(), metadata={"help": "Upstream projects the cooldown does not apply to: fnmatch patterns on normalized names."})
    upstream_allow_early: tuple[str, ...] = field(default=(), metadata={"help": "Single upstream releases let through the cooldown early (break glass), as \"name==version\"; each use is logged."})

    # --- access and publishing -------------------------------------------------------
    password_file: str = field(default="", metadata={"help": "htpasswd file with the users; \".\" or empty means no users."})
    authenticate: tuple[str, ...] = field(default=("update",), metadata={"help": "Actions that need a user: any of update, download, list; \".\" means none (uploads need a user all the same)."})
    login_failures_allowed: int = field(default=10, metadata={"help": "Failed logins one client address may make per login_failure_window, per worker, before it gets 429 (a wrong password repeated costs no check)."})
    login_failure_window: float = field(default=60.0, metadata={"help": "Seconds over which failed logins are counted per client address."})
    permissions_file: Path | None = field(default=None, metadata={"help": "Optional file restricting users to projects ([projects] alice = mylib, mylib-*)."})
    overwrite: bool = field(default=False, metadata={"help": "Allow an upload to replace an existing file with different bytes."})
    max_upload_size: int = field(default=1024 * 1024 * 1024, metadata={"help": "Largest accepted upload in bytes (413 above it)."})
    publishers_file: Path | None = field(default=None, metadata={"help": "Trusted publishers (INI: one section per publisher with projects, issuer and the OIDC claims that must match); set, it turns on trusted publishing (/_/oidc/). Re-read when it changes; `wharf publisher add` writes it."})
    oidc_audience: str = field(default="", metadata={"help": "The audience CI systems must put in the OIDC tokens they exchange for upload tokens; empty means server_name."})
    oidc_allow_http: bool = field(default=False, metadata={"help": "Accept OIDC issuers on plain http:// (loopback issuers always may): only for testing."})

    # --- the app server --------------------------------------------------------------
    host: str = field(default="127.0.0.1", metadata={"help": "Address gunicorn binds (a host name, IPv4 or IPv6 address)."})
    port: int = field(default=8080, metadata={"help": "Port gunicorn binds."})
    workers: int = field(default=0, metadata={"help": "Gunicorn worker processes; 0 means 2 x cores + 1 (at most 8), counted on the machine gunicorn runs on."})
    timeout: int = field(default=300, metadata={"help": "Seconds a worker may spend on one request (uploads can be slow)."})
    log_level: str = field(default="info", metadata={"help": "Log level: debug, info, warning, error."})
    log_file: str = field(default="", metadata={"help": "Log file for the app and gunicorn; empty means standard error."})

    # --- the deployed stack (nginx, supervisord, TLS) ---------------------------------
    server_name: str = field(default="localhost", metadata={"help": "Public host name of the index (nginx server_name, certificate name)."})
    listen: tuple[str, ...] = field(default=("*",), metadata={"help": "Addresses nginx listens on (\"*\" or an IP address)."})
    http_port: int = field(default=80, metadata={"help": "nginx plain-HTTP port (it only redirects to HTTPS)."})
    https_port: int = field(default=443, metadata={"help": "nginx HTTPS port."})
    public_https_port: int = field(default=0, metadata={"help": "The HTTPS port clients connect to, when a port mapping (a container's published port, a load balancer) puts it elsewhere than https_port; 0 means https_port. The HTTP redirect and the app's absolute URLs use it."})
    tls_cert: Path = field(default=Path("/etc/wharf/tls/server.crt"), metadata={"help": "TLS certificate chain (PEM) used by nginx."})
    tls_key: Path = field(default=Path("/etc/wharf/tls/server.key"), metadata={"help": "TLS private key (PEM) used by nginx."})
    app_servers: tuple[str, ...] = field(default=(), metadata={"help": "App servers (gunicorn) nginx proxies to (host:port); empty means this server's host:port."})
    cache_path: Path = field(default=Path("/var/cache/wharf/nginx"), metadata={"help": "nginx cache directory."})
    cache_size: str = field(default="1g", metadata={"help": "Largest size of the nginx cache (nginx size syntax, e.g. 1g)."})
    log_dir: Path = field(default=Path("/var/log/wharf"), metadata={"help": "Where nginx, supervisord and gunicorn write their logs."})
    log_stdout: bool = field(default=False, metadata={"help": "Send the logs of nginx, gunicorn and supervisord to supervisord's standard output instead of files in log_dir (containers: `docker logs`)."})
    run_dir: Path = field(default=Path("/run/wharf"), metadata={"help": "Where pid files and sockets go."})
    config_dir: Path = field(default=Path("/etc/wharf"), metadata={"help": "Where rendered deploy configs are installed (nginx/, supervisor/, gunicorn.conf.py); the configs refer to each other there."})
    python: str = field(default="python3", metadata={"help": "Python interpreter with Wharf installed; supervisord runs gunicorn with it."})
    nginx_path: str = field(default="/usr/sbin/nginx", metadata={"help": "The nginx binary, when supervisord runs nginx too."})
    run_user: str = field(default="", metadata={"help": "System user supervisord runs gunicorn as; empty means supervisord's own user."})
    components: tuple[str, ...] = field(default=("app", "proxy"), metadata={"help": "The parts of the stack this server (or container) runs: app (gunicorn) and/or proxy (nginx: TLS, the cache, the load balancer). A cluster runs several app servers and one proxy whose app_servers names them (docs/cluster.md)."})
    supervise_nginx: bool = field(default=False, metadata={"help": "Run nginx under supervisord as well (containers, wharf stack); off when nginx is a system service."})
    ocsp_stapling: bool = field(default=True, metadata={"help": "Staple OCSP responses (nginx ignores it, with a warning, for certificates without an OCSP URL)."})
    tls_chain: Path | None = field(default=None, metadata={"help": "Issuer and root certificates (PEM) that verify stapled OCSP responses; empty means none."})
    resolver: str = field(default="", metadata={"help": "DNS servers nginx uses to reach the OCSP responder (space-separated); empty means none."})

    @property
    def state_path(self) -> Path:
        return self.state_dir or (self.packages[0] / ".wharf")

    @property
    def upstream_cache_path(self) -> Path:
        return self.upstream_cache_dir or (self.state_path / "upstream")

    @property
    def app_server_addresses(self) -> tuple[str, ...]:
        """The host:port of every app server nginx proxies to: ``app_servers``, else this one."""
        return self.app_servers or (f"{bracket_host(self.host)}:{self.port}",)

    # --- loading ---------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from WHARF_* variables, then ``overrides`` (already typed) on top."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is not None:
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    @classmethod
    def parse_value(cls, name: str, raw: str) -> Any:
        return _parse(_field(name), raw)

    def validated(self) -> Settings:
        bad = [a for a in self.authenticate if a not in ACTIONS]
        if bad:
            raise ValueError(f"unknown action(s) {', '.join(bad)}: use {', '.join(ACTIONS)} or '.'")
        if not self.packages:
            raise ValueError("at least one packages directory is needed")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("database_url must be empty (SQLite) or a postgresql:// URL")
        if self.upstream_url and not self.upstream_url.startswith(("http://", "https://")):
            raise ValueError("upstream_url must be an http:// or https:// URL")
        negative = [name for name in ("index_max_age", "file_max_age", "file_recheck") if getattr(self, name) < 0]
        if negative:
            raise ValueError(f"{', '.join(negative)} must be 0 or more seconds")
        duration_seconds(self.upstream_min_age)
        if self.upstream_exclude_newer:
            rfc3339_time(self.upstream_exclude_newer)
        if self.upstream_untimed not in ("hide", "allow"):
            raise ValueError("upstream_untimed must be hide or allow")
        bad_pins = [p for p in self.upstream_allow_early if "==" not in p]
        if bad_pins:
            raise ValueError(f"upstream_allow_early takes name==version, not {', '.join(bad_pins)}")
        if self.storage_url and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", self.storage_url):
            raise ValueError("storage_url must be empty (the packages directories) or s3://BUCKET/PREFIX")
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad or not self.components:
            raise ValueError(f"components must name one or both of {', '.join(COMPONENTS)}"
                             + (f", not {', '.join(bad)}" if bad else ""))
        if self.hash_algo not in HASH_ALGOS:
            raise ValueError(f"hash_algo must be one of {', '.join(HASH_ALGOS)}")
        if self.authenticate and not self.password_file:
            if "update" not in self.authenticate or len(self.authenticate) > 1:
                raise ValueError("protecting download or list needs a password file")
        return self

    def as_env(self) -> dict[str, str]:
        """The WHARF_* variables that reproduce these settings in another process."""
        return {env_name(f.name): _format(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def as_dict(self) -> dict[str, Any]:
        """Field values as plain strings, numbers and lists (for templates)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        out["state_path"] = str(self.state_path)
        out["app_server_addresses"] = list(self.app_server_addresses)
        return out


HASH_ALGOS = ("sha256", "md5", "sha1", "sha224", "sha384", "sha512", "blake2b_256", "off")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def duration_seconds(raw: str) -> float:
    """Seconds in a duration like "7d", "12h", "1d12h", "90s" or "0" (a plain number is seconds)."""
    text = raw.strip().lower().replace(" ", "")
    try:
        return float(text or 0)
    except ValueError:
        pass
    if not _DURATION.fullmatch(text) and not re.fullmatch(f"(?:{_DURATION.pattern})+", text):
        raise ValueError(f"{raw!r} is not a duration: use e.g. 7d, 12h, 30m, 90s or 0")
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))


def rfc3339_time(raw: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; one without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not an RFC 3339 time such as 2026-11-01T00:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def bracket_host(host: str) -> str:
    """``host`` as it goes before ":port" (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _field(name: str) -> dataclasses.Field:
    for f in dataclasses.fields(Settings):
        if f.name == name:
            return f
    raise KeyError(name)


def _split(raw: str, paths: bool = False) -> list[str]:
    # Lists are comma-separated ("update,download"); words may also be space-separated,
    # paths may not (a path can hold a space).
    if paths:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw.replace(",", " ").split()


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "str":
            return raw
        if kind == "Path":
            return Path(raw)
        if kind == "Path | None":
            return Path(raw) if raw.strip() else None
        if kind == "tuple[Path, ...]":
            return tuple(Path(item) for item in _split(raw, paths=True))
        if kind == "tuple[str, ...]":
            items = _split(raw)
            if f.name == "authenticate" and items in ([], ["."]):
                return ()
            return tuple(items)
    except ValueError:
        raise ValueError(f"{env_name(f.name)}: cannot read {raw!r} as {kind}") from None
    raise TypeError(f"no parser for {f.name}: {kind}")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)
