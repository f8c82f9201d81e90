"""The Ansible role's defaults document every Wharf setting under its wharf_ name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from app.settings import Settings

DEFAULTS = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "wharf" / "defaults" / "main.yml"


def _documented() -> dict[str, str]:
    """Each top-level variable of defaults/main.yml with the comments of its paragraph.

    A paragraph (lines up to a blank one) may document several related variables at once.
    """
    variables: dict[str, str] = {}
    for paragraph in DEFAULTS.read_text().split("\n\n"):
        comments = " ".join(line.lstrip("# ") for line in paragraph.splitlines() if line.startswith("#"))
        for match in re.finditer(r"^(wharf_\w+):[^#\n]*(?:#(.*))?$", paragraph, re.M):
            variables[match.group(1)] = f"{comments} {match.group(2) or ''}".strip()
    return variables


def test_every_setting_has_a_documented_role_variable() -> None:
    documented = _documented()
    missing = [f"wharf_{f.name}" for f in dataclasses.fields(Settings) if f"wharf_{f.name}" not in documented]
    assert not missing, f"add to {DEFAULTS}: {missing}"
    undocumented = [name for name, comment in documented.items() if not comment]
    assert not undocumented, f"variables without a comment above them: {undocumented}"
