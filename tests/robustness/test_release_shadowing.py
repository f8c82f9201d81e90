"""An upload cannot change what an existing release installs (issue 14, point 4).

``mylib 1.0`` is published (a wheel and an sdist) with twine. Then eight other files of
that release are uploaded, each of which pip or uv would pick instead of, or beside, the
published one: a build-tagged wheel (installers prefer the higher build), the same wheel
spelled with another case or ``1.0.0``, a wheel sharing a tag, a second sdist as .zip,
.tar.bz2 or another spelling. twine and uv publish must be refused every time (409), the
published bytes must stay what pip and uv install, and the same bytes again stay 200.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from passlib.apache import HtpasswdFile

from tests.support import ROOT, WharfProcess, client_env, core_metadata, make_sdist, make_wheel

pytestmark = pytest.mark.slow
PASSWORD = "s3cret"


def _zip_sdist(directory: Path, filename: str, name: str, version: str) -> Path:
    base = filename.removesuffix(".zip")
    path = directory / filename
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{base}/PKG-INFO", core_metadata(name, version))
        archive.writestr(f"{base}/setup.py", "from setuptools import setup\nsetup()\n")
    return path


def _renamed(path: Path, name: str) -> Path:
    return path.rename(path.with_name(name))


def _twine(url: str, dist: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                           "--repository-url", url + "/", "-u", "alice", "-p", PASSWORD, str(dist)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _uv_publish(url: str, dist: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["uv", "publish", "--publish-url", url + "/legacy/", "-u", "alice", "-p", PASSWORD,
                           str(dist)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def index(tmp_path: Path):
    users = HtpasswdFile(str(tmp_path / "htpasswd"), new=True)
    users.set_password("alice", PASSWORD)
    users.save()
    packages = tmp_path / "packages"
    packages.mkdir()
    with WharfProcess(packages, "--password-file", str(tmp_path / "htpasswd")) as server:
        yield server, packages


def test_no_other_file_can_stand_in_for_a_published_one(index, tmp_path: Path, figures):
    server, packages = index
    env = client_env(tmp_path / "home")
    dist = tmp_path / "dist"
    wheel = make_wheel(dist, "mylib", "1.0")
    sdist = make_sdist(dist, "mylib", "1.0")
    for published in (wheel, sdist):
        done = _twine(server.url, published, env)
        assert done.returncode == 0, done.stdout + done.stderr
    originals = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (wheel, sdist)}

    other = tmp_path / "others"
    impostors = [
        make_wheel(other / "build", "mylib", "1.0", tag="1-py3-none-any", summary="evil"),
        _renamed(make_wheel(other / "case", "mylib", "1.0", summary="evil"), "MyLib-1.0-py3-none-any.whl"),
        make_wheel(other / "long", "mylib", "1.0.0", summary="evil"),
        make_wheel(other / "shared", "mylib", "1.0", tag="py2.py3-none-any", summary="evil"),
        _zip_sdist(other, "mylib-1.0.zip", "mylib", "1.0"),
        _zip_sdist(other, "MyLib-1.0.zip", "MyLib", "1.0"),
        make_sdist(other / "v", "mylib", "1.0.0", summary="evil"),
        make_wheel(other / "build2", "mylib", "1.0", tag="2-py2.py3-none-any", summary="evil"),
    ]
    refused = 0
    for n, impostor in enumerate(impostors):
        # Both clients must get the refusal, with its reason. uv will not send a file whose
        # name is not normalized (MyLib-...), so those go through twine only.
        normalized = impostor.name == impostor.name.lower() and impostor.suffix in (".whl", ".gz")
        done = (_uv_publish if n % 2 and normalized else _twine)(server.url, impostor, env)
        assert done.returncode != 0, f"{impostor.name} was accepted:\n{done.stdout}{done.stderr}"
        assert "409" in done.stdout + done.stderr or "Conflict" in done.stdout + done.stderr, done.stdout + done.stderr
        refused += 1
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in packages.iterdir() if p.is_file()}
    assert on_disk == originals

    # What pip and uv install is still the published wheel, byte for byte.
    got = tmp_path / "got"
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                           "--index-url", server.url + "/simple/", "-d", str(got), "mylib==1.0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in got.iterdir()} == {wheel.name: originals[wheel.name]}
    done = subprocess.run(["uv", "pip", "compile", "--no-header", "--index-url", server.url + "/simple/", "-"],
                          input="mylib==1.0\n", env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "mylib==1.0" in done.stdout, done.stdout + done.stderr

    # The same bytes again are fine (CI re-runs).
    for published in (wheel, sdist):
        done = _twine(server.url, published, env)
        assert done.returncode == 0, done.stdout + done.stderr
    # And a file that adds a platform without changing any other is still welcome.
    extra = make_wheel(other / "win", "mylib", "1.0", tag="cp311-cp311-win_amd64")
    done = _twine(server.url, extra, env)
    assert done.returncode == 0, done.stdout + done.stderr
    figures.record("uploads that would shadow a published file", {"tried": len(impostors), "refused_409": refused,
                                                                  "published_files_changed": 0})
