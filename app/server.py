"""Running the app under gunicorn, with settings handed to every worker."""

from __future__ import annotations

import logging
import sys

from gunicorn.app.base import BaseApplication

from .catalog import Catalog
from .settings import Settings, _bracket
from .storage import LocalStorage

log = logging.getLogger("wharf")


def configure_logging(settings: Settings) -> None:
    handler: logging.Handler = (logging.FileHandler(settings.log_file) if settings.log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("wharf")
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def gunicorn_options(settings: Settings) -> dict:
    """The gunicorn configuration for these settings (also rendered for supervisord)."""
    logfile = settings.log_file or "-"
    return {
        "bind": [f"{_bracket(settings.host)}:{settings.port}"],
        "workers": settings.worker_count(),
        "worker_class": "sync",
        "timeout": settings.timeout,
        "graceful_timeout": 10,
        "accesslog": logfile,
        "errorlog": logfile,
        "loglevel": settings.log_level,
        # Forwarded headers are judged by the app's own trusted_proxies, not by gunicorn.
        "secure_scheme_headers": {},
        "forwarded_allow_ips": "127.0.0.1",
        "proc_name": "wharf",
        # gunicorn >= 27 opens a control socket at one fixed path per user by default,
        # which two indexes on one machine would fight over.
        "control_socket_disable": True,
    }


class WharfServer(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self):
        from . import create_app

        configure_logging(self.settings)
        return create_app(self.settings)


def index_now(settings: Settings) -> tuple[int, int]:
    """Bring the catalog up to date in this process; (projects, files)."""
    catalog = Catalog(settings, LocalStorage(settings.packages))
    try:
        return catalog.refresh()
    finally:
        catalog.close()


def serve(settings: Settings) -> None:
    configure_logging(settings)
    for root in settings.packages:
        root.mkdir(parents=True, exist_ok=True)
    projects, files = index_now(settings)
    log.info("serving %d projects (%d files) from %s on http://%s:%d/",
             projects, files, ", ".join(str(p) for p in settings.packages),
             _bracket(settings.host), settings.port)
    WharfServer(settings).run()
