"""A 1 GiB upload into S3-compatible storage: how much does the app server's memory grow?

Starts SeaweedFS (tests/s3.py) and `wharf serve --storage-url s3://...` with one worker
on loopback, uploads a 1 GiB wheel (one incompressible member, stored) as twine does,
and samples the RSS of every gunicorn process meanwhile. The figure is the worker's peak
RSS minus its RSS after a small warm-up upload (boto3 and the app already loaded). The
target (issue 16) is under 50 MB: the upload streams in 8 MiB parts, never whole.

    python -m bench.s3_upload [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from passlib.hash import bcrypt

from tests.s3 import SeaweedFS
from tests.support import ROOT, free_port, make_wheel, stop_process, wait_http

MiB = 1024 * 1024
BOUNDARY = "wharf-bench-boundary"
PASSWORD = "bench"


def big_wheel(directory: Path, size: int) -> Path:
    """A valid wheel of about ``size`` bytes, written in 1 MiB steps (never whole in memory)."""
    name, version = "bigwheel", "1.0"
    dist = f"{name}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    wheel = b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        digest = hashlib.sha256()
        with archive.open(f"{name}/blob.bin", "w", force_zip64=True) as member:
            for _ in range(size // MiB):
                chunk = os.urandom(MiB)
                digest.update(chunk)
                member.write(chunk)
        record.append(f"{name}/blob.bin,sha256={base64.urlsafe_b64encode(digest.digest()).rstrip(b'=').decode()},{size}")
        for member_name, data in ((f"{dist}.dist-info/METADATA", metadata), (f"{dist}.dist-info/WHEEL", wheel)):
            archive.writestr(member_name, data)
            line_digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{member_name},sha256={line_digest},{len(data)}")
        archive.writestr(f"{dist}.dist-info/RECORD", "\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n")
    return path


def upload(port: int, path: Path) -> int:
    """POST the file as twine does (multipart form), streamed from disk; the status."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    name, version = path.name.split("-")[:2]
    fields = {":action": "file_upload", "protocol_version": "1", "name": name, "version": version,
              "sha256_digest": digest.hexdigest()}
    head = b"".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="{path.name}"\r\n\r\n'.encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def body():
        yield head
        with open(path, "rb") as f:
            while chunk := f.read(MiB):
                yield chunk
        yield tail

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    connection.request("POST", "/", body=body(), headers={
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Authorization": f"Basic {auth}",
        "Content-Length": str(len(head) + path.stat().st_size + len(tail))})
    answer = connection.getresponse()
    answer.read()
    return answer.status


def processes(root_pid: int) -> list[int]:
    """``root_pid`` and its descendants."""
    found, frontier = [root_pid], [root_pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                        found.append(int(entry.name))
                        frontier.append(int(entry.name))
                except (OSError, IndexError):
                    pass
    return found


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wharf-bench-s3-") as tmp:
        work = Path(tmp)
        print(f"writing a {args.size_mb} MiB wheel ...", flush=True)
        wheel = big_wheel(work, args.size_mb * MiB)
        wheel_size = wheel.stat().st_size
        small = make_wheel(work / "small", "warmup", "1.0")
        (work / "htpasswd").write_text(f"alice:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
        (work / "state").mkdir()
        with SeaweedFS(work / "weed") as store:
            bucket = store.make_bucket("wharf-bench")
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")} | store.env()
            server = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                 "--storage-url", f"s3://{bucket}/pkgs", "--password-file", str(work / "htpasswd"),
                 "--max-upload-size", str(2 * args.size_mb * MiB), str(work / "state")],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_http(f"http://127.0.0.1:{port}/health", proc=server)
                assert upload(port, small) == 200, "warm-up upload failed"
                pids = processes(server.pid)
                before = {pid: rss(pid) for pid in pids}
                peak = dict(before)
                done = threading.Event()

                def sample() -> None:
                    while not done.is_set():
                        for pid in pids:
                            try:
                                peak[pid] = max(peak[pid], rss(pid))
                            except OSError:
                                pass
                        time.sleep(0.05)

                sampler = threading.Thread(target=sample)
                sampler.start()
                started = time.monotonic()
                status = upload(port, wheel)
                elapsed = time.monotonic() - started
                done.set()
                sampler.join()
                size = store.client().head_object(Bucket=bucket, Key=f"pkgs/{wheel.name}")["ContentLength"]
            finally:
                stop_process(server)
    growth = max(peak[pid] - before[pid] for pid in pids)
    print(f"upload of {wheel_size / MiB:.0f} MiB: HTTP {status} in {elapsed:.1f} s; object {size / MiB:.0f} MiB")
    for pid in pids:
        print(f"  pid {pid}: RSS {before[pid] / MiB:.1f} MiB before, peak {peak[pid] / MiB:.1f} MiB "
              f"(+{(peak[pid] - before[pid]) / MiB:.1f} MiB)")
    print(f"largest growth of a server process: {growth / MiB:.1f} MiB (target < 50 MB)")


if __name__ == "__main__":
    main()
