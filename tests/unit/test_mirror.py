"""app/mirror/ (and its command's progress line in app/cli.py): targets, pip's command, lock files, and a lock-file mirror run (no pip needed)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from app.mirror.resolve import (
    MirrorError,
    Target,
    Wanted,
    _for_target,
    is_pylock,
    missing_requirements,
    pip_command,
    read_pylock,
    target_environment,
    targets,
)
from app.mirror.run import _lock_conflict, existing_files, mirror, sdist_of
from app.mirror.progress import TerminalProgress
from app.storage import LocalStorage
from app.upstream.client import UpstreamIndex
from app.upstream.listings import Listing, UpstreamFile
from tests.support import make_sdist, make_wheel
from tests.upstreams import TinyIndex


def test_targets_are_every_python_version_and_platform_pair():
    assert targets([], []) == [Target()]
    found = targets(["3.11", "3.12", "3.11"], ["win_amd64", "manylinux_2_17_x86_64,manylinux2014_x86_64"])
    assert [(t.python_version, t.platforms) for t in found] == [
        ("3.11", ("win_amd64",)), ("3.11", ("manylinux_2_17_x86_64", "manylinux2014_x86_64")),
        ("3.12", ("win_amd64",)), ("3.12", ("manylinux_2_17_x86_64", "manylinux2014_x86_64")),
    ]
    assert str(found[1]) == "Python 3.11 manylinux_2_17_x86_64/manylinux2014_x86_64"


def test_pip_is_isolated_and_wheel_only_for_other_targets(tmp_path: Path):
    native = pip_command("https://up/simple/", None, 15, Target(), ["a>=1"], [], tmp_path)
    assert native[native.index("-m") + 1:native.index("-m") + 4] == ["pip", "--isolated", "install"]
    assert "--dry-run" in native and "--only-binary=:all:" not in native and native[-1] == "a>=1"
    assert native[native.index("--index-url") + 1] == "https://up/simple/"
    other = pip_command("https://up/simple/", Path("ca.pem"), 15, Target("3.12", ("win_amd64",), "cp", ("cp312",)),
                        [], [Path("req.txt")], tmp_path, retries=0)
    for pair in (["--retries", "0"], ["--python-version", "3.12"], ["--platform", "win_amd64"], ["--implementation", "cp"],
                 ["--abi", "cp312"], ["--cert", "ca.pem"], ["-r", "req.txt"]):
        at = other.index(pair[0])
        assert other[at:at + 2] == pair
    assert "--only-binary=:all:" in other


@pytest.mark.parametrize("target, expected", [
    (Target("3.12"), {"python_version": "3.12", "python_full_version": "3.12.0"}),
    (Target("313"), {"python_version": "3.13", "python_full_version": "3.13.0"}),
    (Target("3.10.4"), {"python_version": "3.10", "python_full_version": "3.10.4"}),
    (Target(platforms=("win_amd64",)), {"sys_platform": "win32", "os_name": "nt", "platform_machine": "AMD64"}),
    (Target(platforms=("manylinux2014_aarch64",)), {"sys_platform": "linux", "platform_machine": "aarch64"}),
    (Target(platforms=("macosx_11_0_arm64",)), {"sys_platform": "darwin", "platform_machine": "arm64"}),
    (Target(implementation="pp"), {"implementation_name": "pypy", "platform_python_implementation": "PyPy"}),
])
def test_marker_environment_of_a_target(target: Target, expected: dict):
    env = target_environment(target)
    assert {k: env[k] for k in expected} == expected


def _item(name: str, requires: list[str], extras: list[str] | None = None) -> dict:
    item = {"metadata": {"name": name, "version": "1.0", "requires_dist": requires}}
    if extras is not None:
        item["requested_extras"] = extras
    return item


def test_dependencies_pip_judged_by_the_wrong_python_are_found():
    env = target_environment(Target("3.12", ("win_amd64",)))
    items = [
        _item("top", ['new; python_version >= "3.12"', 'old; python_version < "3.12"', "mid",
                      'win-only>=2; sys_platform == "win32"', 'docs; extra == "docs"'], extras=["fast"]),
        _item("mid", ['speed[c]; extra == "fast"', 'Mid-Extra; extra == "more"']),
        _item("top2", ['mid[more]; python_version >= "3.12"']),
    ]
    items[0]["metadata"]["requires_dist"].append('mid[fast]; python_version >= "3.12"')
    assert missing_requirements(items, env) == ["Mid-Extra", "new", "speed[c]", "win-only>=2"]
    assert missing_requirements(items, target_environment(Target("3.11", ("manylinux2014_x86_64",)))) == ["old"]
    assert _for_target(["a; python_version < '3.12'", "b; python_version >= '3.12'", "c>=1", "not a req!"], env) \
        == ["b", "c>=1", "not a req!"]


PYLOCK = '''
lock-version = "1.0"
created-by = "test"

[[packages]]
name = "Demo_Lib"
version = "1.0"
sdist = {url = "https://files.example/demo_lib-1.0.tar.gz", hashes = {sha256 = "AA"}}
wheels = [
  {name = "demo_lib-1.0-py3-none-any.whl", url = "https://files.example/x.whl", hashes = {sha256 = "bb"}},
]
'''


def test_pylock_names_exact_files_with_hashes(tmp_path: Path):
    lock = tmp_path / "pylock.toml"
    lock.write_text(PYLOCK)
    assert is_pylock(lock) and is_pylock(tmp_path / "pylock.dev.toml") and not is_pylock(tmp_path / "req.txt")
    assert read_pylock(lock) == [
        Wanted("demo-lib", "1.0", "demo_lib-1.0-py3-none-any.whl", {"sha256": "bb"}),
        Wanted("demo-lib", "1.0", "demo_lib-1.0.tar.gz", {"sha256": "aa"}),
    ]
    lock.write_text('lock-version = "1.0"\n[[packages]]\nname = "x"\nvcs = {type = "git", url = "u"}\n')
    with pytest.raises(MirrorError, match="cannot be mirrored"):
        read_pylock(lock)
    lock.write_text("not toml [")
    with pytest.raises(MirrorError, match="cannot read"):
        read_pylock(lock)


def test_sdist_of_picks_the_versions_tar_gz():
    files = tuple(UpstreamFile(name, f"https://x/{name}", {}) for name in
                  ("demo-1.0.zip", "demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl", "demo-2.0.tar.gz"))
    listing = Listing("demo", files)
    assert sdist_of(listing, "1.0").filename == "demo-1.0.tar.gz"
    assert sdist_of(listing, "1.0.0").filename == "demo-1.0.tar.gz"  # versions compare, not strings
    assert sdist_of(listing, "3.0") is None


def test_existing_files_skips_dot_folders(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".wharf" / "upstream").mkdir(parents=True)
    for path in ("a-1.0.tar.gz", "sub/b-1.0.tar.gz", ".wharf/upstream/c-1.0.tar.gz", ".upload-x.part"):
        (tmp_path / path).write_text("x")
    assert existing_files(LocalStorage((tmp_path,))) == {"a-1.0.tar.gz", "b-1.0.tar.gz"}


def test_lock_hashes_must_agree_with_the_listing():
    entry = UpstreamFile("a-1.0.tar.gz", "u", {"sha256": "AB"})
    assert _lock_conflict(Wanted("a", "1.0", "a-1.0.tar.gz", {"sha256": "ab"}), entry) is None
    assert _lock_conflict(Wanted("a", "1.0", "a-1.0.tar.gz", {}), entry) is None
    assert "differs" in _lock_conflict(Wanted("a", "1.0", "a-1.0.tar.gz", {"sha256": "cd"}), entry)
    assert "none of" in _lock_conflict(Wanted("a", "1.0", "a-1.0.tar.gz", {"sha512": "cd"}), entry)


def test_progress_draws_only_on_a_terminal():
    quiet, loud = io.StringIO(), io.StringIO()
    for stream, enabled in ((quiet, False), (loud, True)):
        progress = TerminalProgress(stream, enabled)
        progress.show("[1/2] a.whl", 2000)
        progress.advance(1500)
        progress.clear()
    assert quiet.getvalue() == ""
    assert "\r\033[K[1/2] a.whl 1.5 kB/2.0 kB" in loud.getvalue()


def _pylock(path: Path, files: list[Path]) -> Path:
    lines = ['lock-version = "1.0"', 'created-by = "test"']
    for f in files:
        lines += ["[[packages]]", 'name = "demo"', 'version = "1.0"']
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        kind = "wheels = [{" if f.name.endswith(".whl") else "sdist = {"
        lines.append(f'{kind}name = "{f.name}", hashes = {{sha256 = "{digest}"}}' + ("}]" if "[" in kind else "}"))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_lock_file_mirror_verifies_links_into_place_and_is_idempotent(tmp_path: Path):
    src, dest = tmp_path / "src", tmp_path / "packages"
    wheel, sdist = make_wheel(src, "demo", "1.0"), make_sdist(src, "demo", "1.0")
    lock = _pylock(tmp_path / "pylock.toml", [wheel, sdist])
    with TinyIndex([wheel, sdist], lies={sdist.name: b"evil"}) as upstream:
        index = UpstreamIndex(upstream.url())
        run = dict(index_url=upstream.url(), cert=None, timeout=5, requirements=[], requirement_files=[lock],
                   target_list=[Target()])
        first = mirror(index, LocalStorage((dest,)), **run)
        assert [name for name, _size in first.added] == [wheel.name]
        assert len(first.errors) == 1 and sdist.name in first.errors[0] and "sha256" in first.errors[0]
        assert sorted(p.name for p in dest.iterdir()) == [wheel.name]  # no sdist, no temporary file
        assert (dest / wheel.name).read_bytes() == wheel.read_bytes()

        upstream.lies.clear()
        second = mirror(index, LocalStorage((dest,)), **run)
        assert [name for name, _size in second.added] == [sdist.name] and second.present == [wheel.name]
        assert not second.errors
        third = mirror(index, LocalStorage((dest,)), **run)
        assert not third.added and sorted(third.present) == sorted([wheel.name, sdist.name])
        asked = len(upstream.requests)
        mirror(index, LocalStorage((dest,)), **run)
        assert not any(path.startswith("/files/") for path, _ in upstream.requests[asked:])  # nothing downloaded
