"""The trusted publishers file: which CI identities may publish which projects.

INI, one section per publisher::

    [mylib-release]
    projects = mylib, mylib-*
    issuer = github                      ; github, gitlab or any OIDC issuer URL
    repository = acme/mylib              ; every other key is a claim that must match
    job_workflow_ref = acme/mylib/.github/workflows/release.yml@*
    environment = release

A claim value with ``*``, ``?`` or ``[`` is an fnmatch pattern; any other must equal the
token's claim. A publisher must pin who it trusts: GitHub ones name the ``repository``
(or ``repository_id``), GitLab ones the ``project_path`` (or ``project_id``), others at
least one claim; a file that breaks these rules trusts nobody until fixed (fails closed),
says why in the log, and is read again when it changes.
"""

from __future__ import annotations

import configparser
import fnmatch
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_file
from .tokens import parse_projects

log = logging.getLogger("wharf.audit")

ISSUERS = {"github": "https://token.actions.githubusercontent.com", "gitlab": "https://gitlab.com"}
# Without one of these a publisher would trust every repository on the issuer.
PINNING_CLAIMS = {ISSUERS["github"]: ("repository", "repository_id"),
                  ISSUERS["gitlab"]: ("project_path", "project_id")}
RESERVED = ("projects", "issuer", "description")
NOT_CLAIMS = ("iss", "aud", "exp", "nbf", "iat", "jti")


@dataclass(frozen=True)
class TrustedPublisher:
    """One publisher: an issuer, the claims its tokens must carry, and the projects it may update."""

    name: str
    issuer: str
    projects: tuple[str, ...]
    claims: tuple[tuple[str, str], ...]
    description: str = ""

    def mismatches(self, claims: dict) -> list[str]:
        """The configured claims this token's claims do not match (empty: it matches)."""
        wrong = []
        for key, wanted in self.claims:
            value = claims.get(key)
            got = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            pattern = any(c in wanted for c in "*?[")
            if value is None or not (fnmatch.fnmatchcase(got, wanted) if pattern else got == wanted):
                wrong.append(f"claim {key} is {got[:200]!r}, not {wanted!r}" if value is not None
                             else f"claim {key} is missing")
        return wrong

    def as_section(self) -> dict[str, str]:
        section = {"projects": ", ".join(self.projects), "issuer": self.issuer}
        if self.description:
            section["description"] = self.description
        section.update(dict(self.claims))
        return section


def issuer_url(text: str) -> str:
    """An issuer URL from "github", "gitlab" or a URL (without a trailing slash)."""
    text = text.strip()
    url = ISSUERS.get(text.lower(), text).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an issuer: {text!r} (use github, gitlab or an https:// URL)")
    return url


def make_publisher(name: str, issuer: str, projects: str | list[str], claims: dict[str, str],
                   description: str = "") -> TrustedPublisher:
    """A checked publisher (ValueError when it would trust too much or cannot work)."""
    name = name.strip()
    if not name or any(c in name for c in "[]\r\n"):
        raise ValueError(f"not a publisher name: {name!r}")
    url = issuer_url(issuer)
    wanted = parse_projects(projects)
    if not wanted:
        raise ValueError(f"publisher {name}: name the projects it may publish (not every project)")
    claims = {k.strip(): str(v).strip() for k, v in claims.items()}
    bad = [k for k in claims if k in NOT_CLAIMS or k in RESERVED or not k]
    if bad:
        raise ValueError(f"publisher {name}: {bad[0]!r} cannot be a required claim (the index checks it itself)")
    pinning = PINNING_CLAIMS.get(url)
    if pinning and not any(claims.get(k) for k in pinning):
        raise ValueError(f"publisher {name}: give {' or '.join(pinning)}, or it would trust everyone on {url}")
    if not claims:
        raise ValueError(f"publisher {name}: give at least one claim that must match (e.g. sub)")
    return TrustedPublisher(name, url, wanted, tuple(sorted(claims.items())), description.strip())


def parse_publishers(text: str, source: str = "<publishers>") -> list[TrustedPublisher]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), default_section="\0none",
                                       inline_comment_prefixes=(";",))
    parser.optionxform = str  # claim names are case-sensitive
    parser.read_string(text, source=source)
    publishers = []
    for name in parser.sections():
        items = dict(parser.items(name))
        for key in ("projects", "issuer"):
            if not items.get(key):
                raise ValueError(f"publisher {name}: no {key}")
        claims = {k: v for k, v in items.items() if k not in RESERVED}
        publishers.append(make_publisher(name, items["issuer"], items["projects"], claims,
                                         items.get("description", "")))
    return publishers


def format_publishers(publishers: list[TrustedPublisher]) -> str:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), default_section="\0none")
    parser.optionxform = str
    for publisher in publishers:
        parser[publisher.name] = publisher.as_section()
    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            lines.append(text)

    parser.write(Lines())
    return "# Trusted publishers (docs/tokens.md); `wharf publisher add|remove` edits this file.\n" + "".join(lines)


class Publishers:
    """The publishers file as last read; read again when it changes. Fails closed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stamp: tuple | None = None
        self._publishers: list[TrustedPublisher] = []
        self.problem: str | None = None
        self._lock = threading.Lock()

    def current(self) -> list[TrustedPublisher]:
        try:
            st = os.stat(self.path)
            stamp: tuple | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp or stamp is None:
                self._stamp = stamp
                try:
                    if stamp is None:
                        raise ValueError("it is not readable")
                    self._publishers = parse_publishers(self.path.read_text(encoding="utf-8"), str(self.path))
                    self.problem = None
                except (OSError, UnicodeDecodeError, ValueError, configparser.Error) as exc:
                    if self.problem is None or stamp is not None:
                        log.error("publishers file %s: %s; trusting no publisher until it is fixed",
                                  self.path, " ".join(str(exc).split())[:300])
                    self._publishers = []
                    self.problem = f"publishers file {self.path}: {' '.join(str(exc).split())[:300]}"
            return list(self._publishers)


def load_publishers(path: Path) -> list[TrustedPublisher]:
    """The publishers in the file (none if it does not exist yet); raises if it is broken."""
    path = Path(path)
    return parse_publishers(path.read_text(encoding="utf-8"), str(path)) if path.exists() else []


def save_publishers(path: Path, publishers: list[TrustedPublisher]) -> None:
    """Replace the file atomically, so a running index never reads half of it."""
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    write_file(path, format_publishers(publishers).encode(), mode=mode)
