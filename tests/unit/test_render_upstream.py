"""nginx as the cluster's load balancer (deploy/nginx/site.conf.j2 2, proxy.conf.j2 3-4), as rendered.

The rendered files are read as nginx reads them (blocks and directives, comments dropped):
every app node is in the upstream with passive health checks, every location that proxies to
the app nodes (the auth check, the cached pages, the refresh server) gets the bounded retry
of failed reads on another node, uploads are never retried, and the object-store location
(/_s3/) keeps its own settings. nginx -t accepts the result.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app.serving import render as deploy
from app.settings import Settings
from tests.deploy.conftest import make_test_ca

NODES = ("10.0.0.11:8000", "10.0.0.12:8000", "[fd00::13]:8000")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def settings_for(root: Path, **overrides) -> Settings:
    values = dict(config_dir=root / "conf", cache_path=root / "cache", log_dir=root / "logs", run_dir=root / "run",
                  packages=(root / "packages",), listen=("127.0.0.1",), http_port=18080, https_port=18443,
                  tls_cert=root / "tls" / "server.crt", tls_key=root / "tls" / "server.key", ocsp_stapling=False)
    values.update(overrides)
    return Settings(**values).validated()


def parse(text: str) -> list:
    """nginx's syntax as nested lists: a directive is a list of words, a block (words, [children])."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{};]|[^\s{};"]+', re.sub(r"#[^\n]*", "", text))
    stack: list[list] = [[]]
    words: list[str] = []
    for token in tokens:
        if token == "{":
            block: list = []
            stack[-1].append((words, block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        elif token == ";":
            stack[-1].append(words)
            words = []
        else:
            words.append(token)
    assert len(stack) == 1, "unbalanced braces"
    return stack[0]


def blocks(tree: list, name: str) -> list[tuple[list[str], list]]:
    return [item for item in tree if isinstance(item, tuple) and item[0][:1] == [name]]


def directives(block: list, name: str) -> list[list[str]]:
    return [item[1:] for item in block if isinstance(item, list) and item[:1] == [name]]


def rendered(settings: Settings) -> dict[str, list]:
    files = deploy.render(settings, ("nginx",))
    return {path: parse(text) for path, text in files.items() if path.endswith(".conf")}


@pytest.fixture
def cluster(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, app_servers=NODES, storage_url="s3://wharf/pkgs",
                        cache_refresh=("127.0.0.1:18444",))


def upstream(conf: dict[str, list]) -> list:
    (_words, body), = [b for b in blocks(conf["nginx/site.conf"], "upstream") if b[0] == ["upstream", "wharf_app"]]
    return body


def test_every_app_node_is_in_the_upstream_with_passive_health_checks(cluster: Settings):
    body = upstream(rendered(cluster))
    assert directives(body, "server") == [[node, "max_fails=2", "fail_timeout=5s"] for node in NODES]
    assert directives(body, "zone") == [["wharf_app", "64k"]]  # nginx's workers share what they learn
    names = [item[0] for item in body]
    # A balancing method must come before keepalive, or nginx uses round robin silently.
    assert names.index("least_conn") < names.index("keepalive")


def test_a_single_node_is_the_servers_own_address(tmp_path: Path):
    body = upstream(rendered(settings_for(tmp_path, host="127.0.0.1", port=8123)))
    assert directives(body, "server") == [["127.0.0.1:8123", "max_fails=2", "fail_timeout=5s"]]


def test_failed_reads_go_to_another_node_but_uploads_never_do(cluster: Settings):
    proxy = rendered(cluster)["nginx/proxy.conf"]
    # Failures of the node itself only: the app's 502/503/504 name a shared dependency.
    assert directives(proxy, "proxy_next_upstream") == [["error", "timeout"]]
    assert not any("non_idempotent" in d or d.startswith("http_") for d in directives(proxy, "proxy_next_upstream")[0])
    assert directives(proxy, "proxy_next_upstream_tries") == [["3"]]
    assert directives(proxy, "proxy_next_upstream_timeout") == [["10s"]]
    assert directives(proxy, "proxy_connect_timeout") == [["2s"]]
    assert directives(proxy, "proxy_read_timeout") == [[f"{cluster.timeout}s"]]


def locations(server: list) -> dict[str, list]:
    return {" ".join(words[1:]): body for words, body in blocks(server, "location")}


def test_every_location_that_reaches_the_app_nodes_gets_the_retry_rules(cluster: Settings):
    conf = rendered(cluster)
    site = conf["nginx/site.conf"]
    include = [str(cluster.config_dir / "nginx" / "proxy.conf")]
    servers = [body for _words, body in blocks(site, "server")]
    public, refresh = servers[1], servers[2]
    checked = []
    for server in (public, refresh):
        for where, body in locations(server).items():
            if ["http://wharf_app"] in directives(body, "proxy_pass") or \
                    ["http://wharf_app/_auth/"] in directives(body, "proxy_pass"):
                assert include in directives(body, "include"), where
                # Nothing overrides the retry rules per location.
                assert not [d for d in body if isinstance(d, list) and d[0].startswith("proxy_next_upstream")], where
                checked.append(where)
    assert {"^~ /_wharf_auth/", "/simple/", "= /packages/", "/packages/", "/"} <= set(locations(public)) & set(checked)
    assert {"/simple/", "= /packages/", "/packages/"} <= set(checked)  # the refresh server's too


def test_the_object_store_location_is_not_an_app_node(cluster: Settings):
    site = rendered(cluster)["nginx/site.conf"]
    public = [body for _words, body in blocks(site, "server")][1]
    s3 = locations(public)["^~ /_s3/"]
    assert directives(s3, "proxy_pass") == [["$wharf_s3_url"]]
    assert [str(cluster.config_dir / "nginx" / "proxy.conf")] not in directives(s3, "include")
    assert directives(s3, "proxy_connect_timeout") == [["5s"]]


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (apt-get install nginx)")
@pytest.mark.parametrize("nodes", [(), NODES], ids=["one node", "three nodes"])
def test_nginx_accepts_the_load_balancer(tmp_path: Path, nodes: tuple[str, ...]):
    ca = make_test_ca(tmp_path / "tls")
    settings = settings_for(tmp_path, app_servers=nodes, storage_url="s3://wharf/pkgs", tls_cert=ca.cert,
                            tls_key=ca.key)
    deploy.write(settings, settings.config_dir)
    for directory in (settings.log_dir, settings.run_dir / "nginx"):
        directory.mkdir(parents=True, exist_ok=True)
    check = subprocess.run([NGINX, "-t", "-c", str(settings.config_dir / "nginx" / "nginx.conf"),
                            "-e", str(settings.log_dir / "nginx-error.log")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "[warn]" not in check.stderr and "[emerg]" not in check.stderr, check.stderr
