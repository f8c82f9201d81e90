"""What a mirror run copies: targets, pip's resolution for each, and PEP 751 lock files.

pip resolves once per target (Python version x platform): ``pip install --dry-run
--report`` gives the exact files pip would install there, dependencies included, reading
only PEP 658 metadata where the index has it. pip runs ``--isolated`` with only
``--index-url``: no pip.conf, PIP_* variable or extra index can make it resolve from
anywhere else.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# Environment variables that would override pip's --cert (requests reads them first).
_CA_OVERRIDES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class MirrorError(Exception):
    """A mirror run that cannot go on (pip could not resolve, a lock file is unreadable)."""


@dataclass(frozen=True)
class Target:
    """One environment to mirror for; empty fields mean "like the Python running pip"."""

    python_version: str | None = None
    platforms: tuple[str, ...] = ()
    implementation: str | None = None
    abis: tuple[str, ...] = ()

    @property
    def restricted(self) -> bool:
        return bool(self.python_version or self.platforms or self.implementation or self.abis)

    def pip_args(self) -> list[str]:
        args: list[str] = []
        if self.python_version:
            args += ["--python-version", self.python_version]
        for platform in self.platforms:
            args += ["--platform", platform]
        if self.implementation:
            args += ["--implementation", self.implementation]
        for abi in self.abis:
            args += ["--abi", abi]
        if self.restricted:
            # pip's rule: for another interpreter or platform it can only judge wheels.
            args.append("--only-binary=:all:")
        return args

    def __str__(self) -> str:
        parts = [f"Python {self.python_version}" if self.python_version else "this Python"]
        if self.platforms:
            parts.append("/".join(self.platforms))
        if self.implementation:
            parts.append(self.implementation)
        if self.abis:
            parts.append("/".join(self.abis))
        return " ".join(parts)


def targets(python_versions: Iterable[str], platforms: Iterable[str], implementation: str | None = None,
            abis: Iterable[str] = ()) -> list[Target]:
    """Every (Python version x platform) pair; "a,b" in one --platform is one target with both tags."""
    versions = list(dict.fromkeys(python_versions)) or [None]
    platform_sets = [tuple(p for p in value.replace(" ", ",").split(",") if p) for value in platforms]
    platform_sets = list(dict.fromkeys(platform_sets)) or [()]
    return [Target(v, p, implementation, tuple(abis)) for v, p in itertools.product(versions, platform_sets)]


@dataclass(frozen=True)
class Wanted:
    """A file to mirror: by filename, with hashes it must also match (from a lock file)."""

    project: str  # normalized
    version: str
    filename: str
    hashes: dict[str, str] = field(default_factory=dict)


def _filename_of(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def pip_command(index_url: str, cert: Path | None, timeout: float, target: Target, requirements: list[str],
                requirement_files: list[Path], workdir: Path, retries: int | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
           "--quiet", "--no-input", "--disable-pip-version-check",
           # --target: also exempts the dry run from "externally managed" interpreters.
           "--target", str(workdir / "target"), "--report", str(workdir / "report.json"),
           "--index-url", index_url, "--timeout", str(timeout)]
    if cert:
        cmd += ["--cert", str(cert)]
    if retries is not None:
        cmd += ["--retries", str(retries)]
    cmd += target.pip_args()
    for path in requirement_files:
        cmd += ["-r", str(path)]
    return cmd + list(requirements)


def _run_pip(index_url: str, cert: Path | None, timeout: float, target: Target, requirements: list[str],
             requirement_files: list[Path], retries: int | None = None) -> list[dict]:
    """The ``install`` items of pip's dry-run report for ``target``."""
    env = dict(os.environ)
    if cert:
        for name in _CA_OVERRIDES:
            env.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="wharf-mirror-") as tmp:
        workdir = Path(tmp)
        cmd = pip_command(index_url, cert, timeout, target, requirements, requirement_files, workdir, retries)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            detail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise MirrorError(f"pip could not resolve for {target}:\n{detail}")
        report = json.loads((workdir / "report.json").read_text(encoding="utf-8"))
    return list(report.get("install", []))


