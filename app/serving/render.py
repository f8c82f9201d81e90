"""Deploy configs (nginx, supervisord, gunicorn) rendered from Settings with deploy/'s templates.

One set of jinja2 templates, two renderers: this module (``wharf render``, and ``wharf
stack``, ``wharf serve`` and the container's ``wharf container`` through it) and the Ansible
role's ``template`` module. So that both write the same bytes, the templates
  - get plain values only: ``context(settings)`` is every Settings field by name
    (``Settings.as_dict()``: strings, numbers, booleans, lists, None), plus
    ``state_path``, ``app_server_addresses``, ``env`` (the WHARF_* variables whose values
    differ from the defaults) and ``tls_policy`` (deploy/nginx/tls-policy.json);
  - use plain Jinja only (no Ansible filters or variables, no timestamps);
  - are rendered by an environment configured as Ansible's template module is:
    trim_blocks, keep_trailing_newline, StrictUndefined, no autoescaping.

A template ``deploy/<dir>/<name>.j2`` becomes ``<out>/<dir>/<name>``; the rendered files
refer to each other under ``settings.config_dir``, so render into that directory (the
default of ``wharf render``; ``wharf render --out DIR`` alone makes DIR the config dir),
or copy them there (``--out`` with ``--config-dir``, which says so).
"""

from __future__ import annotations

import json
import site
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2

from ..atomic import write_file
from ..settings import Settings

# Each target is a list of templates under deploy/; "all" is every target.
TARGETS: dict[str, tuple[str, ...]] = {
    "nginx": (
        "nginx/nginx.conf.j2",
        "nginx/site.conf.j2",
        "nginx/tls.conf.j2",
        "nginx/headers.conf.j2",
        "nginx/proxy.conf.j2",
        "nginx/cache.conf.j2",
        "nginx/gzip.conf.j2",
        "nginx/ffdhe2048.pem.j2",
    ),
    "supervisor": ("supervisor/supervisord.conf.j2", "supervisor/wharf.conf.j2"),
    "gunicorn": ("gunicorn/gunicorn.conf.py.j2", "wharf.env.j2"),
}
TLS_POLICY_FILE = "nginx/tls-policy.json"
# The env file may hold secrets (credentials in upstream_url): not world-readable.
_MODES = {"wharf.env": 0o640}

# Settings of the committed examples under deploy/examples/<name>/ (see write_examples).
EXAMPLES: dict[str, dict[str, Any]] = {
    # A public index on a server whose nginx and supervisord are system services.
    "server": {
        "server_name": "pypi.example.com",
        "packages": (Path("/srv/wharf/packages"),),
        "password_file": "/etc/wharf/htpasswd",
        "tls_cert": Path("/etc/letsencrypt/live/pypi.example.com/fullchain.pem"),
        "tls_key": Path("/etc/letsencrypt/live/pypi.example.com/privkey.pem"),
        "tls_chain": Path("/etc/letsencrypt/live/pypi.example.com/chain.pem"),
        "resolver": "127.0.0.53",
        "python": "/opt/wharf/venv/bin/python",
        "run_user": "wharf",
    },
    # A private index (every action needs a user) in a container: supervisord runs nginx too.
    "private": {
        "server_name": "pypi.internal.example",
        "packages": (Path("/data/packages"),),
        "password_file": "/data/htpasswd",
        "authenticate": ("update", "download", "list"),
        "listen": ("*", "::"),
        "http_port": 8080,
        "https_port": 8443,
        "tls_cert": Path("/data/tls/server.crt"),
        "tls_key": Path("/data/tls/server.key"),
        "cache_path": Path("/data/cache"),
        "log_dir": Path("/data/logs"),
        "run_dir": Path("/tmp/wharf"),
        "python": "/opt/wharf/venv/bin/python",
        "supervise_nginx": True,
        "ocsp_stapling": False,
        "port": 8000,
        "workers": 4,
    },
}


def template_dir() -> Path:
    """deploy/ of a source checkout, else the copy installed with the package.

    pyproject.toml installs the templates as data files in <prefix>/share/wharf/deploy/
    (the package itself holds only app/).
    """
    candidates = [Path(__file__).resolve().parents[2] / "deploy"]
    for prefix in (sysconfig.get_path("data"), sys.prefix, site.USER_BASE):
        if prefix:
            candidates.append(Path(prefix) / "share" / "wharf" / "deploy")
    for candidate in candidates:
        if (candidate / TLS_POLICY_FILE).is_file():
            return candidate
    raise FileNotFoundError("Wharf's deploy templates are missing (looked in "
                            + ", ".join(str(c) for c in candidates) + ")")


def environment(directory: Path | None = None) -> jinja2.Environment:
    """A jinja2 environment that renders as Ansible's template module does."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory or template_dir())),
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def tls_policy(directory: Path | None = None) -> dict[str, Any]:
    """The pinned TLS policy (versioned data, not template text)."""
    data = json.loads(((directory or template_dir()) / TLS_POLICY_FILE).read_text(encoding="utf-8"))
    return data["tls_policy"]


def changed_env(settings: Settings) -> dict[str, str]:
    """The WHARF_* variables of ``settings`` whose values differ from the defaults."""
    defaults = Settings().as_env()
    return {name: value for name, value in settings.as_env().items() if value != defaults.get(name)}


def context(settings: Settings, directory: Path | None = None) -> dict[str, Any]:
    """Everything a deploy template may use, as plain values."""
    values = settings.as_dict()
    values["env"] = changed_env(settings)
    values["tls_policy"] = tls_policy(directory)
    return values


def templates_for(targets: Iterable[str]) -> list[str]:
    names: list[str] = []
    for target in targets:
        if target == "all":
            chosen = [t for group in TARGETS.values() for t in group]
        elif target in TARGETS:
            chosen = list(TARGETS[target])
        else:
            raise ValueError(f"unknown render target {target!r}: use {', '.join([*TARGETS, 'all'])}")
        names += [t for t in chosen if t not in names]
    return names


def render(settings: Settings, targets: Iterable[str] = ("all",), directory: Path | None = None) -> dict[str, str]:
    """The rendered files of ``targets``: output path (relative) -> text."""
    env = environment(directory)
    values = context(settings, directory)
    return {name.removesuffix(".j2"): env.get_template(name).render(values) for name in templates_for(targets)}


def write(settings: Settings, out: Path, targets: Iterable[str] = ("all",)) -> list[Path]:
    """Render ``targets`` into ``out``; files whose bytes are unchanged are not touched.

    Returns the files written (an unchanged rerun writes none, as Ansible reports "ok").
    """
    written = []
    for relpath, text in render(settings, targets).items():
        path = out / relpath
        data = text.encode("utf-8")
        if path.is_file() and path.read_bytes() == data:
            continue
        write_file(path, data, mode=_MODES.get(relpath, 0o644))
        written.append(path)
    return written


def example_settings(name: str) -> Settings:
    overrides = dict(EXAMPLES[name])
    overrides.setdefault("config_dir", Path("/etc/wharf"))
    return Settings(**overrides).validated()


def write_examples(root: Path | None = None) -> list[Path]:
    """Re-render the committed examples under deploy/examples/ (``python -m app.serving.render``)."""
    root = root or (template_dir() / "examples")
    written = []
    for name in EXAMPLES:
        written += write(example_settings(name), root / name)
    return written


if __name__ == "__main__":
    for path in write_examples():
        print(f"wrote {path}", file=sys.stderr)
