"""Distribution files: what their names say and what their core metadata holds.

Filenames are parsed with ``packaging``; metadata is read from inside wheels (METADATA) and
sdists (PKG-INFO) with bounded reads, so a hostile archive costs little time or memory.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from packaging.metadata import parse_email
from packaging.utils import (
    InvalidName,
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

# Largest core-metadata file we read (a wheel's METADATA; real ones are < 1 MiB).
MAX_METADATA_BYTES = 8 * 1024 * 1024
# How far into an sdist we look for PKG-INFO before giving up.
MAX_TAR_MEMBERS = 1000
MAX_TAR_OFFSET = 64 * 1024 * 1024
# Most members an uploaded archive may have (the biggest wheels on PyPI have ~30,000).
MAX_ARCHIVE_MEMBERS = 100_000

# A PEP 658 core metadata file is served at its distribution's URL plus this.
METADATA_SUFFIX = ".metadata"

SDIST_SUFFIXES = (".tar.gz", ".zip")
# Older formats pypiserver also serves; pip no longer installs most of them but
# a private index must keep serving what people put there.
LEGACY_SDIST_SUFFIXES = (".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar")
SUFFIXES = (".whl", *SDIST_SUFFIXES, *LEGACY_SDIST_SUFFIXES, ".egg", ".exe", ".msi")

_WININST = re.compile(
    r"^(?P<name>.+?)-(?P<version>[0-9][^-]*?)\.(?:win32|win-amd64|win-arm64|linux-[^.]+|macosx[^.]*)"
    r"(?:-py[0-9.]+)?\.(?:exe|msi)$"
)


class InvalidDistribution(ValueError):
    """A file that is not a distribution we can serve."""


@dataclass(frozen=True, slots=True)
class DistName:
    """What a distribution's filename says."""

    project: str  # normalized per PEP 503
    name: str  # as spelled in the filename
    version: Version
    packagetype: str  # Warehouse's names: bdist_wheel, sdist, bdist_egg, ...


def project_name(name: str) -> str | None:
    """The PEP 503 form of a valid PEP 508 project name, or None if ``name`` is not one."""
    try:
        return canonicalize_name(name, validate=True)
    except InvalidName:
        return None


def has_dist_suffix(filename: str) -> bool:
    return filename.lower().endswith(SUFFIXES)


def parse_filename(filename: str) -> DistName:
    """Parse a distribution filename, raising InvalidDistribution if it is not one."""
    if "/" in filename or "\\" in filename or "\0" in filename or filename.startswith("."):
        raise InvalidDistribution(f"not a plain file name: {filename!r}")
    lower = filename.lower()
    try:
        if lower.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return DistName(name, filename.split("-", 1)[0], version, "bdist_wheel")
        if lower.endswith(SDIST_SUFFIXES):
            name, version = parse_sdist_filename(filename)
            return DistName(name, _stem(filename).rpartition("-")[0], version, "sdist")
        for suffix in LEGACY_SDIST_SUFFIXES:
            if lower.endswith(suffix):
                stem = filename[: -len(suffix)]
                name, version = parse_sdist_filename(stem + ".tar.gz")
                return DistName(name, stem.rpartition("-")[0], version, "sdist")
        if lower.endswith(".egg"):
            parts = filename[:-4].split("-")
            if len(parts) < 2:
                raise InvalidDistribution(f"not an egg name: {filename!r}")
            return DistName(canonicalize_name(parts[0]), parts[0], Version(parts[1]), "bdist_egg")
        match = _WININST.match(filename)
        if match:
            kind = "bdist_msi" if lower.endswith(".msi") else "bdist_wininst"
            name = match["name"]
            return DistName(canonicalize_name(name), name, Version(match["version"]), kind)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion) as exc:
        raise InvalidDistribution(f"{filename!r}: {exc}") from None
    raise InvalidDistribution(f"not a distribution file name: {filename!r}")


def _stem(filename: str) -> str:
    lower = filename.lower()
    for suffix in SDIST_SUFFIXES:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _read_capped(stream, what: str) -> bytes:
    data = stream.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise InvalidDistribution(f"{what} is larger than {MAX_METADATA_BYTES} bytes")
    return data


