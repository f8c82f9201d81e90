"""The settings reference (docs/configuration.md), rendered from the ``Settings`` fields.

The reference is generated, never written by hand, so it cannot drift from the code:
``python3 -m app docs --out docs/configuration.md`` rewrites it, and a unit test fails
when the committed copy differs from what this module renders.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterator

from . import settings as settings_module
from .settings import Settings, env_name

# Section comments in settings.py look like "# --- the index ------". They are the only
# grouping the dataclass has, so the reference follows them (and follows any new one).
_SECTION = re.compile(r"^\s*#\s*---\s*(?P<title>.*?)\s*-*\s*$")
_FIELD = re.compile(r"^\s{4}(?P<name>[a-z_][a-z0-9_]*)\s*:")

_TYPES = {
    "bool": "true / false",
    "int": "integer",
    "float": "number",
    "str": "text",
    "Path": "path",
    "Path | None": "path (or empty)",
    "tuple[Path, ...]": "paths, comma-separated",
    "tuple[str, ...]": "list, comma-separated",
}

_HEADER = """\
# Configuration

<!-- Generated from the Settings fields in app/settings.py by
     `python3 -m app docs --out docs/configuration.md`: edit the fields, not this file. -->

Every option of Wharf is one field of the `Settings` dataclass (`app/settings.py`), with
three spellings: `--server-name` on the command line, `WHARF_SERVER_NAME` in the
environment and `wharf_server_name` as a variable of the Ansible role. The same values
drive the app, the `wharf` commands and the deploy templates (nginx, supervisord,
gunicorn), so one setting changes every place it matters. `wharf serve --help` lists the
same options with their defaults; `ansible/roles/wharf/defaults/main.yml` documents the
role's variables.

Lists are written comma-separated (`update,download`); words may also be separated by
spaces, paths may not. A true/false setting takes `true`/`false` (also `1`/`0`, `yes`/`no`,
`on`/`off`) in the environment and `--name` / `--no-name` on the command line. An empty
default is shown as *(empty)*. `wharf serve` and `wharf stack` take the packages
directories as arguments (`wharf serve DIR...`) rather than `--packages`.
"""


def sections() -> list[tuple[str, list[dataclasses.Field]]]:
    """The Settings fields in declaration order, grouped under settings.py's section comments."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    titles: dict[str, str] = {}
    title = "Settings"
    for line in inspect.getsource(settings_module).splitlines():
        heading = _SECTION.match(line)
        if heading:
            title = heading.group("title")
            continue
        declared = _FIELD.match(line)
        if declared and declared.group("name") in fields:
            titles.setdefault(declared.group("name"), title)
    grouped: dict[str, list[dataclasses.Field]] = {}
    for name, f in fields.items():
        grouped.setdefault(titles.get(name, "Other settings"), []).append(f)
    return list(grouped.items())


def default_text(f: dataclasses.Field) -> str:
    """A field's default as it would be written in its WHARF_* variable."""
    value = Settings().as_env()[env_name(f.name)]
    return f"`{value}`" if value else "*(empty)*"


def _cell(text: str) -> str:
    # "<first packages dir>" would be read as an HTML tag and vanish on GitHub.
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _rows(fields: list[dataclasses.Field]) -> Iterator[str]:
    yield "| Setting | Type and default | What it does |"
    yield "|---|---|---|"
    for f in fields:
        spellings = "<br>".join((f"`--{f.name.replace('_', '-')}`", f"`{env_name(f.name)}`",
                                 f"`wharf_{f.name}`"))
        kind = _TYPES.get(str(f.type), str(f.type))
        yield f"| {spellings} | {_cell(kind)}<br>{_cell(default_text(f))} | {_cell(f.metadata.get('help', ''))} |"


def render_reference() -> str:
    """docs/configuration.md: every setting, its spellings, type, default and help."""
    parts = [_HEADER]
    for title, fields in sections():
        parts.append(f"\n## {title[:1].upper()}{title[1:]}\n\n")
        parts.append("\n".join(_rows(fields)) + "\n")
    return "".join(parts)
