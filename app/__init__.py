"""Wharf: a private Python package index.

``create_app(settings)`` wires the pieces together; read it as a table of contents.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bottle
import jinja2

from . import auth_request, cache_refresh, cross_site, files, health, metrics, publishing, simple_api, tokens, web
from .policy import routes as policy_routes
from .policy.cooldown import Cooldown
from .policy.rules import LocalRules
from .policy.store import policy_store_for
from .upstream import pull_through
from .auth import Access, Refusal
from .catalog import Catalog
from .databases import DatabaseUnavailable
from .proxy import ProxyHeaders
from .settings import Settings

__all__ = ["create_app", "Settings"]

log = logging.getLogger("wharf")

# Seconds any cache may keep a 404.
NOT_FOUND_MAX_AGE = 5


def _plain_error(error: bottle.HTTPError) -> str:
    """Errors as one line of text: uv shows the body, twine the reason phrase."""
    bottle.response.set_header("Content-Type", "text/plain; charset=utf-8")
    # What a cache in front of Wharf may keep of an error (any cache: a third-party nginx
    # with "proxy_cache_valid any 5m" obeys these over its own lifetimes). A refusal depends
    # on the credentials sent: never stored. A 404 may be kept a few seconds, no longer
    # (a project uploaded next must show). Wharf's own nginx stores a 404 only when its
    # refresh asked (app/cache_refresh.py): that replaces what a removed file or project
    # left in the cache. Any other 404 it does not keep, so a file uploaded right after
    # shows even if the refresh of its upload was lost (a worker killed meanwhile).
    if error.status_code in (401, 403):
        bottle.response.set_header("Cache-Control", "no-store")
    elif error.status_code == 404:
        bottle.response.set_header("Cache-Control", f"max-age={NOT_FOUND_MAX_AGE}")
        refresh = cache_refresh.holds_key(bottle.request.get_header(cache_refresh.KEY_HEADER),
                                          bottle.request.app.config.get("wharf.refresh_key"))
        bottle.response.set_header("X-Accel-Expires", str(NOT_FOUND_MAX_AGE) if refresh else "0")
    # A database that is down (PostgreSQL restarting) refuses writes for a moment: say so
    # and when to try again, rather than report a failure.
    if isinstance(error.exception, DatabaseUnavailable):
        log.warning("%s %s refused: %s", bottle.request.method, bottle.request.path, error.exception)
        bottle.response.status = 503
        bottle.response.set_header("Retry-After", "5")
        bottle.response.set_header("Cache-Control", "no-store")
        return "503 the index's database is unavailable; nothing was changed, try again shortly\n"
    # A Refusal is an answer the app chose, with its reason (507: the disk is full); other
    # 5xx are failures, whose details stay in the log.
    if error.status_code >= 500 and not isinstance(error, Refusal):
        log.error("%s %s failed: %s", bottle.request.method, bottle.request.path, error.exception,
                  exc_info=error.exception if isinstance(error.exception, BaseException) else None)
        return f"{error.status_line}: internal error\n"
    detail = error.body if isinstance(error.body, str) and error.body else error.status_line
    return f"{error.status_code} {detail}\n" if not detail.startswith(str(error.status_code)) else f"{detail}\n"


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def _answer_database_outages(callback):
    """Route wrapper: a database outage is an answer (503 in ``_plain_error``), not a traceback in the log."""
    def answer(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except DatabaseUnavailable as exc:
            raise bottle.HTTPError(503, str(exc), exc) from None
    return answer


def create_app(settings: Settings, *, watch: bool = True) -> bottle.Bottle:
    """A fresh index app for ``settings``; ``watch`` keeps following the directories."""
    catalog = Catalog(settings)  # on storage_for(settings): the packages directories
    # Every nginx in front fetches again what a change touched, before it is acknowledged;
    # the scanner does it for files dropped in by hand (and again for everyone's changes).
    refresher = cache_refresh.CacheRefresher(settings, cache_refresh.shared_key(settings.state_path, catalog), catalog)
    catalog.after_scan = refresher.refresh_since
    catalog.start() if watch else catalog.open()
    access = Access(settings)
    access.refresh_key = refresher.key  # nginx's refreshes may read protected pages
    env = templates()

    app = bottle.Bottle(catchall=True)
    app.config["wharf.settings"] = settings
    app.config["wharf.catalog"] = catalog
    app.config["wharf.refresh_key"] = refresher.key  # 404s that nginx's refreshes may store
    app.default_error_handler = _plain_error
    app.install(_answer_database_outages)
    # A change another worker made (upload, removal, yank) shows on the very next request,
    # and nginx's refresh of a change another node made waits until this node has it.
    app.add_hook("before_request", lambda: catalog.catch_up(refresher.wanted_seq(bottle.request)))
    # A form or script on another web site cannot use the browser's credentials to change anything.
    app.add_hook("before_request", cross_site.refuse_cross_site)

    # Statuses (PEP 792) and removals, kept apart from the rebuildable catalog (app/policy/).
    store = policy_store_for(settings)
    app.config["wharf.policy"] = store
    rules = LocalRules(store, settings.overwrite)
    cooldown = Cooldown.from_settings(settings)
    env.globals.update(project_status=store.status, cooldown=cooldown.describe())  # web templates

    upstream = pull_through.register(app, settings, catalog, access, env, cooldown)  # None unless upstream_url
    app.config["wharf.upstream"] = upstream  # web pages and health: upstream.status()
    simple_api.register(app, settings, catalog, access, env, rules, upstream=upstream)
    files.register(app, settings, catalog, access, env, rules)
    health.register(app, settings, catalog, access, upstream=upstream)
    web.register(app, settings, catalog, access, env)
    publishing.register(app, settings, catalog, access, env, rules, refresher=refresher)
    policy_routes.register(app, access, store, refresher)  # POST /_/status/<project>
    auth_request.register(app, settings, access)  # nginx asks before serving protected cache entries
    tokens.register(app, settings, access)  # API tokens wherever passwords work; trusted publishing (/_/oidc/)

    counted = metrics.register(app, settings, catalog, access)  # /metrics (Prometheus); the app, counted
    app.wsgi = ProxyHeaders(counted, settings.trusted_proxies, settings.server_base_url)
    return app
