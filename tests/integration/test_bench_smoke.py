"""The benchmark (bench/) runs end to end at its smallest size: a smoke test, nothing is timed.

Every server answers every benchmarked URL under wrk, pip installs from every index, uploads
go through, and the JSON, Markdown and plot are written. Speed is bench/'s business.
"""

from __future__ import annotations

import importlib.util
import json
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
