"""Faults under supervisord (``wharf stack``): killed processes and a full disk.

SIGKILL of a gunicorn worker, then of the gunicorn master, each while uploads are on the
wire (the victim is chosen because it holds a temporary upload file open). Throughout, a
checker downloads every file the index lists and every file being uploaded, and compares
each byte with what was sent: no partial file may ever be listed or served. Recovery is
measured (kill to answering again, with the new processes in place) and reported; the
assert is a generous deadline, not a timing. Meanwhile nginx must keep serving the cached
index pages.

A packages directory on a small tmpfs the test mounts (skipped where mounting is not
permitted): filled up, an upload fails with 507 and a message, leaves nothing behind, and
reads keep working.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import pytest

from app.auth import set_password
from tests.support import make_wheel

from .harness import PASSWORD, Client, basic, children, command, files_open_under, sha256

pytestmark = pytest.mark.slow

AUTH = basic("alice", PASSWORD)
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
DEADLINE = 10.0  # seconds the service may take to answer again (the aim, reported: 3 s)


class Traffic:
    """Slow uploads on several threads, and a checker that trusts nothing it is served."""

    def __init__(self, stack, directory: Path, phase: str, uploaders: int = 3):
        self.stack = stack
        self.client = Client(stack.https_port, stack.ca)
        self.directory = directory
        self.phase = phase
        self.sent: dict[str, bytes] = {}  # every file an upload was started for
        self.results: dict[str, int] = {}  # filename -> status (0: connection failed)
        self.verified: set[str] = set()
        self.problems: list[str] = []
        self.reads: Counter = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.uploader, args=(n,)) for n in range(uploaders)]
        self.threads.append(threading.Thread(target=self.checker))
        for thread in self.threads:
            thread.start()

    def uploader(self, number: int) -> None:
        count = 0
        while not self.stop.is_set():
            name = f"fault-{self.phase}-{number}-{count}"
            count += 1
            # Big enough that a worker spends a while on each (nginx hands it over whole).
            path = make_wheel(self.directory, name, "1.0", padding=8 * 1024 * 1024)
            data = path.read_bytes()
            with self.lock:
                self.sent[path.name] = data
            try:
                status, _ = self.client.upload(path.name, data, name, "1.0", AUTH)
            except OSError:
                status = 0
            with self.lock:
                self.results[path.name] = status

    def check(self, filename: str, status: int, data: bytes) -> None:
        if status == 200:
            if data != self.sent[filename]:
                self.problems.append(f"{filename} served with {len(data)} of {len(self.sent[filename])} bytes "
                                     f"(sha256 {sha256(data)})")
            self.verified.add(filename)

    def checker(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                sent = dict(self.sent)
            for filename in sent:
                if filename in self.verified:
                    continue
                try:
                    # Straight at the file, listed or not: it is 404 until it is whole.
                    status, _, data = self.client.get(f"/packages/{filename}")
                    self.reads[f"file {status}"] += 1
                    self.check(filename, status, data)
                    project = filename.split("-1.0-")[0].replace("_", "-")
                    status, _, body = self.client.get(f"/simple/{project}/", JSON)
                    self.reads[f"page {status}"] += 1
                    if status != 200:
                        continue
                    for item in json.loads(body)["files"]:
                        if item["hashes"]["sha256"] != sha256(self.sent[item["filename"]]):
                            self.problems.append(f"{item['filename']} listed with a hash of other bytes")
                        status, _, data = self.client.get(urljoin(f"/simple/{project}/", item["url"]))
                        self.reads[f"listed file {status}"] += 1
                        if status != 200:  # the index lists it: it must be served whole (or the app is down)
                            self.reads["listed but not served"] += 1
                        self.check(item["filename"], status, data)
                except OSError as exc:
                    self.reads[f"error {type(exc).__name__}"] += 1
            time.sleep(0.05)

    def finish(self) -> dict:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)
        return dict(self.results)


def gunicorn_master(stack) -> int | None:
    """The gunicorn master that supervisord runs now (not an orphan)."""
    for pid in children(stack.proc.pid):  # wharf stack became supervisord: same PID
        if "gunicorn" in command(pid):
            return pid
    return None


def busy_worker(stack, master: int, timeout: float = 30) -> int:
    """A worker of ``master`` that has an upload's temporary file open right now."""
    deadline = time.monotonic() + timeout
    packages = (stack.root / "packages").resolve()
    while time.monotonic() < deadline:
        for worker in children(master):
            if any(".upload-" in p for p in files_open_under(worker, packages)):
                return worker
        time.sleep(0.002)
    raise AssertionError("no worker was receiving an upload")


