"""Gunicorn's target: ``gunicorn app.wsgi:application``, configured by WHARF_* variables."""

from . import create_app
from .serving.appserver import configure_logging
from .settings import Settings

settings = Settings.from_env()
# Under plain gunicorn (supervisord, containers) nothing else sets up the app's log.
configure_logging(settings)
application = create_app(settings)
