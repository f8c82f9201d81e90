"""Hostile archives: zip and tar bombs, huge or lying METADATA, truncated files, member floods.

Uploaded over HTTP to a real gunicorn with one worker whose address space is capped
(RLIMIT_AS, set on the running processes with prlimit): a bomb that made the worker
allocate gigabytes would fail the request (MemoryError, a 5xx) instead of taking the
machine down. Each upload gets a 4xx; the worker's peak RSS (VmHWM) stays within a stated
bound; gunicorn's own timeout (not a timed assert) stops a request that would spin. The
same files dropped into the packages directory by hand are indexed without metadata and
without harm. Nothing here takes long: bombs are built from repeated compressed blocks.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import resource
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from app.auth import set_password
from tests.support import WharfProcess, http, make_wheel

from .harness import (PASSWORD, Raw, basic, children, exchange, form, multipart_headers, peak_rss_kib,
                      request_bytes, rss_kib, upload_fields)

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
# The worker may grow by this much while it checks one hostile upload. The largest accepted
# METADATA (8 MiB of headers) is parsed twice (upload check, catalog), ~110 MiB at peak.
RSS_BOUND_KIB = 256 * 1024
# Address space the worker gets beyond what it has at rest: a bomb that inflated into memory fails.
ADDRESS_SPACE_SLACK = 1024 * MiB
ZEROS_64M = 64 * MiB


# --- archives, built from repeated blocks -------------------------------------------------------
def _deflated_zeros(count: int) -> bytes:
    """A raw deflate stream of ``count`` x 64 MiB of zeros (~64 KiB per 64 MiB).

    A full flush leaves each segment independent of what came before, so one segment
    repeated is a valid stream.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(bytes(ZEROS_64M)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return segment * count + b"\x03\x00"  # an empty final block ends the stream


def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip from (name, stored bytes, method, crc, uncompressed size): sizes may lie."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        offset = out.tell()
        encoded = name.encode()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), size,
                              len(encoded), 0) + encoded + data)
        central.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(data), size,
                                  len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start, directory = out.tell(), central.getvalue()
    count = min(len(members), 0xFFFF)  # past 65,535 the count lies (zipfile reads them all anyway)
    out.write(directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), start, 0))
    return out.getvalue()


def _stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)


