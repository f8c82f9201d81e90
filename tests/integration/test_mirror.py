"""``wharf mirror`` against real upstream indexes on loopback, then real pip against the mirror.

No internet: the upstream is a second Wharf, or the tiny HTTPS index in tests/upstreams.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, WharfProcess, client_env, make_sdist, make_wheel
from tests.upstreams import TinyIndex, build_upstream, make_ca_and_leaf

pytestmark = pytest.mark.slow


EXPECTED = {
    "leaflib-1.0-cp311-none-any.whl", "leaflib-1.0-cp312-none-any.whl", "leaflib-1.0.tar.gz",
    "midlib-1.0-py3-none-any.whl", "midlib-1.0.tar.gz",
    "toplib-1.0-py3-none-any.whl", "toplib-1.0.tar.gz",
    "toplib-2.0-py3-none-any.whl", "toplib-2.0.tar.gz",
    "newdep-1.0-py3-none-any.whl",  # only Python 3.12 needs it; there is no sdist upstream
}


def wharf_mirror(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "mirror", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def dist_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.is_file()}


def test_mirror_two_python_versions_then_install_without_upstream(tmp_path: Path):
    upstream_dir, mirror_dir = tmp_path / "upstream", tmp_path / "mirror"
    build_upstream(upstream_dir)
    env = client_env(tmp_path / "home")
    args = ["toplib", "--python-version", "3.11", "--python-version", "3.12", "-d", str(mirror_dir)]

    with WharfProcess(upstream_dir) as upstream:
        first = wharf_mirror(env, "--index-url", upstream.url + "/simple/", *args)
        assert first.returncode == 0, first.stderr
        assert dist_files(mirror_dir) == EXPECTED  # the tree for both Pythons, sdists, no otherlib
        assert sorted(line.split()[1] for line in first.stdout.splitlines() if line.startswith("added ")) \
            == sorted(EXPECTED)
        assert f"added {len(EXPECTED)} files" in first.stdout
        assert not first.stderr  # not a terminal: no progress display
        assert not [p for p in mirror_dir.iterdir() if p.name.startswith(".")]  # no temporary files left

        # Re-running adds nothing and rewrites nothing.
        before = {p.name: p.stat().st_mtime_ns for p in mirror_dir.iterdir()}
        again = wharf_mirror(env, "--index-url", upstream.url + "/simple/", *args)
        assert again.returncode == 0, again.stderr
        assert "added 0 files" in again.stdout and f"{len(EXPECTED)} already there" in again.stdout
        assert {p.name: p.stat().st_mtime_ns for p in mirror_dir.iterdir()} == before

    # The upstream is gone: the mirror alone serves both Pythons.
    with WharfProcess(mirror_dir) as wharf:
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        install = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
             "--index-url", wharf.url + "/simple/", "toplib"],
            env=env, capture_output=True, text=True, timeout=300)
        assert install.returncode == 0, install.stdout + install.stderr
        assert "Successfully installed leaflib-1.0 midlib-1.0 toplib-1.0" in install.stdout
        shown = subprocess.run([str(venv / "bin" / "python"), "-c", "import toplib, leaflib; print(toplib.__version__)"],
                               capture_output=True, text=True, check=True)
        assert shown.stdout.strip() == "1.0"

        fetched = tmp_path / "py312"
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--index-url", wharf.url + "/simple/",
             "--python-version", "3.12", "--only-binary=:all:", "-d", str(fetched), "toplib"],
            env=env, capture_output=True, text=True, timeout=300)
        assert download.returncode == 0, download.stdout + download.stderr
        # (pip on 3.11 judges the newdep marker by itself, so it does not ask for newdep here.)
        assert dist_files(fetched) == {"toplib-2.0-py3-none-any.whl", "midlib-1.0-py3-none-any.whl",
                                       "leaflib-1.0-cp312-none-any.whl"}
        newdep = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--index-url", wharf.url + "/simple/",
             "--python-version", "3.12", "--only-binary=:all:", "--no-deps", "-d", str(fetched), "newdep"],
            env=env, capture_output=True, text=True, timeout=300)
        assert newdep.returncode == 0, newdep.stdout + newdep.stderr


def test_mirror_over_tls_with_credentials_refuses_bytes_that_do_not_match(tmp_path: Path):
    ca, leaf, key = make_ca_and_leaf(tmp_path / "tls")
    src = tmp_path / "src"
    honest = [make_wheel(src, "honest", "1.0"), make_sdist(src, "honest", "1.0")]
    # The liar's wheel is true (pip reads its metadata to resolve), its sdist is swapped.
    liar_sdist = make_sdist(src, "liar", "1.0")
    liar = [make_wheel(src, "liar", "1.0"), liar_sdist]
    mirror_dir = tmp_path / "mirror"
    env = client_env(tmp_path / "home")
    with TinyIndex(honest + liar, leaf, key, "mirror-bot", "s3cret/pw",
                   lies={liar_sdist.name: b"not the sdist you are looking for"}) as upstream:
        url = upstream.url("mirror-bot", "s3cret/pw")

        # Without the CA the upstream's certificate is refused; nothing lands.
        untrusted = wharf_mirror(env, "--index-url", url, "honest", "-d", str(mirror_dir), "--retries", "0")
        assert untrusted.returncode == 1
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        assert not mirror_dir.exists() or not dist_files(mirror_dir)

        ok = wharf_mirror(env, "--index-url", url, "--cert", str(ca), "honest", "-d", str(mirror_dir))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert dist_files(mirror_dir) == {"honest-1.0-py3-none-any.whl", "honest-1.0.tar.gz"}
        assert (mirror_dir / "honest-1.0.tar.gz").read_bytes() == honest[1].read_bytes()
        assert "s3cret" not in ok.stdout + ok.stderr  # the password is never printed

        bad = wharf_mirror(env, "--index-url", url, "--cert", str(ca), "liar", "-d", str(mirror_dir))
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "liar-1.0.tar.gz" in bad.stderr and "sha256" in bad.stderr
        assert "liar-1.0.tar.gz" not in dist_files(mirror_dir)
        assert "liar-1.0-py3-none-any.whl" in dist_files(mirror_dir)  # the true file is kept
        assert not [p for p in mirror_dir.iterdir() if p.name.startswith(".")]
        assert all(upstream.authorized(sent) for _path, sent in upstream.requests[-5:])


def test_mirror_into_another_directory_checks_that_directory(tmp_path: Path):
    """``-d OTHER`` gets every file it lacks, even those the index's own packages directory has."""
    upstream_dir, packages, other = tmp_path / "upstream", tmp_path / "packages", tmp_path / "other"
    wheel = make_wheel(upstream_dir, "solo", "1.0")
    sdist = make_sdist(upstream_dir, "solo", "1.0")
    packages.mkdir()
    (packages / wheel.name).write_bytes(wheel.read_bytes())  # ./packages has the wheel, OTHER has nothing
    env = client_env(tmp_path / "home", WHARF_PACKAGES=str(packages))
    with WharfProcess(upstream_dir) as upstream:
        index = ["--index-url", upstream.url + "/simple/"]
        run = wharf_mirror(env, *index, "solo", "-d", str(other))
        assert run.returncode == 0, run.stdout + run.stderr
        assert dist_files(other) == {wheel.name, sdist.name}
        assert "added 2 files" in run.stdout and "0 already there" in run.stdout
        assert (other / wheel.name).read_bytes() == wheel.read_bytes()

        # A DEST that is one of the index's packages directories counts the others as there: the
        # index serves them all, so nothing is copied twice.
        second = tmp_path / "second"
        env["WHARF_PACKAGES"] = f"{packages},{second}"
        run = wharf_mirror(env, *index, "solo", "-d", str(second))
        assert run.returncode == 0, run.stdout + run.stderr
        assert dist_files(second) == {sdist.name}
        assert "added 1 file " in run.stdout and "1 already there" in run.stdout