def read_core_metadata(stream: BinaryIO, dist: DistName, filename: str) -> bytes | None:
    """The core metadata file inside a wheel or sdist, byte for byte, or None.

    ``stream`` is the archive, seekable, read from its start; ``filename`` names it in
    errors. Raises InvalidDistribution for an archive that is not readable as its kind.
    """
    try:
        stream.seek(0)
        if dist.packagetype == "bdist_wheel":
            return _wheel_metadata(stream, dist, filename)
        if dist.packagetype == "sdist" and filename.lower().endswith(".zip"):
            return _zip_pkg_info(stream, filename)
        if dist.packagetype == "sdist":
            return _tar_pkg_info(stream, filename)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, InvalidDistribution):
            raise
        raise InvalidDistribution(f"{filename}: unreadable archive ({exc})") from None
    return None


def _wheel_metadata(stream: BinaryIO, dist: DistName, filename: str) -> bytes:
    with zipfile.ZipFile(stream) as archive:
        candidates = [
            info
            for info in archive.infolist()
            if info.filename.count("/") == 1 and info.filename.endswith(".dist-info/METADATA")
        ]
        if len(candidates) > 1:
            want = canonicalize_name(dist.project)
            candidates = [
                info
                for info in candidates
                if canonicalize_name(info.filename.split("/")[0].removesuffix(".dist-info").rsplit("-", 1)[0]) == want
            ]
        if len(candidates) != 1:
            raise InvalidDistribution(f"{filename}: no single .dist-info/METADATA in the wheel")
        info = candidates[0]
        if info.file_size > MAX_METADATA_BYTES:
            raise InvalidDistribution(f"{filename}: METADATA is too large")
        with archive.open(info) as member:
            return _read_capped(member, "METADATA")


def _zip_pkg_info(stream: BinaryIO, filename: str) -> bytes | None:
    with zipfile.ZipFile(stream) as archive:
        for info in archive.infolist()[:MAX_TAR_MEMBERS]:
            if info.filename.count("/") == 1 and info.filename.endswith("/PKG-INFO"):
                if info.file_size > MAX_METADATA_BYTES:
                    raise InvalidDistribution(f"{filename}: PKG-INFO is too large")
                with archive.open(info) as member:
                    return _read_capped(member, "PKG-INFO")
    return None


_TAR_MODES = {".tar.gz": "r:gz", ".tgz": "r:gz", ".tar.bz2": "r:bz2", ".tbz": "r:bz2",
              ".tar.xz": "r:xz", ".txz": "r:xz", ".tar": "r:"}


def _tar_mode(filename: str) -> str:
    """The one compression a tar's name says: guessing ("r:*") would let lzma chew through
    gigabytes of a .tar.gz that is not gzip before giving up (a minute per GiB here)."""
    lower = filename.lower()
    return next((mode for suffix, mode in _TAR_MODES.items() if lower.endswith(suffix)), "r:*")


def _tar_pkg_info(stream: BinaryIO, filename: str) -> bytes | None:
    with tarfile.open(fileobj=stream, mode=_tar_mode(filename)) as archive:
        for count, member in enumerate(archive):
            if count >= MAX_TAR_MEMBERS or member.offset_data > MAX_TAR_OFFSET:
                return None
            if member.isfile() and member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                if member.size > MAX_METADATA_BYTES:
                    raise InvalidDistribution(f"{filename}: PKG-INFO is too large")
                extracted = archive.extractfile(member)
                return _read_capped(extracted, "PKG-INFO") if extracted else None
            # Going on skips this member, which means inflating all of it (a gzip bomb's
            # gigabytes of zeros): stop before, not after.
            if member.offset_data + member.size > MAX_TAR_OFFSET:
                return None
    return None


def check_archive(stream: BinaryIO, size: int, dist: DistName, filename: str) -> None:
    """Raise InvalidDistribution unless ``stream`` (``size`` bytes) is a readable archive of its kind.

    ``filename`` is the name the file has or will have (its kind, and errors, go by it).
    """
    lower = filename.lower()
    try:
        if dist.packagetype == "bdist_wheel" or lower.endswith((".zip", ".egg")):
            _check_zip_directory(stream, filename)
            stream.seek(0)
            with zipfile.ZipFile(stream) as archive:
                _check_zip_layout(archive, size, filename)
            if dist.packagetype == "bdist_wheel":
                stream.seek(0)
                _wheel_metadata(stream, dist, filename)
        elif lower.endswith(tuple(_TAR_MODES)):
            stream.seek(0)
            with tarfile.open(fileobj=stream, mode=_tar_mode(filename)) as archive:
                _check_tar_layout(archive, size, filename)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, InvalidDistribution):
            raise
        raise InvalidDistribution(f"{filename}: not a readable archive ({exc})") from None


