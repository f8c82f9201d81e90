"""Rendering the deploy configs (app/serving/render.py, deploy/): golden examples, nginx -t, policy, round trips."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import gunicorn.config
import pytest

from app.serving import appserver
from app.serving import render as deploy
from app.settings import Settings
from tests.support import ROOT

from .conftest import LocalCA

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (apt-get install nginx)")


def local_settings(root: Path, ca: LocalCA, **overrides) -> Settings:
    """Settings whose every path is under ``root`` (so nginx -t can run as anyone)."""
    values = dict(config_dir=root / "conf", tls_cert=ca.cert, tls_key=ca.key, cache_path=root / "cache",
                  log_dir=root / "logs", run_dir=root / "run", packages=(root / "packages",),
                  listen=("127.0.0.1",), http_port=18080, https_port=18443)
    values.update(overrides)
    return Settings(**values).validated()


def nginx_check(settings: Settings) -> subprocess.CompletedProcess:
    deploy.write(settings, settings.config_dir)
    for directory in (settings.log_dir, settings.run_dir / "nginx"):
        directory.mkdir(parents=True, exist_ok=True)
    return subprocess.run([NGINX, "-t", "-c", str(settings.config_dir / "nginx" / "nginx.conf"),
                           "-e", str(settings.log_dir / "nginx-error.log")], capture_output=True, text=True)


# --- the committed examples ------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(deploy.EXAMPLES))
def test_committed_examples_are_what_the_templates_render(name: str):
    directory = ROOT / "deploy" / "examples" / name
    rendered = deploy.render(deploy.example_settings(name))
    on_disk = {p.relative_to(directory).as_posix(): p.read_text(encoding="utf-8")
               for p in directory.rglob("*") if p.is_file()}
    stale = sorted(k for k in rendered if on_disk.get(k) != rendered[k]) + sorted(set(on_disk) - set(rendered))
    assert not stale, f"deploy/examples/{name} is out of date ({', '.join(stale)}): run `python -m app.serving.render`"


def test_every_template_is_rendered_by_some_target():
    templates = {p.relative_to(ROOT / "deploy").as_posix() for p in (ROOT / "deploy").rglob("*.j2")}
    assert templates == set(deploy.templates_for(["all"]))


# --- the TLS policy ----------------------------------------------------------------------------
def test_tls_policy_is_mozilla_intermediate_as_sslyze_knows_it():
    from sslyze.mozilla_tls_profile.tls_config_checker import MozillaTlsConfiguration, TlsConfigurationEnum

    mozilla = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    policy = deploy.tls_policy()
    assert policy["name"] == "mozilla-intermediate"
    assert set(policy["protocols"]) == mozilla.tls_versions
    assert set(policy["ciphers"]) == mozilla.ciphers.openssl and len(policy["ciphers"]) == 9
    # sslyze spells prime256v1 (OpenSSL's name, which nginx takes) as secp256r1.
    assert {"secp256r1" if c == "prime256v1" else c for c in policy["curves"]} == mozilla.tls_curves
    assert policy["hsts_max_age"] == mozilla.hsts_min_age
    assert policy["prefer_server_ciphers"] == mozilla.server_preferred_order
    assert policy["certificate_max_days"] == mozilla.maximum_certificate_lifespan


def test_tls_conf_states_the_policy(tmp_path: Path, test_ca: LocalCA):
    files = deploy.render(local_settings(tmp_path, test_ca), ["nginx"])
    tls = files["nginx/tls.conf"]
    assert "ssl_protocols TLSv1.2 TLSv1.3;\n" in tls
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;\n" in tls
    assert "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" in tls
    assert "ssl_stapling on;" in tls
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in files["nginx/headers.conf"]
    dh = subprocess.run(["openssl", "pkeyparam", "-text", "-noout"], input=files["nginx/ffdhe2048.pem"],
                        capture_output=True, text=True, check=True).stdout
    assert "GROUP: ffdhe2048" in dh


# --- nginx accepts every variant -------------------------------------------------------------
VARIANTS = {
    "defaults": {},
    "everything-protected": {"authenticate": ("update", "download", "list"), "password_file": "/x/htpasswd"},
    "download-protected": {"authenticate": ("update", "download"), "password_file": "/x/htpasswd"},
    "ipv6-and-app-servers": {"listen": ("127.0.0.1", "::1"), "app_servers": ("127.0.0.1:9001", "[::1]:9002", "unix:/tmp/w.sock")},
    "any-address-standard-ports": {"listen": ("*",), "http_port": 80, "https_port": 443},
    "stapling-with-chain": {"tls_chain": "CA", "resolver": "127.0.0.53 [::1]", "ocsp_stapling": True},
    "no-stapling-tiny-limits": {"ocsp_stapling": False, "max_upload_size": 1024, "timeout": 5,
                                "index_max_age": 0, "cache_size": "50m"},
}


@needs_nginx
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_nginx_accepts_the_rendered_config(tmp_path: Path, test_ca: LocalCA, variant: str):
    overrides = dict(VARIANTS[variant])
    if overrides.get("tls_chain") == "CA":
        overrides["tls_chain"] = test_ca.ca
    result = nginx_check(local_settings(tmp_path, test_ca, **overrides))
    assert result.returncode == 0, result.stderr
    assert "[emerg]" not in result.stderr


@needs_nginx
@pytest.mark.skipif(not Path("/etc/nginx/nginx.conf").is_file(), reason="no Debian nginx.conf")
def test_site_conf_fits_into_debians_nginx_conf(tmp_path: Path, test_ca: LocalCA):
    """On a server, site.conf is included in Debian's http block, which sets gzip and ssl_* itself."""
    settings = local_settings(tmp_path, test_ca, authenticate=("update", "list"), password_file="/x/htpasswd")
    deploy.write(settings, settings.config_dir)
    (tmp_path / "logs").mkdir()
    main = Path("/etc/nginx/nginx.conf").read_text()
    main, count = re.subn(r"include /etc/nginx/(conf\.d/\*\.conf|sites-enabled/\*);",
                          f"include {settings.config_dir}/nginx/site.conf;", main, count=1)
    assert count == 1
    main = re.sub(r"include /etc/nginx/(conf\.d/\*\.conf|sites-enabled/\*);", "", main)
    main = re.sub(r"(?m)^pid .*;$", f"pid {tmp_path}/nginx.pid;", main)
    main = main.replace("/var/log/nginx/", f"{tmp_path}/logs/")
    conf = tmp_path / "debian-nginx.conf"
    conf.write_text(main)
    result = subprocess.run([NGINX, "-t", "-c", str(conf), "-e", str(tmp_path / "logs" / "error.log")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- what the protected and public configs say -------------------------------------------------
def test_protected_locations_ask_the_app_before_the_cache(tmp_path: Path, test_ca: LocalCA):
    public = deploy.render(local_settings(tmp_path, test_ca), ["nginx"])["nginx/site.conf"]
    # A public index checks no reads; only a request that could change something asks (issue 14.5).
    assert set(re.findall(r"auth_request (\S+);", public)) == {"/_wharf_auth/update"}
    assert "$wharf_auth_skip" in public  # reads pass that check inside nginx
    # The app's Cache-Control rules; only Vary is ignored (the key names the Accept variant).
    assert set(re.findall(r"proxy_ignore_headers[^;]*;", public)) == {"proxy_ignore_headers Vary;"}
    private = deploy.render(local_settings(tmp_path, test_ca, authenticate=("update", "download", "list"),
                                           password_file="/x/htpasswd"), ["nginx"])["nginx/site.conf"]
    assert private.count("auth_request /_wharf_auth/list;") == 2
    assert private.count("auth_request /_wharf_auth/download;") == 1
    assert "$http_authorization" not in private.replace("proxy_no_cache $http_authorization;", "")


# --- gunicorn and the app get the same settings ----------------------------------------------
def rendered_gunicorn(tmp_path: Path, settings: Settings) -> dict:
    deploy.write(settings, settings.config_dir, ["gunicorn"])
    script = ("import json, os, runpy, sys; os.environ['WHARF_LEFTOVER'] = 'x'; "
              "ns = runpy.run_path(sys.argv[1]); "
              "print(json.dumps({k: v for k, v in ns.items() if not k.startswith('_') and "
              "isinstance(v, (str, int, list, dict, bool))}))")
    out = subprocess.run([sys.executable, "-c", script, str(settings.config_dir / "gunicorn" / "gunicorn.conf.py")],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("overrides", [
    {},
    {"host": "::1", "port": 9000, "workers": 3, "timeout": 42, "log_level": "debug", "log_file": "/x/w.log"},
])
def test_wharf_serve_runs_gunicorn_with_the_rendered_config(tmp_path: Path, test_ca: LocalCA, overrides):
    # The template owns gunicorn's options: `wharf serve` loads the same rendered file.
    settings = local_settings(tmp_path, test_ca, **overrides)
    config = rendered_gunicorn(tmp_path, settings)
    with mock.patch.dict(os.environ):  # the config file drops inherited WHARF_* variables
        served = appserver.WharfServer(settings, appserver.write_gunicorn_config(settings, tmp_path / "serve")).cfg
    bind = f"[{settings.host}]" if ":" in settings.host else settings.host
    assert config["bind"] == [f"{bind}:{settings.port}"]
    assert config["timeout"] == settings.timeout and config["loglevel"] == settings.log_level
    assert config["accesslog"] == config["errorlog"] == (settings.log_file or "-")
    for key, value in config.items():
        if key in served.settings and key != "raw_env":
            expected = gunicorn.config.Config()
            expected.set(key, value)  # gunicorn's own reading of the rendered value
            assert served.settings[key].get() == expected.settings[key].get(), key


@pytest.mark.parametrize(("workers", "expected_max"), [(0, 8), (3, 3)])
def test_worker_count(tmp_path: Path, test_ca: LocalCA, workers, expected_max):
    count = rendered_gunicorn(tmp_path, local_settings(tmp_path, test_ca, workers=workers))["workers"]
    assert 1 <= count <= expected_max
    if workers:
        assert count == workers


def test_env_file_gives_the_app_the_same_settings(tmp_path: Path, test_ca: LocalCA):
    settings = local_settings(tmp_path, test_ca, authenticate=("update", "download"), password_file="/x/h",
                              overwrite=True, trusted_proxies=("10.0.0.0/8",), index_max_age=5,
                              packages=(tmp_path / "a", tmp_path / "b-c"), welcome_file=tmp_path / "w.html",
                              resolver="1.1.1.1 8.8.8.8", scan_interval=0.25)
    config = rendered_gunicorn(tmp_path, settings)
    env = dict(item.split("=", 1) for item in config["raw_env"])
    assert "WHARF_LEFTOVER" not in env
    assert Settings.from_env(env) == settings
    assert (settings.config_dir / "wharf.env").stat().st_mode & 0o777 == 0o640


# --- supervisord reads its configs -----------------------------------------------------------
@pytest.mark.parametrize("supervise_nginx", [False, True])
def test_supervisord_reads_the_programs(tmp_path: Path, test_ca: LocalCA, supervise_nginx: bool):
    from supervisor.datatypes import RestartUnconditionally
    from supervisor.options import ServerOptions

    settings = local_settings(tmp_path, test_ca, supervise_nginx=supervise_nginx, python="/venv/bin/python")
    deploy.write(settings, settings.config_dir, ["supervisor"])
    settings.log_dir.mkdir()
    settings.run_dir.mkdir()
    options = ServerOptions()
    options.realize(args=["-c", str(settings.config_dir / "supervisor" / "supervisord.conf")])
    programs = {group.name: group.process_configs[0] for group in options.process_group_configs}
    assert set(programs) == ({"wharf", "nginx"} if supervise_nginx else {"wharf"})
    wharf = programs["wharf"]
    assert wharf.command.startswith(f"/venv/bin/python -m gunicorn --config {settings.config_dir}/gunicorn/")
    assert wharf.stopsignal == signal.SIGTERM and wharf.autorestart is RestartUnconditionally
    assert wharf.stopasgroup and wharf.killasgroup
    assert wharf.stdout_logfile == str(settings.log_dir / "wharf.log")
    assert (wharf.stdout_logfile_maxbytes, wharf.stdout_logfile_backups) == (50 * 1024 * 1024, 10)
    if supervise_nginx:
        assert programs["nginx"].stopsignal == signal.SIGQUIT  # graceful
        assert programs["nginx"].command.startswith(f"{settings.nginx_path} -c {settings.config_dir}/nginx/nginx.conf")


# --- the command line ------------------------------------------------------------------------
def test_render_command_writes_then_leaves_unchanged_files_alone(tmp_path: Path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "app", "render", "nginx", "supervisor", "--out", str(out),
           "--server-name", "pypi.example.org", "--config-dir", "/etc/wharf"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "server_name pypi.example.org;" in (out / "nginx" / "site.conf").read_text()
    assert (out / "supervisor" / "wharf.conf").is_file() and not (out / "wharf.env").exists()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_render_command_refuses_unknown_targets(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "app", "render", "apache", "--out", str(tmp_path / "o")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown render target 'apache'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_settings_from_environment_variables(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WHARF_SERVER_NAME", "env.example.org")
    monkeypatch.setenv("WHARF_HTTPS_PORT", "9443")
    files = deploy.render(Settings.from_env(), ["nginx"])
    assert "server_name env.example.org;" in files["nginx/site.conf"]
    assert "listen 9443 ssl http2;" in files["nginx/site.conf"]
    assert "return 301 https://$host:9443$request_uri;" in files["nginx/site.conf"]


def test_context_is_plain_data(tmp_path: Path, test_ca: LocalCA):
    """What Ansible can supply too: strings, numbers, booleans, None, lists and dicts of them."""
    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    values = deploy.context(local_settings(tmp_path, test_ca))
    assert all(plain(v) for v in values.values())
    assert {f.name for f in dataclasses.fields(Settings)} <= set(values)


@pytest.mark.slow
def test_the_wheel_ships_the_templates(tmp_path: Path):
    """An installed Wharf (the container's) renders from <prefix>/share/wharf/deploy/."""
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("app", "deploy"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "examples"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("wharf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split("/share/wharf/deploy/", 1)[1] for n in names if "/share/wharf/deploy/" in n}
    assert shipped == set(deploy.templates_for(["all"])) | {deploy.TLS_POLICY_FILE}


def test_the_refresh_server_shares_the_cache_and_lets_only_app_servers_in(tmp_path: Path, test_ca: LocalCA):
    """Section 12: the app servers' refreshes land in the public server's cache entries."""
    settings = local_settings(tmp_path, test_ca, refresh_allow=("10.0.0.0/8",), refresh_listen="127.0.0.1:9444")
    site = deploy.render(settings, ["nginx"])["nginx/site.conf"]
    public, refresh = site.split("# 12. Refreshes")
    assert "listen 127.0.0.1:9444;" in refresh and "proxy_cache_bypass 1;" in refresh
    assert refresh.index("allow 10.0.0.0/8;") < refresh.index("deny all;")
    # The same keys in both servers, so a refresh replaces what clients are served.
    assert set(re.findall(r'proxy_cache_key "[^"]*";', refresh)) == set(re.findall(r'proxy_cache_key "[^"]*";', public)) - {
        'proxy_cache_key "$host$request_uri";'}
    off = deploy.render(dataclasses.replace(settings, cache_refresh=("off",)), ["nginx"])["nginx/site.conf"]
    assert "# 12. Refreshes" not in off and "9444" not in off
