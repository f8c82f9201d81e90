"""A million files: request cost, memory, start and change at 1,000 / 100,000 / 1,000,000 files.

For each size (datasets in the tree layout of bench/dataset.py: 10 files per project,
100 projects per directory) and each catalog (SQLite; PostgreSQL with ``--engines``),
in one run:

- warm start: ``gunicorn app.wsgi:application`` (2 workers, as bench/run.py) on a catalog
  indexed before, from launch to the first 200 of a project page;
- requests/s and p50/p99 (wrk, 8 connections) for the project page (HTML and JSON), its
  ``.metadata`` and a download, straight from the app (uncached) and through the nginx
  that ``wharf render`` writes (cached), plus a run that asks for a different project each
  time (``--spread``: every request a miss of the worker's project cache);
- ``/simple/``: compressed size, time to first byte, and the time of the first request
  after a new project appeared (the index rebuilt by the chunk);
- web pages (home, the list, a search) over every project, first and warm;
- change: a file dropped into a directory by hand, and an upload, until the project page
  lists them;
- memory: every worker's RSS after the load, and the node's total;
- a full consistency sweep (time, peak RSS) in a process of its own;
- cold start at the largest size: an empty state directory, time to the first answer and
  what /health says meanwhile.

The first run indexes each dataset once (kept beside it: ``bench/data/<size>-tree/state``);
the PostgreSQL catalog is filled from it with COPY (the same rows the scanner wrote; the
server's first sweep then finds every file unchanged).

    python -m bench.million --sizes 1000,100000,1000000 --engines sqlite,postgresql
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import dataset
from .load import have_wrk, wrk
from .servers import DeployedNginx, Wharf, _python_env

RESULTS = Path(__file__).resolve().parent / "results"
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
PASSWORD = "bench-password"


class Node(Wharf):
    """Wharf under gunicorn with extra WHARF_* settings (the database, a password file)."""

    def __init__(self, workdir: Path, packages: Path, state_dir: Path, extra: dict[str, str]):
        super().__init__(workdir, [packages], state_dir)
        self.extra = extra

    def command(self):
        cmd, env = super().command()
        env.update(self.extra)
        return cmd, env


def linked_dataset(size: int, data_dir: Path = dataset.DATA_DIR) -> dataset.Dataset:
    """The tree layout of ``size`` files made of hard links to ten template distributions,
    with the catalog rows the scanner computes for them written directly (a million real
    files take hours to make on two busy cores; these take a minute or two). Every file
    has its own name, project and path; its bytes (and so its hash and metadata) are one
    of the templates'. Serving costs the same as for distinct files."""
    from app.catalog import Catalog
    from app.catalog.database import UPSERT_FILE
    from app.catalog.scanner import read_file
    from app.settings import Settings
    from tests.support import make_sdist, make_wheel

    root = data_dir / f"{size}-linked"
    data = dataset.describe(size, root, tree=True)
    state = root / "state"
    done = state / "indexed.json"
    if done.exists():
        return data
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    templates = root / "templates"
    made = []
    for version in dataset.VERSIONS:
        meta = {"requires_python": ">=3.8", "summary": f"Benchmark package version {version}"}
        made += [make_wheel(templates, "bench-template", version, **meta),
                 make_sdist(templates, "bench-template", version, **meta)]
    packages = data.packages
    settings = Settings(packages=(packages,), state_dir=state)
    packages.mkdir(parents=True)
    state.mkdir(parents=True)
    catalog = Catalog(settings)
    start = time.monotonic()
    # Each template's row as the scanner makes it, read once per copy (through a link under
    # the root); a file system allows ~65,000 links per inode, so each copy takes 50,000.
    rows: dict[tuple[str, int], tuple] = {}

    def linked(template: Path, copy: int) -> tuple[Path, tuple]:
        source = templates / f"{copy}" / template.name
        if (template.name, copy) not in rows:
            source.parent.mkdir(exist_ok=True)
            shutil.copyfile(template, source)
            link = packages / template.name
            os.link(source, link)
            rows[template.name, copy] = read_file(catalog, 0, link.name, catalog.storage.stat_file(0, link.name))
            link.unlink()
        return source, rows[template.name, copy]

    conn = catalog.db()
    batch = []
    for index in range(data.projects):
        name = dataset.project_name(index)
        module = name.replace("-", "_")
        directory = dataset.bucket(index)
        (packages / directory).mkdir(exist_ok=True)
        for template in made:
            source, template_row = linked(template, index // 50_000)
            filename = template.name.replace("bench_template", module)
            relpath = f"{directory}/{filename}"
            os.link(source, packages / relpath)
            row = list(template_row)
            row[1:5] = [relpath, directory, filename, name]
            batch.append(tuple(row))
        if len(batch) >= 20_000 or index == data.projects - 1:
            with catalog.database.transaction(conn):
                conn.executemany(UPSERT_FILE, batch)
            batch = []
    with catalog.database.transaction(conn):
        conn.execute("INSERT INTO meta(key, value) VALUES ('complete', ?)", (json.dumps(catalog.root_names),))
    catalog.close()
    took = {"files": size, "seconds": round(time.monotonic() - start, 1), "linked": True}
    data.manifest.write_text(json.dumps({"size": size, "projects": data.projects, "linked": True}))
    done.write_text(json.dumps(took))
    return data


def index_once(data: dataset.Dataset) -> dict:
    """Index the dataset into its kept SQLite catalog (once); the time it took."""
    from app.catalog import Catalog
    from app.settings import Settings

    state = data.root / "state"
    done = state / "indexed.json"
    if done.exists():
        return json.loads(done.read_text())
    state.mkdir(exist_ok=True)
    start = time.monotonic()
    catalog = Catalog(Settings(packages=(data.packages,), state_dir=state)).open(sweep=True)
    files = catalog.file_count()
    catalog.close()
    took = {"files": files, "seconds": round(time.monotonic() - start, 1)}
    took["files_per_second"] = round(files / took["seconds"]) if took["seconds"] else None
    done.write_text(json.dumps(took))
    return took


def fill_postgres(sqlite_state: Path, url: str, roots: list[str]) -> float:
    """Copy the catalog rows the scanner wrote into a fresh PostgreSQL catalog."""
    import psycopg

    from app.catalog.postgres import SCHEMA

    start = time.monotonic()
    columns = ("root, relpath, dir, filename, project, name, version, packagetype, size, mtime_ns, inode,"
               " upload_time, hashes, requires_python, metadata_sha256, summary")
    source = sqlite3.connect(sqlite_state / "catalog.sqlite3")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        with conn.cursor().copy(f"COPY files ({columns}) FROM STDIN") as copy:
            for row in source.execute(f"SELECT {columns} FROM files"):
                copy.write_row(row)
        conn.execute("INSERT INTO meta(key, value) VALUES ('complete', %s)", (json.dumps(roots),))
        conn.execute("ANALYZE files")
    source.close()
    return time.monotonic() - start


def timed_get(url: str, headers: dict | None = None) -> tuple[float, float, int, int]:
    """(seconds to first byte, seconds in all, status, bytes) of one GET."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.perf_counter()
    with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=120) as response:
        first = time.perf_counter()
        body = response.read()
        return first - start, time.perf_counter() - start, response.status, len(body)


def visible(url: str, name: str, within: float = 30.0) -> float | None:
    """Seconds until the JSON page at ``url`` lists ``name`` (polled every 10 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    urllib.request.Request(url, headers={"Accept": JSON_ACCEPT}), timeout=30) as response:
                if name in response.read().decode():
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.01)
    return None


