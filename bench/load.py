"""Load from a separate process: wrk, its summary read back as JSON (bench/report.lua)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "report.lua"
THREADS = 1
CONNECTIONS = 8


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(url: str, duration: float, headers: dict[str, str] | None = None, *, connections: int = CONNECTIONS,
        threads: int = THREADS, timeout: float = 60.0) -> dict:
    """One wrk run: requests/s, latency percentiles (ms) and error counts."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(duration, 1):g}s",
           "--timeout", f"{timeout:g}s", "-s", str(SCRIPT)]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK-JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    raw = json.loads(line.removeprefix("WRK-JSON "))
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    latency = raw["latency_us"]
    ok = raw["requests"] - errors["status"]
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        # wrk counts a request whose answer is not 2xx/3xx as a "status" error: only
        # good answers count towards the rate.
        "rps": round(ok / seconds, 1) if seconds else 0.0,
        "p50_ms": latency["p50"] / 1000 if raw["requests"] else None,
        "p90_ms": latency["p90"] / 1000 if raw["requests"] else None,
        "p99_ms": latency["p99"] / 1000 if raw["requests"] else None,
        "bytes_per_request": round(raw["bytes"] / raw["requests"]) if raw["requests"] else None,
        "errors": {k: v for k, v in errors.items() if v},
    }


def fetch(url: str, headers: dict[str, str] | None = None, timeout: float = 600.0,
          context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    """One request (no proxy; ``context`` for HTTPS): status, headers (lower-case names), body."""
    handlers: list = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
