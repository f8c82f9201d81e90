"""The framework floor: a bare bottle app that returns precomputed bytes from memory.

It serves the same bodies and content types Wharf served for the benchmarked URLs
(captured into a static tree by ``bench.run``), choosing JSON or HTML by one substring
test on Accept. Under the same gunicorn settings no uncached bottle path can be faster,
so Wharf's uncached pages are judged against it.

    BENCH_STATIC=<tree> gunicorn bench.floor:app
"""

from __future__ import annotations

import os
from pathlib import Path

from bottle import Bottle, HTTPError, request, response

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html; charset=utf-8"


def _load(tree: Path) -> dict[str, bytes]:
    """Every file of the static tree by URL path (a few pages and files: it is small)."""
    bodies: dict[str, bytes] = {}
    for path in tree.rglob("*"):
        if path.is_file():
            url = "/" + path.relative_to(tree).as_posix()
            bodies[url] = path.read_bytes()
    return bodies


def make_app(tree: Path) -> Bottle:
    bodies = _load(tree)
    app = Bottle()

    @app.get("/simple/")
    @app.get("/simple/<name>/")
    def page(name: str = ""):
        base = f"/simple/{name}/" if name else "/simple/"
        if "json" in request.environ.get("HTTP_ACCEPT", ""):
            body, kind = bodies.get(base + "index.json"), JSON_TYPE
        else:
            body, kind = bodies.get(base + "index.html"), HTML_TYPE
        if body is None:
            raise HTTPError(404)
        response.content_type = kind
        return body

    @app.get("/packages/<path:path>")
    def package(path: str):
        body = bodies.get("/packages/" + path)
        if body is None:
            raise HTTPError(404)
        response.content_type = "application/zip"
        return body

    return app


app = make_app(Path(os.environ["BENCH_STATIC"])) if "BENCH_STATIC" in os.environ else None
