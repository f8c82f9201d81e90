"""S3 + PostgreSQL against local storage + SQLite: the same index, side by side, in one run.

    python -m bench.backends --files 1000,10000 --duration 5

For each size it starts, next to each other, two ``wharf stack``s as users run them
(supervisord, gunicorn with 2 workers, nginx with TLS, HTTP/2 and the cache, on free
loopback ports): (a) the dataset's packages directory with the SQLite catalog, (b) the
same files in a SeaweedFS bucket (tests/s3.py) with a private PostgreSQL cluster as the
catalog (tests/postgres.py). Once both list every project, wrk (bench/load.py) drives
each for the project page as HTML and as JSON (pip's Accept header), a wheel's
``.metadata`` and the wheel itself, through nginx (HTTPS, its cache as deployed) and
straight to gunicorn (no cache: the backend's own cost shows). Rounds are interleaved
(a, b, a, b) and the best is kept. The figure is S3+PG's requests/s over local+SQLite's;
the target (issue 16) is at least 0.9 through nginx. Results: ``bench/results/backends.json``
and ``backends.md``. Ctrl-C or ``kill`` stops everything the run started, by PID.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.postgres import PostgresServer
from tests.s3 import SeaweedFS
from tests.support import ROOT, free_port, stop_process

from . import dataset
from .clients import PIP_ACCEPT
from .load import fetch, have_wrk, wrk
from .profile import have_py_spy, profile
from .run import machine
from .servers import children, cpu_seconds, rss_kib

RESULTS = Path(__file__).resolve().parent / "results"
ENDPOINTS = {
    # name: (path template, headers)
    "project_html": ("/simple/{project}/", {"Accept": "text/html"}),
    "project_json": ("/simple/{project}/", {"Accept": PIP_ACCEPT}),
    "metadata": ("/packages/{download}.metadata", {}),
    "download": ("/packages/{download}", {}),
}
BACKENDS = {"local": "local + SQLite", "s3_pg": "S3 + PostgreSQL"}
ROUTES = {"nginx": "through nginx (cache, TLS)", "app": "straight to gunicorn (uncached)"}
TARGET = 0.9  # S3+PG's requests/s at least 90% of local+SQLite's (issue 16), through nginx
BUCKET = "wharf-bench"
PREFIX = "pkgs"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        for child in children(frontier.pop()):
            found.append(child)
            frontier.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class StackRun:
    """``python -m app stack DIR ...`` on free loopback ports, stopped by its PID (supervisord's)."""

    def __init__(self, name: str, root: Path, args: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.root = root
        self.https_port, self.http_port, self.app_port = free_port(), free_port(), free_port()
        self.nginx_url = f"https://127.0.0.1:{self.https_port}"
        self.app_url = f"http://127.0.0.1:{self.app_port}"
        self.args = args
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "BENCH_"))}, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.context: ssl.SSLContext | None = None
        self.log_path = root.parent / f"{root.name}.log"
        self.extra: list[int] = []  # processes beside the stack this backend needs (PostgreSQL, SeaweedFS)

    def start(self, timeout: float = 1800.0) -> StackRun:
        """Start and wait until the app and nginx answer /health (a cold catalog is built first)."""
        cmd = [sys.executable, "-m", "app", "stack", str(self.root), "--https-port", str(self.https_port),
               "--http-port", str(self.http_port), "--port", str(self.app_port), "--workers", "2",
               *self.args]
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.wait_until(lambda: self.get("app", "/health")[0] == 200, "the app answers /health", timeout)
        self.context = ssl.create_default_context(cafile=str(self.root / "tls" / "ca.crt"))
        self.wait_until(lambda: self.get("nginx", "/health")[0] == 200, "nginx answers /health", timeout)
        return self

    def url(self, route: str) -> str:
        return self.nginx_url if route == "nginx" else self.app_url

    def get(self, route: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        return fetch(self.url(route) + path, headers, 120, self.context if route == "nginx" else None)

    def wait_until(self, condition, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: wharf stack exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: {what}: not within {timeout:g}s\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def processes(self) -> dict[str, list[int]]:
        """The stack's processes by part: gunicorn (master and workers), nginx, and the store's."""
        parts: dict[str, list[int]] = {"app": [], "nginx": [], "store": []}
        if self.proc is None:
            return parts
        for child in children(self.proc.pid):
            part = "nginx" if "nginx" in cmdline(child) else "app"
            parts[part] += [child, *descendants(child)]
        parts["store"] = [p for pid in self.extra for p in (pid, *descendants(pid))]
        return parts

    def cpu(self) -> dict[str, float]:
        return {part: sum(cpu_seconds(pid) for pid in pids) for part, pids in self.processes().items()}

    def workers(self) -> list[int]:
        """gunicorn's workers (what bench.profile samples): children of supervisord's non-nginx child."""
        masters = [pid for pid in children(self.proc.pid) if "nginx" not in cmdline(pid)] if self.proc else []
        return [worker for master in masters for worker in children(master)]

    def memory_mib(self) -> dict[str, float]:
        return {part: round(sum(rss_kib(pid) or 0 for pid in pids) / 1024, 1)
                for part, pids in self.processes().items()}

    def stop(self) -> None:
        if self.proc is None:
            return
        left = {pid: cmdline(pid) for part, pids in self.processes().items() if part != "store" for pid in pids}
        stop_process(self.proc, timeout=30)  # supervisord stops gunicorn and nginx itself
        for pid, line in left.items():  # whatever supervisord left behind (had it been killed, say)
            if line and cmdline(pid) == line:  # still that process, not a new one with its PID
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None


def fill_bucket(store: SeaweedFS, bucket: str, packages: Path) -> int:
    """Put every file of the packages tree into ``bucket`` under PREFIX (8 at a time)."""
    client = store.client()
    files = [p for p in packages.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(packages).parts)]

    def put(path: Path) -> None:
        key = f"{PREFIX}/{path.relative_to(packages).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return len(files)


def project_count(stack: StackRun) -> int:
    status, _h, body = stack.get("app", "/simple/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    return len(json.loads(body)["projects"]) if status == 200 else -1


def start_backends(size: int, data: dataset.Dataset, work: Path, keep: list) -> dict[str, StackRun]:
    """Both stacks, each listing every project of the dataset; ``keep`` collects what to stop."""
    expected = data.projects + len(dataset.PIP_DEPS) + 1
    started = time.monotonic()
    local = StackRun("local", work / "local", ["--state-dir", str(work / "local-state"), str(data.packages)])
    keep.append(local)
    local.start()

    postgres = PostgresServer()
    keep.append(postgres)
    postgres.start()
    store = SeaweedFS(work / "weed")
    keep.append(store)
    store.start()
    bucket = store.make_bucket(BUCKET)
    count = fill_bucket(store, bucket, data.packages)
    log(f"size {size}: {count} files put into the bucket in {time.monotonic() - started:.0f}s")
    s3_pg = StackRun("s3_pg", work / "s3_pg", [
        "--state-dir", str(work / "s3-state"), "--storage-url", f"s3://{bucket}/{PREFIX}",
        "--database-url", postgres.new_database()], env=store.env())
    s3_pg.extra = [int((postgres.data / "postmaster.pid").read_text().split()[0]), store.proc.pid]
    keep.append(s3_pg)
    s3_pg.start()
    stacks = {"local": local, "s3_pg": s3_pg}
    for name, stack in stacks.items():
        stack.wait_until(lambda: project_count(stack) >= expected, f"the catalog lists {expected} projects", 1800)
    log(f"size {size}: both stacks list {expected} projects ({time.monotonic() - started:.0f}s)")
    return stacks


def check_answers(stacks: dict[str, StackRun], paths: dict[str, str]) -> dict[str, dict[str, int]]:
    """Every stack answers every URL by every route with 200 and the same bytes; their sizes."""
    sizes: dict[str, dict[str, int]] = {}
    for endpoint, path in paths.items():
        bodies = {}
        for name, stack in stacks.items():
            for route in ROUTES:
                for _ in range(2):  # the second time from nginx's cache
                    status, _h, body = stack.get(route, path, ENDPOINTS[endpoint][1])
                    if status != 200:
                        raise RuntimeError(f"{name} via {route} answered {status} for {path}")
                bodies[(name, route)] = body
        if endpoint in ("metadata", "download") and len(set(bodies.values())) != 1:
            raise RuntimeError(f"the stacks answer {path} with different bytes")
        sizes[endpoint] = {f"{name}/{route}": len(body) for (name, route), body in bodies.items()}
    return sizes


def best(runs: list[dict]) -> dict:
    """The best round (background load only ever slows a run), with every round's rate."""
    top = max(runs, key=lambda r: r["rps"])
    return {**top, "rounds_rps": [r["rps"] for r in runs],
            "min_app_cpu_us_per_request": min((r["cpu_us_per_request"]["app"] for r in runs
                                               if r["cpu_us_per_request"]), default=None)}


def run_size(size: int, args: argparse.Namespace, work: Path) -> dict:
    data = dataset.ensure(size, args.data)
    paths = {name: template.format(project=data.project, download=data.download)
             for name, (template, _headers) in ENDPOINTS.items()}
    keep: list = []
    result: dict = {"dataset": {"files": size, "projects": data.projects, "project": data.project,
                                "download": data.download}, "load": {}}
    try:
        stacks = start_backends(size, data, work, keep)
        result["bytes"] = check_answers(stacks, paths)
        # What each costs with no requests at all (the scanner: a stat per directory, or a
        # LIST of the bucket's folder every s3_list_interval; journal polling).
        before = {name: stack.cpu() for name, stack in stacks.items()}
        time.sleep(args.idle)
        result["idle_cpu_pct"] = {name: {part: round(100 * (seconds - before[name][part]) / args.idle, 2)
                                         for part, seconds in stack.cpu().items()}
                                  for name, stack in stacks.items()}
        log(f"idle CPU (% of a core) over {args.idle:g}s: {result['idle_cpu_pct']}")
        runs = {route: {e: {b: [] for b in stacks} for e in paths} for route in ROUTES}
        log(f"load: {len(ROUTES)} routes x {len(paths)} URLs x {len(stacks)} backends x {args.repeats} rounds"
            f" x {args.duration:g}s")
        for round_ in range(args.repeats):
            for route in ROUTES:
                for endpoint, path in paths.items():
                    for name, stack in stacks.items():
                        cpu = stack.cpu()
                        outcome = wrk(stack.url(route) + path, args.duration, ENDPOINTS[endpoint][1],
                                      connections=args.connections)
                        used = {part: seconds - cpu[part] for part, seconds in stack.cpu().items()}
                        outcome["cpu_us_per_request"] = ({part: round(1e6 * s / outcome["requests"], 1)
                                                          for part, s in used.items()} if outcome["requests"] else {})
                        runs[route][endpoint][name].append(outcome)
                        log(f"  {route:5} {endpoint:12} {name:6} {outcome['rps']:>8.1f} req/s"
                            f"  p50 {outcome['p50_ms']} ms  p99 {outcome['p99_ms']} ms"
                            f"  CPU us/req {outcome['cpu_us_per_request']}"
                            + (f"  errors {outcome['errors']}" if outcome["errors"] else ""))
        for route, by_endpoint in runs.items():
            result["load"][route] = {}
            for endpoint, by_backend in by_endpoint.items():
                figures = {name: best(rs) for name, rs in by_backend.items()}
                local, s3_pg = figures["local"]["rps"], figures["s3_pg"]["rps"]
                figures["ratio"] = round(s3_pg / local, 3) if local else None
                result["load"][route][endpoint] = figures
        result["memory_mib"] = {name: stack.memory_mib() for name, stack in stacks.items()}
        if args.profile and have_py_spy():
            result["profile"] = {}
            for name, stack in stacks.items():
                for endpoint, path in paths.items():
                    log(f"profiling {name}'s workers: {endpoint}")
                    out = args.out / "profiles" / f"backends-{size}-{name}-{endpoint}.txt"
                    result["profile"][f"{name}/{endpoint}"] = profile(stack, stack.app_url + path,
                                                                      ENDPOINTS[endpoint][1], max(args.duration, 5), out)
    finally:
        stop_all(keep)
    return result


def stop_all(keep: list) -> None:
    """Stop what was started, last first, by PID; a second Ctrl-C or kill does not cut it short."""
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for thing in reversed(keep):
            try:
                thing.remove() if isinstance(thing, PostgresServer) else thing.stop()
            except Exception as exc:  # the others are still stopped
                log(f"stopping {type(thing).__name__}: {exc}")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def cpu(figures: dict) -> str:
    """CPU time per request of every process of a stack in its best round, in µs."""
    parts = figures.get("cpu_us_per_request") or {}
    return f"{sum(parts.values()):,.0f}" if parts else "?"


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [f"# S3 + PostgreSQL against local storage + SQLite ({results['generated']})", "",
             f"{results['machine']['cpus']} cores shared by both stacks, SeaweedFS, PostgreSQL and wrk"
             f" (`-t1 -c{s['wrk_connections']}`); best of {s['repeats']} interleaved round(s) of {s['duration_s']:g} s."
             f" Each stack: `wharf stack` (supervisord, gunicorn --workers 2, nginx with TLS and its cache)."
             f" Target: S3+PG at least {TARGET:.0%} of local+SQLite's requests/s through nginx.", ""]
    for size, figures in results["sizes"].items():
        d = figures["dataset"]
        lines += [f"## {int(size):,} files ({d['projects']:,} projects; page of `{d['project']}`)", "",
                  "| route | URL | local+SQLite req/s | p50 / p99 ms | S3+PG req/s | p50 / p99 ms | S3+PG / local |"
                  " CPU µs/req local / S3+PG (app + nginx + store) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for route, by_endpoint in figures["load"].items():
            for endpoint, f in by_endpoint.items():
                a, b = f["local"], f["s3_pg"]
                ratio = f["ratio"]
                mark = "" if ratio is None else (" ✓" if ratio >= TARGET else " ✗") if route == "nginx" else ""
                lines.append(
                    f"| {route} | {endpoint} | {a['rps']:,.0f} | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} "
                    f"| {b['rps']:,.0f} | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} "
                    f"| {ratio:.2f}{mark} | {cpu(a)} / {cpu(b)} |")
        lines.append("")
        idle = figures.get("idle_cpu_pct")
        if idle:
            lines += [f"Idle CPU, % of a core, over {s.get('idle_s', '?')} s without requests: " + "; ".join(
                f"{BACKENDS[name]}: " + ", ".join(f"{part} {pct}" for part, pct in parts.items())
                for name, parts in idle.items()), ""]
        memory = figures.get("memory_mib")
        if memory:
            lines += ["Resident memory after the run (MiB): " + "; ".join(
                f"{BACKENDS[name]}: " + ", ".join(f"{part} {mib}" for part, mib in parts.items())
                for name, parts in memory.items()), ""]
    return "\n".join(lines)


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "backends.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "backends.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="1000", help="index sizes in files, comma-separated")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (the best is kept)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (one wrk thread)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of no load to measure idle CPU over")
    parser.add_argument("--profile", action="store_true", help="also sample each stack's workers with py-spy")
    parser.add_argument("--data", type=Path, default=dataset.DATA_DIR, help="dataset cache")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where backends.json and backends.md go")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only write backends.md again from a backends.json")
    args = parser.parse_args(argv)
    if args.render:
        (args.render.parent / "backends.md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    sizes = [int(s) for s in args.files.split(",") if s]
    if not have_wrk():
        parser.error("wrk is not installed (apt-get install wrk)")
    if shutil.which("nginx") is None:
        parser.error("nginx is not installed (apt-get install nginx)")
    # A plain `kill` must still stop everything this run started (the finally blocks).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    results = {"generated": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
               "settings": {"duration_s": args.duration, "repeats": args.repeats, "wrk_threads": 1,
                            "wrk_connections": args.connections, "sizes": sizes, "target_ratio": TARGET,
                            "idle_s": args.idle,
                            "endpoints": {k: v[0] for k, v in ENDPOINTS.items()}},
               "sizes": {}}
    work = Path(tempfile.mkdtemp(prefix="wharf-bench-backends-"))
    try:
        for size in sizes:
            results["sizes"][str(size)] = run_size(size, args, work / str(size))
            write(results, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(results, args.out)
    log(f"results in {args.out}/backends.json and backends.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
