"""A refused upload cannot hold a worker by trickling its body (issue 14, point 5, without nginx).

gunicorn without nginx in front meets slow clients itself. An anonymous upload is refused
(401) before its body is read; what is left of the body is then read and dropped only for
a short while, so a client that sends one byte every 0.2 s gets its answer and the
connection closed after a few seconds, not after the 60 KiB it announced (3 hours).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile

from tests.support import WharfProcess, http

pytestmark = pytest.mark.slow
ANNOUNCED = 60 * 1024


def test_a_trickling_refused_upload_is_cut_off(tmp_path: Path, figures):
    users = HtpasswdFile(str(tmp_path / "htpasswd"), new=True)
    users.set_password("alice", "pw")
    users.save()
    packages = tmp_path / "packages"
    packages.mkdir()
    with WharfProcess(packages, "--password-file", str(tmp_path / "htpasswd"), workers=1) as server:
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: " + str(ANNOUNCED).encode() + b"\r\n\r\n")
        sent, answer = 0, b""
        conn.settimeout(0.2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn.sendall(b"x")
                sent += 1
            except OSError:
                break
            try:
                data = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            answer += data
        conn.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert sent < 200, f"the worker kept reading the trickle for {sent} bytes"
        # The one worker is free again.
        assert http(server.url + "/simple/")[0] == 200
    figures.record("refused upload trickling its body to gunicorn alone", {
        "announced_bytes": ANNOUNCED, "bytes_taken_before_close": sent})
