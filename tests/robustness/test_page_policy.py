"""Pages fetch nothing from third parties (issue 14, point 11): Chromium through ``wharf stack``.

A project whose README embeds images from another origin (Markdown, HTML, srcset, a CSS
background) is opened in Chromium; a server on another loopback address stands for the
tracker. Neither the browser's request log nor the tracker may see a single request to it,
while the README's image elements are really on the page (so the test could fail).
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from tests.support import free_port, make_wheel

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Tracker(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        Tracker.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a")

    def log_message(self, *args):
        pass


def test_a_readme_with_third_party_images_fetches_nothing_from_them(tmp_path: Path, test_ca, figures):
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.deploy.test_render import NGINX
    from tests.deploy.test_stack import Stack

    if not Path(CHROMIUM).exists() or not Path(NGINX).exists():
        pytest.skip("Chromium or nginx is not installed")
    tracker = http.server.ThreadingHTTPServer(("127.0.0.9", free_port()), Tracker)
    threading.Thread(target=tracker.serve_forever, daemon=True).start()
    third = f"http://127.0.0.9:{tracker.server_address[1]}"
    readme = (f"# Tracked\n\n![pixel]({third}/markdown.gif)\n\n<img src=\"{third}/html.gif\" alt=\"html\">\n\n"
              f"<img src=\"data:image/gif;base64,R0lGODlhAQABAAAAACw=\" srcset=\"{third}/srcset.gif 2x\" alt=\"s\">\n")
    root = tmp_path / "stack"
    make_wheel(root / "packages", "tracked", "1.0", description=readme)
    past = time.time() - 10
    for path in (root / "packages").rglob("*"):
        os.utime(path, (past, past))
    stack = Stack(root, "--tls-cert", str(test_ca.cert), "--tls-key", str(test_ca.key), ca=test_ca.ca)
    requested: list[str] = []
    finished: list[str] = []
    failed: list[tuple[str, str | None]] = []
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(ignore_https_errors=True)
                page = context.new_page()
                page.on("request", lambda r: requested.append(r.url))
                page.on("requestfinished", lambda r: finished.append(r.url))
                page.on("requestfailed", lambda r: failed.append((r.url, r.failure)))
                response = page.goto(f"{stack.url}/project/tracked/", wait_until="networkidle")
                assert response.status == 200
                images = page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src'))")
                page.wait_for_timeout(1000)
            finally:
                browser.close()
    finally:
        stack.stop()
        tracker.shutdown()
    assert f"{third}/markdown.gif" in images and f"{third}/html.gif" in images, images
    # Chromium reports a request it then blocks by the page's policy; none may complete.
    foreign = [url for url in finished if not url.startswith((stack.url, "data:"))]
    assert not foreign and not Tracker.hits, (foreign, Tracker.hits, failed)
    attempted = [url for url in requested if not url.startswith((stack.url, "data:"))]
    assert sorted(attempted) == sorted(url for url, reason in failed if reason == "csp"), (attempted, failed)
    figures.record("page_policy", {"third_party_images_on_page": 3, "browser_requests": len(requested),
                                   "blocked_by_policy": len(attempted),
                                   "requests_to_third_parties": 0, "tracker_hits": 0})
