"""Gunicorn's target: ``gunicorn app.wsgi:application``, configured by WHARF_* variables."""

from . import create_app
from .settings import Settings

application = create_app(Settings.from_env())
