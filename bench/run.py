"""The benchmark in one command: every server, every size, side by side.

    python -m bench.run --sizes 1000,10000 --duration 5

For each size it generates (or reuses) the dataset, starts Wharf (timing a cold start
with an empty catalog, then a warm one), captures Wharf's responses into a static tree,
starts pypiserver, the bottle floor, nginx on the static tree (the ceiling) and nginx's
cache in front of Wharf, then drives each with wrk in interleaved rounds. It then times
``pip install`` from each index and uploads through the cache, and writes
``results.json``, ``results.md`` and ``throughput.png`` (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import clients, dataset, report
from .load import have_wrk, wrk
from .profile import have_py_spy, profile
from .servers import DeployedNginx, Floor, Nginx, Pypiserver, Server, Wharf, ensure_pypiserver

RESULTS = Path(__file__).resolve().parent / "results"
JSON_ACCEPT = clients.PIP_ACCEPT  # what pip sends: JSON preferred
ENDPOINTS = {
    # name: (path template, headers)
    "index": ("/simple/", {"Accept": "text/html"}),
    "project_html": ("/simple/{project}/", {"Accept": "text/html"}),
    "project_json": ("/simple/{project}/", {"Accept": JSON_ACCEPT}),
    "download": ("/packages/{download}", {}),
}
SERVERS = ("wharf", "pypiserver", "floor", "wharf_nginx", "ceiling")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def paths_for(data: dataset.Dataset) -> dict[str, str]:
    return {name: template.format(project=data.project, download=data.download)
            for name, (template, _headers) in ENDPOINTS.items()}


def capture_static(wharf: Server, data: dataset.Dataset, static: Path) -> None:
    """Write what Wharf answers for the benchmarked URLs (and pip's) as static files."""
    if static.exists():
        shutil.rmtree(static)
    pages = ["/simple/"] + [f"/simple/{name}/" for name in (data.project, dataset.PIP_APP, *dataset.PIP_DEPS)]
    for page in pages:
        for suffix, accept in (("index.html", "text/html"), ("index.json", "application/vnd.pypi.simple.v1+json")):
            status, _headers, body = wharf.get(page, {"Accept": accept})
            if status != 200:
                raise RuntimeError(f"wharf answered {status} for {page}")
            target = static / page.strip("/") / suffix
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            if suffix == "index.json" and page != "/simple/":
                for f in json.loads(body)["files"]:
                    if f.get("core-metadata"):
                        url = f["url"].removeprefix("../../")
                        status, _h, meta = wharf.get(f"/{url}.metadata")
                        if status == 200:
                            (static / f"{url}.metadata").parent.mkdir(parents=True, exist_ok=True)
                            (static / f"{url}.metadata").write_bytes(meta)
    status, _h, body = wharf.get(f"/packages/{data.download}")
    if status != 200:
        raise RuntimeError(f"wharf answered {status} for the download")
    (static / "packages").mkdir(parents=True, exist_ok=True)
    (static / "packages" / data.download).write_bytes(body)


def deploy_templates_available() -> bool:
    """Whether Wharf's renderer (app.serving.render) and local CA maker (app.serving.local_ca) are there."""
    return all(importlib.util.find_spec(m) is not None for m in ("app.serving.render", "app.serving.local_ca"))


def start_cache(work: Path, wharf: Server, data: dataset.Dataset, static: Path, probe: str) -> tuple[Server, Server]:
    """Wharf behind its nginx cache, and the nginx ceiling configured to match it.

    With Wharf's deploy templates: the rendered site (TLS, HTTP/2, access log) and a
    ceiling with the same TLS policy and access log. Without: bench's plain-HTTP pair.
    """
    if deploy_templates_available():
        cache = DeployedNginx(work, wharf.port).start(probe)
        ceiling = Nginx(work, "ceiling", "static.conf.j2", static=str(static), dataset=str(data.root),
                        tls_conf=str(cache.tls_conf), ca=cache.ca).start(probe)
    else:
        cache = Nginx(work, "wharf_nginx", "cache.conf.j2", upstream=f"127.0.0.1:{wharf.port}").start(probe)
        ceiling = Nginx(work, "ceiling", "static.conf.j2", static=str(static), dataset=str(data.root),
                        tls_conf="").start(probe)
    return cache, ceiling


def link_tree(source: Path, target: Path) -> Path:
    """A hard-linked copy of a directory tree (a real copy across filesystems).

    pypiserver's cached-dir backend watches its directory with inotify: every file another
    server opens there would wake its watchdog threads and empty its cache, slowing both.
    """
    for directory, _dirs, files in os.walk(source):
        out = target / Path(directory).relative_to(source)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(directory) / name, out / name)
            except FileExistsError:
                pass
            except OSError:
                shutil.copy2(Path(directory) / name, out / name)
    return target