# Platform tag prefixes and the marker values they imply (PEP 508 environment markers).
_PLATFORM_MARKERS = (
    ("win", {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"}),
    ("macosx", {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"}),
    ("manylinux", {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}),
    ("musllinux", {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}),
    ("linux", {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}),
)
_WINDOWS_MACHINES = {"win32": "x86", "win_amd64": "AMD64", "win_arm64": "ARM64"}
_ARCHES = ("x86_64", "aarch64", "arm64", "i686", "ppc64le", "s390x", "armv7l")
_IMPLEMENTATIONS = {"cp": "cpython", "pp": "pypy", "jy": "jython", "ip": "ironpython", "gp": "graalpy"}


def target_environment(target: Target) -> dict[str, str]:
    """PEP 508 marker values for ``target``: this Python's, overridden by what the target says."""
    env = dict(default_environment())
    if target.python_version:
        raw = target.python_version
        parts = raw.split(".") if "." in raw else [raw[0], raw[1:]] if len(raw) > 1 else [raw]
        env["python_version"] = ".".join(parts[:2])
        env["python_full_version"] = ".".join(parts + ["0"] * (3 - len(parts)))
    if target.implementation:
        name = _IMPLEMENTATIONS.get(target.implementation, target.implementation)
        env["implementation_name"] = name
        env["platform_python_implementation"] = {"cpython": "CPython", "pypy": "PyPy"}.get(name, name)
    if target.platforms:
        tag = target.platforms[0]
        for prefix, values in _PLATFORM_MARKERS:
            if tag.startswith(prefix):
                env.update(values)
                break
        if tag.startswith("win"):
            machine = _WINDOWS_MACHINES.get(tag)
        else:  # manylinux_2_17_x86_64, manylinux2014_aarch64, macosx_11_0_arm64: the machine is last
            machine = next((arch for arch in _ARCHES if tag.endswith("_" + arch)), None)
        if machine:
            env["platform_machine"] = machine
    return env


def missing_requirements(items: list[dict], env: dict[str, str]) -> list[str]:
    """Dependencies that apply in ``env`` but that pip's resolution left out.

    pip judges dependency markers (``; python_version < "3.12"``) by the Python running it,
    not by --python-version, so a resolution for another target can miss some.
    """
    resolved = {canonicalize_name(i["metadata"]["name"]): i for i in items}
    extras: dict[str, set[str]] = {name: set(i.get("requested_extras") or ()) for name, i in resolved.items()}
    missing: dict[str, str] = {}
    changed = True
    while changed:  # extras asked for by one dependency switch on more requirements of another
        changed = False
        for name, item in resolved.items():
            for line in item["metadata"].get("requires_dist") or ():
                try:
                    req = Requirement(line)
                except InvalidRequirement:
                    continue
                applies = req.marker is None or any(
                    req.marker.evaluate({**env, "extra": extra}) for extra in {"", *extras[name]})
                if not applies or req.url:
                    continue
                dep = canonicalize_name(req.name)
                if dep in resolved:
                    if not req.extras <= extras[dep]:
                        extras[dep] |= req.extras
                        changed = True
                    continue
                spec = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "") + str(req.specifier)
                missing.setdefault(dep, spec)
    return sorted(missing.values())


def _for_target(requirements: list[str], env: dict[str, str]) -> list[str]:
    # Markers on the command line are judged for the target too, then dropped for pip.
    kept = []
    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            kept.append(line)  # pip will say what is wrong with it
            continue
        if req.marker is None or req.url:
            kept.append(line)
        elif req.marker.evaluate(env):
            req.marker = None
            kept.append(str(req))
    return kept


def resolve(index_url: str, cert: Path | None, timeout: float, target: Target, requirements: list[str],
            requirement_files: list[Path], rounds: int = 5, retries: int | None = None) -> list[Wanted]:
    """The files pip would install for ``target``, dependencies included.

    For a target other than the running Python, dependencies whose markers pip judged by
    the wrong interpreter are added and pip is asked again (a few rounds at most); files
    only the running Python would need may come along too, which costs space, not installs.
    """
    env = target_environment(target)
    asked = _for_target(requirements, env) if target.restricted else list(requirements)
    items = _run_pip(index_url, cert, timeout, target, asked, requirement_files, retries)
    for _round in range(rounds if target.restricted else 0):
        extra = [r for r in missing_requirements(items, env) if r not in asked]
        if not extra:
            break
        asked += extra
        items = _run_pip(index_url, cert, timeout, target, asked, requirement_files, retries)
    wanted = []
    for item in items:
        url = item.get("download_info", {}).get("url", "")
        meta = item.get("metadata", {})
        if item.get("is_direct") or not url:
            raise MirrorError(f"{meta.get('name') or url}: only requirements found on the index can be mirrored")
        wanted.append(Wanted(canonicalize_name(meta["name"]), meta["version"], _filename_of(url)))
    return wanted


def read_pylock(path: Path) -> list[Wanted]:
    """The archive files a PEP 751 lock file names (wheels and sdists), with their hashes."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MirrorError(f"cannot read the lock file {path}: {exc}") from None
    wanted = []
    for package in data.get("packages", []):
        name = canonicalize_name(str(package.get("name", "")))
        version = str(package.get("version", ""))
        entries = list(package.get("wheels", []))
        if package.get("sdist"):
            entries.append(package["sdist"])
        if not entries:
            raise MirrorError(f"{path}: {name or 'a package'} is not locked to index files (vcs, directory "
                              "or archive packages cannot be mirrored)")
        for entry in entries:
            filename = entry.get("name") or _filename_of(entry.get("url") or entry.get("path") or "")
            hashes = {str(k): str(v).lower() for k, v in (entry.get("hashes") or {}).items()}
            if not filename:
                raise MirrorError(f"{path}: a file of {name} has neither name nor url")
            wanted.append(Wanted(name, version, filename, hashes))
    return wanted


def is_pylock(path: Path) -> bool:
    name = path.name
    return name == "pylock.toml" or (name.startswith("pylock.") and name.endswith(".toml"))
