"""Distribution filenames and bounded core-metadata reads (app/dists.py)."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from app.dists import (
    MAX_METADATA_BYTES,
    CoreMetadata,
    InvalidDistribution,
    check_archive,
    has_dist_suffix,
    parse_filename,
    read_core_metadata,
)
from tests.support import core_metadata, make_sdist, make_wheel


def metadata_in(path: Path, dist):
    """read_core_metadata on a file, as the catalog reads one from storage."""
    with open(path, "rb") as stream:
        return read_core_metadata(stream, dist, path.name)


def check_file(path: Path, dist):
    """check_archive on a file, as an upload is checked before it is published."""
    with open(path, "rb") as stream:
        check_archive(stream, path.stat().st_size, dist, path.name)


@pytest.mark.parametrize(
    ("filename", "project", "name", "version", "packagetype"),
    [
        ("foo-1.0-py3-none-any.whl", "foo", "foo", "1.0", "bdist_wheel"),
        ("Foo_Bar-2.0.post1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
         "foo-bar", "Foo_Bar", "2.0.post1", "bdist_wheel"),
        ("foo_bar-1.0-1build-py2.py3-none-any.whl", "foo-bar", "foo_bar", "1.0", "bdist_wheel"),
        ("top_level-3.0rc1-py3-none-any.whl", "top-level", "top_level", "3.0rc1", "bdist_wheel"),
        ("foo-bar-1.0.tar.gz", "foo-bar", "foo-bar", "1.0", "sdist"),
        ("Foo.Bar-1.0.zip", "foo-bar", "Foo.Bar", "1.0", "sdist"),
        ("foo_bar-1!2.0+local.7.tar.gz", "foo-bar", "foo_bar", "1!2.0+local.7", "sdist"),
        ("legacy-0.9.tar.bz2", "legacy", "legacy", "0.9", "sdist"),
        ("Legacy_Thing-0.9.tgz", "legacy-thing", "Legacy_Thing", "0.9", "sdist"),
        ("legacy-0.9.tar.xz", "legacy", "legacy", "0.9", "sdist"),
        ("legacy-0.9.tar", "legacy", "legacy", "0.9", "sdist"),
        ("Old_Egg-1.2-py2.7.egg", "old-egg", "Old_Egg", "1.2", "bdist_egg"),
        ("oldegg-1.2.egg", "oldegg", "oldegg", "1.2", "bdist_egg"),
        ("foo-1.0.win32.exe", "foo", "foo", "1.0", "bdist_wininst"),
        ("Foo_Bar-1.0.win-amd64-py2.7.exe", "foo-bar", "Foo_Bar", "1.0", "bdist_wininst"),
        ("foo-1.0.win32.msi", "foo", "foo", "1.0", "bdist_msi"),
    ],
)
def test_parse_filename(filename, project, name, version, packagetype):
    dist = parse_filename(filename)
    assert (dist.project, dist.name, dist.version, dist.packagetype) == (project, name, Version(version), packagetype)
    assert has_dist_suffix(filename)


@pytest.mark.parametrize(
    "filename",
    [
        "",
        "foo.whl",
        "foo-1.0.whl",
        "foo-1.0-py3-none.whl",
        "foo-notaversion-py3-none-any.whl",
        "foo__bar-1.0-py3-none-any.whl",  # not a normalized wheel name
        "foo.tar.gz",
        "foo-.tar.gz",
        "foo-notaversion.tar.gz",
        "foo-1.0.txt",
        "foo-1.0.tar.gz.metadata",
        "foo-1.0-py3-none-any.whl.metadata",
        "foo.egg",
        "foo-bad!version.egg",
        "foo-1.0.exe",
        "setup.exe",
        "../foo-1.0.tar.gz",
        "dir/foo-1.0.tar.gz",
        "dir\\foo-1.0.tar.gz",
        ".foo-1.0.tar.gz",
        "foo-1.0.tar.gz\0",
        "foo\0-1.0-py3-none-any.whl",
    ],
)
def test_invalid_filenames_raise(filename):
    with pytest.raises(InvalidDistribution):
        parse_filename(filename)


def test_invalid_distribution_is_a_value_error():
    # Callers that only know ValueError (settings, CLI) still catch it.
    assert issubclass(InvalidDistribution, ValueError)


# --- reading core metadata ------------------------------------------------------------------
def _zip_member(path: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(suffix)]
        return archive.read(member)


def test_wheel_metadata_is_byte_identical(tmp_path):
    wheel = make_wheel(tmp_path, "Foo.Bar", "1.0", requires_python=">=3.8", requires=("idna>=2",),
                       description="# Hello\r\n\nnon-ascii: \u00e9\u00e8 \u2603\n")
    data = metadata_in(wheel, parse_filename(wheel.name))
    assert data == _zip_member(wheel, ".dist-info/METADATA")
    meta = CoreMetadata.parse(data)
    assert (meta.name, meta.version, meta.requires_python) == ("Foo.Bar", "1.0", ">=3.8")
    assert meta.raw["requires_dist"] == ["idna>=2"]


def test_tar_gz_sdist_metadata(tmp_path):
    sdist = make_sdist(tmp_path, "mid-lib", "2.1", requires_python=">=3.9", summary="middle")
    data = metadata_in(sdist, parse_filename(sdist.name))
    with tarfile.open(sdist) as archive:
        assert data == archive.extractfile("mid_lib-2.1/PKG-INFO").read()
    meta = CoreMetadata.parse(data)
    assert (meta.name, meta.version, meta.summary, meta.requires_python) == ("mid-lib", "2.1", "middle", ">=3.9")


def _write_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _write_tar(path: Path, members: dict[str, bytes], mode: str) -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(("suffix", "mode"), [(".tar.bz2", "w:bz2"), (".tgz", "w:gz"), (".tar.xz", "w:xz")])
def test_legacy_tar_sdist_metadata(tmp_path, suffix, mode):
    pkg_info = core_metadata("legacy", "0.9").encode()
    path = _write_tar(tmp_path / f"legacy-0.9{suffix}", {"legacy-0.9/setup.py": b"", "legacy-0.9/PKG-INFO": pkg_info}, mode)
    assert metadata_in(path, parse_filename(path.name)) == pkg_info
    check_file(path, parse_filename(path.name))


def test_zip_sdist_metadata(tmp_path):
    pkg_info = core_metadata("Zipped", "1.0").encode()
    path = _write_zip(tmp_path / "Zipped-1.0.zip", {"Zipped-1.0/setup.py": b"", "Zipped-1.0/PKG-INFO": pkg_info,
                                                    "Zipped-1.0/sub/PKG-INFO": b"Name: wrong\n"})
    assert metadata_in(path, parse_filename(path.name)) == pkg_info


def test_sdist_without_pkg_info_has_no_metadata(tmp_path):
    path = _write_tar(tmp_path / "bare-1.0.tar.gz", {"bare-1.0/setup.py": b"", "bare-1.0/sub/PKG-INFO": b"x"}, "w:gz")
    assert metadata_in(path, parse_filename(path.name)) is None


def test_egg_has_no_metadata(tmp_path):
    path = _write_zip(tmp_path / "old-1.0-py2.7.egg", {"EGG-INFO/PKG-INFO": b"Name: old\n"})
    assert metadata_in(path, parse_filename(path.name)) is None


def test_wheel_with_two_dist_infos_picks_its_own(tmp_path):
    mine = core_metadata("foo", "1.0").encode()
    path = _write_zip(tmp_path / "foo-1.0-py3-none-any.whl", {
        "bar-2.0.dist-info/METADATA": core_metadata("bar", "2.0").encode(),
        "foo-1.0.dist-info/METADATA": mine,
    })
    assert metadata_in(path, parse_filename(path.name)) == mine


def test_wheel_without_metadata_is_invalid(tmp_path):
    path = _write_zip(tmp_path / "foo-1.0-py3-none-any.whl", {"foo/__init__.py": b"",
                                                             "foo-1.0.dist-info/nested/METADATA": b"x"})
    with pytest.raises(InvalidDistribution):
        metadata_in(path, parse_filename(path.name))
    with pytest.raises(InvalidDistribution):
        check_file(path, parse_filename(path.name))


# --- hostile and broken archives: refused, without reading them whole -------------------------
def _zeros_bomb(path: Path, member: str, size: int) -> Path:
    """A zip whose one member inflates to ``size`` zero bytes (stored compressed ~1000:1)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open(member, "w", force_zip64=True) as stream:
            chunk = bytes(1024 * 1024)
            for _ in range(size // len(chunk)):
                stream.write(chunk)
    return path


def _lie_about_size(path: Path, member: str, claimed: int) -> None:
    """Rewrite the uncompressed size that the local and central headers give for ``member``."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(member).header_offset
    assert data[local:local + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, local + 22, claimed)
    central = data.rfind(b"PK\x01\x02")
    while central != -1 and data[central + 46:central + 46 + len(name)] != name:
        central = data.rfind(b"PK\x01\x02", 0, central)
    assert central != -1
    struct.pack_into("<I", data, central + 24, claimed)
    path.write_bytes(bytes(data))


@pytest.mark.timeout(30)
def test_zip_bomb_metadata_is_refused(tmp_path):
    path = _zeros_bomb(tmp_path / "bomb-1.0-py3-none-any.whl", "bomb-1.0.dist-info/METADATA", 64 * 1024 * 1024)
    assert path.stat().st_size < 1024 * 1024
    with pytest.raises(InvalidDistribution, match="too large"):
        metadata_in(path, parse_filename(path.name))
    with pytest.raises(InvalidDistribution, match="too large"):
        check_file(path, parse_filename(path.name))


@pytest.mark.timeout(30)
def test_zip_bomb_that_lies_about_its_size_is_refused(tmp_path):
    # The headers claim 100 bytes; the stream would inflate to 64 MiB. Only the claimed
    # bytes may be read, and then the CRC no longer matches.
    path = tmp_path / "liar-1.0-py3-none-any.whl"
    member = "liar-1.0.dist-info/METADATA"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr(member, bytes(64 * 1024 * 1024))
    _lie_about_size(path, member, 100)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo(member).file_size == 100
    with pytest.raises(InvalidDistribution):
        metadata_in(path, parse_filename(path.name))
    with pytest.raises(InvalidDistribution):
        check_file(path, parse_filename(path.name))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_huge_metadata_is_refused(tmp_path, method):
    big = core_metadata("huge", "1.0").encode() + b"\n" + os.urandom(MAX_METADATA_BYTES // 2).hex().encode()
    assert len(big) > MAX_METADATA_BYTES
    path = _write_zip(tmp_path / "huge-1.0-py3-none-any.whl", {"huge-1.0.dist-info/METADATA": big}, method)
    with pytest.raises(InvalidDistribution, match="too large"):
        metadata_in(path, parse_filename(path.name))


def test_huge_pkg_info_is_refused(tmp_path):
    big = b"Name: huge\n" + b"x" * (MAX_METADATA_BYTES + 10)
    path = _write_tar(tmp_path / "huge-1.0.tar.gz", {"huge-1.0/PKG-INFO": big}, "w:gz")
    with pytest.raises(InvalidDistribution, match="too large"):
        metadata_in(path, parse_filename(path.name))


def test_truncated_wheel_is_invalid(tmp_path):
    good = make_wheel(tmp_path / "src", "cut", "1.0", padding=20_000)
    path = tmp_path / good.name
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InvalidDistribution):
        metadata_in(path, parse_filename(path.name))
    with pytest.raises(InvalidDistribution):
        check_file(path, parse_filename(path.name))


def test_truncated_sdist_is_invalid(tmp_path):
    good = make_sdist(tmp_path / "src", "cut", "1.0")
    path = tmp_path / good.name
    path.write_bytes(good.read_bytes()[:40])
    with pytest.raises(InvalidDistribution):
        metadata_in(path, parse_filename(path.name))
    with pytest.raises(InvalidDistribution):
        check_file(path, parse_filename(path.name))


@pytest.mark.parametrize("content", [b"", b"not a zip at all\n" * 100, b"PK\x03\x04" + os.urandom(2000),
                                     b"\x1f\x8b\x08\x00" + os.urandom(200)])
@pytest.mark.parametrize("filename", ["junk-1.0-py3-none-any.whl", "junk-1.0.zip", "junk-1.0.tar.gz", "junk-1.0.tar.bz2"])
def test_not_an_archive_is_invalid(tmp_path, content, filename):
    path = tmp_path / filename
    path.write_bytes(content)
    dist = parse_filename(filename)
    with pytest.raises(InvalidDistribution):
        metadata_in(path, dist)
    with pytest.raises(InvalidDistribution):
        check_file(path, dist)


def test_corrupt_wheel_member_fails_check(tmp_path):
    wheel = make_wheel(tmp_path, "rot", "1.0", padding=5000)
    data = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo("rot/padding.bin")
    # Flip bytes in the middle of the stored padding: the archive still opens, the CRC fails.
    middle = info.header_offset + 30 + len(info.filename) + 2500
    data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
    wheel.write_bytes(bytes(data))
    with pytest.raises(InvalidDistribution):
        check_file(wheel, parse_filename(wheel.name))


def test_valid_archives_pass_check(tmp_path):
    for path in (make_wheel(tmp_path, "ok", "1.0"), make_sdist(tmp_path, "ok", "1.0")):
        check_file(path, parse_filename(path.name))


@pytest.mark.slow
def test_zip_bomb_upload_check_stops_at_its_budget(tmp_path):
    """A small wheel that inflates to 300 MiB is refused without inflating all of it."""
    wheel = make_wheel(tmp_path, "bomb", "1.0")
    with zipfile.ZipFile(wheel, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb/zeros.bin", "w", force_zip64=True) as stream:
            block = bytes(1024 * 1024)
            for _ in range(300):
                stream.write(block)
    assert wheel.stat().st_size < 2 * 1024 * 1024
    with pytest.raises(InvalidDistribution, match="zip bomb"):
        check_file(wheel, parse_filename(wheel.name))
