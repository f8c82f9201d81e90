"""Ansible filters owning the step from the role's wharf_* variables to Wharf's deploy templates.

The role renders the same templates as ``wharf render`` (deploy/ in the Wharf source tree),
so it must hand them the same values. Rather than restate Wharf's rules in Jinja, these
filters run Wharf's own code on the controller: ``app/settings.py`` turns each
``wharf_<field>`` into the typed field exactly as it reads ``WHARF_<FIELD>`` (and validates
the result with the app's own messages), and ``app/serving/render.py: context()`` builds the
template values (every field, ``state_path``, ``app_server_addresses``, ``env``,
``tls_policy``...). Both modules are loaded from the source tree without importing the
rest of the app, so the controller needs nothing beyond Ansible (jinja2 comes with it).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

PREFIX = "wharf_"
_lock = threading.Lock()
_loaded: dict[tuple[str, int, int], types.ModuleType] = {}


def _deploy_module(source: str) -> types.ModuleType:
    """The source tree's app.serving.render, imported under a private package name (cached)."""
    app_dir = Path(source).resolve() / "app"
    try:
        stamps = tuple((app_dir / name).stat().st_mtime_ns for name in ("settings.py", "atomic.py", "serving/render.py"))
    except OSError as exc:
        raise AnsibleFilterError(f"wharf_source_dir {source!r} is not a Wharf source tree: {exc}") from exc
    key = (str(app_dir), *stamps)
    with _lock:
        if key not in _loaded:
            # A package object that has app/ on its path but never runs app/__init__.py
            # (which imports the web framework): relative imports inside render.py resolve
            # (app/serving/__init__.py imports nothing).
            name = f"_wharf_source_{len(_loaded)}"
            package = types.ModuleType(name)
            package.__path__ = [str(app_dir)]
            sys.modules[name] = package
            _loaded[key] = importlib.import_module(f"{name}.serving.render")
        return _loaded[key]


def _as_text(value: Any) -> str:
    """A variable's value written as its WHARF_* environment variable would be."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def wharf_setting_variables(source: str) -> list[str]:
    """The role variable of each Wharf setting: ``wharf_<field>``, in settings order."""
    return [PREFIX + f.name for f in dataclasses.fields(_deploy_module(source).Settings)]


def wharf_deploy_templates(source: str, target: str) -> list[str]:
    """The templates (relative to deploy/) that ``wharf render TARGET`` renders."""
    return list(_deploy_module(source).templates_for([target]))


def wharf_deploy_context(variables: dict[str, Any], source: str) -> dict[str, Any]:
    """The values ``wharf render`` gives the deploy templates, from ``wharf_<field>`` variables.

    ``variables`` maps variable names to values; names that are not ``wharf_`` plus a
    settings field (the role's own variables) are ignored, and a field without a variable
    keeps the app's default.
    """
    deploy = _deploy_module(source)
    settings_class = deploy.Settings
    values = {}
    try:
        for f in dataclasses.fields(settings_class):
            if PREFIX + f.name in variables:
                values[f.name] = settings_class.parse_value(f.name, _as_text(variables[PREFIX + f.name]))
        settings = settings_class(**values).validated()
    except (TypeError, ValueError) as exc:
        # The app names its environment variables; the role's user knows wharf_* names.
        message = re.sub(r"WHARF_([A-Z0-9_]+)", lambda m: PREFIX + m.group(1).lower(), str(exc))
        raise AnsibleFilterError(f"wharf settings: {message}") from exc
    return deploy.context(settings, Path(source).resolve() / "deploy")


class FilterModule:
    """wharf_deploy_context, wharf_deploy_templates, wharf_setting_variables."""

    def filters(self) -> dict[str, Any]:
        return {
            "wharf_deploy_context": wharf_deploy_context,
            "wharf_deploy_templates": wharf_deploy_templates,
            "wharf_setting_variables": wharf_setting_variables,
        }
