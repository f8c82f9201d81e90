"""A big file dropped in by hand blocks nothing (issue 14, point 8).

A multi-gigabyte file copied into the packages directory takes the scanner seconds to
minutes to hash. That used to happen inside the catalog's write transaction, so uploads
meanwhile waited for the lock, failed with "database is locked" (500) and were published
later all the same. Now the hash runs with no transaction open: uploads made while it
runs are acknowledged and listed before it ends, and none gets a 5xx.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile

from tests.support import WharfProcess, make_wheel

from .harness import Client, basic

pytestmark = pytest.mark.slow
BIG = 4 * 1024**3  # sparse: costs no disk, but every byte is read and hashed (seconds)


def _listed(client: Client, project: str) -> bool:
    status, _, body = client.get(f"/simple/{project}/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    return status == 200 and bool(json.loads(body)["files"])


def test_uploads_during_a_long_hash_are_acknowledged_and_listed(tmp_path: Path, figures):
    users = HtpasswdFile(str(tmp_path / "htpasswd"), new=True)
    users.set_password("alice", "pw")
    users.save()
    packages = tmp_path / "packages"
    packages.mkdir()
    auth = basic("alice", "pw")
    with WharfProcess(packages, "--password-file", str(tmp_path / "htpasswd")) as server:
        client = Client(server.port, Path("/dev/null"), tls=False)
        big = packages / "huge-1.0.tar.gz"
        with open(big, "wb") as stream:
            stream.truncate(BIG)
        past = time.time() - 10  # settled: the scanner takes it at its next pass
        os.utime(big, (past, past))
        time.sleep(1.0)  # the scanner is now reading it

        uploaded, answers = [], []
        for n in range(5):
            wheel = make_wheel(tmp_path / "dist", f"during-{n}", "1.0")
            status, body = client.upload(wheel.name, wheel.read_bytes(), f"during-{n}", "1.0", auth)
            answers.append(status)
            assert status == 200, body
            assert _listed(client, f"during-{n}")  # on the very next request
            uploaded.append(wheel.name)
        # All of that happened while the big file was still being read.
        still_hashing = not _listed(client, "huge")
        assert still_hashing, "the big file was hashed before the uploads ended: make it bigger"
        deadline = time.monotonic() + 300
        while not _listed(client, "huge") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _listed(client, "huge")
        assert "database is locked" not in server.log()
    figures.record("uploads while a 4 GiB hand-dropped file is hashed",
                   {"uploads": len(answers), "acknowledged_and_listed": answers.count(200),
                    "5xx": sum(1 for a in answers if a >= 500)})
