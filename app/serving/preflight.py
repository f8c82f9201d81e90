"""What is checked before a server starts: the packages directories, where the state can go, who runs it.

Each problem a user can cause is said in one line that names the option of the command
that was run (``flag``: ``--password-file`` for ``wharf``, ``-P`` for ``pypi-server``),
never as a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..settings import Settings
from .local_ca import SetupError

# The catalog's files in the state directory (app/catalog): each must be writable if it exists.
_STATE_FILES = ("catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm", "scan.lock", "scanner.heartbeat")

Flag = Callable[[str], str]


def wharf_flag(name: str) -> str:
    """The ``wharf`` command line's option for the setting ``name``."""
    return "--" + name.replace("_", "-")


def require_packages(settings: Settings) -> None:
    """Every packages directory exists (a typo must not serve an empty index)."""
    for root in settings.packages:
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise SetupError(f"packages directory {root} {what} (create it first: mkdir -p {root})")


def state_problem(directory: Path) -> str | None:
    """Why the catalog could not keep its state in ``directory``, or None if it can."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        for name in _STATE_FILES:
            path = directory / name
            if path.exists():
                with open(path, "r+b"):
                    pass
    except OSError as exc:
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return None


def fallback_state_dir(packages: Path) -> Path:
    """A per-user place for the state of a packages directory this user cannot write to."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(packages.resolve())).strip("-")[-40:] or "packages"
    digest = hashlib.sha256(str(packages.resolve()).encode()).hexdigest()[:8]
    return Path.home() / ".local" / "state" / "wharf" / f"{slug}-{digest}"


def usable_state(settings: Settings, flag: Flag = wharf_flag) -> tuple[Settings, list[str]]:
    """``settings`` with a state directory this process can write to, and warnings to log when it moved.

    A state directory that was given must work; the default one (``<packages>/.wharf``) is
    replaced by a per-user one when the packages directory is read-only or was made by
    another user (a ``sudo`` start), so that reads are still served.
    """
    if settings.state_dir is not None:
        problem = state_problem(settings.state_dir)
        if problem:
            raise SetupError(f"cannot keep the catalog in {settings.state_dir} ({flag('state_dir')}): {problem}")
        return settings, []
    default = settings.state_path
    problem = state_problem(default)
    if problem is None:
        return settings, []
    fallback = fallback_state_dir(settings.packages[0])
    if state_problem(fallback):
        raise SetupError(f"cannot keep the catalog in {default} ({problem}) nor in {fallback}: "
                         f"give a writable directory with {flag('state_dir')} DIR")
    warnings = [f"cannot write the catalog into {default} ({problem}): keeping it in {fallback} instead; "
                f"give {flag('state_dir')} DIR to choose another place"]
    if not os.access(settings.packages[0], os.W_OK | os.X_OK):
        warnings.append(f"{settings.packages[0]} is not writable by this user: its files are served, "
                        "but uploads will fail")
    return dataclasses.replace(settings, state_dir=fallback), warnings


def root_warning(how: str) -> str | None:
    """A warning that the workers would run as root, saying ``how`` not to; None for other users."""
    if os.geteuid() != 0:
        return None
    return ("running as root: a flaw in a worker would own the machine, and the files it writes "
            f"belong to root; {how}")
