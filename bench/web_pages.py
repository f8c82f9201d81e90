"""How long the pages for people take on a large index (10,000 projects by default).

Measured in-process (the WSGI app called directly, so the figure is the page's own cost)
and over HTTP against ``wharf serve`` (gunicorn, one worker, loopback). Each figure is the
median of ``--rounds`` requests after one warm-up; "cold" is the first request after start,
which builds the search structure (list pages) or reads metadata and renders the README
(project pages).

    python -m bench.web_pages            # 100,000 files = 10,000 projects
    python -m bench.web_pages --size 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from app import create_app
from app.settings import Settings
from app.web.search import SearchIndex
from tests.support import WharfProcess, call_wsgi

from . import dataset

RESULTS = Path(__file__).resolve().parent / "results"


def _paths(data: dataset.Dataset) -> dict[str, str]:
    last_page = -(-data.projects // 50)
    return {
        "home": "/",
        "list, page 1": "/projects/",
        f"list, page {last_page // 2}": f"/projects/?page={last_page // 2}",
        "search, one project": f"/projects/?q={data.project}",
        "search, every project": "/projects/?q=benchmark+package",
        "search, no match": "/projects/?q=zzzz-nothing",
        "project page": f"/project/{data.project}/",
    }


def _in_process(app, path: str, rounds: int) -> tuple[float, float]:
    route, _, query = path.partition("?")
    start = time.perf_counter()
    status, _, _ = call_wsgi(app, route, query=query)
    cold = time.perf_counter() - start
    assert status == 200, (path, status)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call_wsgi(app, route, query=query)
        times.append(time.perf_counter() - start)
    return cold, statistics.median(times)


def _over_http(url: str, rounds: int) -> tuple[float, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def fetch() -> float:
        start = time.perf_counter()
        with opener.open(url, timeout=60) as response:
            response.read()
        return time.perf_counter() - start

    cold = fetch()
    return cold, statistics.median(fetch() for _ in range(rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="files in the dataset (10 per project)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tree", action="store_true", help="the dataset in its tree layout (bench/million.py)")
    args = parser.parse_args(argv)
    data = dataset.ensure(args.size, tree=args.tree)
    paths = _paths(data)

    # The catalog lives beside the dataset (kept between runs), not inside it.
    state = data.root / "web-bench-state"
    app = create_app(Settings.from_env({}, packages=(data.packages,), state_dir=state), watch=True)
    catalog = app.config["wharf.catalog"]
    deadline = time.monotonic() + 600
    while len(catalog.view.names) < data.projects and time.monotonic() < deadline:
        time.sleep(0.5)  # a first run indexes the dataset
    print(f"{len(catalog.view.names):,} projects, {catalog.file_count():,} files", file=sys.stderr)
    # The search structure: built whole once (one query), then updated per catalog change
    # project by project (what a worker pays after each upload).
    view = catalog.view
    start = time.perf_counter()
    built = SearchIndex.build(catalog, view)
    build_ms = (time.perf_counter() - start) * 1000
    some = view.names[len(view.names) // 2]
    start = time.perf_counter()
    built.updated(catalog, dataclasses.replace(view, serial=view.serial + 1), [some])
    rebuild_ms = (time.perf_counter() - start) * 1000
    results: dict[str, dict] = {}
    for label, path in paths.items():
        cold, warm = _in_process(app, path, args.rounds)
        results[label] = {"path": path, "in_process_cold_ms": round(cold * 1000, 2),
                          "in_process_ms": round(warm * 1000, 2)}
    catalog.close()

    with WharfProcess(data.packages, "--state-dir", str(state), workers=1, log=data.root / "web-bench.log") as wharf:
        for label, path in paths.items():
            cold, warm = _over_http(wharf.url + path, args.rounds)
            results[label].update(http_cold_ms=round(cold * 1000, 2), http_ms=round(warm * 1000, 2))

    print(f"\n{'page':<24} {'cold':>9} {'warm':>9} {'HTTP cold':>10} {'HTTP':>9}   (ms, median of {args.rounds})")
    for label, r in results.items():
        print(f"{label:<24} {r['in_process_cold_ms']:>9.2f} {r['in_process_ms']:>9.2f} "
              f"{r['http_cold_ms']:>10.2f} {r['http_ms']:>9.2f}")
    print(f"\nsearch structure for {len(view.names):,} projects: built in {build_ms:.1f} ms, "
          f"rebuilt after one project changed in {rebuild_ms:.1f} ms")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"web-pages-{args.size}.json"
    out.write_text(json.dumps({"size": args.size, "projects": data.projects, "rounds": args.rounds,
                               "search_build_ms": round(build_ms, 1),
                               "search_rebuild_ms": round(rebuild_ms, 1), "pages": results}, indent=1))
    print(f"\nwritten to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
