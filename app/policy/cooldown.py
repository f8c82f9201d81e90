"""The upstream cooldown: which upstream files are too new to offer, and by which rule.

Most malicious releases on public indexes are found and removed within days, so an
upstream file is offered only once it is ``upstream_min_age`` old and was uploaded before
``upstream_exclude_newer``. A file without an upload time counts as too new unless
``upstream_untimed`` is "allow". Projects matching ``upstream_exempt`` are not held back,
nor single releases named in ``upstream_allow_early`` ("break glass", logged each time).
The pull-through cache (app/upstream/pull_through.py) and ``wharf mirror`` both judge by
this one policy; local projects never reach it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..dists import InvalidDistribution, parse_filename
from ..settings import Settings, duration_seconds, rfc3339_time

log = logging.getLogger("wharf.policy")


class Timed(Protocol):
    """What the cooldown needs to know of a file (an upstream listing's entry)."""

    filename: str
    upload_time: str | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The cooldown's answer for one file: allowed or not, the rule that decided, and when it may be."""

    allowed: bool
    rule: str
    available_at: datetime | None = None  # when a held-back file becomes available; None: not by waiting

    def explain(self, filename: str) -> str:
        """The refusal as a client reads it."""
        when = (f"it becomes available at {iso(self.available_at)}" if self.available_at
                else "it does not become available by waiting")
        return f"{filename} is held back by the index's upstream cooldown ({self.rule}); {when}"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_upload_time(text: str | None) -> datetime | None:
    """A PEP 700 upload-time, or None when it is missing or unreadable."""
    if not text:
        return None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(text.strip())
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


class Cooldown:
    """The policy in force; ``active`` is False when nothing is held back."""

    def __init__(self, min_age: float = 0.0, exclude_newer: datetime | None = None, untimed: str = "hide",
                 exempt: Iterable[str] = (), allow_early: Iterable[str] = (), min_age_text: str = ""):
        self.min_age = timedelta(seconds=min_age)
        self.min_age_text = min_age_text or f"{int(min_age)}s"
        self.exclude_newer = exclude_newer
        self.untimed = untimed
        self.exempt = tuple(p.lower() for p in exempt)
        self.allow_early: dict[str, set[Version]] = {}
        for pin in allow_early:
            name, _, version = pin.partition("==")
            with contextlib.suppress(InvalidVersion):
                self.allow_early.setdefault(canonicalize_name(name.strip()), set()).add(Version(version.strip()))

    @classmethod
    def from_settings(cls, settings: Settings) -> Cooldown:
        exclude = rfc3339_time(settings.upstream_exclude_newer) if settings.upstream_exclude_newer else None
        return cls(duration_seconds(settings.upstream_min_age), exclude, settings.upstream_untimed,
                   settings.upstream_exempt, settings.upstream_allow_early, settings.upstream_min_age.strip())

    @property
    def active(self) -> bool:
        return bool(self.min_age) or self.exclude_newer is not None

    def cutoff(self, now: datetime | None = None) -> datetime | None:
        """Files uploaded at or after this are too new (for clients with a single cutoff, like pip's)."""
        if not self.active:
            return None
        now = now or datetime.now(timezone.utc)
        limits = [now - self.min_age] if self.min_age else []
        if self.exclude_newer is not None:
            limits.append(self.exclude_newer)
        return min(limits)

    def judge(self, project: str, filename: str, upload_time: str | None,
              now: datetime | None = None) -> Verdict:
        """Whether ``filename`` of the upstream ``project`` may be offered now (pure: logs nothing)."""
        if not self.active:
            return Verdict(True, "no cooldown")
        for pattern in self.exempt:
            if fnmatch.fnmatchcase(project, pattern):
                return Verdict(True, f"upstream_exempt {pattern}")
        uploaded = parse_upload_time(upload_time)
        now = now or datetime.now(timezone.utc)
        held = None
        if uploaded is None:
            if self.untimed != "allow":
                held = Verdict(False, "upstream_untimed hide: upstream gives no upload time")
        elif self.exclude_newer is not None and uploaded >= self.exclude_newer:
            held = Verdict(False, f"upstream_exclude_newer {iso(self.exclude_newer)}: uploaded {iso(uploaded)}")
        elif self.min_age and now - uploaded < self.min_age:
            held = Verdict(False, f"upstream_min_age {self.min_age_text}: uploaded {iso(uploaded)}",
                           uploaded + self.min_age)
        if held is None:
            return Verdict(True, "old enough")
        pinned = self._pinned(project, filename)
        return Verdict(True, f"upstream_allow_early {pinned} (break glass; else {held.rule})") if pinned else held

    def _pinned(self, project: str, filename: str) -> str | None:
        versions = self.allow_early.get(project)
        if not versions:
            return None
        try:
            version = parse_filename(filename).version
        except InvalidDistribution:
            return None
        return f"{project}=={version}" if version in versions else None

    def check(self, project: str, filename: str, upload_time: str | None, what: str) -> Verdict:
        # what: "listing", "download", "mirror download": the act that was judged.
        """``judge``, logging a refusal or a break-glass release with the rule that fired."""
        verdict = self.judge(project, filename, upload_time)
        if not verdict.allowed:
            log.info("cooldown: %s of %s refused: %s", what, filename, verdict.rule)
        elif verdict.rule.startswith("upstream_allow_early"):
            log.warning("cooldown: %s of %s allowed early: %s", what, filename, verdict.rule)
        return verdict

    def visible(self, project: str, files: Iterable[Timed]) -> tuple[list, float | None]:
        """(the files a page may list, when the next held-back one comes of age as a timestamp or None).

        Each hidden file is logged with its rule.
        """
        kept, soonest = [], None
        for f in files:
            verdict = self.check(project, f.filename, f.upload_time, "listing")
            if verdict.allowed:
                kept.append(f)
                continue
            if verdict.available_at is not None:
                at = verdict.available_at.timestamp()
                soonest = at if soonest is None else min(soonest, at)
        return kept, soonest

    def describe(self) -> dict:
        """The policy in force, for /health and the home page."""
        return {
            "active": self.active,
            "min_age": self.min_age_text if self.min_age else None,
            "exclude_newer": iso(self.exclude_newer) if self.exclude_newer else None,
            "untimed": self.untimed,
            "exempt": list(self.exempt),
            "allow_early": sorted(f"{p}=={v}" for p, vs in self.allow_early.items() for v in vs),
        }
