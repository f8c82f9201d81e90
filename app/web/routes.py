"""The web pages' routes: home, the project list with search, project pages, assets.

Everything a page shows comes from the catalog's in-memory ``View``; what costs more than
a dictionary lookup is computed once and kept (search.py, details.py).
"""

from __future__ import annotations

import html
import importlib.metadata
import re

import jinja2
from bottle import Bottle, HTTPError, redirect, request, response

from ..auth import Access
from ..catalog import Catalog
from ..proxy import external_url
from ..settings import Settings
from ..simple_api import valid_project_name
from .assets import load_assets, send_asset
from .details import ProjectPages
from .pages import Pages, page_cache_control, query_params, root_path
from .search import CurrentSearch

PER_PAGE = 50
# A project page lists this many versions at a time: a project with thousands of files
# renders in milliseconds, not seconds.
RELEASES_PER_PAGE = 25
MAX_QUERY = 200
# pypiserver's welcome files use these bottle-template placeholders; only these are
# substituted (the operator's file is never executed as a template).
_WELCOME_FIELDS = re.compile(r"\{\{\s*(URL|VERSION|NUMPKGS|PACKAGES|SIMPLE)\s*\}\}")


def page_number(params: dict[str, str]) -> int:
    """The ``page`` query parameter: a positive whole number, 1 when absent (400 otherwise)."""
    number = params.get("page", "1")
    if not number.isdigit() or not 0 < int(number) < 1_000_000:
        raise HTTPError(400, "page must be a positive whole number")
    return int(number)


def _wharf_version() -> str:
    try:
        return importlib.metadata.version("wharf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment) -> None:
    """Add the pages for people to ``app``."""
    welcome = settings.welcome_file.read_text(encoding="utf-8") if settings.welcome_file else None
    version = _wharf_version()
    assets = load_assets()
    private = access.protects("list")
    pages = Pages(templates, assets, private)
    details = ProjectPages(catalog)
    search = CurrentSearch(catalog)
    search.prepare_in_background()

    def urls() -> dict[str, str]:
        return {
            "index_url": external_url(request.environ, "/simple/"),
            "upload_url": external_url(request.environ, "/"),
        }

    @app.get("/")
    def home():
        access.require("list")
        if welcome is not None:
            return welcome_page()
        pull_through = app.config.get("wharf.upstream")  # app/upstream/pull_through.py, None when off
        return pages.render("web/home.html", projects=len(catalog.view.names), files=catalog.file_count(),
                            recent=search.recent(), takes_uploads=access.takes_uploads,
                            upstream=pull_through.status() if pull_through is not None else None,
                            needs_login={a: access.protects(a) for a in ("update", "download", "list")},
                            ca=settings.client_ca_file, **urls())

    def welcome_page() -> str:
        # What pypiserver fills in: the absolute URL, paths for the rest, the file count.
        values = {
            "URL": external_url(request.environ, "/"),
            "VERSION": version,
            "NUMPKGS": str(catalog.file_count()),
            "PACKAGES": root_path() + "packages/",
            "SIMPLE": root_path() + "simple/",
        }
        response.set_header("Content-Type", "text/html; charset=utf-8")
        response.set_header("Cache-Control", page_cache_control(private))
        return _WELCOME_FIELDS.sub(lambda m: html.escape(values[m.group(1)]), welcome)

    @app.get("/projects")
    def projects_redirect():
        redirect(external_url(request.environ, "/projects/", keep_query=True), 301)

    @app.get("/projects/")
    def project_list():
        access.require("list")
        params = query_params()
        query = " ".join(params.get("q", "").split())
        if len(query) > MAX_QUERY:
            raise HTTPError(400, f"the search is longer than {MAX_QUERY} characters")
        number = page_number(params)
        found = search.search(query)
        all_projects = len(catalog.view.names)
        pages_total = max(1, -(-len(found) // PER_PAGE))
        if number > pages_total:
            return pages.render("web/projects.html", status=404, query=query, entries=[], total=len(found),
                                page=number, pages=pages_total, all_projects=all_projects,
                                missing_page=True)
        start = (number - 1) * PER_PAGE
        return pages.render("web/projects.html", query=query, entries=found[start:start + PER_PAGE],
                            total=len(found), page=number, pages=pages_total, all_projects=all_projects,
                            missing_page=False)

    @app.get("/project/<name>")
    def project_redirect(name: str):
        redirect(external_url(request.environ, f"/project/{valid_project_name(name)}/"), 301)

    @app.get("/project/<name>/")
    def project_page(name: str):
        access.require("list")
        normalized = valid_project_name(name)
        if normalized != name:
            redirect(external_url(request.environ, f"/project/{normalized}/"), 301)
        project = catalog.project(name)
        if project is None:
            return pages.render("web/not_found.html", status=404, name=name)
        number = page_number(query_params())
        shown = details.details(project)
        pages_total = max(1, -(-len(shown.releases) // RELEASES_PER_PAGE))
        if number > pages_total:
            raise HTTPError(404, f"there is no page {number}: {project.display_name} has {pages_total}")
        start = (number - 1) * RELEASES_PER_PAGE
        links = urls()
        return pages.render("web/project.html", version=f"{shown.signature}|{number}|{links}", project=project,
                            details=shown, releases=shown.releases[start:start + RELEASES_PER_PAGE],
                            page=number, pages=pages_total, **links)

    @app.route("/static/<name>", method=["GET", "HEAD"])
    def static(name: str):
        return send_asset(assets, name, query_params().get("v"))
