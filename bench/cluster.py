"""A Wharf cluster behind one nginx: throughput and CPU per request with 1, 2 and 3 app nodes, and failover.

Starts what tests/robustness/test_cluster_faults.py starts (PostgreSQL, SeaweedFS as a
master, three volume servers at replication 001, a filer and the S3 gateway, three
`wharf serve` nodes of two gunicorn workers on one catalog and one bucket), then for 1, 2
and 3 nodes renders nginx from deploy/nginx with ``app_servers`` = those nodes and drives it
with wrk (bench/load.py) over HTTPS:

- a project page (JSON) and a download (the app checks the file and hands nginx the
  object's presigned URL, nginx sends the bytes from its /_s3/ cache), both with a query
  string, so nginx's page cache is bypassed and every request reaches an app node;
- requests/s in total and per node (each node's wharf_http_requests_total), and CPU
  microseconds per request: all app nodes' processes together, and nginx's. On two cores
  the total cannot grow with nodes; the point is that the cost per request does not either.

Failover: clients keep requesting an uncached page through nginx (closed loop, persistent
connections) while one of the three nodes is killed (kill -9 of its process group); the
figures are the longest time with no successful answer around the kill and the requests
that failed (targets: < 1 s, 0). Rounds restart the node and wait for nginx to use it again.

    nice -n 5 python -m bench.cluster [--duration 5] [--connections 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.load import have_wrk, wrk
from bench.servers import children, cpu_seconds
from tests.robustness.test_cluster_faults import (JSON, SEEDS, Cluster, LoadBalancer, Node, post_upload, request,
                                                  start_cluster)
from tests.support import free_port, make_wheel

RESULTS = Path(__file__).resolve().parent / "results"


def served(cluster: Cluster, node: Node) -> float:
    """Requests the node has answered so far (all workers: its /metrics)."""
    status, _headers, body = request(cluster, node.url + "/metrics")
    assert status == 200, body[:200]
    return sum(sample.value for family in text_string_to_metric_families(body.decode())
               for sample in family.samples if sample.name == "wharf_http_requests_total")


def cpu_of(pid: int) -> float:
    """CPU seconds of a process and its children (gunicorn's workers, nginx's workers)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