def _decompression_budget(size: int) -> int:
    # Ten times the file, at least 256 MiB, at most 4 GiB: real archives fit, bombs do not.
    return min(max(10 * size, 256 * 1024 * 1024), 4 * 1024 * 1024 * 1024)


def _check_tar_layout(archive: tarfile.TarFile, size: int, name: str) -> None:
    """Walk every member header and read the stream to its end, within a budget.

    The end is where truncation shows (a cut gzip stream, a wrong CRC in its trailer); the
    budget is checked before each member is skipped, since skipping one inflates it.
    """
    budget = _decompression_budget(size)
    count = 0
    while (member := archive.next()) is not None:
        count += 1
        if count > MAX_ARCHIVE_MEMBERS:
            raise InvalidDistribution(f"{name}: more than {MAX_ARCHIVE_MEMBERS} members")
        if member.offset_data + member.size > budget:
            raise InvalidDistribution(f"{name}: decompresses to far more than its size (tar bomb?)")
    if count == 0:
        raise InvalidDistribution(f"{name}: empty archive")
    stream = archive.fileobj
    read = archive.offset
    while chunk := stream.read(1024 * 1024):
        read += len(chunk)
        if read > budget:
            raise InvalidDistribution(f"{name}: decompresses to far more than its size (tar bomb?)")


_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL_ENTRY = b"PK\x01\x02"


def _check_zip_directory(stream: BinaryIO, filename: str) -> None:
    """Count a zip's members in its central directory before zipfile reads them all.

    zipfile builds an object of ~500 bytes for every entry of the central directory,
    whatever count the end record claims: a 100 MB upload of empty members would cost
    the worker gigabytes. Walking the directory here costs no memory.
    """
    size = stream.seek(0, 2)
    tail_size = min(size, 22 + 65535 + 20)  # end record, its comment, the zip64 locator
    stream.seek(size - tail_size)
    tail = stream.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        return  # not a zip: zipfile says so
    directory_size = int.from_bytes(tail[at + 12:at + 16], "little")
    end = size - tail_size + at  # where the directory ends
    locator = at - 20
    if locator >= 0 and tail[locator:locator + 4] == _EOCD64_LOCATOR:
        record = int.from_bytes(tail[locator + 8:locator + 16], "little")
        stream.seek(min(record, size))
        head = stream.read(56)
        if head[:4] == _EOCD64:
            directory_size = int.from_bytes(head[40:48], "little")
            end = size - tail_size + locator - 56  # the zip64 record sits before its locator
    stream.seek(max(end - directory_size, 0))
    count = 0
    while (entry := stream.read(46))[:4] == _CENTRAL_ENTRY and len(entry) == 46:
        count += 1
        if count > MAX_ARCHIVE_MEMBERS:
            raise InvalidDistribution(f"{filename}: more than {MAX_ARCHIVE_MEMBERS} members")
        name, extra, comment = (int.from_bytes(entry[i:i + 2], "little") for i in (28, 30, 32))
        stream.seek(name + extra + comment, 1)


def _check_zip_layout(archive: zipfile.ZipFile, size: int, name: str) -> None:
    """Check every member decompresses with the right CRC, within a budget.

    The budget (ten times the file, at least 256 MiB, at most 4 GiB) lets real wheels
    through and stops a zip bomb from burning minutes of CPU on one upload.
    """
    members = archive.infolist()
    if not members:
        raise InvalidDistribution(f"{name}: empty archive")
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise InvalidDistribution(f"{name}: more than {MAX_ARCHIVE_MEMBERS} members")
    budget = _decompression_budget(size)
    for info in members:
        if info.header_offset + info.compress_size > size:
            raise InvalidDistribution(f"{name}: zip member {info.filename!r} lies outside the file")
        with archive.open(info) as stream:  # zipfile raises BadZipFile on a CRC mismatch
            while chunk := stream.read(1024 * 1024):
                budget -= len(chunk)
                if budget < 0:
                    raise InvalidDistribution(f"{name}: decompresses to far more than its size (zip bomb?)")


@dataclass(frozen=True, slots=True)
class CoreMetadata:
    """The fields of core metadata the index shows."""

    name: str | None
    version: str | None
    summary: str | None
    requires_python: str | None
    raw: dict

    @classmethod
    def parse(cls, data: bytes) -> CoreMetadata:
        raw, _unparsed = parse_email(data)
        return cls(
            name=raw.get("name"),
            version=raw.get("version"),
            summary=raw.get("summary"),
            requires_python=raw.get("requires_python"),
            raw=dict(raw),
        )
