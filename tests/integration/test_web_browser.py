"""The pages for people in a real headless Chromium, against a running Wharf.

Debian's ``chromium`` is driven through Playwright (``executable_path``; Playwright's own
browser download is not used). Screenshots of the pages land in ``test-artifacts/`` so a
person can look at them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile

from tests.support import ROOT, WharfProcess, build_project, make_sdist, make_wheel

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
# Debian's Chromium as root, quiet on a closed network (see ENVIRONMENT.md).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

HARBOR_README = """\
# Harbor Tools

Utilities for **moving crates** between ships and the quay.

## Install

```python
import harbor_tools
harbor_tools.unload(ship="Aurora", crates=12)
```

| Crane | Capacity |
|-------|----------|
| A     | 40 t     |
| B     | 25 t     |

> Keep clear of the loading area.
"""

EVIL_README = """\
# Totally normal

<script>window.__pwned = "script"; document.title = "pwned";</script>

<img src="missing.png" alt="x" onerror="window.__pwned = 'onerror'">

<a href="javascript:window.__pwned='link'">click me</a>

<iframe src="https://example.invalid/"></iframe>

<form action="https://example.invalid/"><input name="secret"></form>

<p style="position:fixed;inset:0;background:red" onclick="window.__pwned='click'">Overlay</p>
"""


def _settle(directory: Path) -> None:
    # Files just written look "still being copied" to the catalog for a moment; date them back.
    past = time.time() - 10
    for path in directory.rglob("*"):
        os.utime(path, (past, past))


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("web")
    packages = base / "packages"
    # A real project built by setuptools (python -m build) with a Markdown README ...
    build_project(base / "src", packages, "harbor-tools", "1.0", requires=("packaging>=24",),
                  requires_python=">=3.9", readme=HARBOR_README)
    make_wheel(packages, "harbor-tools", "0.9", description="The first release.")
    make_wheel(packages, "harbor-tools", "1.1a1", description="A preview.")
    # ... a package whose README tries to run code ...
    make_wheel(packages, "evil-readme", "6.6.6", description=EVIL_README, summary="Tries to run script")
    # ... and enough others for two pages of the list.
    for i in range(55):
        make_sdist(packages, f"dock-{i:02d}", "1.0", summary=f"Dock number {i} of the harbour")
    _settle(packages)
    return packages


@pytest.fixture(scope="module")
def server(packages: Path):
    with WharfProcess(packages, workers=1) as wharf:
        yield wharf


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Tab:
    """A page that records every request, console error and script error it sees."""

    def __init__(self, browser, **context_options):
        self.context = browser.new_context(**context_options)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.context.close()

    def only_from(self, server) -> None:
        foreign = [u for u in self.requests if not u.startswith(server.url + "/") and not u.startswith("data:")]
        assert not foreign, f"requests outside the index: {foreign}"

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


def test_home_page_explains_the_index(server, browser):
    with Tab(browser, viewport={"width": 1280, "height": 900}) as tab:
        response = tab.page.goto(server.url + "/")
        assert response.status == 200
        page = tab.page
        assert page.locator("h1").inner_text() == "Python package index"
        assert "57 projects in 60 files" in page.locator(".lead").inner_text()
        snippets = page.locator("pre.snippet code").all_inner_texts()
        assert f"pip install --index-url {server.url}/simple/ PACKAGE" in snippets
        assert f"uv publish --publish-url {server.url}/ --username YOUR-USER dist/*" in snippets
        # The copy buttons come from Wharf's own script, allowed by the page's CSP.
        assert page.locator("pre.snippet button.copy").count() == len(snippets)
        assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("system-ui")
        tab.screenshot("web-home.png")
        tab.only_from(server)
        assert not tab.errors


def test_search_finds_a_project_without_javascript(server, browser):
    with Tab(browser, java_script_enabled=False, viewport={"width": 1280, "height": 900}) as tab:
        page = tab.page
        page.goto(server.url + "/")
        page.get_by_label("Search projects").fill("harbor")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/projects/\?q=harbor$"))
        results = page.locator("ul.projects a.name")
        assert results.all_inner_texts() == ["harbor-tools"]
        assert page.locator("h1").inner_text() == "Projects matching “harbor”"
        tab.screenshot("web-search.png")
        # a word from the summary finds projects too
        page.goto(server.url + "/projects/?q=number+42")
        assert page.locator("ul.projects a.name").all_inner_texts() == ["dock-42"]
        page.goto(server.url + "/projects/?q=harbor")
        page.get_by_role("link", name="harbor-tools").click()
        page.wait_for_url(server.url + "/project/harbor-tools/")
        assert page.locator("h1").first.inner_text().startswith("harbor-tools")
        tab.only_from(server)


def test_project_list_pages_through_every_project(server, browser):
    with Tab(browser, viewport={"width": 1280, "height": 900}) as tab:
        page = tab.page
        page.goto(server.url + "/projects/")
        first = page.locator("ul.projects a.name").all_inner_texts()
        assert len(first) == 50 and first[0] == "dock-00"
        assert "Page 1 of 2" in page.locator("nav.pages").inner_text()
        tab.screenshot("web-list.png")
        page.get_by_role("link", name="Next page").click()
        page.wait_for_url(re.compile(r"\?page=2$"))
        second = page.locator("ul.projects a.name").all_inner_texts()
        assert second == ["dock-50", "dock-51", "dock-52", "dock-53", "dock-54", "evil-readme", "harbor-tools"]
        tab.only_from(server)
        assert not tab.errors


def test_project_page_shows_versions_and_rendered_readme(server, browser):
    with Tab(browser, viewport={"width": 1280, "height": 900}) as tab:
        page = tab.page
        assert page.goto(server.url + "/project/Harbor_Tools").url == server.url + "/project/harbor-tools/"
        assert page.locator("h1").first.inner_text() == "harbor-tools 1.0"
        versions = page.locator("details.release > summary .version").all_inner_texts()
        assert versions == ["1.1a1", "1.0", "0.9"]
        # only the latest version is unfolded; each lists its files with size and sha256
        latest = page.locator("details.release[open]")
        assert latest.count() == 1 and latest.locator("summary .version").inner_text() == "1.0"
        files = latest.locator("ul.files > li")
        assert sorted(files.locator("a.filename").all_inner_texts()) == [
            "harbor_tools-1.0-py3-none-any.whl", "harbor_tools-1.0.tar.gz"]
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in files.locator(".hash code").all_inner_texts())
        assert f"pip install --index-url {server.url}/simple/ harbor-tools==1.0" in latest.inner_text()
        # metadata from the built wheel
        about = page.locator("aside.side").inner_text()
        assert ">=3.9" in about and "packaging>=24" in about
        # the README, rendered: headings, bold, highlighted code, a table
        readme = page.locator(".readme")
        assert readme.locator("h1").inner_text() == "Harbor Tools"
        assert readme.locator("strong").inner_text() == "moving crates"
        assert readme.locator("table td").all_inner_texts()[:2] == ["A", "40 t"]
        assert "harbor_tools.unload" in readme.locator("pre").inner_text()
        # a download link works from the page
        href = files.locator("a.filename").first.get_attribute("href")
        download = tab.context.request.get(server.url + href.split("#")[0])
        assert download.status == 200 and download.body()[:2] in (b"PK", b"\x1f\x8b")
        tab.screenshot("web-project.png")
        tab.only_from(server)
        assert not tab.errors
        # the dark scheme is a scheme, not an inverted page: dark background, light text
        page.emulate_media(color_scheme="dark")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 20, 25)"
        assert page.evaluate("getComputedStyle(document.body).color") == "rgb(230, 237, 243)"
        tab.screenshot("web-project-dark.png")


def test_pages_fit_a_phone(server, browser):
    with Tab(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
             device_scale_factor=2) as tab:
        page = tab.page
        for path, shot in (("/", "web-home-phone.png"), ("/projects/?q=harbor", None),
                           ("/project/harbor-tools/", "web-project-phone.png")):
            page.goto(server.url + path)
            # nothing wider than the screen: no sideways scrolling
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
            if shot:
                tab.screenshot(shot)


def test_a_readme_with_script_renders_inert(server, browser):
    with Tab(browser, viewport={"width": 1280, "height": 900}) as tab:
        page = tab.page
        page.goto(server.url + "/project/evil-readme/")
        readme = page.locator(".readme")
        assert readme.locator("h1").inner_text() == "Totally normal"
        assert readme.locator("script, iframe, form, [onerror], [onclick], [style], [href^=javascript]").count() == 0
        assert readme.locator("input:not([disabled])").count() == 0  # GFM task-list boxes stay, disabled
        assert page.locator("script:not([src])").count() == 0
        assert "<script>" in readme.inner_text()  # shown as text
        readme.get_by_text("Overlay").click()
        page.wait_for_timeout(300)  # give an event handler the chance it must not have
        assert page.evaluate("window.__pwned") is None
        assert page.title() == "evil-readme 6.6.6 – Wharf package index"
        tab.screenshot("web-project-evil.png")
        tab.only_from(server)


def test_keyboard_reaches_the_skip_link_and_the_search(server, browser):
    with Tab(browser, viewport={"width": 1280, "height": 900}) as tab:
        page = tab.page
        page.goto(server.url + "/projects/")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "content"
        page.goto(server.url + "/projects/")
        for _ in range(6):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "q":
                break
        assert page.evaluate("document.activeElement.id") == "q"
        # the focused field shows a visible outline
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
        page.keyboard.type("evil")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"q=evil$"))
        assert page.locator("ul.projects a.name").all_inner_texts() == ["evil-readme"]


def test_pages_need_a_user_when_list_is_protected(packages: Path, browser, tmp_path: Path):
    passwords = tmp_path / "htpasswd"
    users = HtpasswdFile(str(passwords), new=True, default_scheme="bcrypt")
    users.set_password("alice", "s3cret")
    users.save()
    with WharfProcess(packages, "--password-file", str(passwords), "--authenticate", "update,list",
                      "--state-dir", str(tmp_path / "state"), workers=1) as wharf:
        with Tab(browser) as tab:
            for path in ("/", "/projects/", "/project/harbor-tools/"):
                assert tab.context.request.get(wharf.url + path).status == 401
            with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
                tab.page.goto(wharf.url + "/project/harbor-tools/")  # the browser has no user to offer
        with Tab(browser, http_credentials={"username": "alice", "password": "s3cret"}) as tab:
            assert tab.page.goto(wharf.url + "/project/harbor-tools/").status == 200
            assert tab.page.locator("h1").first.inner_text() == "harbor-tools 1.0"
            assert tab.page.goto(wharf.url + "/").status == 200
