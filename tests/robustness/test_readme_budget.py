"""A package cannot tie up workers through its README (issue 14, point 9).

A 1 KB wheel whose Markdown README is 60,000 ``>`` (the renderer nests a block quote per
character: quadratic, seconds of CPU) is viewed on a real gunicorn while other readers use
the index. The README is rendered once, in a child process within a budget, shown as plain
text when over it, and never rendered again, by any worker; other pages keep answering
meanwhile. A project with 5,000 files gets a paginated page, answered with 304 before any
rendering when the reader's copy is current; a search runs over 5,000 projects. Their
times are figures, not assertions.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.support import WharfProcess, make_wheel

pytestmark = pytest.mark.slow
PATHOLOGICAL = ">" * 60_000


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, float]:
    start = time.monotonic()
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read(), time.monotonic() - start
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read(), time.monotonic() - start


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("readme")
    packages = base / "packages"
    slow = make_wheel(packages, "slowdoc", "1.0", description=PATHOLOGICAL)
    assert slow.stat().st_size < 2048  # the bytes are nothing: the cost is all in rendering
    make_wheel(packages, "plain", "1.0", description="# Plain\n\nJust text.")
    for n in range(5_000):
        make_wheel(packages / "many", "many", f"{n}.0")
        make_wheel(packages / "others", f"other-{n}", "1.0")
    past = time.time() - 10
    for path in packages.rglob("*.whl"):
        import os
        os.utime(path, (past, past))
    with WharfProcess(packages, workers=2) as server:
        yield server


def test_a_pathological_readme_is_rendered_once_within_a_budget(server, figures):
    others: list[tuple[int, float]] = []
    first: dict = {}

    def view_slow():
        first["answer"] = _get(server.url + "/project/slowdoc/")
        first["done"] = time.monotonic()

    viewer = threading.Thread(target=view_slow)
    viewer.start()
    time.sleep(0.2)
    while viewer.is_alive() and len(others) < 40:
        for path in ("/project/plain/", "/simple/plain/", "/"):
            status, _, _, took = _get(server.url + path)
            others.append((status, took))
    viewer.join()
    status, _, body, took_first = first["answer"]
    assert status == 200
    assert b"shown as plain text" in body and b"&gt;&gt;&gt;" in body
    assert all(status == 200 for status, _ in others)
    # Other readers were served while the README was being tried (the budget is seconds).
    assert others, "nothing else was requested while the README rendered"

    answers = [_get(server.url + "/project/slowdoc/") for _ in range(10)]
    assert all(a[0] == 200 and b"shown as plain text" in a[2] for a in answers)
    assert server.log().count("took too long to render") == 1  # once, for every worker
    figures.record("pathological README (60,000 '>', wheel < 2 KB)", {
        "first_view_s": round(took_first, 2), "later_views_max_ms": round(1000 * max(a[3] for a in answers), 1),
        "other_requests_meanwhile": len(others), "other_requests_5xx": sum(1 for s, _ in others if s >= 500),
        "renders": 1})


def test_a_project_with_5000_files_is_paginated_and_answered_304_before_rendering(server, figures):
    status, headers, body, _ = _get(server.url + "/project/many/")
    assert status == 200 and b"page 1 of 200" in body and b"4999.0" in body and b"4974.0" not in body
    status, _, body, _ = _get(server.url + "/project/many/?page=200")
    assert status == 200 and b"0.0" in body and b"Newer" in body
    assert _get(server.url + "/project/many/?page=201")[0] == 404
    assert _get(server.url + "/project/many/?page=x")[0] == 400
    etag = headers["etag"]
    assert _get(server.url + "/project/many/", {"If-None-Match": etag})[0] == 304
    assert _get(server.url + "/project/many/?page=2", {"If-None-Match": etag})[0] == 200  # another page
    page = [_get(server.url + "/project/many/")[3] for _ in range(20)]
    revalidated = [_get(server.url + "/project/many/", {"If-None-Match": etag})[3] for _ in range(20)]
    search = [_get(server.url + f"/projects/?q=other-{n}")[3] for n in range(0, 5_000, 250)]
    listing = [_get(server.url + "/projects/?page=50")[3] for _ in range(10)]
    figures.record("web pages at 5,000 files in a project and 5,000 projects (ms, median / max)", {
        "project_page": [round(1000 * statistics.median(page), 1), round(1000 * max(page), 1)],
        "project_page_304": [round(1000 * statistics.median(revalidated), 1), round(1000 * max(revalidated), 1)],
        "search": [round(1000 * statistics.median(search), 1), round(1000 * max(search), 1)],
        "project_list_page_50": [round(1000 * statistics.median(listing), 1), round(1000 * max(listing), 1)]})