def watch_recovery(stack, client: Client, killed_at: float, old_master: int | None = None) -> dict:
    """Poll /health (uncached) and a cached page until the app is whole again; the timeline.

    Whole again: /health answers, and (after a master's death) a new master runs workers.
    Orphaned workers of a killed master may answer for a while before the new master can
    take over the port, so the figure is when answers resumed for good, after the last failure.
    """
    timeline: list[tuple[float, int]] = []
    cached: Counter = Counter()
    ready = None
    while time.monotonic() - killed_at < DEADLINE + 5:
        try:
            status = client.get("/health")[0]
        except OSError:
            status = 0
        now = time.monotonic() - killed_at
        timeline.append((now, status))
        page_status, headers, body = client.get("/simple/alpha/")
        cached[(page_status, headers.get("x-cache-status"), b"alpha-1.0" in body)] += 1
        master = gunicorn_master(stack)
        whole = old_master is None or (master not in (None, old_master) and bool(children(master)))
        if ready is None and status == 200 and whole:
            ready = now
        if ready is not None and now - ready > 1.0:  # and it stays up
            break
        time.sleep(0.02)
    failures = [t for t, s in timeline if s != 200]
    back = next((t for t, s in timeline if s == 200 and (not failures or t > failures[-1])), None)
    longest, since = 0.0, None  # the longest stretch from a failed request to the next answer
    for t, s in timeline:
        if s != 200 and since is None:
            since = t
        elif s == 200 and since is not None:
            longest, since = max(longest, t - since), None
    return {"answering_again_s": round(back, 2) if back is not None else None,
            "longest_without_answer_s": round(longest, 2),
            "new_processes_ready_s": round(ready, 2) if ready is not None else None,
            "health_statuses": dict(Counter(s for _, s in timeline)),
            "cached_page_answers": {f"{s} {c}": n for (s, c, _), n in cached.items()},
            "cached_page_all_200": all(s == 200 and whole for (s, _, whole) in cached)}


def test_killed_worker_and_master_lose_no_upload_and_serve_nothing_partial(public_stack, tmp_path: Path, figures):
    stack = public_stack
    client = Client(stack.https_port, stack.ca)
    for path in ("/simple/", "/simple/alpha/"):  # cached pages, for the outage
        for _ in range(3):
            assert client.get(path)[0] == 200
    figures_out: dict = {}

    # 1. A worker, mid-upload: its sibling goes on, the master replaces it.
    master = gunicorn_master(stack)
    traffic = Traffic(stack, tmp_path / "a", "worker")
    victim = busy_worker(stack, master)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    figures_out["worker_kill"] = watch_recovery(stack, client, killed_at)
    stack.wait_until(lambda: len(children(master) - {victim}) == 2, "gunicorn replaces the worker", DEADLINE)
    figures_out["worker_kill"]["worker_replaced_s"] = round(time.monotonic() - killed_at, 2)
    time.sleep(1.5)  # uploads go on through the new worker
    worker_results = traffic.finish()

    # 2. The master, mid-upload: supervisord starts a new one; orphaned workers finish what they do.
    traffic_b = Traffic(stack, tmp_path / "b", "master")
    busy_worker(stack, master)
    os.kill(master, signal.SIGKILL)
    figures_out["master_kill"] = watch_recovery(stack, client, time.monotonic(), master)
    time.sleep(1.5)  # uploads go on through the new master
    master_results = traffic_b.finish()

    # Nothing partial was ever listed or served, during all of it.
    problems = traffic.problems + traffic_b.problems
    assert not problems, problems
    # Every upload that got 200 is listed and whole; any other is absent or whole.
    results = {**worker_results, **master_results}
    sent = {**traffic.sent, **traffic_b.sent}
    lost, listed_after_failure = [], 0
    for filename, status in results.items():
        project = filename.split("-1.0-")[0].replace("_", "-")
        stack.wait_until(lambda: client.get(f"/simple/{project}/", JSON)[0] in (200, 404), "a listing", 10)
        page_status, _, body = client.get(f"/simple/{project}/", JSON)
        listed = {f["filename"]: f["hashes"]["sha256"] for f in json.loads(body)["files"]} if page_status == 200 else {}
        if status == 200 and listed.get(filename) != sha256(sent[filename]):
            lost.append(filename)
        if filename in listed:
            file_status, _, data = client.get(f"/packages/{filename}")
            assert file_status == 200 and data == sent[filename], filename
            listed_after_failure += status != 200
    assert not lost, lost
    # A killed worker's temporary file stays hidden until it is swept as stale.
    packages = stack.root / "packages"
    leftovers = [p for p in packages.iterdir() if p.name.startswith(".upload-")]
    for part in leftovers:
        assert client.get(f"/packages/{part.name}")[0] == 404
    _, _, listing = client.get("/packages/")
    assert b".upload-" not in listing
    statuses = Counter(results.values())
    assert statuses[200] >= 2, statuses
    for fault in ("worker_kill", "master_kill"):
        assert figures_out[fault]["cached_page_all_200"], figures_out[fault]
        assert figures_out[fault]["new_processes_ready_s"] is not None, figures_out[fault]
        assert figures_out[fault]["answering_again_s"] < DEADLINE, figures_out[fault]
    figures.record("faults", {
        **figures_out, "faults_injected": 2, "uploads_started": len(results),
        "upload_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "failed_uploads_that_completed_anyway": listed_after_failure, "files_lost": len(lost),
        "partial_files_served": 0, "hidden_temporary_files_left": len(leftovers),
        "checker_reads": dict(traffic.reads + traffic_b.reads)})


