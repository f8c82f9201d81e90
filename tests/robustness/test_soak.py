"""A short soak: steady mixed traffic against the whole stack, with memory and open files sampled.

WHARF_SOAK_SECONDS sets the length (default 60 s, which CI runs; 600 s or more by hand).
About 20 requests a second: cached and uncached index pages, downloads, web pages, 404s,
refused uploads and one real upload a second. The RSS and open-file count of every
process of the stack (supervisord, nginx master and workers, gunicorn master and workers)
are sampled every 2 s; after a warm-up (a fifth of the run, at least 10 s) none may grow by
more than the bounds below, none may be replaced, and no request may get a 5xx.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import make_wheel

from .harness import PASSWORD, Client, basic, command, descendants, open_files, rss_kib, shared_rss_kib

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("WHARF_SOAK_SECONDS", "60"))
RATE = 20.0  # requests a second
RSS_GROWTH_KIB = 24 * 1024  # per process, after the warm-up
FD_GROWTH = 10  # per process (nginx keeps up to 16 idle connections to gunicorn)
AUTH = basic("alice", PASSWORD)
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def role(pid: int) -> str:
    cmd = command(pid)
    if "supervisord" in cmd:
        return "supervisord"
    if "nginx: master" in cmd:
        return "nginx master"
    if "nginx: worker" in cmd or "nginx: cache" in cmd:
        return "nginx " + cmd.split(":", 1)[1].split(" process")[0].strip()
    if "gunicorn" in cmd or "wharf" in cmd:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return "gunicorn worker" if "gunicorn" in command(parent) else "gunicorn master"
    return cmd[:40]


def sample(stack) -> dict[int, tuple[str, int, int, int]]:
    """pid -> (role, RSS, of which shared memory such as nginx's cache-key zone, open files)."""
    found = {}
    for pid in {stack.proc.pid} | descendants(stack.proc.pid):
        try:
            found[pid] = (role(pid), rss_kib(pid), shared_rss_kib(pid), open_files(pid))
        except OSError:
            pass  # gone between listing and reading
    return found


@pytest.mark.timeout(SECONDS + 300)  # the suite's 600 s per test would cut a long soak short
def test_steady_traffic_keeps_memory_and_open_files_flat(public_stack, tmp_path: Path, figures):
    client = Client(public_stack.https_port, public_stack.ca)
    rng = random.Random(8)
    statuses: Counter = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    uploads = iter(range(1_000_000))

    def one(kind: str, n: int) -> None:
        try:
            if kind == "index":
                status = client.get("/simple/", rng.choice([{}, JSON]))[0]
            elif kind == "project":
                status = client.get(f"/simple/{rng.choice(['alpha', 'seed-0', 'seed-3'])}/", rng.choice([{}, JSON]))[0]
            elif kind == "uncached":
                status = client.get(f"/simple/alpha/?soak={n}", JSON)[0]
            elif kind == "download":
                status, _, body = client.get(f"/packages/seed_{n % 5}-1.0-py3-none-any.whl")
                if status == 200 and len(body) < 32 * 1024:
                    problems.append(f"short download: {len(body)} bytes")
            elif kind == "web":
                status = client.get(rng.choice(["/", "/projects/?q=seed", "/project/alpha/"]))[0]
            elif kind == "missing":
                status = client.get(rng.choice(["/simple/nope/", "/packages/nope-1.0.tar.gz", "/simple/%2e%2e/"]))[0]
            elif kind == "refused":
                status, _ = client.upload("soak-1.0-py3-none-any.whl", b"not a zip", "soak", "1.0", AUTH)
            else:
                number = next(uploads)
                path = make_wheel(tmp_path / "dists", f"soak-{number}", "1.0", padding=16 * 1024)
                status, _ = client.upload(path.name, path.read_bytes(), f"soak-{number}", "1.0", AUTH)
                path.unlink()
                if status != 200:
                    problems.append(f"upload {path.name}: {status}")
        except OSError as exc:
            status = f"error {type(exc).__name__}"
        with lock:
            statuses[(kind, status)] += 1

    kinds = ["index"] * 5 + ["project"] * 4 + ["uncached"] * 4 + ["download"] * 3 + ["web"] + ["missing"] + ["refused"] + ["upload"]
    samples: list[tuple[float, dict[int, tuple[str, int, int, int]]]] = []
    warmup = max(10.0, SECONDS / 5)
    start = time.monotonic()
    next_sample = start
    with ThreadPoolExecutor(8) as pool:
        n = 0
        while (now := time.monotonic()) - start < SECONDS:
            if now >= next_sample:
                samples.append((now - start, sample(public_stack)))
                next_sample += 2.0
            pool.submit(one, kinds[n % len(kinds)], n)
            n += 1
            time.sleep(max(0.0, start + n / RATE - time.monotonic()))
    elapsed = time.monotonic() - start
    samples.append((elapsed, sample(public_stack)))

    base_time, base = next((t, s) for t, s in samples if t >= warmup)
    end = samples[-1][1]
    report: dict[str, dict] = defaultdict(dict)
    growth_problems = []
    for pid, (name, rss, _, fds) in base.items():
        if pid not in end:
            if name == "nginx cache loader":  # it loads the cache index, then exits
                continue
            growth_problems.append(f"{name} {pid} is gone (replaced after {base_time:.0f}s)")
            continue
        _, rss_end, shared_end, fds_end = end[pid]
        peak = max(s[pid][1] for t, s in samples if pid in s and t >= base_time)
        report[f"{name} {pid}"] = {"rss_mib": [round(rss / 1024, 1), round(rss_end / 1024, 1)],
                                   "peak_rss_mib": round(peak / 1024, 1), "shared_at_end_mib": round(shared_end / 1024, 1),
                                   "open_files": [fds, fds_end]}
        if rss_end - rss > RSS_GROWTH_KIB:
            growth_problems.append(f"{name} {pid}: RSS {rss} -> {rss_end} KiB")
        if fds_end - fds > FD_GROWTH:
            growth_problems.append(f"{name} {pid}: open files {fds} -> {fds_end}")
    total = sum(statuses.values())
    server_errors = {k: v for k, v in statuses.items() if not isinstance(k[1], int) or k[1] >= 500}
    figures.record("soak", {"seconds": round(elapsed, 1), "requests": total, "rate_per_s": round(total / elapsed, 1),
                            "uploads": sum(v for (k, s), v in statuses.items() if k == "upload" and s == 200),
                            "warmup_s": warmup, "rss_bound_mib": RSS_GROWTH_KIB // 1024, "fd_bound": FD_GROWTH,
                            "processes": dict(report), "5xx_or_errors": sum(server_errors.values())})
    assert not server_errors, server_errors
    assert not problems, problems[:10]
    assert not growth_problems, growth_problems
    assert total >= SECONDS * RATE * 0.8, total  # the rate was kept
