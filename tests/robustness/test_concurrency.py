"""Many clients at once through nginx (``wharf stack``): uploads, index reads and downloads.

50 uploads of different files start together while 10 clients read index pages and
download files, checking every downloaded byte against the hash the index lists. Then
pairs of uploads of one file name with different bytes race: one wins, the other gets 409,
and the stored file is the winner's, whole.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.support import make_wheel

from .harness import PASSWORD, Client, basic, sha256

pytestmark = pytest.mark.slow

AUTH = basic("alice", PASSWORD)
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
UPLOADS = 50
READERS = 10
RACES = 5


def project_files(client: Client, project: str) -> dict[str, tuple[str, str]] | None:
    """filename -> (url, sha256) as the project's JSON page lists them; None if not 200."""
    status, _, body = client.get(f"/simple/{project}/", JSON)
    if status != 200:
        return None
    page = json.loads(body)
    return {f["filename"]: (urljoin(f"/simple/{project}/", f["url"]), f["hashes"]["sha256"]) for f in page["files"]}


def test_concurrent_uploads_reads_and_downloads(public_stack, tmp_path: Path, figures):
    client = Client(public_stack.https_port, public_stack.ca)
    wheels = {}
    for n in range(UPLOADS):
        path = make_wheel(tmp_path / "dists", f"crowd-{n:02d}", "1.0", padding=random.randint(256, 1536) * 1024)
        wheels[path.name] = path.read_bytes()
    start = threading.Barrier(UPLOADS + READERS)
    uploads_done = threading.Event()
    upload_results: dict[str, tuple[int, bytes]] = {}
    read_statuses: Counter = Counter()
    downloads = Counter()
    problems: list[str] = []
    lock = threading.Lock()

    def uploader(filename: str, data: bytes) -> None:
        name = filename.split("-1.0-")[0]
        start.wait()
        try:
            result = client.upload(filename, data, name, "1.0", AUTH)
        except OSError as exc:
            result = (0, str(exc).encode())
        with lock:
            upload_results[filename] = result

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        rounds = 0
        while not uploads_done.is_set() or rounds < 5:
            rounds += 1
            try:
                status, _, body = client.get("/simple/", rng.choice([{}, JSON]))
                with lock:
                    read_statuses[status] += 1
                names = [p["name"] for p in json.loads(body)["projects"]] if body.startswith(b"{") else None
                project = rng.choice(names) if names else rng.choice(["alpha", "seed-0", "seed-1", "seed-2"])
                files = project_files(client, project)
                with lock:
                    read_statuses[200 if files is not None else "project page failed"] += 1
                for filename, (url, digest) in (files or {}).items():
                    status, _, data = client.get(url)
                    with lock:
                        read_statuses[status] += 1
                        downloads[status] += 1
                        if status != 200 or sha256(data) != digest:
                            problems.append(f"{filename}: {status}, {len(data)} bytes, sha256 {sha256(data)} != {digest}")
                        elif filename in wheels and data != wheels[filename]:
                            problems.append(f"{filename}: served bytes are not the uploaded ones")
            except OSError as exc:
                with lock:
                    problems.append(f"reader: {exc}")

    threads = [threading.Thread(target=uploader, args=item) for item in wheels.items()]
    threads += [threading.Thread(target=reader, args=(n,)) for n in range(READERS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads[:UPLOADS]:
        thread.join(300)
    upload_seconds = time.monotonic() - began
    uploads_done.set()
    for thread in threads[UPLOADS:]:
        thread.join(120)

    failed = {f: r for f, r in upload_results.items() if r[0] != 200}
    assert not failed and len(upload_results) == UPLOADS, failed
    assert not problems, problems[:10]
    assert all(isinstance(s, int) and s < 500 for s in read_statuses), read_statuses

    # Every upload is listed (index pages may be up to a second old in the cache) and whole.
    def all_listed() -> bool:
        status, _, body = client.get("/simple/", JSON)
        names = {p["name"] for p in json.loads(body)["projects"]} if status == 200 else set()
        return all(f.split("-1.0-")[0].replace("_", "-") in names for f in wheels)

    public_stack.wait_until(all_listed, "every upload on the index page", 10)
    for filename, data in wheels.items():
        project = filename.split("-1.0-")[0].replace("_", "-")
        files = project_files(client, project)
        assert files is not None and files[filename][1] == sha256(data), (filename, files)
        status, _, served = client.get(files[filename][0])
        assert status == 200 and served == data
    stored = Path(public_stack.root / "packages")
    assert all((stored / f).read_bytes() == d for f, d in wheels.items())
    figures.record("concurrency", {"uploads": UPLOADS, "readers": READERS, "upload_wall_seconds": round(upload_seconds, 1),
                                   "reads": sum(read_statuses.values()),
                                   "downloads_checked": sum(downloads.values()), "read_statuses": {str(k): v for k, v in read_statuses.items()},
                                   "files_lost": 0, "5xx": 0})


def test_same_filename_races_one_wins_the_other_gets_409(public_stack, tmp_path: Path, figures):
    client = Client(public_stack.https_port, public_stack.ca)
    outcomes = []
    for round_ in range(RACES):
        name = f"race-{round_}"
        # Two wheels with one name and different bytes, big enough to be in flight together.
        contenders = [make_wheel(tmp_path / f"dists-{side}", name, "1.0", padding=2 * 1024 * 1024).read_bytes()
                      for side in "ab"]
        filename = f"race_{round_}-1.0-py3-none-any.whl"
        barrier = threading.Barrier(2)
        results: list[tuple[int, bytes] | None] = [None, None]

        def contend(index: int) -> None:
            barrier.wait()
            results[index] = client.upload(filename, contenders[index], name, "1.0", AUTH, chunk=256 * 1024)

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        statuses = [r[0] for r in results]
        assert sorted(statuses) == [200, 409], results
        winner = contenders[statuses.index(200)]
        assert b"already exists" in results[statuses.index(409)][1]
        assert (public_stack.root / "packages" / filename).read_bytes() == winner
        files = project_files(client, name)
        assert files is not None and files[filename][1] == sha256(winner)
        status, _, served = client.get(files[filename][0])
        assert status == 200 and served == winner
        outcomes.append(statuses)
    leftovers = [p.name for p in (public_stack.root / "packages").iterdir() if p.name.startswith(".upload-")]
    assert not leftovers
    figures.record("concurrency", {"same_name_races": RACES, "race_outcomes": outcomes})


def test_stalled_uploads_do_not_hold_the_workers(public_stack, figures):
    """More stalled uploads than gunicorn workers (anonymous and authenticated, bodies never
    finished): nginx holds them, the workers stay free, uncached pages still answer."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(public_stack.ca))
    stalled = []
    try:
        for n in range(6):  # three times the workers
            conn = context.wrap_socket(socket.create_connection(("127.0.0.1", public_stack.https_port)),
                                       server_hostname="localhost")
            auth = f"Authorization: {AUTH}\r\n" if n % 2 else ""
            conn.sendall(f"POST / HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; boundary=b\r\n"
                         f"Content-Length: 50000000\r\n\r\n--b\r\n".encode() + b"x" * 100_000)
            stalled.append(conn)
        client = Client(public_stack.https_port, public_stack.ca)
        seconds = []
        for n in range(5):  # query strings nginx has not cached: the app must answer
            began = time.monotonic()
            status, _, body = client.request("GET", f"/simple/alpha/?stalled={n}", timeout=20)
            seconds.append(round(time.monotonic() - began, 3))
            assert status == 200 and b"alpha-1.0" in body
        status, _ = client.upload("alpha-1.0-py3-none-any.whl", b"x", "alpha", "1.0", AUTH)
        assert status == 400  # an upload still reaches a worker (and is judged)
    finally:
        for conn in stalled:
            conn.close()
    figures.record("concurrency", {"stalled_uploads": len(stalled), "uncached_page_seconds_meanwhile": seconds})
