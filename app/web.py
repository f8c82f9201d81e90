"""Pages for people: the home page (or the operator's own welcome file)."""

from __future__ import annotations

import jinja2
from bottle import Bottle, request, response

from .auth import Access
from .catalog import Catalog
from .proxy import external_url
from .settings import Settings


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment) -> None:
    welcome = settings.welcome_file.read_text(encoding="utf-8") if settings.welcome_file else None

    @app.get("/")
    def home():
        access.require("list")
        response.set_header("Content-Type", "text/html; charset=utf-8")
        response.set_header("Cache-Control", "no-cache")
        if welcome is not None:
            return welcome
        view = catalog.view
        return templates.get_template("home.html").render(
            index_url=external_url(request.environ, "/simple/"),
            upload_url=external_url(request.environ, "/"),
            projects=len(view.projects),
            files=view.file_count,
        )