def app_alone(wharf_args: dict, static: Path, data: dataset.Dataset) -> dict:
    """bench.inprocess in a fresh process: Wharf's and the floor's own cost per request."""
    cmd = [sys.executable, "-m", "bench.inprocess", *map(str, wharf_args["packages"]),
           "--state", str(wharf_args["state_dir"]), "--static", str(static),
           "--project", data.project, "--download", data.download]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                         env={k: v for k, v in os.environ.items() if not k.startswith("WHARF_")})
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-600:]}
    return json.loads(out.stdout)


def drain(server: Server, path: str) -> None:
    """Wait until a server has answered what wrk left queued (slow servers keep working)."""
    if server.kind == "python":
        server.get(path, timeout=900)


def run_size(size: int, args: argparse.Namespace, work: Path, notes: list[str]) -> dict:
    data = dataset.ensure(size, args.data)
    log(f"size {size}: {data.projects} projects, benchmarked project {data.project}")
    paths = paths_for(data)
    result: dict = {"dataset": {"files": size, "projects": data.projects, "project": data.project,
                                "download": data.download, "project_files": dataset.FILES_PER_PROJECT},
                    "start_s": {}, "memory": {}, "load": {}, "pip_install": {}}
    uploads = work / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    htpasswd = clients.write_htpasswd(work / "htpasswd")
    state = work / "wharf-state"
    servers: dict[str, Server] = {}
    try:
        # Wharf cold (empty catalog: hashes and reads every file), then warm (catalog kept).
        probe = paths["project_html"]
        wharf_args = dict(packages=[uploads, data.packages], state_dir=state, password_file=htpasswd)
        cold = Wharf(work, **wharf_args).start(probe)
        result["start_s"]["wharf_cold"] = round(cold.start_seconds, 2)
        cold.stop()
        servers["wharf"] = Wharf(work, **wharf_args).start(probe)
        result["start_s"]["wharf"] = round(servers["wharf"].start_seconds, 2)
        log(f"wharf started cold in {result['start_s']['wharf_cold']}s, warm in {result['start_s']['wharf']}s")
        static = work / "static"
        capture_static(servers["wharf"], data, static)
        result["inprocess_us"] = app_alone(wharf_args, static, data)
        log(f"app alone, us/request: {result['inprocess_us']}")
        if "pypiserver" in args.servers:
            servers["pypiserver"] = Pypiserver(work, link_tree(data.packages, work / "pypiserver-packages")).start(probe)
            result["start_s"]["pypiserver"] = round(servers["pypiserver"].start_seconds, 2)
            log(f"pypiserver started in {result['start_s']['pypiserver']}s")
        if "floor" in args.servers:
            servers["floor"] = Floor(work, static).start(probe)
            result["start_s"]["floor"] = round(servers["floor"].start_seconds, 2)
        if "wharf_nginx" in args.servers or "ceiling" in args.servers:
            servers["wharf_nginx"], servers["ceiling"] = start_cache(work, servers["wharf"], data, static, probe)
        order = [name for name in SERVERS if name in servers and name in args.servers]

        # Every server must answer every benchmarked URL (and warms its caches doing so).
        for name in order:
            for endpoint, path in paths.items():
                status, _h, body = servers[name].get(path, ENDPOINTS[endpoint][1], timeout=900)
                if status != 200:
                    raise RuntimeError(f"{name} answered {status} for {path}")

        log(f"load: {len(order)} servers x {len(paths)} URLs x {args.repeats} rounds x {args.duration}s")
        runs: dict[str, dict[str, list]] = {e: {n: [] for n in order} for e in paths}
        for round_ in range(args.repeats):
            for endpoint, path in paths.items():
                for name in order:
                    server = servers[name]
                    # CPU per request: robust to other load on the machine, unlike req/s.
                    # Behind the cache, the app's share (revalidations) counts too.
                    counted = [server, servers["wharf"]] if name == "wharf_nginx" else [server]
                    cpu = sum(s.cpu() for s in counted)
                    outcome = wrk(server.url + path, args.duration, ENDPOINTS[endpoint][1],
                                  connections=args.connections)
                    cpu = sum(s.cpu() for s in counted) - cpu
                    outcome["cpu_us_per_request"] = round(1e6 * cpu / outcome["requests"], 1) if outcome["requests"] else None
                    drain(server, paths["project_html"])
                    runs[endpoint][name].append(outcome)
                    log(f"  {endpoint:13} {name:11} {outcome['rps']:>9.1f} req/s  {outcome['cpu_us_per_request']} us CPU/req"
                        f"  p50 {outcome['p50_ms']} ms"
                        f"  p99 {outcome['p99_ms']} ms{'  errors ' + str(outcome['errors']) if outcome['errors'] else ''}")
        for endpoint, by_server in runs.items():
            # The best round of each: background load on a shared machine only ever slows a run.
            result["load"][endpoint] = {
                name: {**max(rs, key=lambda r: r["rps"]), "rounds_rps": [r["rps"] for r in rs],
                       "min_cpu_us_per_request": min((r["cpu_us_per_request"] for r in rs
                                                      if r["cpu_us_per_request"] is not None), default=None)}
                for name, rs in by_server.items()}
        for name in order:
            if servers[name].kind == "python":
                result["memory"][name] = servers[name].memory()

        if args.profile and have_py_spy():
            result["profile"] = {}
            for endpoint, path in paths.items():
                log(f"profiling wharf: {endpoint}")
                result["profile"][endpoint] = profile(servers["wharf"], servers["wharf"].url + path,
                                                      ENDPOINTS[endpoint][1], max(args.duration, 5),
                                                      args.out / "profiles" / f"wharf-{size}-{endpoint}.txt")

        if "pip" not in args.skip:
            indexes = {"wharf": "wharf", "wharf_nginx": "wharf_nginx", "pypiserver": "pypiserver", "ceiling": "ceiling"}
            for name in indexes:
                if name in servers:
                    log(f"pip install from {name}")
                    result["pip_install"][name] = clients.pip_install(servers[name].url + "/simple/",
                                                                      work / f"pip-{name}", servers[name].ca)
                    log(f"  {result['pip_install'][name]}")

        if "upload" not in args.skip:
            for key, name in (("upload_visible_direct", "wharf"), ("upload_visible", "wharf_nginx")):
                if name in servers:
                    log(f"{args.uploads} uploads to {name}, timing until listed there")
                    result[key] = clients.upload_to_visible(servers[name], work, f"bench-upload-{name.replace('_', '-')}",
                                                            count=args.uploads)
                    log(f"  {({k: v for k, v in result[key].items() if k != 'delays_s'})}")

        if "big" not in args.skip and args.big_upload_mb and size == args.sizes[0]:
            log(f"{args.big_upload_mb} MiB upload to wharf, sampling RSS")
            result["big_upload"] = clients.upload_memory(servers["wharf"], work, args.big_upload_mb)
            log(f"  {result['big_upload']}")
    finally:
        for server in servers.values():
            server.stop()
    return result


