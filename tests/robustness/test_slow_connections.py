"""Slow connections cannot take nginx down (issue 14, point 7), through ``wharf stack``.

Thousands of connections from one address that never finish a TLS handshake or a request
head are held open at once (as many as the test's file limit allows, up to 5,000), while a
client on another address keeps fetching pages; then nginx must have cut them all off
(client_header_timeout).
"""

from __future__ import annotations

import http.client
import resource
import socket
import ssl
import time

import pytest

pytestmark = pytest.mark.slow

SLOW = 5000


def open_slow(port: int, count: int, first_bytes: bytes, source: str) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
            sock.sendall(first_bytes)
        except OSError:
            continue
        held.append(sock)
    return held


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(4096) == b""  # EOF; anything else (a 408 page) is followed by EOF anyway
    except TimeoutError:
        return False
    except OSError:
        return True


def test_thousands_of_slow_connections_from_one_address_leave_others_served(public_stack, figures):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, SLOW + 1000)), hard))
    count = min(SLOW, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500)
    held: list[socket.socket] = []
    try:
        started = time.monotonic()
        # A TLS record header and half a ClientHello; a request line without its end.
        held += open_slow(public_stack.https_port, count * 4 // 5, b"\x16\x03\x01\x02\x00\x01\x00", "127.0.0.7")
        held += open_slow(public_stack.http_port, count - count * 4 // 5, b"GET / HTTP/1.1\r\nHost: x", "127.0.0.7")
        opened = time.monotonic() - started
        assert len(held) >= count * 0.9, (len(held), count)
        context = ssl.create_default_context(cafile=str(public_stack.ca))
        served, slowest = 0, 0.0
        for _ in range(20):
            conn = http.client.HTTPSConnection("127.0.0.1", public_stack.https_port, context=context, timeout=10,
                                               source_address=("127.0.0.8", 0))
            t0 = time.monotonic()
            conn.request("GET", "/simple/alpha/")
            response = conn.getresponse()
            response.read()
            conn.close()
            slowest = max(slowest, time.monotonic() - t0)
            served += response.status == 200
        # The header timeout (10 s) ends every one of them.
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and not all(closed_by_server(s) for s in held[::50]):
            time.sleep(1)
        still_open = sum(not closed_by_server(s) for s in held)
    finally:
        for sock in held:
            sock.close()
    assert served == 20 and slowest < 5, (served, slowest)
    assert still_open == 0, still_open
    figures.record("slow_connections", {"slow_connections_held": len(held), "opened_in_s": round(opened, 1),
                                        "other_client_requests": 20, "other_client_served": served,
                                        "other_client_slowest_s": round(slowest, 2), "left_open_after_timeout": 0})
