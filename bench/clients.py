"""What real clients do, timed: pip install from each index, twine uploads, a 500 MB upload."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

from passlib.apache import HtpasswdFile

from tests.support import client_env, make_wheel

from .dataset import PIP_APP, PIP_DEPS
from .servers import Server, rss_kib

USER, PASSWORD = "bench", "bench-password"
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def write_htpasswd(path: Path) -> Path:
    users = HtpasswdFile(str(path), new=True)
    users.set_password(USER, PASSWORD)
    users.save()
    return path


# --- pip install ---------------------------------------------------------------------
def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    return path / "bin" / "python"


def pip_install(index_url: str, workdir: Path, ca: Path | None = None) -> dict:
    """Wall time of ``pip install bench-app`` (20 dependencies) into a fresh venv, no cache."""
    python = fresh_venv(workdir / "venv")
    env = client_env(workdir / "home")
    version = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True,
                             env=env).stdout.split()[1]
    cmd = [str(python), "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
           "--index-url", index_url, *(["--cert", str(ca)] if ca else []), PIP_APP]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.monotonic() - started
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip()[-800:], "seconds": round(seconds, 2)}
    installed = [line for line in out.stdout.splitlines() if line.startswith("Successfully installed")]
    count = len(installed[0].split()) - 2 if installed else 0
    if count != len(PIP_DEPS) + 1:
        return {"error": f"installed {count} packages, expected {len(PIP_DEPS) + 1}", "seconds": round(seconds, 2)}
    return {"seconds": round(seconds, 2), "packages": count, "pip": version}


# --- uploads -----------------------------------------------------------------------
def twine_upload(repository_url: str, files: list[Path], home: Path, ca: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
           "--repository-url", repository_url, "-u", USER, "-p", PASSWORD,
           *(["--cert", str(ca)] if ca else []), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, env=client_env(home), timeout=3600)


def upload_to_visible(server: Server, workdir: Path, project: str, count: int = 20,
                      poll_interval: float = 0.005, give_up: float = 30.0) -> dict:
    """Seconds from ``twine upload`` (to ``server``) exiting to the new file listed there.

    Before each upload the project page is fetched once, so a cache in between holds the
    old page: what is measured is how soon the cache (and the app) let the new file through.
    """
    page = f"/simple/{project}/"
    dists = workdir / f"upload-dists-{project}"
    home = workdir / "twine-home"
    delays: list[float] = []
    # A first upload creates the project (not timed).
    first = make_wheel(dists, project, "0.0.1")
    out = twine_upload(server.url + "/", [first], home, server.ca)
    if out.returncode != 0:
        return {"skipped": "upload failed: " + (out.stdout + out.stderr).strip()[-600:]}
    for i in range(1, count + 1):
        wheel = make_wheel(dists, project, f"1.0.{i}")
        server.get(page, {"Accept": PIP_ACCEPT})
        out = twine_upload(server.url + "/", [wheel], home, server.ca)
        done = time.monotonic()
        if out.returncode != 0:
            return {"error": (out.stdout + out.stderr).strip()[-600:], "delays_s": delays}
        while True:
            status, _headers, body = server.get(page, {"Accept": PIP_ACCEPT})
            if status == 200 and wheel.name.encode() in body:
                delays.append(time.monotonic() - done)
                break
            if time.monotonic() - done > give_up:
                delays.append(float("inf"))
                break
            time.sleep(poll_interval)
    return {"uploads": count, **_percentiles(delays), "delays_s": [round(d, 4) for d in delays]}


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {}

    def pick(q: float) -> float:
        # nearest rank: with 20 samples p99 is the slowest one, as it should be
        return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 1)) - 1))]

    return {"p50_s": round(statistics.median(ordered), 4), "p99_s": round(pick(0.99), 4),
            "max_s": round(ordered[-1], 4)}


def big_wheel(directory: Path, megabytes: int) -> Path:
    """A valid wheel of about ``megabytes`` MiB (stored, incompressible padding)."""
    name, version = "bench-big", "1.0.0"
    small = make_wheel(directory / "small", name, version)
    path = directory / small.name
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            if not info.filename.endswith("RECORD"):
                target.writestr(info.filename, source.read(info))
        padding = "bench_big/padding.bin"
        with target.open(padding, "w", force_zip64=True) as stream:
            for _ in range(megabytes):
                stream.write(os.urandom(1024 * 1024))
        record = [line for line in source.read("bench_big-1.0.0.dist-info/RECORD").decode().splitlines()]
        # RECORD may omit hashes for files it does not list; the padding is listed bare.
        target.writestr("bench_big-1.0.0.dist-info/RECORD", "\n".join(record + [f"{padding},,"]) + "\n")
    return path


def upload_memory(server: Server, workdir: Path, megabytes: int = 500) -> dict:
    """RSS growth of the server's processes while twine uploads a ``megabytes`` MiB wheel."""
    wheel = big_wheel(workdir / "big", megabytes)
    pids = [server.proc.pid, *server.workers()]
    baseline = {pid: rss_kib(pid) or 0 for pid in pids}
    peak = dict(baseline)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in pids:
                value = rss_kib(pid)
                if value is not None and value > peak[pid]:
                    peak[pid] = value
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    out = twine_upload(server.url + "/", [wheel], workdir / "twine-big-home", server.ca)
    seconds = time.monotonic() - started
    stop.set()
    sampler.join()
    wheel.unlink()
    if out.returncode != 0:
        return {"skipped": "upload failed: " + (out.stdout + out.stderr).strip()[-600:]}
    growth = {pid: (peak[pid] - baseline[pid]) / 1024 for pid in pids}
    return {"megabytes": megabytes, "seconds": round(seconds, 2),
            "max_growth_mib": round(max(growth.values()), 1),
            "growth_mib_by_process": {("master" if pid == server.proc.pid else f"worker {pid}"): round(g, 1)
                                      for pid, g in growth.items()},
            "baseline_mib": {str(pid): round(v / 1024, 1) for pid, v in baseline.items()}}
