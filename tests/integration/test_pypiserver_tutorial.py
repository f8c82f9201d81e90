"""pypiserver's tutorial, step by step, with Wharf in its place (docs/pypiserver.md; issue 15).

The command lines are pypiserver's: ``pypi-server run -p PORT -P htpasswd.txt -a
update,download,list packages``, an htpasswd file made by Apache's ``htpasswd -s``,
``twine upload -r local`` with a ``~/.pypirc`` in pypiserver's colon syntax, ``pip download
-d packages``, ``pip install --index-url``, ``-a list,download``, ``-P . -a .``, removal
with ``:action=remove_pkg``, and ``poetry publish -r`` where poetry is installed. The only
changes: a free port, ``-i 127.0.0.1``, and an upstream on loopback instead of pypi.org.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_pypi_server_command import PYPI_SERVER_CODE, wait_for_log
from tests.support import ROOT, WharfProcess, client_env, free_port, http, make_wheel, stop_process, wait_http

pytestmark = pytest.mark.slow

# `pypi-server` as installed, but from this checkout (the console script may be another's).
PYPI_SERVER = [sys.executable, "-c", PYPI_SERVER_CODE]
PASSWORD = "s3cret"


class Tutorial:
    """A user's directory: packages/, htpasswd.txt, dist/, a HOME with ~/.pypirc."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.env = client_env(self.home)
        self.server: subprocess.Popen | None = None
        self.url = ""

    def run(self, *cmd: str, ok: bool = True, **extra: str) -> subprocess.CompletedProcess:
        env = dict(self.env, **extra)
        result = subprocess.run(list(cmd), cwd=self.root, env=env, capture_output=True, text=True, timeout=300)
        if ok:
            assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
        return result

    def pypi_server(self, command_line: str) -> str:
        """Start ``pypi-server ...`` as typed (PORT replaced); the log so far."""
        self.stop()
        port = free_port()
        argv = command_line.replace("PORT", str(port)).split()
        assert argv[0] == "pypi-server"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
        env["PYTHONPATH"] = str(ROOT)
        self.log = self.root / f"pypi-server-{port}.log"
        with open(self.log, "wb") as out:
            self.server = subprocess.Popen([*PYPI_SERVER, *argv[1:]], cwd=self.root, env=env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        wait_http(self.url + "/health", proc=self.server)
        return self.log.read_text()

    def write_pypirc(self) -> None:
        """pypiserver's ~/.pypirc, in its colon syntax, for the server now running."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".pypirc").write_text(
            "[distutils]\nindex-servers =\n    local\n\n"
            f"[local]\nrepository: {self.url}\nusername: alice\npassword: {PASSWORD}\n")

    def index_with_user(self) -> str:
        return self.url.replace("http://", f"http://alice:{PASSWORD}@") + "/simple/"

    def stop(self) -> None:
        if self.server is not None:
            stop_process(self.server)
            self.server = None


def poetry_command() -> str | None:
    found = shutil.which("poetry") or str(ROOT / ".venv-poetry" / "bin" / "poetry")
    return found if Path(found).is_file() else None


def test_pypiservers_tutorial_runs_on_wharf(tmp_path: Path):
    if not shutil.which("htpasswd"):
        pytest.fail("htpasswd is missing: apt-get install apache2-utils (.ci/run installs it)")
    me = Tutorial(tmp_path)
    upstream_files = tmp_path / "upstream"
    make_wheel(upstream_files, "tutorial-lib", "1.0")
    with WharfProcess(upstream_files) as upstream:
        # 1. mkdir packages; pip download -d packages PACKAGE
        (tmp_path / "packages").mkdir()
        me.run(sys.executable, "-m", "pip", "download", "--index-url", upstream.url + "/simple/",
               "-d", "packages", "tutorial-lib")
    assert [p.name for p in (tmp_path / "packages").iterdir()] == ["tutorial_lib-1.0-py3-none-any.whl"]

    try:
        # 2. An open index: pypi-server run -p 8080 packages; pip install --index-url .../simple/
        started = me.pypi_server("pypi-server run -p PORT -i 127.0.0.1 packages")
        assert f"serving 1 project (1 file) from packages on {me.url}/" in started
        me.run(sys.executable, "-m", "pip", "install", "--index-url", me.url + "/simple/",
               "--target", "site-open", "tutorial-lib")
        assert (tmp_path / "site-open" / "tutorial_lib").is_dir()

        # 3. htpasswd -sc htpasswd.txt alice (SHA1 {SHA} entries), then uploads with twine -r
        subprocess.run(["htpasswd", "-sci", "htpasswd.txt", "alice"], cwd=tmp_path, input=PASSWORD + "\n",
                       capture_output=True, text=True, check=True)
        assert (tmp_path / "htpasswd.txt").read_text().startswith("alice:{SHA}")
        me.pypi_server("pypi-server run -p PORT -i 127.0.0.1 -P htpasswd.txt -a update,download,list packages")
        me.write_pypirc()
        make_wheel(tmp_path / "dist", "my-upload", "1.0")
        uploaded = me.run(sys.executable, "-m", "twine", "upload", "-r", "local", "--disable-progress-bar", "dist/*")
        assert "my_upload-1.0-py3-none-any.whl" in uploaded.stdout + uploaded.stderr
        assert (tmp_path / "packages" / "my_upload-1.0-py3-none-any.whl").is_file()
        assert "uploaded my_upload-1.0-py3-none-any.whl" in wait_for_log(me.log, "uploaded my_upload")

        # -a update,download,list: nothing without the password, everything with it
        anonymous = me.run(sys.executable, "-m", "pip", "download", "--index-url", me.url + "/simple/",
                           "-d", "fetched", "--no-deps", "my-upload", ok=False)
        assert anonymous.returncode != 0 and "401" in anonymous.stdout + anonymous.stderr
        me.run(sys.executable, "-m", "pip", "install", "--index-url", me.index_with_user(), "--target", "site-private",
               "my-upload", "tutorial-lib")
        assert (tmp_path / "site-private" / "my_upload").is_dir()

        # 4. -a list,download: the same for readers; uploads still need the user
        me.pypi_server("pypi-server run -p PORT -i 127.0.0.1 -P htpasswd.txt -a list,download packages")
        assert http(me.url + "/simple/")[0] == 401
        me.write_pypirc()
        make_wheel(tmp_path / "dist2", "my-upload", "1.1")
        me.run(sys.executable, "-m", "twine", "upload", "-r", "local", "--disable-progress-bar", "dist2/*")
        me.run(sys.executable, "-m", "pip", "download", "--index-url", me.index_with_user(), "-d", "fetched",
               "--no-deps", "my-upload==1.1")
        assert (tmp_path / "fetched" / "my_upload-1.1-py3-none-any.whl").is_file()

        # 5. Removal as pypiserver does it: :action=remove_pkg (curl -u alice -F ...)
        removed = me.run("curl", "-sS", "-f", "-u", f"alice:{PASSWORD}", "-F", ":action=remove_pkg",
                         "-F", "name=my-upload", "-F", "version=1.0", me.url + "/")
        assert removed.returncode == 0
        assert not (tmp_path / "packages" / "my_upload-1.0-py3-none-any.whl").exists()
        assert "removed my-upload 1.0" in wait_for_log(me.log, "removed my-upload")

        # -P . -a .: open for reading to everyone; uploads are refused, and say why
        me.pypi_server("pypi-server run -p PORT -i 127.0.0.1 -P . -a . packages")
        me.run(sys.executable, "-m", "pip", "download", "--index-url", me.url + "/simple/", "-d", "open",
               "--no-deps", "my-upload")
        assert [p.name for p in (tmp_path / "open").iterdir()] == ["my_upload-1.1-py3-none-any.whl"]
        me.write_pypirc()
        make_wheel(tmp_path / "dist3", "my-upload", "1.2")
        refused = me.run(sys.executable, "-m", "twine", "upload", "-r", "local", "--disable-progress-bar",
                         "dist3/*", ok=False)
        assert refused.returncode != 0 and "403" in refused.stdout + refused.stderr

        # 6. poetry publish -r, where poetry is installed (.ci/run installs it in .venv-poetry)
        poetry = poetry_command()
        if poetry is not None:
            me.pypi_server("pypi-server run -p PORT -i 127.0.0.1 -P htpasswd.txt -a update packages")
            publish_with_poetry(me, poetry)
    finally:
        me.stop()


def publish_with_poetry(me: Tutorial, poetry: str) -> None:
    project = me.root / "poetry-project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "poetry-made"\nversion = "0.3"\ndescription = "x"\n\n'
        '[build-system]\nrequires = ["poetry-core>=2.0"]\nbuild-backend = "poetry.core.masonry.api"\n')
    make_wheel(project / "dist", "poetry-made", "0.3")
    env = {"POETRY_CONFIG_DIR": str(me.home / "poetry-config"), "POETRY_CACHE_DIR": str(me.home / "poetry-cache"),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}

    def poetry_run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([poetry, *args], cwd=project, env=dict(me.env, **env), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"poetry {' '.join(args)}\n{result.stdout}\n{result.stderr}"
        return result

    poetry_run("config", "repositories.wharf", me.url + "/")
    poetry_run("config", "http-basic.wharf", "alice", PASSWORD)
    poetry_run("publish", "-r", "wharf")
    assert (me.root / "packages" / "poetry_made-0.3-py3-none-any.whl").is_file()