def upload(base: str, wheel: Path, name: str, version: str) -> int:
    from tests.integration.test_publish import BOUNDARY, basic, form_body, upload_fields
    from tests.support import http

    data = wheel.read_bytes()
    headers = {"Authorization": basic("bench", PASSWORD), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return http(base + "/legacy/", "POST", headers, form_body(upload_fields(name, version, data), (wheel.name, data)))[0]


def spread_script(work: Path, data: dataset.Dataset) -> Path:
    """A wrk script that asks for a different project page on every request."""
    script = work / "spread.lua"
    script.write_text(
        f"local n = {data.projects}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = (i * 7919 + 104729) % n\n"
        "  return wrk.format('GET', string.format('/simple/bench-pkg-%05d/', i))\n"
        "end\n")
    return script


def wrk_spread(url: str, script: Path, duration: float) -> dict:
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{duration:g}s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration + 120)
    rps = next((float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("Requests/sec")), 0.0)
    return {"rps": rps}


def sweep_cost(data: dataset.Dataset, state: Path, extra: dict[str, str]) -> dict:
    """A full consistency sweep in a process of its own: seconds and peak RSS."""
    code = ("import json, resource, time; from app.catalog import Catalog; from app.settings import Settings; "
            "s = Settings.from_env(); c = Catalog(s); c.open(sweep=False); t = time.monotonic(); "
            "c._try_lead() and c._scanner.sweep(); "
            "print(json.dumps({'seconds': round(time.monotonic() - t, 2), "
            "'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})); c.close()")
    env = _python_env(WHARF_PACKAGES=str(data.packages), WHARF_STATE_DIR=str(state), WHARF_LOG_LEVEL="warning", **extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600,
                         cwd=Path(__file__).resolve().parent.parent)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": (out.stderr or out.stdout)[-500:]}


