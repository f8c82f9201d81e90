"""``wharf serve``: the app under gunicorn, configured by the same rendered gunicorn.conf.py as a deployment.

gunicorn's options have one owner, deploy/gunicorn/gunicorn.conf.py.j2: ``serve`` renders
it (and the env file it reads) into a private directory and loads it, exactly as
supervisord's ``gunicorn --config`` does on a server.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

from gunicorn.app.base import Application

from ..catalog import Catalog
from ..settings import Settings, bracket_host
from . import render
from .preflight import Flag, require_packages, root_warning, usable_state, wharf_flag

log = logging.getLogger("wharf.serving")

# What an operator must always see, whatever the log level short of "error": where the
# server listens, and every upload and removal (publishing/routes.py, cli.py).
ALWAYS_LOGGED = ("wharf.serving", "wharf.upload")

GUNICORN_CONFIG = "gunicorn/gunicorn.conf.py"


def configure_logging(settings: Settings) -> None:
    """The app's own log ("wharf.*"): to ``log_file``, else standard error."""
    handler: logging.Handler = (logging.FileHandler(settings.log_file) if settings.log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("wharf")
    root.handlers[:] = [handler]
    level = logging.getLevelName(settings.log_level.upper())
    root.setLevel(level)
    for name in ALWAYS_LOGGED:
        logging.getLogger(name).setLevel(min(level, logging.INFO) if level <= logging.WARNING else level)


def write_gunicorn_config(settings: Settings, directory: Path) -> Path:
    """Render gunicorn.conf.py and the env file it reads into ``directory``; the config's path."""
    render.write(dataclasses.replace(settings, config_dir=directory), directory, ["gunicorn"])
    return directory / GUNICORN_CONFIG


class WharfServer(Application):
    """gunicorn with a rendered config file, serving ``create_app(settings)``."""

    def __init__(self, settings: Settings, config_file: Path):
        self.settings = settings
        self.config_file = config_file
        super().__init__()

    def init(self, parser, opts, args) -> None:  # gunicorn's command line is not ours
        return None

    def load_config(self) -> None:
        self.load_config_from_file(str(self.config_file))

    def load(self):
        from .. import create_app

        configure_logging(self.settings)
        return create_app(self.settings)


def counted(count: int, noun: str) -> str:
    """"1 project", "2 projects": a count with its noun."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def index_now(settings: Settings) -> tuple[int, int]:
    """Bring the catalog up to date in this process; (projects, files)."""
    catalog = Catalog(settings)
    try:
        return catalog.refresh()
    finally:
        catalog.close()


# Seconds ``wharf serve`` spends indexing a never-indexed storage before it starts serving.
FIRST_INDEX_WITHIN = 1.0


def known_so_far(settings: Settings) -> tuple[int, int, bool]:
    """(projects, files) the catalog holds, and whether its storage was ever indexed whole.

    A storage never indexed is indexed first for up to FIRST_INDEX_WITHIN seconds (a small
    one whole); the workers go on from there in the background.
    """
    catalog = Catalog(settings)
    try:
        catalog.state_dir.mkdir(parents=True, exist_ok=True)
        if catalog.indexing():
            catalog.refresh(within=FIRST_INDEX_WITHIN)
        return (*catalog.counts(), not catalog.indexing())
    finally:
        catalog.close()


def serve(settings: Settings, flag: Flag = wharf_flag, command: str = "wharf serve") -> None:
    """Check the directories, then run gunicorn in the foreground until stopped.

    The catalog is brought up to date by the workers, in the background: a restart on a
    million files answers at once, and a first start answers within seconds with what is
    indexed so far.

    ``flag`` spells a setting as the running command's option, for its messages.
    """
    require_packages(settings)
    settings, warnings = usable_state(settings, flag)
    warnings.append(root_warning(f"start {command} as an unprivileged user that owns the packages directory "
                                 f"(e.g. runuser -u wharf -- {command} ...)"))
    configure_logging(settings)  # only now: a refusal to start leaves the process's logging alone
    for warning in filter(None, warnings):
        log.warning("%s", warning)
    projects, files, complete = known_so_far(settings)
    log.info("serving %s (%s%s) from %s on http://%s:%d/", counted(projects, "project"), counted(files, "file"),
             "" if complete else " so far: indexing the rest in the background",
             ", ".join(str(p) for p in settings.packages), bracket_host(settings.host), settings.port)
    with tempfile.TemporaryDirectory(prefix="wharf-serve-") as directory:
        WharfServer(settings, write_gunicorn_config(settings, Path(directory))).run()
