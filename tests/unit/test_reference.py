"""The generated settings reference: complete, and the committed copy is current."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from app.reference import render_reference, sections
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "configuration.md"
REGENERATE = "python3 -m app docs --out docs/configuration.md"


def test_committed_reference_is_current():
    assert COMMITTED.exists(), f"docs/configuration.md is missing: run `{REGENERATE}`"
    assert COMMITTED.read_text(encoding="utf-8") == render_reference(), (
        f"docs/configuration.md is stale (a Settings field changed): run `{REGENERATE}` and commit it")


def test_every_field_appears_once_with_its_three_spellings_and_help():
    text = render_reference()
    grouped = [f.name for _title, fields in sections() for f in fields]
    assert grouped == [f.name for f in dataclasses.fields(Settings)]  # each once, in declared order
    for f in dataclasses.fields(Settings):
        row = next(line for line in text.splitlines() if line.startswith(f"| `--{f.name.replace('_', '-')}`<br>"))
        assert f"`WHARF_{f.name.upper()}`" in row and f"`wharf_{f.name}`" in row
        help_text = f.metadata["help"].replace("|", "\\|").replace("<", "&lt;")
        assert help_text in row


def test_defaults_are_written_as_their_variables_take_them():
    rows = {line.split("`")[1]: line for line in render_reference().splitlines() if line.startswith("| `--")}
    assert "`127.0.0.1,::1`" in rows["--trusted-proxies"]
    assert "`8080`" in rows["--port"] and "integer" in rows["--port"]
    assert "`false`" in rows["--overwrite"] and "true / false" in rows["--overwrite"]
    assert "*(empty)*" in rows["--password-file"]
    assert "`update`" in rows["--authenticate"]


def test_sections_follow_the_comments_in_settings_py():
    titles = [title for title, _fields in sections()]
    assert titles[0] == "the index"
    assert len(titles) >= 4 and "Other settings" not in titles
    by_name = {f.name: title for title, fields in sections() for f in fields}
    assert by_name["packages"] == "the index"
    assert by_name["server_name"] != by_name["packages"]
