"""/metrics: counters that move, bounded labels, and who may read them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support import call_wsgi, make_wheel
from tests.unit.test_upload import basic, make_index

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "wharf.json"


def scrape(app, **kwargs) -> dict[tuple[str, tuple], float]:
    status, headers, body = call_wsgi(app, "/metrics", **kwargs)
    assert status == 200 and headers["cache-control"] == "no-store"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_uploads_downloads_and_catalog_size_are_counted(make_app, tmp_path):
    index = make_index(make_app, tmp_path)
    before = scrape(index.app)
    wheel = make_wheel(index.dists, "demo-pkg", "1.0")
    assert index.upload(wheel).status == 200
    for _ in range(3):
        assert call_wsgi(index.app, "/simple/demo-pkg/")[0] == 200
    status, _, body = call_wsgi(index.app, f"/packages/{wheel.name}")
    assert status == 200 and body == wheel.read_bytes()
    for path in ("/nothing/here", "/nothing/else", "/x" * 40):  # raw paths never become labels
        assert call_wsgi(index.app, path)[0] == 404
    after = scrape(index.app)
    assert value(after, "wharf_http_requests_total", route="/simple/<name>/", method="GET", status="200") \
        - value(before, "wharf_http_requests_total", route="/simple/<name>/", method="GET", status="200") == 3
    assert value(after, "wharf_http_requests_total", route="(unmatched)", method="GET", status="404") == 3
    assert value(after, "wharf_http_requests_total", route="/", method="POST", status="200") == 1
    assert value(after, "wharf_uploads_total") == 1
    assert value(after, "wharf_upload_bytes_total") == wheel.stat().st_size
    assert value(after, "wharf_downloads_total") == 1
    assert value(after, "wharf_download_bytes_total") == wheel.stat().st_size
    assert value(after, "wharf_catalog_projects") == 1 and value(after, "wharf_catalog_files") == 1
    assert value(after, "wharf_http_request_duration_seconds_count", route="/simple/<name>/") == 3
    routes = {dict(labels).get("route") for (name, labels) in after if name == "wharf_http_requests_total"}
    assert not any(r.startswith(("/nothing", "/x")) for r in routes), routes


def test_a_private_index_shows_metrics_to_the_list_right_and_the_allow_list(make_app, tmp_path):
    index = make_index(make_app, tmp_path, authenticate=("update", "list"), metrics_allow=("10.9.0.0/16",))
    assert call_wsgi(index.app, "/metrics", remote_addr="192.0.2.7")[0] == 401
    assert call_wsgi(index.app, "/metrics", remote_addr="127.0.0.1")[0] == 401  # loopback not listed here
    assert call_wsgi(index.app, "/metrics", remote_addr="192.0.2.7",
                     headers={"Authorization": basic("alice", "wrong")})[0] == 401
    assert scrape(index.app, remote_addr="192.0.2.7", headers={"Authorization": basic("alice", "pw-alice")})
    assert scrape(index.app, remote_addr="10.9.3.4")  # the scraper, without credentials


def test_a_public_index_keeps_metrics_from_the_internet_unless_told(make_app, tmp_path, packages):
    make_wheel(packages, "demo", "1.0")
    app = make_app()
    assert scrape(app, remote_addr="127.0.0.1")  # metrics_allow's default: loopback
    assert scrape(app, remote_addr="::1")
    status, _, _ = call_wsgi(app, "/metrics", remote_addr="203.0.113.9")
    assert status == 401
    # A client's own X-Forwarded-For from an untrusted address does not make it loopback.
    assert call_wsgi(app, "/metrics", remote_addr="203.0.113.9", headers={"X-Forwarded-For": "127.0.0.1"})[0] == 401
    public = make_app(metrics_public=True)
    assert scrape(public, remote_addr="203.0.113.9")


def test_the_dashboard_is_valid_json_and_asks_only_for_exposed_metrics(make_app, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    index = make_index(make_app, tmp_path)
    call_wsgi(index.app, "/simple/")
    exposed = {name for name, _ in scrape(index.app)}
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 7

    for expr in exprs:
        names = set(re.findall(r"\b(wharf_[a-z_]+)\b", expr))
        assert names, expr
        for name in names:
            assert name in exposed, (name, expr)


def test_another_workers_upload_is_measured_as_propagation_lag(make_app, tmp_path):
    first = make_index(make_app, tmp_path)
    second = make_index(make_app, tmp_path)  # a second worker on the same catalog
    assert value(scrape(second.app), "wharf_change_propagation_seconds_count") == 0
    assert first.upload(make_wheel(first.dists, "demo-pkg", "1.0")).status == 200
    assert call_wsgi(second.app, "/simple/demo-pkg/")[0] == 200  # caught up before answering
    samples = scrape(second.app)
    assert value(samples, "wharf_change_propagation_seconds_count") == 1
    assert 0 <= value(samples, "wharf_change_propagation_seconds_sum") < 5
    assert value(samples, "wharf_catalog_files") == 1
