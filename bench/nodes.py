"""Upload through node A to visible on node B: how long, with nodes sharing one PostgreSQL database.

Starts SeaweedFS (tests/s3.py), a private PostgreSQL cluster (tests/postgres.py) and two
`wharf serve` nodes (two workers each, scan_interval 0.5 s, the default) on one bucket and
one database; then, ~50 times: uploads a new wheel through A and polls B's JSON project
page every 5 ms until the file is listed (B is otherwise idle: what it shows is what
its workers' journal polling brought, every ``scan_interval``). The figure is the time from A's 200 to B
listing it, p50 and p99 (target, issue 16: p99 under 1 s). The same with two nodes on one
local packages directory follows.

    python -m bench.nodes [--uploads 50]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.integration.test_nodes import files_on, start_nodes, upload
from tests.postgres import PostgresServer
from tests.s3 import SeaweedFS
from tests.support import make_wheel


def measure(nodes, base: Path, uploads: int, project: str) -> tuple[list[float], list[float]]:
    """Per upload: seconds from A's 200 to B listing the file, and the upload's own duration."""
    a, b = nodes[0], nodes[1]
    delays, durations = [], []
    time.sleep(5)  # past start-up: the first sweep and every worker's first loads
    for n in range(uploads):
        wheel = make_wheel(base / "dists", project, f"1.{n}")
        time.sleep(0.137 * (n % 7))  # start at varying points of B's polling cycle
        started = time.monotonic()
        status = upload(a, wheel, project, f"1.{n}")[0]
        done = time.monotonic()
        durations.append(done - started)
        assert status == 200, status
        while wheel.name not in {f["filename"] for f in files_on(b, project)}:
            assert time.monotonic() - done < 30, "never became visible"
            time.sleep(0.005)
        delays.append(time.monotonic() - done)
        # A worker that applied journal entries on a request checks again on its next one:
        # a few reads settle B's workers, so the next upload waits for B's own polling.
        for _ in range(8):
            files_on(b, project)
    return delays, durations


def report(label: str, measured: tuple[list[float], list[float]]) -> None:
    delays, durations = measured
    ordered = sorted(delays)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(f"| {label} | {len(delays)} | {statistics.median(durations) * 1000:.0f} ms "
          f"| {statistics.median(delays) * 1000:.0f} ms | {p99 * 1000:.0f} ms | {max(delays) * 1000:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--scan-interval", default="0.5")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="wharf-bench-nodes-"))
    postgres = PostgresServer()
    postgres.start()
    store = SeaweedFS(base / "weed").start()
    try:
        print("| nodes | uploads | upload (p50) | A's 200 to listed on B: p50 | p99 | max |\n|---|---|---|---|---|---|")
        bucket = store.make_bucket("bench-nodes")
        (base / "s3").mkdir()
        nodes = start_nodes(base / "s3", 2, postgres.new_database(), ["--storage-url", f"s3://{bucket}/pkgs"],
                            env=store.env(), scan_interval=args.scan_interval)
        try:
            report("2 x (S3 + PostgreSQL)", measure(nodes, base / "s3", args.uploads, "bench-s3"))
        finally:
            for node in nodes:
                node.stop()
        (base / "local").mkdir()
        shared = base / "local" / "packages"
        shared.mkdir()
        nodes = start_nodes(base / "local", 2, postgres.new_database(), [], packages=shared,
                            scan_interval=args.scan_interval)
        try:
            report("2 x (one packages dir + PostgreSQL)", measure(nodes, base / "local", args.uploads, "bench-local"))
        finally:
            for node in nodes:
                node.stop()
    finally:
        store.stop()
        postgres.remove()
        shutil.rmtree(base, ignore_errors=True)  # SeaweedFS's data, the wheels, the nodes' state


if __name__ == "__main__":
    main()