def engines_number(engine: str) -> int:
    return 1 if engine == "postgresql" else 2


def settle(node: Node, quiet: float = 0.15, within: float = 600.0) -> float:
    """Seconds until the node's processes use less than ``quiet`` of a core over a second:
    the first sweep after a start (a stat of every file) is over, and cannot slow the runs."""
    start = time.monotonic()
    time.sleep(1)
    while time.monotonic() - start < within:
        before = node.cpu()
        time.sleep(1)
        if node.cpu() - before < quiet:
            break
    return round(time.monotonic() - start, 1)


def node_memory(node: Node) -> dict:
    memory = node.memory()
    memory["node_total_mib"] = round((memory["master_mib"] or 0) + sum(memory["workers_mib"]), 1)
    return memory


def measure(size: int, engine: str, data: dataset.Dataset, work: Path, args, postgres) -> dict:
    from app.auth import set_password
    from tests.support import make_wheel

    state = data.root / "state" if engine == "sqlite" else work / f"state-{size}-pg"
    extra = {"WHARF_PASSWORD_FILE": str(work / "htpasswd"), "WHARF_CACHE_REFRESH": "off"}
    if not (work / "htpasswd").exists():
        set_password(work / "htpasswd", "bench", PASSWORD, rounds=4)
    result: dict = {"size": size, "engine": engine, "projects": data.projects}
    if engine == "postgresql":
        url = postgres.new_database()
        result["fill_seconds"] = round(fill_postgres(data.root / "state", url, [str(data.packages)]), 1)
        extra["WHARF_DATABASE_URL"] = url
    node = Node(work, data.packages, state, extra)
    page = f"/simple/{data.project}/"
    node.start(page, timeout=1800)
    nginx = None
    try:
        result["warm_start_seconds"] = round(node.start_seconds, 2)
        result["settled_seconds"] = settle(node)  # the first sweep (stats every file) is done
        urls = {"html": (page, {"Accept": "text/html"}), "json": (page, {"Accept": JSON_ACCEPT}),
                "metadata": (f"/packages/{data.download}.metadata", {}), "download": (f"/packages/{data.download}", {})}
        result["direct"] = {k: wrk(node.url + p, args.duration, h) for k, (p, h) in urls.items()}
        if have_wrk():
            result["direct"]["spread_html"] = wrk_spread(node.url, spread_script(work, data), args.duration)
        nginx = DeployedNginx(work, node.port, name=f"nginx-{size}-{engine}")
        nginx.start(page)
        result["nginx"] = {k: wrk(nginx.url + p, args.duration, h) for k, (p, h) in urls.items()}
        # /simple/: compressed, from the app's kept copy.
        first, total, _, gz_bytes = timed_get(node.url + "/simple/", {"Accept-Encoding": "gzip"})
        warm = [timed_get(node.url + "/simple/", {"Accept-Encoding": "gzip"}) for _ in range(5)]
        result["simple_index"] = {"gzip_bytes": gz_bytes, "first_ttfb_ms": round(first * 1000, 1),
                                  "ttfb_ms": round(statistics.median(w[0] for w in warm) * 1000, 1),
                                  "total_ms": round(statistics.median(w[1] for w in warm) * 1000, 1),
                                  "rps": wrk(node.url + "/simple/", args.duration, {"Accept-Encoding": "gzip"})["rps"]}
        # Change: an upload of a new project, and a file dropped into a directory by hand.
        fresh = f"fresh-{engine}-{size}-{time.time_ns()}"  # a new project each run
        wheel = make_wheel(work / fresh, fresh, "1.0")
        started = time.monotonic()
        status = upload(node.url, wheel, fresh, "1.0")
        shown = visible(f"{node.url}/simple/{fresh}/", wheel.name)
        result["upload"] = {"status": status, "to_listed_s": round(time.monotonic() - started, 3),
                            "listed_after_200_s": shown}
        first, _, _, _ = timed_get(node.url + "/simple/", {"Accept-Encoding": "gzip"})
        result["simple_index"]["ttfb_after_new_project_ms"] = round(first * 1000, 1)
        index = data.projects // 3
        dropped = make_wheel(data.packages / dataset.bucket(index), dataset.project_name(index),
                             f"9.{engines_number(engine)}.{size}")
        started = time.monotonic()
        shown = visible(f"{node.url}/simple/{dataset.project_name(index)}/", dropped.name)
        result["hand_drop_visible_s"] = round(time.monotonic() - started, 3) if shown is not None else None
        dropped.unlink()
        # Web pages over every project: first (builds the search lines) and warm.
        pages = {"home": "/", "list": "/projects/", "search one": f"/projects/?q={data.project}",
                 "search all": "/projects/?q=benchmark+package", "project": f"/project/{data.project}/"}
        result["web_ms"] = {}
        for label, path in pages.items():
            first_total = timed_get(node.url + path)[1]
            warm = statistics.median(timed_get(node.url + path)[1] for _ in range(5))
            result["web_ms"][label] = {"first": round(first_total * 1000, 1), "warm": round(warm * 1000, 1)}
        result["memory"] = node_memory(node)
    finally:
        if nginx is not None:
            nginx.stop()
        node.stop()
    result["sweep"] = sweep_cost(data, state, {k: v for k, v in extra.items() if k == "WHARF_DATABASE_URL"})
    return result


