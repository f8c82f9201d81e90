"""app/policy: the cooldown's rules and the durable store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from app.policy.cooldown import Cooldown
from app.policy.store import ProjectStatus, SQLitePolicyStore
from app.settings import Settings

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def at(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


@pytest.mark.parametrize("settings, project, filename, uploaded, allowed, rule", [
    ({}, "a", "a-1.0.tar.gz", at(0), True, "no cooldown"),
    ({"upstream_min_age": "7d"}, "a", "a-1.0.tar.gz", at(8), True, "old enough"),
    ({"upstream_min_age": "7d"}, "a", "a-1.0.tar.gz", at(1), False, "upstream_min_age 7d"),
    ({"upstream_min_age": "7d"}, "a", "a-1.0.tar.gz", None, False, "upstream_untimed hide"),
    ({"upstream_min_age": "7d", "upstream_untimed": "allow"}, "a", "a-1.0.tar.gz", None, True, "old enough"),
    ({"upstream_min_age": "7d", "upstream_exempt": ("a*",)}, "abc", "abc-1.0.tar.gz", at(0), True, "upstream_exempt"),
    ({"upstream_min_age": "7d", "upstream_allow_early": ("a==1.0",)}, "a", "a-1.0.tar.gz", at(0), True,
     "upstream_allow_early a==1.0"),
    ({"upstream_min_age": "7d", "upstream_allow_early": ("a==1.0",)}, "a", "a-1.1.tar.gz", at(0), False,
     "upstream_min_age"),
    ({"upstream_exclude_newer": "2026-11-01T00:00:00Z"}, "a", "a-1.0.tar.gz", at(40), True, "old enough"),
    ({"upstream_exclude_newer": "2026-11-01T00:00:00Z"}, "a", "a-1.0.tar.gz", at(20), False,
     "upstream_exclude_newer"),
])
def test_cooldown_rules(tmp_path: Path, settings, project, filename, uploaded, allowed, rule):
    cooldown = Cooldown.from_settings(Settings(packages=(tmp_path,), **settings).validated())
    verdict = cooldown.judge(project, filename, uploaded, now=NOW)
    assert verdict.allowed is allowed and verdict.rule.startswith(rule)


def test_min_age_says_when_the_file_becomes_available(tmp_path: Path):
    cooldown = Cooldown.from_settings(Settings(packages=(tmp_path,), upstream_min_age="1d12h"))
    verdict = cooldown.judge("a", "a-1.0.tar.gz", at(1), now=NOW)
    assert verdict.available_at == NOW + timedelta(hours=12)
    assert "2026-12-01T12:00:00Z" in verdict.explain("a-1.0.tar.gz")


@pytest.mark.parametrize("field, value", [("upstream_min_age", "7 days"), ("upstream_exclude_newer", "yesterday"),
                                          ("upstream_untimed", "maybe"), ("upstream_allow_early", ("a>=1",))])
def test_bad_policy_settings_are_refused(tmp_path: Path, field, value):
    with pytest.raises(ValueError):
        Settings(packages=(tmp_path,), **{field: value}).validated()


def test_store_keeps_statuses_and_removals_across_connections(tmp_path: Path):
    path = tmp_path / "policy.sqlite3"
    writer, reader = SQLitePolicyStore(path), SQLitePolicyStore(path)
    try:
        assert reader.status("demo") == ProjectStatus("active", "")
        writer.set_status("demo", ProjectStatus("archived", "done"), "alice")
        assert reader.status("demo") == ProjectStatus("archived", "done")  # another worker sees it
        writer.record_removal("demo-1.0.tar.gz", "ab" * 32, "alice")
        assert [r.sha256 for r in reader.removals("demo-1.0.tar.gz")] == ["ab" * 32]
        with pytest.raises(ValueError):
            writer.set_status("demo", ProjectStatus("gone"), "alice")
    finally:
        writer.close()
        reader.close()
