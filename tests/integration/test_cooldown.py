"""The upstream cooldown with real pip, uv and `wharf mirror`, against an upstream whose upload times we set."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support import ROOT, WharfProcess, client_env, http, make_wheel
from tests.upstreams import TinyIndex, _project_of, _wheel_metadata

pytestmark = pytest.mark.slow

NOW = datetime.now(timezone.utc)
JSON = "application/vnd.pypi.simple.v1+json"


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TimedIndex(TinyIndex):
    """A TinyIndex that answers PEP 691 JSON with the PEP 700 upload times given (None: none)."""

    def __init__(self, files: list[Path], times: dict[str, str | None]):
        super().__init__(files)
        self.times = times

    def _page(self, start_response, project: str):
        entries = []
        for name, data in sorted(self.files.items()):
            if _project_of(name) != project:
                continue
            entry = {"filename": name, "url": f"../../files/{quote(name)}",
                     "hashes": {"sha256": hashlib.sha256(data).hexdigest()}, "size": len(data),
                     "core-metadata": {"sha256": hashlib.sha256(_wheel_metadata(data)).hexdigest()}}
            if self.times.get(name):
                entry["upload-time"] = self.times[name]
            entries.append(entry)
        body = json.dumps({"meta": {"api-version": "1.1"}, "name": project, "files": entries}).encode()
        return self._send(start_response, body, JSON)


@pytest.fixture
def upstream(tmp_path: Path):
    src = tmp_path / "src"
    times = {}
    for name, version, when in (("fresh", "1.0", ago(30)), ("fresh", "1.5", ago(15)), ("fresh", "2.0", ago(1 / 24)),
                                ("fresh", "3.0", None), ("exempted", "1.0", ago(30)), ("exempted", "2.0", ago(1))):
        times[make_wheel(src, name, version).name] = when
    index = TimedIndex(sorted(src.iterdir()), times)
    yield index
    index.stop()


def files_on(page: bytes) -> list[str]:
    return [f["filename"] for f in json.loads(page)["files"]]


def pip_download(tmp_path: Path, index: str, *reqs: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    dest = tmp_path / f"dl-{len(list(tmp_path.glob('dl-*')))}"
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "0", "-d", str(dest),
                           "--index-url", index, *reqs], env=client_env(tmp_path / "home"),
                          capture_output=True, text=True, timeout=300)
    return done, sorted(p.name for p in dest.glob("*.whl"))


def uv_resolve(tmp_path: Path, index: str, req: str) -> str:
    uv = shutil.which("uv") or "uv"
    reqs = tmp_path / "req.in"
    reqs.write_text(req + "\n")
    done = subprocess.run([uv, "pip", "compile", "--no-header", "--index-url", index, str(reqs)],
                          env=client_env(tmp_path / "uv-home"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pip_and_uv_resolve_to_old_files_and_new_ones_are_refused(tmp_path: Path, upstream: TimedIndex):
    local = tmp_path / "local"
    local.mkdir()
    make_wheel(local, "localpkg", "1.0")  # uploaded now: local projects are never held back
    with WharfProcess(local, "--upstream-url", upstream.url(), "--upstream-min-age", "7d",
                      "--upstream-exempt", "exempt*") as wharf:
        index = wharf.url + "/simple/"
        status, _h, page = http(index + "fresh/", headers={"Accept": JSON})
        assert status == 200 and files_on(page) == ["fresh-1.0-py3-none-any.whl", "fresh-1.5-py3-none-any.whl"]
        assert b"fresh-2.0" not in http(index + "fresh/")[2]  # the HTML page too
        assert files_on(http(index + "exempted/", headers={"Accept": JSON})[2]) == [
            "exempted-1.0-py3-none-any.whl", "exempted-2.0-py3-none-any.whl"]
        assert files_on(http(index + "localpkg/", headers={"Accept": JSON})[2]) == ["localpkg-1.0-py3-none-any.whl"]

        done, got = pip_download(tmp_path, index, "fresh", "exempted")
        assert done.returncode == 0, done.stderr
        assert got == ["exempted-2.0-py3-none-any.whl", "fresh-1.5-py3-none-any.whl"]
        assert "fresh==1.5" in uv_resolve(tmp_path, index, "fresh")

        # Straight at the file URLs: 403, saying why and when.
        status, _h, body = http(wharf.url + "/upstream/fresh/fresh-2.0-py3-none-any.whl")
        available = (datetime.fromisoformat(ago(1 / 24)) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
        assert status == 403 and b"upstream_min_age 7d" in body and available.encode() in body, body
        status, _h, body = http(wharf.url + "/upstream/fresh/fresh-2.0-py3-none-any.whl.metadata")
        assert status == 403 and b"becomes available" in body
        status, _h, body = http(wharf.url + "/upstream/fresh/fresh-3.0-py3-none-any.whl")
        assert status == 403 and b"no upload time" in body and b"does not become available by waiting" in body

        policy = json.loads(http(wharf.url + "/health")[2])["upstream"]["cooldown"]
        assert policy["min_age"] == "7d" and policy["exempt"] == ["exempt*"] and policy["untimed"] == "hide"
        assert b'id="upstream-cooldown"' in http(wharf.url + "/")[2]
        log = wharf.log()
        assert "cooldown: download of fresh-2.0-py3-none-any.whl refused: upstream_min_age 7d" in log
        assert "cooldown: listing of fresh-3.0-py3-none-any.whl refused: upstream_untimed hide" in log


def test_break_glass_pin_cutoff_and_tightened_policy_on_cached_files(tmp_path: Path, upstream: TimedIndex):
    local = tmp_path / "local"
    local.mkdir()
    base = ("--upstream-url", upstream.url(), "--upstream-max-age", "0")
    # No cooldown yet: fresh-2.0 is fetched and cached.
    with WharfProcess(local, *base) as wharf:
        assert http(wharf.url + "/upstream/fresh/fresh-2.0-py3-none-any.whl")[0] == 200
    # Tightened: the cached copy is not served; a break-glass pin lets one release through, logged.
    with WharfProcess(local, *base, "--upstream-min-age", "7d") as wharf:
        status, _h, body = http(wharf.url + "/upstream/fresh/fresh-2.0-py3-none-any.whl")
        assert status == 403 and b"becomes available" in body
    with WharfProcess(local, *base, "--upstream-min-age", "7d", "--upstream-allow-early", "fresh==2.0") as wharf:
        index = wharf.url + "/simple/"
        assert "fresh-2.0-py3-none-any.whl" in files_on(http(index + "fresh/", headers={"Accept": JSON})[2])
        done, got = pip_download(tmp_path, index, "fresh==2.0")
        assert done.returncode == 0 and got == ["fresh-2.0-py3-none-any.whl"], done.stderr
        assert "allowed early: upstream_allow_early fresh==2.0" in wharf.log()
    # A fixed cutoff 20 days back: only what was uploaded before it.
    with WharfProcess(local, *base, "--upstream-exclude-newer", ago(20)) as wharf:
        index = wharf.url + "/simple/"
        assert files_on(http(index + "fresh/", headers={"Accept": JSON})[2]) == ["fresh-1.0-py3-none-any.whl"]
        done, got = pip_download(tmp_path, index, "fresh")
        assert done.returncode == 0 and got == ["fresh-1.0-py3-none-any.whl"], done.stderr
        status, _h, body = http(wharf.url + "/upstream/fresh/fresh-1.5-py3-none-any.whl")
        assert status == 403 and b"upstream_exclude_newer" in body


def test_wharf_mirror_honours_the_cooldown(tmp_path: Path, upstream: TimedIndex):
    dest = tmp_path / "mirror"

    def mirror(*args: str, **env: str) -> subprocess.CompletedProcess:
        full = client_env(tmp_path / "home", **env, WHARF_PACKAGES=str(dest))
        return subprocess.run([sys.executable, "-m", "app", "mirror", "--index-url", upstream.url(), "--no-sdist",
                               *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)

    done = mirror("fresh", "exempted", WHARF_UPSTREAM_MIN_AGE="7d")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in dest.iterdir() if p.suffix == ".whl") == [
        "exempted-1.0-py3-none-any.whl", "fresh-1.5-py3-none-any.whl"]
    # An exact pin of a held-back release is not mirrored: pip finds nothing old enough.
    done = mirror("fresh==2.0", WHARF_UPSTREAM_MIN_AGE="7d")
    assert done.returncode == 1 and "fresh-2.0" not in {p.name for p in dest.iterdir()}
    done = mirror("fresh", WHARF_UPSTREAM_EXCLUDE_NEWER=ago(20))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (dest / "fresh-1.0-py3-none-any.whl").exists()
