"""A password-guessing flood against a private index, and what a logged-in user meanwhile waits.

Starts ``wharf stack`` (nginx, gunicorn with 2 workers) on a private index whose user has a
bcrypt password at passlib's default cost, as ``wharf passwd`` makes it. One client on
127.0.0.2 sends wrong passwords (each a new one, so no memory helps) at ``--rate``
requests/s; a logged-in user on 127.0.0.3 fetches a project page in a loop. Prints the
flood's answers and the user's latency percentiles (issue 14.6: p99 under 1 s at 50/s).

    python -m bench.auth_flood [--rate 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from app.auth import set_password
from tests.support import ROOT, free_port, make_wheel, stop_process


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(port: int, context: ssl.SSLContext, source: str, path: str, auth: str) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60, source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Authorization": auth})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="guesses per second (default 50)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the flood lasts (default 20)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="auth-flood-") as tmp:
        root = Path(tmp) / "stack"
        make_wheel(root / "packages", "alpha", "1.0")
        users = Path(tmp) / "htpasswd"
        set_password(users, "alice", "the right password")  # bcrypt at passlib's default cost
        https_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
        log = open(Path(tmp) / "stack.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "app", "stack", str(root), "--https-port", str(https_port),
                                 "--http-port", str(free_port()), "--port", str(free_port()), "--workers", "2",
                                 "--password-file", str(users), "--authenticate", "update,download,list"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            context = None
            deadline = time.monotonic() + 60
            alice = basic("alice", "the right password")
            while time.monotonic() < deadline:
                if (root / "tls" / "ca.crt").exists():
                    context = ssl.create_default_context(cafile=str(root / "tls" / "ca.crt"))
                    if get(https_port, context, "127.0.0.3", "/simple/alpha/", alice)[0] == 200:
                        break
                time.sleep(0.3)
            else:
                raise SystemExit("the stack did not come up")

            flood: Counter = Counter()
            user_times: list[float] = []
            user_status: Counter = Counter()
            stop = threading.Event()

            def guess(n: int) -> None:
                status, _ = get(https_port, context, "127.0.0.2", "/simple/", basic("alice", f"guess-{n}"))
                flood[status] += 1

            def user() -> None:
                while not stop.is_set():
                    status, took = get(https_port, context, "127.0.0.3", "/simple/alpha/", alice)
                    user_status[status] += 1
                    user_times.append(took)

            watcher = threading.Thread(target=user)
            watcher.start()
            started, sent, threads = time.monotonic(), 0, []
            while time.monotonic() - started < args.seconds:
                due = started + sent / args.rate
                time.sleep(max(0.0, due - time.monotonic()))
                thread = threading.Thread(target=guess, args=(sent,))
                thread.start()
                threads.append(thread)
                sent += 1
            for thread in threads:
                thread.join()
            stop.set()
            watcher.join()
        finally:
            stop_process(proc, timeout=30)
            log.close()

    print(f"flood: {sent} wrong passwords at {args.rate:g}/s from 127.0.0.2 over {args.seconds:g} s: "
          + ", ".join(f"{status or 'no answer'}: {count}" for status, count in sorted(flood.items())))
    print(f"logged-in user on 127.0.0.3: {len(user_times)} requests, "
          + ", ".join(f"{status}: {count}" for status, count in sorted(user_status.items()))
          + f"; p50 {percentile(user_times, 0.5) * 1000:.0f} ms, p99 {percentile(user_times, 0.99) * 1000:.0f} ms,"
          f" max {max(user_times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
