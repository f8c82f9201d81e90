"""The benchmark (bench/) runs end to end at its smallest size: a smoke test, nothing is timed.

Every server answers every benchmarked URL under wrk, pip installs from every index, uploads
go through, and the JSON, Markdown and plot are written. Speed is bench/'s business.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not (shutil.which("wrk") and shutil.which("nginx")),
                       reason="the benchmark needs wrk and nginx (apt-get install wrk nginx)"),
]

SERVERS = ("wharf", "pypiserver", "floor", "wharf_nginx", "ceiling")
ENDPOINTS = ("index", "project_html", "project_json", "download")


def test_benchmark_runs_at_the_smallest_size(tmp_path: Path):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.run", "--sizes", "1000", "--duration", "1", "--repeats", "1",
           "--uploads", "2", "--big-upload-mb", "5", "--data", str(tmp_path / "data"), "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1100)
    assert run.returncode == 0, run.stderr[-4000:]

    results = json.loads((out / "results.json").read_text())
    size = results["sizes"]["1000"]
    assert size["dataset"]["projects"] == 100
    for endpoint in ENDPOINTS:
        for server in SERVERS:
            load = size["load"][endpoint][server]
            assert load["requests"] > 0 and load["rps"] > 0, (endpoint, server, load)
            assert not load["errors"], (endpoint, server, load["errors"])
    for server in ("wharf", "pypiserver", "floor"):
        assert size["start_s"][server] > 0
        assert len(size["memory"][server]["workers_mib"]) == 2
    for name in ("wharf", "wharf_nginx", "pypiserver", "ceiling"):
        assert size["pip_install"][name].get("packages") == 21, size["pip_install"][name]
    assert size["upload_visible_direct"]["uploads"] == 2, size["upload_visible_direct"]
    assert size["upload_visible"]["uploads"] == 2, size["upload_visible"]
    assert size["big_upload"]["megabytes"] == 5 and "max_growth_mib" in size["big_upload"], size["big_upload"]
    assert set(size["inprocess_us"]) == set(ENDPOINTS), size["inprocess_us"]

    markdown = (out / "results.md").read_text()
    assert "| `/simple/<p>/` JSON |" in markdown
    assert "Wharf / pypiserver" in markdown and "cache / ceiling" in markdown
    if importlib.util.find_spec("matplotlib"):
        assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in markdown


def test_the_million_files_benchmark_runs_at_a_small_size(tmp_path: Path):
    """bench/million.py end to end on 300 files, both catalogs: every figure is there."""
    out = tmp_path / "million.json"
    cmd = [sys.executable, "-m", "bench.million", "--sizes", "300", "--linked", "300", "--engines", "sqlite,postgresql",
           "--duration", "1", "--data", str(tmp_path / "data"), "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1100,
                         env={**os.environ, "BENCH_WORK": str(tmp_path / "work")})
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads(out.read_text())
    assert [(r["size"], r["engine"]) for r in results["runs"]] == [(300, "sqlite"), (300, "postgresql")]
    for r in results["runs"]:
        assert all(r["direct"][k]["rps"] > 0 and not r["direct"][k]["errors"] for k in ("html", "json", "metadata", "download"))
        assert all(r["nginx"][k]["rps"] > 0 for k in ("html", "json", "metadata", "download"))
        assert r["upload"]["status"] == 200 and r["upload"]["listed_after_200_s"] is not None
        assert r["hand_drop_visible_s"] is not None and r["simple_index"]["gzip_bytes"] > 0
        assert len(r["memory"]["workers_mib"]) == 2 and "seconds" in r["sweep"]
    assert results["cold_start"]["health_then"]["status"] == "ok"