def compare(datasets: list[dataset.Dataset], engine: str, work: Path, duration: float, rounds: int,
            postgres) -> dict:
    """Every size's node running at once, wrk on each in turn (a, b, a, b, ...), the best
    round kept: background load slows a round, never speeds one, and hits every size alike."""
    nodes = []
    try:
        for data in datasets:
            extra = {"WHARF_CACHE_REFRESH": "off"}
            state = data.root / "state"
            if engine == "postgresql":
                url = postgres.new_database()
                fill_postgres(data.root / "state", url, [str(data.packages)])
                extra["WHARF_DATABASE_URL"] = url
                state = work / f"compare-{data.size}-pg"
            node = Node(work, data.packages, state, extra)
            node.start(f"/simple/{data.project}/", timeout=1800)
            nodes.append((data, node))
        for _data, node in nodes:
            settle(node)
        kinds = {"html": lambda d: (f"/simple/{d.project}/", {"Accept": "text/html"}),
                 "json": lambda d: (f"/simple/{d.project}/", {"Accept": JSON_ACCEPT}),
                 "metadata": lambda d: (f"/packages/{d.download}.metadata", {}),
                 "download": lambda d: (f"/packages/{d.download}", {})}
        best: dict[int, dict[str, dict]] = {data.size: {} for data, _ in nodes}
        for _ in range(rounds):
            for kind, where in kinds.items():
                for data, node in nodes:
                    path, headers = where(data)
                    run = wrk(node.url + path, duration, headers)
                    kept = best[data.size].get(kind)
                    if kept is None or run["rps"] > kept["rps"]:
                        best[data.size][kind] = run
        smallest = datasets[0].size
        ratios = {size: {kind: round(runs[kind]["rps"] / best[smallest][kind]["rps"], 2) for kind in kinds}
                  for size, runs in best.items()}
        return {"engine": engine, "rounds": rounds, "best": best, "ratio_to_smallest": ratios}
    finally:
        for _data, node in nodes:
            node.stop()