def _deflated(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return name, compressor.compress(data) + compressor.flush(), zipfile.ZIP_DEFLATED, zlib.crc32(data), len(data)


def _wheel_members(name: str, metadata: bytes | None = None) -> list[tuple[str, bytes, int, int, int]]:
    dist = f"{name}-1.0.dist-info"
    return [_stored(f"{dist}/METADATA", metadata or f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()),
            _stored(f"{dist}/WHEEL", b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
            _stored(f"{dist}/RECORD", b"")]


def zip_bomb() -> bytes:
    """One member that inflates to 2 GiB of zeros from 2 MiB."""
    bomb = ("bomb/zeros.bin", _deflated_zeros(32), zipfile.ZIP_DEFLATED, 0, 32 * ZEROS_64M)
    return _zip([bomb, *_wheel_members("bomb")])


def zip_bomb_many_members() -> bytes:
    """300 members of 64 MiB of zeros each (19 GiB from 20 MiB)."""
    data = _deflated_zeros(1)
    crc = zlib.crc32(bytes(ZEROS_64M))
    return _zip([(f"bomb/{n}.bin", data, zipfile.ZIP_DEFLATED, crc, ZEROS_64M) for n in range(300)]
                + _wheel_members("bomb"))


def zip_member_flood() -> bytes:
    """150,000 empty members (12 MiB): zipfile alone would spend ~80 MiB on their entries."""
    return _zip([_stored(f"bomb/{n}", b"") for n in range(150_000)] + _wheel_members("bomb"))


def huge_metadata(name: str = "bomb") -> bytes:
    """METADATA of 512 MiB of zeros, 512 KiB compressed."""
    member = (f"{name}-1.0.dist-info/METADATA", _deflated_zeros(8), zipfile.ZIP_DEFLATED, 0, 8 * ZEROS_64M)
    return _zip([member, *_wheel_members(name)[1:]])


def lying_metadata() -> bytes:
    """METADATA whose header says 60 bytes while its data inflates to 256 MiB."""
    head = b"Metadata-Version: 2.1\nName: bomb\nVersion: 1.0\n"
    member = ("bomb-1.0.dist-info/METADATA", _deflated_zeros(4), zipfile.ZIP_DEFLATED, zlib.crc32(head), len(head))
    return _zip([member, *_wheel_members("bomb")[1:]])


def largest_metadata() -> bytes:
    """Just under the 8 MiB METADATA limit, all of it headers: the worst the index accepts."""
    line = b"Classifier: Programming Language :: Python :: 3 :: Only\n"
    head = b"Metadata-Version: 2.1\nName: bomb\nVersion: 1.0\n"
    metadata = head + line * ((8 * MiB - len(head) - 1024) // len(line))
    return _zip([_deflated("bomb-1.0.dist-info/METADATA", metadata), *_wheel_members("bomb")[1:]])


def truncated_wheel(directory: Path) -> bytes:
    data = make_wheel(directory, "bomb", "1.0", padding=MiB).read_bytes()
    return data[: len(data) * 6 // 10]


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _pkg_info_tail(name: str) -> bytes:
    data = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
    return _tar_header(f"{name}-1.0/PKG-INFO", len(data)) + data + bytes(-len(data) % 512) + bytes(1024)


def tar_bomb(name: str = "bomb") -> bytes:
    """An sdist whose first member is 8 GiB of zeros, PKG-INFO after it (gzip members, 8 MiB)."""
    block = gzip.compress(bytes(ZEROS_64M), compresslevel=9)
    return (gzip.compress(_tar_header(f"{name}-1.0/zeros.bin", 128 * ZEROS_64M)) + block * 128
            + gzip.compress(_pkg_info_tail(name)))


def tar_trailing_zeros() -> bytes:
    """A proper little sdist followed, inside the gzip stream, by 4 GiB of zeros."""
    return gzip.compress(_pkg_info_tail("bomb")) + gzip.compress(bytes(ZEROS_64M), compresslevel=9) * 64


def truncated_sdist() -> bytes:
    data = gzip.compress(_tar_header("bomb-1.0/blob", 512 * 1024) + bytes(512 * 1024) + _pkg_info_tail("bomb"))
    return data[:-6]  # the gzip trailer (CRC, size) cut


# --- the server -----------------------------------------------------------------------------
class Server:
    def __init__(self, base: Path):
        self.packages = base / "packages"
        self.packages.mkdir()
        htpasswd = base / "htpasswd"
        set_password(htpasswd, "alice", PASSWORD, rounds=4)
        self.process = WharfProcess(self.packages, "--password-file", str(htpasswd), "--timeout", "60",
                                    workers=1, log=base / "server.log")
        assert http(self.process.url + "/simple/")[0] == 200  # the worker has loaded everything
        (self.worker,) = children(self.process.proc.pid)
        for pid in (self.process.proc.pid, self.worker):  # replacement workers inherit the master's
            size_kib = int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                                if line.startswith("VmSize:")))
            limit = size_kib * 1024 + ADDRESS_SPACE_SLACK
            resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
        self.rest_kib = rss_kib(self.worker)

    def upload(self, filename: str, data: bytes, name: str = "bomb") -> tuple[int | None, str, float]:
        fields = upload_fields(name, "1.0", data)
        if not filename.endswith(".whl"):
            fields[4] = ("filetype", "sdist")
        body = form(fields, (filename, data))
        start = time.monotonic()
        answer = exchange(self.process.port, Raw(request_bytes("POST", "/", multipart_headers(basic("alice", PASSWORD)), body)),
                          timeout=120)
        return answer.status, answer.body.decode(errors="replace").strip(), time.monotonic() - start


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    box = Server(tmp_path_factory.mktemp("archives"))
    yield box
    box.process.stop()


WHEEL = "bomb-1.0-py3-none-any.whl"
HOSTILE = {
    "zip bomb (2 GiB member)": (WHEEL, zip_bomb, "zip bomb"),
    "zip bomb (300 x 64 MiB members)": (WHEEL, zip_bomb_many_members, "zip bomb"),
    "150,000 empty members": (WHEEL, zip_member_flood, "more than 100000 members"),
    "METADATA of 512 MiB": (WHEEL, huge_metadata, ""),
    "METADATA lying about its size": (WHEEL, lying_metadata, ""),
    "truncated wheel": (WHEEL, None, ""),
    "tar bomb (8 GiB first member)": ("bomb-1.0.tar.gz", tar_bomb, "tar bomb"),
    "4 GiB of zeros after the tar": ("bomb-1.0.tar.gz", tar_trailing_zeros, "tar bomb"),
    "truncated sdist": ("bomb-1.0.tar.gz", truncated_sdist, ""),
}


def test_hostile_archives_are_refused_within_bounded_memory(server: Server, tmp_path: Path, figures):
    results = {}
    for label, (filename, build, message) in HOSTILE.items():
        data = build() if build else truncated_wheel(tmp_path)
        status, text, seconds = server.upload(filename, data)
        results[label] = {"bytes": len(data), "status": status, "seconds": round(seconds, 2),
                          "worker_peak_rss_mib": round(peak_rss_kib(server.worker) / 1024, 1)}
        assert status == 400, (label, status, text)
        assert message in text, (label, text)
    # The worst file the index accepts costs memory too, within the same bound.
    status, text, seconds = server.upload(WHEEL, largest_metadata())
    results["largest accepted METADATA (8 MiB of headers)"] = {"status": status, "seconds": round(seconds, 2)}
    assert status == 200, text

    peak = peak_rss_kib(server.worker)
    figures.record("hostile_archives", {"uploads": results, "worker_rss_at_rest_mib": round(server.rest_kib / 1024, 1),
                                        "worker_peak_rss_mib": round(peak / 1024, 1),
                                        "bound_mib": RSS_BOUND_KIB // 1024})
    assert children(server.process.proc.pid) == {server.worker}, "the worker died (timeout or memory)"
    assert peak - server.rest_kib < RSS_BOUND_KIB, results
    assert [p.name for p in server.packages.iterdir() if not p.name.startswith(".")] == [WHEEL]
    log = server.process.log()
    assert "Traceback" not in log and "[ERROR]" not in log and "MemoryError" not in log, log[-3000:]


def test_hostile_archives_put_in_place_by_hand_are_served_without_metadata(server: Server, figures):
    """The catalog reads metadata of files copied in by hand: the same bombs cost it little."""
    files = {"handmade-1.0.tar.gz": tar_bomb("handmade"), "handmade-1.0-py3-none-any.whl": huge_metadata("handmade")}
    before = peak_rss_kib(server.worker)
    for filename, data in files.items():
        (server.packages / filename).write_bytes(data)
    deadline = time.monotonic() + 60
    listed: list[str] = []
    while time.monotonic() < deadline:
        status, _, body = http(server.process.url + "/simple/handmade/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        listed = [f["filename"] for f in json.loads(body)["files"]] if status == 200 else []
        if len(listed) == len(files):
            break
        time.sleep(0.2)
    assert sorted(listed) == sorted(files)
    for filename in files:  # served whole, and without a .metadata file (none could be read)
        status, _, body = http(f"{server.process.url}/packages/{filename}")
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(files[filename]).digest()
        assert http(f"{server.process.url}/packages/{filename}.metadata")[0] == 404
    peak = peak_rss_kib(server.worker)
    figures.record("hostile_archives", {"hand_placed_files": len(files),
                                        "worker_peak_rss_after_indexing_mib": round(peak / 1024, 1)})
    assert peak - before < RSS_BOUND_KIB
    assert children(server.process.proc.pid) == {server.worker}
