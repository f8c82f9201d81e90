"""The app alone: microseconds per request with no server, no socket, no other process.

Calls Wharf's WSGI callable and the floor's directly with a synthetic environ, many
times, and keeps the fastest of several rounds. Far less noisy than load through
gunicorn on a shared machine, it shows what Wharf's own code costs beyond the floor;
the rest of a request's cost is gunicorn's and the kernel's, the same for both.

    python -m bench.inprocess PACKAGES_DIR STATE_DIR STATIC_DIR PROJECT DOWNLOAD
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

from app import create_app
from app.settings import Settings

from .floor import make_app

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def _environ(path: str, accept: str) -> dict:
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8080", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
        "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    if accept:
        environ["HTTP_ACCEPT"] = accept
    return environ


def _call(app, path: str, accept: str) -> str:
    status = []
    body = app(_environ(path, accept), lambda s, h, e=None: status.append(s))
    # A file body is handed to the server's sendfile; here it is only closed, not read.
    for chunk in body if isinstance(body, list) else ():
        pass
    if hasattr(body, "close"):
        body.close()
    return status[0]


def measure(app, path: str, accept: str, number: int = 2000, rounds: int = 5) -> float:
    if not _call(app, path, accept).startswith("200"):
        raise RuntimeError(f"{path} did not answer 200: {_call(app, path, accept)}")
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            _call(app, path, accept)
        best = min(best, (time.perf_counter() - start) / number)
    return round(best * 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", type=Path, nargs="+")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--static", type=Path, required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--download", required=True)
    args = parser.parse_args(argv)
    wharf = create_app(Settings(packages=tuple(args.packages), state_dir=args.state, log_level="warning"), watch=False)
    floor = make_app(args.static)
    urls = {"index": ("/simple/", "text/html"), "project_html": (f"/simple/{args.project}/", "text/html"),
            "project_json": (f"/simple/{args.project}/", PIP_ACCEPT), "download": (f"/packages/{args.download}", "")}
    result = {name: {"wharf_us": measure(wharf, path, accept), "floor_us": measure(floor, path, accept)}
              for name, (path, accept) in urls.items()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
