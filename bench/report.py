"""Results as Markdown tables with ratios, and a plot of throughput against index size.

    python -m bench.report bench/results/results.json   # re-render results.md and the plot
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LABELS = {"wharf": "Wharf", "pypiserver": "pypiserver 2.4", "floor": "bottle floor",
          "wharf_nginx": "Wharf + nginx cache", "ceiling": "nginx static"}
URLS = {"index": "`/simple/`", "project_html": "`/simple/<p>/` HTML", "project_json": "`/simple/<p>/` JSON",
        "download": "download"}
TARGETS = {"floor": 0.8, "ceiling": 0.8, "size": 0.9, "start_s": 3.0, "worker_mib": 150.0,
           "upload_p99_s": 1.0, "upload_growth_mib": 50.0}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def _rps(load: dict, endpoint: str, server: str) -> float | None:
    return load.get(endpoint, {}).get(server, {}).get("rps")


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.0f}x"
    return f"{value:.2f}"


def throughput_tables(size: str, entry: dict) -> list[str]:
    load = entry["load"]
    servers = [s for s in LABELS if any(s in load.get(e, {}) for e in URLS)]
    ds = entry["dataset"]
    out = [f"### {int(size):,} files ({ds['projects']:,} projects; the project page lists {ds['project_files']} files)", ""]
    head = "| URL | " + " | ".join(LABELS[s] for s in servers) + " | Wharf / pypiserver | Wharf / floor | cache / ceiling |"
    out += ["Requests per second (higher is better):", "", head, "|" + "---|" * (len(servers) + 4)]
    for endpoint, label in URLS.items():
        if endpoint not in load:
            continue
        cells = [_num(_rps(load, endpoint, s)) for s in servers]
        ratios = [_ratio(_rps(load, endpoint, "wharf"), _rps(load, endpoint, "pypiserver")),
                  _ratio(_rps(load, endpoint, "wharf"), _rps(load, endpoint, "floor")),
                  _ratio(_rps(load, endpoint, "wharf_nginx"), _rps(load, endpoint, "ceiling"))]
        out.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(_fmt_ratio(r) for r in ratios) + " |")
    out += ["", "Latency p50 / p99 in ms (wrk, 8 connections):", "",
            "| URL | " + " | ".join(LABELS[s] for s in servers) + " |", "|" + "---|" * (len(servers) + 1)]
    for endpoint, label in URLS.items():
        if endpoint not in load:
            continue
        cells = []
        for s in servers:
            run = load[endpoint].get(s)
            cells.append(f"{_num(run['p50_ms'], 2)} / {_num(run['p99_ms'], 2)}" if run and run.get("p50_ms") is not None else "-")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "CPU time per request in microseconds (server processes only, the lowest round; for"
            " Wharf + nginx cache it includes Wharf's revalidations). Less noisy than requests/s on a shared"
            " machine; the last column is floor / Wharf (1.00 = as cheap as the floor):", "",
            "| URL | " + " | ".join(LABELS[s] for s in servers) + " | floor / Wharf |", "|" + "---|" * (len(servers) + 2)]
    for endpoint, label in URLS.items():
        if endpoint not in load:
            continue
        cpu = {s: load[endpoint].get(s, {}).get("min_cpu_us_per_request") for s in servers}
        out.append(f"| {label} | " + " | ".join(_num(cpu[s]) for s in servers)
                   + f" | {_fmt_ratio(_ratio(cpu.get('floor'), cpu.get('wharf')))} |")
    alone = entry.get("inprocess_us", {})
    if alone and "error" not in alone:
        out += ["", "The app alone, no server (bench/inprocess.py: the WSGI callable called in-process, fastest of"
                " 5 rounds), microseconds per request:", "",
                "| URL | Wharf | bottle floor | Wharf's own extra |", "|---|---|---|---|"]
        for endpoint, label in URLS.items():
            if endpoint in alone:
                w, f = alone[endpoint]["wharf_us"], alone[endpoint]["floor_us"]
                out.append(f"| {label} | {w:.1f} | {f:.1f} | {w - f:+.1f} |")
    elif alone:
        out += ["", f"(in-process measurement failed: {alone['error']})"]
    errors = [f"{s} {e}: {load[e][s]['errors']}" for e in load for s in load[e] if load[e][s].get("errors")]
    if errors:
        out += ["", "wrk errors: " + "; ".join(errors)]
    return out + [""]


def start_memory_table(sizes: dict) -> list[str]:
    servers = ["wharf", "pypiserver", "floor"]
    out = ["| files | Wharf cold start | Wharf warm start | pypiserver start | floor start | "
           + " | ".join(f"{LABELS[s]} RSS/worker" for s in servers) + " |", "|" + "---|" * (5 + len(servers))]
    for size, entry in sizes.items():
        start = entry.get("start_s", {})
        mem = entry.get("memory", {})
        cells = [f"{_num(start.get(k), 2)} s" if start.get(k) is not None else "-"
                 for k in ("wharf_cold", "wharf", "pypiserver", "floor")]
        cells += [f"{_num(mem.get(s, {}).get('max_worker_mib'), 1)} MiB" if mem.get(s) else "-" for s in servers]
        out.append(f"| {int(size):,} | " + " | ".join(cells) + " |")
    return out + ["", "Start: from launching gunicorn to the first 200 for the project page. RSS: the largest"
                  " worker after the load runs (master excluded).", ""]


def size_table(sizes: dict) -> list[str]:
    keys = list(sizes)
    if len(keys) < 2:
        return []
    out = ["| URL | " + " | ".join(f"{int(k):,} files" for k in keys) + f" | {int(keys[-1]):,} / {int(keys[0]):,} |",
           "|" + "---|" * (len(keys) + 2)]
    for server in ("wharf", "wharf_nginx"):
        for endpoint, label in URLS.items():
            values = [_rps(sizes[k]["load"], endpoint, server) for k in keys]
            if all(v is None for v in values):
                continue
            out.append(f"| {LABELS[server]}: {label} | " + " | ".join(_num(v) for v in values)
                       + f" | {_fmt_ratio(_ratio(values[-1], values[0]))} |")
    return out + [""]


def pip_table(sizes: dict) -> list[str]:
    servers = ["wharf", "wharf_nginx", "pypiserver", "ceiling"]
    out = ["| files | " + " | ".join(LABELS[s] for s in servers) + " |", "|" + "---|" * (len(servers) + 1)]
    for size, entry in sizes.items():
        pip = entry.get("pip_install", {})
        cells = []
        for s in servers:
            r = pip.get(s)
            cells.append("-" if r is None else (f"{r['seconds']:.1f} s" if "error" not in r else f"failed ({r['seconds']:.0f} s)"))
        out.append(f"| {int(size):,} | " + " | ".join(cells) + " |")
    return out + [""]


def upload_lines(sizes: dict) -> list[str]:
    out = ["| files | uploaded to and read from | uploads | p50 | p99 | max |", "|---|---|---|---|---|---|"]
    notes = []
    for size, entry in sizes.items():
        for key, where in (("upload_visible_direct", "Wharf"), ("upload_visible", "nginx (cache)")):
            up = entry.get(key)
            if not up:
                continue
            if "p50_s" in up:
                out.append(f"| {int(size):,} | {where} | {up['uploads']} | {up['p50_s']:.3f} s | {up['p99_s']:.3f} s"
                           f" | {up['max_s']:.3f} s |")
            else:
                notes.append(f"- {int(size):,} files, {where}: {up.get('skipped') or up.get('error')}")
    return (out if len(out) > 2 else []) + notes + [""]


def targets(results: dict) -> list[str]:
    sizes = results["sizes"]
    keys = list(sizes)
    rows = []

    def ratio_min(server: str, base: str, endpoints: tuple[str, ...]) -> tuple[float | None, str]:
        worst, where = None, ""
        for k in keys:
            for e in endpoints:
                r = _ratio(_rps(sizes[k]["load"], e, server), _rps(sizes[k]["load"], e, base))
                if r is not None and (worst is None or r < worst):
                    worst, where = r, f"{URLS[e]} at {int(k):,}"
        return worst, where

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "**missed**")

    pages = ("project_html", "project_json", "download")
    if len(keys) > 1:
        worst = None
        for e in pages:
            r = _ratio(_rps(sizes[keys[-1]]["load"], e, "wharf"), _rps(sizes[keys[0]]["load"], e, "wharf"))
            if r is not None and (worst is None or r < worst[0]):
                worst = (r, e)
        if worst:
            rows.append((f"project pages and downloads at {int(keys[-1]):,} files >= 90% of {int(keys[0]):,}",
                         f"worst {_fmt_ratio(worst[0])} ({URLS[worst[1]]})", verdict(worst[0] >= TARGETS["size"])))
    r, where = ratio_min("wharf", "floor", ("index", *pages))
    if r is not None:
        rows.append(("uncached >= 80% of the bottle floor (requests/s)", f"worst {_fmt_ratio(r)} ({where})",
                     verdict(r >= TARGETS["floor"])))
    worst = None
    for k in keys:
        for e in ("index", *pages):
            cpu = sizes[k]["load"].get(e, {})
            r = _ratio(cpu.get("floor", {}).get("min_cpu_us_per_request"), cpu.get("wharf", {}).get("min_cpu_us_per_request"))
            if r is not None and (worst is None or r < worst[0]):
                worst = (r, f"{URLS[e]} at {int(k):,}")
    if worst:
        rows.append(("the same, as CPU per request (floor / Wharf)", f"worst {_fmt_ratio(worst[0])} ({worst[1]})",
                     verdict(worst[0] >= TARGETS["floor"])))
    r, where = ratio_min("wharf_nginx", "ceiling", ("index", *pages))
    if r is not None:
        rows.append(("through the nginx cache >= 80% of nginx static", f"worst {_fmt_ratio(r)} ({where})",
                     verdict(r >= TARGETS["ceiling"])))
    big = keys[-1]
    where = f"at {int(big):,} files" + ("" if int(big) >= 100_000 else "; the target is at 100,000")
    start = sizes[big].get("start_s", {}).get("wharf")
    if start is not None:
        rows.append((f"warm start < 3 s ({where})", f"{start:.2f} s", verdict(start < TARGETS["start_s"])))
    mem = sizes[big].get("memory", {}).get("wharf", {}).get("max_worker_mib")
    if mem is not None:
        rows.append((f"< 150 MB per worker ({where})", f"{mem:.1f} MiB", verdict(mem < TARGETS["worker_mib"])))
    p99s = [sizes[k]["upload_visible"]["p99_s"] for k in keys if "p99_s" in sizes[k].get("upload_visible", {})]
    if p99s:
        rows.append(("upload to visible through nginx p99 < 1 s", f"worst {max(p99s):.3f} s",
                     verdict(max(p99s) < TARGETS["upload_p99_s"])))
    bigs = [sizes[k]["big_upload"] for k in keys if "max_growth_mib" in sizes[k].get("big_upload", {})]
    if bigs:
        g = bigs[0]
        rows.append((f"memory growth during a {g['megabytes']} MiB upload < 50 MB", f"{g['max_growth_mib']:.1f} MiB",
                     verdict(g["max_growth_mib"] < TARGETS["upload_growth_mib"])))
    out = ["| target | measured | |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out + [""]


def profile_lines(sizes: dict) -> list[str]:
    out = []
    for size, entry in sizes.items():
        for endpoint, prof in entry.get("profile", {}).items():
            if not prof.get("samples"):
                continue
            top = ", ".join(f"{name} {pct}%" for name, pct in prof["self_pct"][:8])
            out.append(f"- {int(size):,} files, {URLS[endpoint]} ({prof['samples']} samples, "
                       f"{prof['load_while_profiled']['rps']:,.0f} req/s while sampled): {top}")
    return (["Where Wharf's workers spend their time (py-spy, share of samples in the function itself):", ""]
            + out + [""]) if out else []


def markdown(results: dict) -> str:
    sizes = results["sizes"]
    lines = [f"# Wharf benchmark, {results['generated']}", ""]
    m = results["machine"]
    lines += [f"Machine: {m['cpus']} cores, Python {m['python']}, {m['nginx']}, {m['wrk']}; "
              f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}.", ""]
    lines += [f"- {n}" for n in results["notes"]] + [""]
    lines += ["## Targets", ""] + targets(results)
    lines += ["## Throughput and latency", ""]
    for size, entry in sizes.items():
        lines += throughput_tables(size, entry)
    size_rows = size_table(sizes)
    if size_rows:
        lines += ["## Cost against index size (requests per second)", ""] + size_rows
    lines += ["## Start and memory", ""] + start_memory_table(sizes)
    lines += ["## pip install of a package with 20 dependencies (fresh venv, no cache)", ""] + pip_table(sizes)
    ups = upload_lines(sizes)
    if len(ups) > 1:
        lines += ["## From `twine upload` finishing to the file listed", "",
                  "Before each upload the project page is fetched once, so nginx holds a cached copy,"
                  " as it does on a busy index.", ""] + ups
    for size, entry in sizes.items():
        big = entry.get("big_upload")
        if big:
            lines += ["## Memory during a big upload", ""]
            if "max_growth_mib" in big:
                lines += [f"A {big['megabytes']} MiB wheel uploaded with twine straight to Wharf took {big['seconds']} s;"
                          f" the largest RSS growth of any Wharf process was {big['max_growth_mib']} MiB"
                          f" ({', '.join(f'{k}: {v}' for k, v in big['growth_mib_by_process'].items())}).", ""]
            else:
                lines += [f"Skipped: {big.get('skipped')}", ""]
    lines += profile_lines(sizes)
    return "\n".join(lines)


def plot(results: dict, path: Path) -> str | None:
    """throughput.png: requests/s against index size, one panel per URL. None if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt): no plot"
    sizes = results["sizes"]
    xs = [int(k) for k in sizes]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for ax, (endpoint, label) in zip(axes.flat, URLS.items()):
        for server, name in LABELS.items():
            ys = [_rps(sizes[k]["load"], endpoint, server) for k in sizes]
            if all(y is None for y in ys):
                continue
            ax.plot(xs, [y if y else float("nan") for y in ys], marker="o", label=name)
        ax.set_title(label.replace("`", ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("files in the index")
        ax.set_ylabel("requests/s")
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Throughput against index size ({results['generated']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    problem = plot(results, out / "throughput.png")
    text = markdown(results)
    if problem:
        text += f"\n({problem})\n"
    (out / "results.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render results.md and throughput.png from results.json.")
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    write(json.loads(args.results.read_text()), args.results.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