def measure(cluster: Cluster, lb: LoadBalancer, nodes: list[Node], url: str, headers: dict[str, str],
            duration: float, connections: int) -> dict:
    before = {n.index: (served(cluster, n), cpu_of(n.proc.pid)) for n in nodes}
    nginx_before = cpu_of(lb.proc.pid)
    result = wrk(url, duration, headers, connections=connections)
    after = {n.index: (served(cluster, n), cpu_of(n.proc.pid)) for n in nodes}
    nginx_cpu = cpu_of(lb.proc.pid) - nginx_before
    # Minus the /metrics request each reading made on each node.
    per_node = {i: after[i][0] - before[i][0] - 1 for i in before}
    app_cpu = sum(after[i][1] - before[i][1] for i in before)
    total = result["requests"]
    return {
        "rps": result["rps"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "errors": result["errors"],
        "per_node_rps": {i: round(count / result["seconds"], 1) for i, count in per_node.items()},
        "app_cpu_us_per_request": round(app_cpu / total * 1e6) if total else None,
        "nginx_cpu_us_per_request": round(nginx_cpu / total * 1e6) if total else None,
    }


def throughput(cluster: Cluster, work: Path, download: str, duration: float, connections: int) -> dict:
    figures: dict = {}
    for count in (1, 2, 3):
        nodes = cluster.nodes[:count]
        lb = LoadBalancer(work / f"nginx-{count}", cluster.tls, [f"127.0.0.1:{n.port}" for n in nodes], free_port(),
                          cluster.bucket).start()
        try:
            # Warm: every node loads the page, nginx caches the object behind the download.
            for _ in range(6):
                request(cluster, f"{lb.url}/packages/{download}?bench")
                request(cluster, f"{lb.url}/simple/{SEEDS[0]}/?bench", headers=JSON)
            figures[count] = {
                "page": measure(cluster, lb, nodes, f"{lb.url}/simple/{SEEDS[0]}/?bench", JSON, duration, connections),
                "download": measure(cluster, lb, nodes, f"{lb.url}/packages/{download}?bench", {}, duration,
                                    connections),
            }
        finally:
            lb.stop()
        print(f"{count} node(s): {json.dumps(figures[count])}", flush=True)
    return figures


def failover(cluster: Cluster, clients: int = 4, before: float = 3.0, after: float = 5.0) -> dict:
    """Kill one node under a steady closed-loop load; the longest gap without a good answer, and failures."""
    lb, victim = cluster.lb, cluster.nodes[2]
    context = ssl.create_default_context(cafile=str(cluster.ca))
    answers: list[tuple[float, bool]] = []  # (time the answer completed, good)
    stop = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection("127.0.0.1", lb.port, context=context, timeout=30)
                conn.request("GET", f"/simple/{SEEDS[1]}/?failover", headers=JSON)
                response = conn.getresponse()
                response.read()
                good = response.status == 200
            except (OSError, http.client.HTTPException):
                good, conn = False, None
            with lock:
                answers.append((time.monotonic(), good))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(before)
        killed_at = time.monotonic()
        victim.kill()
        time.sleep(after)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    window = [a for a in answers if a[0] >= killed_at - 1.0]
    good = [t for t, ok in window if ok]
    gaps = [b - a for a, b in zip(good, good[1:])]
    victim.start()
    return {"requests": len(window), "failed": sum(1 for _t, ok in window if not ok),
            "longest_gap_ms": round(max(gaps) * 1000) if gaps else None,
            "median_gap_ms": round(sorted(gaps)[len(gaps) // 2] * 1000, 2) if gaps else None}


def report(figures: dict) -> str:
    lines = ["| nodes | kind | requests/s | per node | p50 / p99 ms | app CPU µs/request | nginx CPU µs/request |",
             "|---|---|---|---|---|---|---|"]
    for count, kinds in figures["throughput"].items():
        for kind, f in kinds.items():
            per_node = " / ".join(f"{v:,.0f}" for v in f["per_node_rps"].values())
            lines.append(f"| {count} | {kind} | {f['rps']:,.0f} | {per_node} | {f['p50_ms']:.1f} / {f['p99_ms']:.1f} "
                         f"| {f['app_cpu_us_per_request']} | {f['nginx_cpu_us_per_request']} |")
    lines += ["", "| failover round | requests (from 1 s before the kill) | failed | longest gap | median gap |",
              "|---|---|---|---|---|"]
    for n, f in enumerate(figures["failover"], 1):
        lines.append(f"| {n} | {f['requests']} | {f['failed']} | {f['longest_gap_ms']} ms | {f['median_gap_ms']} ms |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=12, help="wrk connections (one thread)")
    parser.add_argument("--rounds", type=int, default=3, help="failover rounds")
    args = parser.parse_args()
    if not have_wrk():
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="wharf-bench-cluster-") as tmp:
        work = Path(tmp)
        cluster = start_cluster(work / "cluster")
        try:
            for project in SEEDS:
                wheel = make_wheel(work / "dists", project, "1.0", padding=16 * 1024)
                status, _headers, body = post_upload(cluster, cluster.lb.url, wheel, project, "1.0")
                assert status == 200, body
            download = wheel.name
            figures = {"throughput": throughput(cluster, work, download, args.duration, args.connections),
                       "failover": []}
            for _ in range(args.rounds):
                time.sleep(6)  # past fail_timeout: nginx sends the restarted node requests again
                figures["failover"].append(failover(cluster))
                print(f"failover: {json.dumps(figures['failover'][-1])}", flush=True)
        finally:
            cluster.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(report(figures))


if __name__ == "__main__":
    main()
