"""The home page's copy-paste commands work as shown, a private CA included (issue 15).

A real ``wharf stack`` (nginx with a local CA, gunicorn, supervisord): the pip, uv and twine
snippets are taken from the page and run with a client environment that trusts nothing
but what the snippet names. And one ``uv publish`` URL is given everywhere.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth import set_password
from tests.deploy.test_render import needs_nginx
from tests.deploy.test_stack import Stack
from tests.support import ROOT, client_env, make_wheel

SNIPPET = re.compile(r'<pre class="snippet"><code>(.*?)</code></pre>', re.S)
UV_PUBLISH = re.compile(r"uv publish --publish-url https?://[^/\s]+(/\S*)")


def test_one_uv_publish_url_across_readme_docs_and_the_page():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    paths = {(page.name, path) for page in pages for path in UV_PUBLISH.findall(page.read_text(encoding="utf-8"))}
    assert paths and {path for _page, path in paths} == {"/"}, paths
    template = (ROOT / "app" / "templates" / "web" / "home.html").read_text(encoding="utf-8")
    assert "uv publish --publish-url {{ upload_url }}" in template
    assert 'upload_url": external_url(request.environ, "/")' in (ROOT / "app" / "web" / "routes.py").read_text()


def shell(script: str, home: Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    # Only what the snippet says: no CA, index or credentials from this machine's environment.
    env = client_env(home, **extra)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = subprocess.run(["bash", "-ec", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
@needs_nginx
def test_snippets_with_a_private_ca_work_as_shown(tmp_path: Path):
    root = tmp_path / "stack"
    make_wheel(root / "packages", "hosted", "1.0")
    users = tmp_path / "htpasswd"
    set_password(users, "alice", "pw-alice", rounds=4)
    stack = Stack(root, "--password-file", str(users))
    try:
        status, _, body = stack.request("/")
        assert status == 200
        snippets = [html.unescape(s) for s in SNIPPET.findall(body.decode())]
        ca = root / "tls" / "ca.crt"
        # The page names the local CA in every command that connects.
        pip_line = next(s for s in snippets if s.startswith("pip install"))
        assert pip_line == f"pip install --cert {ca} --index-url {stack.url}/simple/ PACKAGE"
        assert f"cert = {ca}" in next(s for s in snippets if s.startswith("[global]"))
        pypirc = next(s for s in snippets if s.startswith("[distutils]"))
        assert f"ca_cert = {ca}" in pypirc
        uv_env = next(s for s in snippets if s.startswith("export UV_DEFAULT_INDEX"))
        assert f"export SSL_CERT_FILE={ca}" in uv_env
        uv_publish = next(s for s in snippets if "uv publish" in s)
        assert uv_publish.startswith(f"SSL_CERT_FILE={ca} uv publish --publish-url {stack.url}/")

        home, work = tmp_path / "home", tmp_path / "work"
        work.mkdir()
        shell(pip_line.replace("pip install", "python -m pip install --target pip-target")
              .replace("PACKAGE", "hosted"), home, work)
        assert (work / "pip-target" / "hosted").is_dir()
        shell(uv_env.replace("PACKAGE", "--target uv-target hosted"), home, work)
        assert (work / "uv-target" / "hosted").is_dir()

        make_wheel(work / "dist", "by-twine", "1.0")
        (home / ".pypirc").write_text(pypirc.replace("YOUR-USER", "alice"))
        twine = next(s for s in snippets if s.startswith("twine upload"))
        shell(twine.replace("twine", "python -m twine", 1), home, work, TWINE_PASSWORD="pw-alice")
        for wheel in (work / "dist").iterdir():
            wheel.unlink()
        make_wheel(work / "dist", "by-uv", "1.0")
        shell(uv_publish.replace("YOUR-USER", "alice"), home, work, UV_PUBLISH_PASSWORD="pw-alice")
        for name in ("by-twine", "by-uv"):
            assert (root / "packages" / f"{name.replace('-', '_')}-1.0-py3-none-any.whl").is_file()
    finally:
        stack.stop()
