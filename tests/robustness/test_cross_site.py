"""A hostile web page cannot make a logged-in browser change the index (issue 14, point 1).

A real Chromium holds alice's Basic credentials for a real ``wharf stack`` (nginx, TLS,
gunicorn). A page on another origin (a second loopback server) then tries every
state-changing action the index has: forms that remove a release, remove a file, yank and
unyank, and a ``fetch(..., {mode: "no-cors", credentials: "include"})`` that uploads a wheel
(multipart/form-data is a "simple" request, so no CORS preflight stops it) or deletes a
file. Every one must be answered 403 and change nothing; the same requests made from the
index's own page, and by twine, keep working.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from tests.support import ROOT, client_env, free_port, make_wheel

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
USER, PASSWORD = "alice", "correct horse"


def _form(action: str, fields: dict[str, str], enctype: str = "multipart/form-data") -> str:
    inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
    return (f'<form id="f" method="post" action="{action}" enctype="{enctype}">{inputs}</form>'
            '<script>document.getElementById("f").submit()</script>')


def _fetch(action: str, method: str, wheel: tuple[str, bytes] | None, fields: dict[str, str], mode: str) -> str:
    """A page whose script sends one request with the browser's credentials."""
    parts = [f"data.append({json.dumps(k)}, {json.dumps(v)});" for k, v in fields.items()]
    if wheel:
        name, data = wheel
        parts.append(
            f"const bytes = Uint8Array.from(atob({json.dumps(base64.b64encode(data).decode())}), c => c.charCodeAt(0));"
            f"data.append('content', new Blob([bytes]), {json.dumps(name)});")
    body = "body: data," if method == "POST" else ""
    return ("<script>const data = new FormData();" + "".join(parts) +
            f"window.done = fetch({json.dumps(action)}, {{method: {json.dumps(method)}, {body} mode: {json.dumps(mode)},"
            " credentials: 'include'}).then(r => r.status, e => 'error: ' + e);</script>")


class Site:
    """Another origin on loopback serving whatever page the test sets."""

    def __init__(self) -> None:
        self.page = b""
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(site.page)))
                self.end_headers()
                self.wfile.write(site.page)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from app.auth import set_password
    from tests.deploy.test_render import NGINX
    from tests.deploy.test_stack import Stack

    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    root = tmp_path_factory.mktemp("cross-site") / "stack"
    for project in ("victim-remove", "victim-file", "victim-yank", "victim-delete", "victim-unyank"):
        make_wheel(root / "packages", project, "1.0")
    users = root.parent / "htpasswd"
    set_password(users, USER, PASSWORD, rounds=4)
    stack = Stack(root, "--password-file", str(users))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site():
    site = Site()
    yield site
    site.close()


def _files(stack, project: str) -> list[dict]:
    status, _, body = stack.request(f"/simple/{project}/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    return json.loads(body)["files"] if status == 200 else []


def _attack(browser, stack, site, page_html: str, *, wait_script: bool) -> list[int]:
    """Open the hostile page in a browser that holds alice's credentials; the index's answers."""
    context = browser.new_context(ignore_https_errors=True, http_credentials={"username": USER, "password": PASSWORD})
    answers: list[int] = []
    page = context.new_page()
    page.on("response", lambda r: answers.append(r.status)
            if r.url.startswith(stack.url) and r.request.method != "GET" else None)
    try:
        # The user has used the index in this browser: its credentials are cached.
        page.goto(stack.url + "/", wait_until="load")
        answers.clear()
        site.page = page_html.encode()
        page.goto(site.url, wait_until="load")
        if wait_script:
            page.wait_for_function("window.done !== undefined")
            page.evaluate("window.done")
        else:
            page.wait_for_load_state("load")
        page.wait_for_timeout(300)
    finally:
        context.close()
    return answers


FORMS = [
    ("remove_pkg", {":action": "remove_pkg", "name": "victim-remove", "version": "1.0"}, "victim-remove"),
    ("remove_file", {":action": "remove_file", "filename": "victim_file-1.0-py3-none-any.whl"}, "victim-file"),
    ("yank", {":action": "yank", "name": "victim-yank", "version": "1.0", "reason": "pwned"}, "victim-yank"),
]


@pytest.mark.parametrize("enctype", ["multipart/form-data", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize(("label", "fields", "project"), FORMS, ids=[f[0] for f in FORMS])
def test_a_form_on_another_site_changes_nothing(browser, stack, site, label, fields, project, enctype, figures):
    before = _files(stack, project)
    assert before and not before[0].get("yanked")
    answers = _attack(browser, stack, site, _form(stack.url + "/", fields, enctype), wait_script=False)
    assert answers and all(status == 403 for status in answers), answers
    assert _files(stack, project) == before
    figures.record(f"cross-site form {label} ({enctype})", {"requests": len(answers), "refused_403": answers.count(403)})


@pytest.mark.parametrize("mode", ["no-cors", "cors"])
def test_a_script_on_another_site_cannot_upload_or_delete(browser, stack, site, tmp_path, mode):
    wheel = make_wheel(tmp_path, "cross-site-evil", "6.6")
    fields = {":action": "file_upload", "name": "cross-site-evil", "version": "6.6", "filetype": "bdist_wheel",
              "pyversion": "py3", "sha256_digest": __import__("hashlib").sha256(wheel.read_bytes()).hexdigest()}
    answers = _attack(browser, stack, site, _fetch(stack.url + "/legacy/", "POST", (wheel.name, wheel.read_bytes()),
                                                   fields, mode), wait_script=True)
    # Chromium reports no response for a CORS request whose answer it then withholds from the script.
    assert (answers or mode == "cors") and all(status == 403 for status in answers), answers
    assert _files(stack, "cross-site-evil") == []
    # DELETE is not a simple request: Chromium asks first (preflight), and the answer never allows it.
    answers = _attack(browser, stack, site, _fetch(stack.url + "/packages/victim_delete-1.0-py3-none-any.whl",
                                                   "DELETE", None, {}, mode), wait_script=True)
    assert all(status in (403, 405) for status in answers), answers
    assert _files(stack, "victim-delete")


def test_the_index_own_pages_and_twine_still_change_things(browser, stack, tmp_path):
    """The check refuses other origins only: the same request from the index's own origin works."""
    import subprocess
    import sys

    context = browser.new_context(ignore_https_errors=True, http_credentials={"username": USER, "password": PASSWORD})
    try:
        page = context.new_page()
        page.goto(stack.url + "/", wait_until="load")
        # The index's pages allow no script to connect anywhere (CSP), so the request is a form
        # on the index's own page, as a browser sends it: same origin.
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.evaluate("""() => {
                const form = document.createElement('form');
                form.method = 'post'; form.action = '/'; form.enctype = 'multipart/form-data';
                for (const [k, v] of [[':action', 'yank'], ['name', 'victim-unyank'], ['version', '1.0']]) {
                    const input = document.createElement('input');
                    input.type = 'hidden'; input.name = k; input.value = v; form.appendChild(input);
                }
                document.body.appendChild(form); form.submit();
            }""")
        status = answer.value.status
    finally:
        context.close()
    assert status == 200
    assert _files(stack, "victim-unyank")[0].get("yanked")

    wheel = make_wheel(tmp_path / "dist", "cross-site-good", "1.0")
    env = client_env(tmp_path / "home")
    run = subprocess.run([sys.executable, "-m", "twine", "upload", "--repository-url", stack.url + "/",
                          "--cert", str(stack.ca), "-u", USER, "-p", PASSWORD, "--non-interactive", str(wheel)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert _files(stack, "cross-site-good")