def cold_start(data: dataset.Dataset, work: Path) -> dict:
    """Start on an empty state directory: when the first answer comes, what /health says then."""
    state = work / "cold-state"
    node = Node(work, data.packages, state, {"WHARF_CACHE_REFRESH": "off"})
    node.start("/health", timeout=600)
    try:
        health = json.loads(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            node.url + "/health", timeout=60).read())
        time.sleep(10)
        later = json.loads(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            node.url + "/health", timeout=60).read())
        return {"first_answer_s": round(node.start_seconds, 2), "health_then": health, "health_10s_later": later}
    finally:
        node.stop()


def search_at(projects: int) -> dict:
    """The web search's own cost over ``projects`` projects (in process: names and summaries
    made up, as many as a million-file index with three files a project has)."""
    from app.web.search import SearchIndex, _line

    names = tuple(f"proj-{i:06d}" for i in range(projects))
    index = SearchIndex(1, names, [_line(n, n.upper(), f"Package number {i} for tests") for i, n in enumerate(names)])
    timings = {}
    for label, query in (("one name", f"proj-{projects // 2:06d}"), ("prefix", "proj-0001"),
                         ("every project", "package tests"), ("nothing", "zzzz-nothing")):
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            found = index.search(query)
            runs.append(time.perf_counter() - start)
        timings[label] = {"ms": round(statistics.median(runs) * 1000, 1), "found": len(found)}
    return {"projects": projects, "queries": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "million.json")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--compare-only", action="store_true", help="only the side-by-side throughput runs")
    parser.add_argument("--compare-rounds", type=int, default=3,
                        help="interleaved rounds of the side-by-side throughput comparison (0: none)")
    parser.add_argument("--data", type=Path, default=dataset.DATA_DIR, help="where datasets are kept")
    parser.add_argument("--linked", default="1000000",
                        help="sizes made of hard links to templates, catalog written directly (see linked_dataset)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    work = Path(os.environ.get("BENCH_WORK", "/tmp/wharf-million"))
    work.mkdir(parents=True, exist_ok=True)
    postgres = None
    if "postgresql" in engines:
        from tests.postgres import PostgresServer

        postgres = PostgresServer()
        postgres.start()
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M"), "runs": [], "indexing": {}}
    try:
        linked = {int(s) for s in args.linked.split(",") if s}
        for size in sizes:
            data = linked_dataset(size, args.data) if size in linked else dataset.ensure(size, args.data, tree=True)
            results["indexing"][size] = index_once(data)
            print(f"{size}: indexed {results['indexing'][size]}", file=sys.stderr)
            for engine in engines if not args.compare_only else ():
                run = measure(size, engine, data, work, args, postgres)
                results["runs"].append(run)
                print(json.dumps(run), file=sys.stderr)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1))
        if args.compare_rounds:
            datasets = [linked_dataset(size, args.data) if size in linked else dataset.ensure(size, args.data, tree=True)
                        for size in sizes]
            results["compare"] = [compare(datasets, engine, work, args.duration, args.compare_rounds, postgres)
                                  for engine in engines]
            for comparison in results["compare"]:
                print(json.dumps({comparison["engine"]: comparison["ratio_to_smallest"]}), file=sys.stderr)
        results["search_330k"] = search_at(330_000)
        print(json.dumps(results["search_330k"]), file=sys.stderr)
        if not args.skip_cold:
            largest = sizes[-1]
            data = (linked_dataset(largest, args.data) if largest in linked
                    else dataset.ensure(largest, args.data, tree=True))
            results["cold_start"] = cold_start(data, work)
            print(json.dumps(results["cold_start"]), file=sys.stderr)
    finally:
        if postgres is not None:
            postgres.stop()
            postgres.remove()
    args.out.write_text(json.dumps(results, indent=1))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
