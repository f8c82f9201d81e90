"""API tokens: making them, checking them, and what one may do.

A token reads ``wharf_<id>_<secret>``: the prefix makes a leaked token easy to spot (and
to scan for), the id finds its record with one indexed lookup, and the secret (256 random
bits) is checked against an HMAC-SHA256 of it keyed by a server secret, in constant time.
A fast keyed hash is right for secrets this long: nobody can guess one, and a stolen
store holds nothing usable without the server secret (``token-secret`` in the state
directory, mode 0600, made once). Every check reads the record again, so a revoked or
expired token fails on the very next request on every worker.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.utils import canonicalize_name

from ..atomic import shared_secret
from .store import TokenRecord, TokenStore

audit = logging.getLogger("wharf.audit")

PREFIX = "wharf_"
TOKEN_USER = "__token__"  # the public index's convention, known to twine, uv, pip and poetry users
TOKEN_ACTIONS = ("update", "download", "list", "manage")
_TOKEN = re.compile(r"^wharf_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_PATTERN = re.compile(r"^[A-Za-z0-9._*?!\[\]-]+$")
_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# last_used is written at most this often per token and process: a write per request
# would make every download wait on the database's one writer.
TOUCH_EVERY = 60.0


def parse_duration(text: str) -> float:
    """Seconds in "90d", "12h", "30m", "3600" (ValueError otherwise)."""
    found = _DURATION.match(text.strip().lower())
    if not found or int(found.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90d, 12h, 30m or seconds)")
    return float(int(found.group(1)) * _UNITS[found.group(2)])


def parse_projects(items: list[str] | tuple[str, ...] | str) -> tuple[str, ...]:
    """Normalized project patterns from "mylib,mylib-*" or a list; () (every project) for "*" alone."""
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    patterns = []
    for item in items:
        item = str(item).strip()
        if not _PATTERN.match(item):
            raise ValueError(f"not a project name or pattern: {item[:100]!r}")
        patterns.append(canonicalize_name(item) if not any(c in item for c in "*?[") else item.lower())
    return () if patterns in ([], ["*"]) else tuple(dict.fromkeys(patterns))


def parse_actions(items: list[str] | tuple[str, ...] | str) -> tuple[str, ...]:
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    actions = tuple(dict.fromkeys(str(a).strip() for a in items))
    bad = [a for a in actions if a not in TOKEN_ACTIONS]
    if bad or not actions:
        raise ValueError(f"unknown action(s) {', '.join(bad) or '(none)'}: use {', '.join(TOKEN_ACTIONS)}")
    return actions


def server_secret(state_dir: Path) -> bytes:
    """The key of token digests: ``token-secret`` in the state directory, made once (0600)."""
    return bytes.fromhex(shared_secret(Path(state_dir) / "token-secret"))


@dataclass(frozen=True)
class Grant:
    """What the token of this request allows: its record, for the scope checks."""

    record: TokenRecord

    @property
    def user(self) -> str:
        return self.record.user

    def allows_action(self, action: str) -> bool:
        return action in self.record.actions

    def allows_project(self, project: str) -> bool:
        if not self.record.projects:
            return True
        name = canonicalize_name(project)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.record.projects)

    def describe(self) -> str:
        return f"token {self.record.id} of {self.record.user}"

    def refuse_action(self, action: str, environ: dict) -> str | None:
        """Why this token may not take ``action`` (audit-logged), or None if it may."""
        if action in self.record.actions:
            return None
        audit.info("refused %s from %s: it does not allow %s", self.describe(), environ.get("REMOTE_ADDR") or "?", action)
        return f"{self.describe()} does not allow {action} (it allows {', '.join(self.record.actions)})"

    def refuse_project(self, project: str, environ: dict) -> str | None:
        """Why this token may not update ``project`` (audit-logged), or None; its first use per project is logged."""
        name = canonicalize_name(project)
        address = environ.get("REMOTE_ADDR") or "?"
        if not self.allows_project(name):
            audit.info("refused %s from %s: project %s is outside its scope (%s)", self.describe(), address, name,
                       ",".join(self.record.projects))
            return f"{self.describe()} may not update project {name!r}: it is scoped to {', '.join(self.record.projects)}"
        used = environ.setdefault("wharf.token.used_for", set())
        if name not in used:
            used.add(name)
            audit.info("%s used to update %s from %s", self.describe(), name, address)
        return None


class TokenRefused(Exception):
    """A token that cannot be used, and why (said to the client and in the audit log)."""


class Tokens:
    """Creates, lists, revokes and checks API tokens on a TokenStore."""

    def __init__(self, store: TokenStore, secret: bytes):
        self.store = store
        self._secret = secret
        self._touched: dict[str, float] = {}

    @staticmethod
    def looks_like(password: str) -> bool:
        return password.startswith(PREFIX)

    def _digest(self, secret: str) -> str:
        return hmac.new(self._secret, secret.encode(), hashlib.sha256).hexdigest()

    def create(self, user: str, *, projects: tuple[str, ...] = (), actions: tuple[str, ...] = ("update",),
               lifetime: float | None = None, description: str = "", kind: str = "user",
               details: dict | None = None, by: str = "") -> tuple[str, TokenRecord]:
        """A new token: (the token itself, shown once; its record)."""
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = time.time()
        record = TokenRecord(token_id, self._digest(secret), user, kind, tuple(projects), tuple(actions),
                             description[:200], now, now + lifetime if lifetime else None, None, None,
                             details or {})
        self.store.add(record)
        audit.info("token %s created for %s by %s: projects %s, actions %s, expires %s%s", token_id, user,
                   by or user, ",".join(record.projects) or "*", ",".join(record.actions),
                   _when(record.expires), f", {description[:100]!r}" if description else "")
        return f"{PREFIX}{token_id}_{secret}", record

    def check(self, token: str) -> Grant:
        """The grant of a valid token; TokenRefused (with the reason) otherwise."""
        found = _TOKEN.match(token)
        if not found:
            raise TokenRefused("malformed token")
        record = self.store.get(found.group(1))
        # Compared in constant time, and for an unknown id too, so timing tells nothing.
        expected = record.digest if record is not None else "0" * 64
        if not hmac.compare_digest(self._digest(found.group(2)), expected) or record is None:
            raise TokenRefused(f"unknown token {found.group(1)}")
        now = time.time()
        if record.revoked is not None:
            raise TokenRefused(f"token {record.id} was revoked")
        if record.expires is not None and now >= record.expires:
            raise TokenRefused(f"token {record.id} expired")
        if now - self._touched.get(record.id, 0.0) >= TOUCH_EVERY:
            if len(self._touched) > 10_000:  # minted tokens come and go: keep the memory bounded
                self._touched.clear()
            self._touched[record.id] = now
            self.store.touch(record.id, now)
            record = replace(record, last_used=now)
        return Grant(record)

    def grant_for(self, user: str, token: str, is_user: Callable[[str], bool],
                  address: str) -> tuple[Grant | None, str]:
        """(the grant, "") if ``token`` is valid sent with the name ``user``; else (None, why), audit-logged."""
        try:
            grant = self.check(token)
            owner = grant.record.user
            if user not in (TOKEN_USER, owner):
                raise TokenRefused(f"token {grant.record.id} is not {user[:100]!r}'s: use the user name {TOKEN_USER}")
            if grant.record.kind == "user" and not is_user(owner):
                raise TokenRefused(f"token {grant.record.id}'s owner {owner!r} is no longer a user")
        except TokenRefused as refusal:
            audit.info("refused a token from %s: %s", address, refusal)
            return None, str(refusal)
        return grant, ""

    def revoke(self, token_id: str, *, by: str) -> bool:
        done = self.store.revoke(token_id, time.time())
        if done:
            audit.info("token %s revoked by %s", token_id, by)
        return done

    def list(self, user: str | None = None) -> list[TokenRecord]:
        return self.store.list(user)


def _when(stamp: float | None) -> str:
    return "never" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def describe_time(stamp: float | None) -> str:
    """A timestamp as the CLI shows it ("-" for none)."""
    return "-" if stamp is None else _when(stamp)