# --- a full disk ---------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs mounted for the test (skips where mounting is not allowed)."""
    mountpoint = tmp_path / "stack" / "packages"
    mountpoint.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "wharf-test", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``directory`` up to ``leave`` free bytes, with a hidden file."""
    filler = directory / ".filler"
    with open(filler, "ab") as stream:
        with contextlib.suppress(OSError):
            while True:
                free = shutil.disk_usage(directory).free
                if free <= leave:
                    break
                stream.write(b"\0" * min(1024 * 1024, free - leave))
                stream.flush()
    return filler


def test_full_disk_upload_fails_clearly_and_leaves_nothing(small_disk: Path, tmp_path: Path, figures):
    from tests.deploy.test_stack import Stack

    make_wheel(small_disk, "alpha", "1.0", padding=64 * 1024)
    alpha = (small_disk / "alpha-1.0-py3-none-any.whl").read_bytes()
    users = tmp_path / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    stack = Stack(small_disk.parent, "--password-file", str(users))
    try:
        client = Client(stack.https_port, stack.ca)
        big = make_wheel(tmp_path / "dists", "toobig", "1.0", padding=4 * 1024 * 1024).read_bytes()
        small = make_wheel(tmp_path / "dists", "fits", "1.0", padding=256 * 1024).read_bytes()
        outcomes = {}
        room = -(-len(big) // 4096) * 4096
        # tmpfs counts whole 4 KiB pages, so "room" is exactly the file: its catalog record
        # (SQLite's write-ahead log grows) then finds no space.
        for label, leave, message in (("disk full", 0, b"for this file"),
                                      ("1 MiB free for a 4 MiB file", 1024 * 1024, b"for this file"),
                                      ("room for the file, none for its record", room, b"to record this file")):
            filler = fill(small_disk, leave)
            free = shutil.disk_usage(small_disk).free
            status, text = client.upload("toobig-1.0-py3-none-any.whl", big, "toobig", "1.0", AUTH)
            outcomes[label] = {"status": status, "message": text.decode(errors="replace").strip()[:120]}
            assert status == 507, (label, status, text)
            assert b"not enough disk space" in text and message in text, text
            # Nothing partial remains, and the space is free again.
            assert not [p.name for p in small_disk.iterdir() if p.name.startswith(".upload-")]
            assert not (small_disk / "toobig-1.0-py3-none-any.whl").exists()
            assert shutil.disk_usage(small_disk).free >= free
            # Reads keep working (past the cache: a query string nginx has not seen).
            status, _, body = client.get(f"/simple/alpha/?{label.replace(' ', '-')}")
            assert status == 200 and b"alpha-1.0" in body
            status, _, data = client.get("/packages/alpha-1.0-py3-none-any.whl")
            assert status == 200 and data == alpha
            assert client.get("/health")[0] == 200
            filler.unlink()
        # With room again, uploads work.
        status, text = client.upload("fits-1.0-py3-none-any.whl", small, "fits", "1.0", AUTH)
        assert status == 200, text
        assert (small_disk / "fits-1.0-py3-none-any.whl").read_bytes() == small
        figures.record("full_disk", outcomes)
    finally:
        stack.stop()
