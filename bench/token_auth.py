"""Requests/s of an authenticated page fetch: an API token vs a bcrypt password, same run.

Starts Wharf (gunicorn, 2 workers) on a private index (``--authenticate update,download,list``)
whose user has a bcrypt password at ``wharf passwd``'s default cost, and a token of that user
with the list action. Clients on keep-alive connections fetch /simple/<project>/ for
``--seconds`` each way. The password's numbers are with Access's one-minute memory of a
checked password (only the first request per worker pays bcrypt); a token costs an HMAC
and one SQLite lookup on every request, so revocation takes effect at once. The cost of
one bcrypt check is printed beside them: what each request would pay without that memory.

    python -m bench.token_auth [--seconds 5] [--clients 4]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

from passlib.hash import bcrypt

from app.auth import set_password
from app.settings import Settings
from app.tokens import open_tokens
from tests.support import WharfProcess, make_wheel


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def measure(port: int, auth: str, seconds: float, clients: int) -> tuple[float, int]:
    """(requests/s, non-200 answers) over ``seconds`` with ``clients`` keep-alive connections."""
    counts, errors = [0] * clients, [0] * clients
    deadline = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            conn.request("GET", "/simple/benchlib/", headers={"Authorization": auth})
            response = conn.getresponse()
            response.read()
            counts[i] += 1
            errors[i] += response.status != 200
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started), sum(errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wharf-token-bench-") as tmp:
        base = Path(tmp)
        packages = base / "packages"
        make_wheel(packages, "benchlib", "1.0")
        set_password(base / "htpasswd", "alice", "a long password for the bench")
        token, _ = open_tokens(Settings(packages=(packages,), state_dir=base / "state")).create(
            "alice", actions=("list", "download"))
        started = time.perf_counter()
        bcrypt.verify("a long password for the bench", (base / "htpasswd").read_text().split(":", 1)[1].strip())
        bcrypt_ms = (time.perf_counter() - started) * 1000
        with WharfProcess(packages, "--password-file", str(base / "htpasswd"), "--state-dir", str(base / "state"),
                          "--authenticate", "update,download,list", "--log-level", "warning") as server:
            results = {}
            for name, auth in (("token (__token__)", basic("__token__", token)),
                               ("bcrypt password", basic("alice", "a long password for the bench"))):
                measure(server.port, auth, 1.0, args.clients)  # warm up: workers, caches, connections
                results[name] = measure(server.port, auth, args.seconds, args.clients)
    print(f"GET /simple/benchlib/, gunicorn -w 2, {args.clients} keep-alive clients, {args.seconds:g} s each")
    for name, (rate, errors) in results.items():
        print(f"  {name:20s} {rate:8.0f} req/s  ({errors} non-200)")
    print(f"  one bcrypt check (wharf passwd's cost): {bcrypt_ms:.0f} ms, i.e. at most "
          f"{2000 / bcrypt_ms:.1f} req/s on 2 workers if every request paid it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