def machine() -> dict:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "--version"]),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark Wharf against pypiserver, a bottle floor and nginx.")
    parser.add_argument("--sizes", default="1000,10000", help="index sizes in files, comma-separated")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per URL and server (the best is kept)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (one wrk thread)")
    parser.add_argument("--uploads", type=int, default=20, help="uploads timed until visible")
    parser.add_argument("--big-upload-mb", type=int, default=500, help="size of the big upload (0: skip)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="servers to load (wharf always runs)")
    parser.add_argument("--skip", default="", help="parts to skip: pip, upload, big")
    parser.add_argument("--profile", action="store_true", help="also sample Wharf's workers with py-spy under load")
    parser.add_argument("--data", type=Path, default=dataset.DATA_DIR, help="dataset cache")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary work directory")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for the run and every server and wrk it starts (e.g. -5 as root,"
                             " to be less disturbed by other work on the machine)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.servers = {s for s in args.servers.split(",") if s} | {"wharf"}
    args.skip = {s for s in args.skip.split(",") if s}
    if not have_wrk():
        parser.error("wrk is not installed (apt-get install wrk)")
    if "pypiserver" in args.servers:
        ensure_pypiserver()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.nice:
        os.nice(args.nice)
    # A plain `kill` must still stop every server this run started (the finally blocks).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))

    notes = [
        f"{os.cpu_count()} CPU cores shared by the servers, wrk and anything else running: figures are noisy;"
        f" each figure is the best of {args.repeats} interleaved round(s) of {args.duration:g}s.",
        "Python servers: the same gunicorn command line (--workers 2 --worker-class sync, no access log);"
        " nginx: 2 worker processes." + (f" Run at niceness {args.nice}." if args.nice else ""),
        ("Wharf through nginx: the site `wharf render` writes from deploy/nginx (HTTPS, HTTP/2, access log),"
         " in front of the same Wharf; the ceiling nginx uses the same TLS settings and access log."
         if deploy_templates_available() else
         "Wharf through nginx: bench/nginx/cache.conf.j2 (plain HTTP), deploy templates not available."),
        "pypiserver serves no PEP 691 JSON: its project_json figures are its HTML page (it ignores Accept)."
        " It serves a hard-linked copy of the dataset: its inotify watcher would otherwise wake on every"
        " file the other servers open.",
    ]
    results = {"generated": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
               "settings": {"duration_s": args.duration, "repeats": args.repeats, "wrk_threads": 1,
                            "wrk_connections": args.connections, "sizes": args.sizes,
                            "endpoints": {k: v[0] for k, v in ENDPOINTS.items()}},
               "notes": notes, "sizes": {}}
    work = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    try:
        for size in args.sizes:
            results["sizes"][str(size)] = run_size(size, args, work / str(size), notes)
            report.write(results, args.out)
    finally:
        if args.keep_work:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report.write(results, args.out)
    log(f"results in {args.out}/results.json, results.md, throughput.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
