"""``POST /_/status/<project>``: set a local project's PEP 792 status over HTTP.

The form fields are ``status`` (active, archived, deprecated, quarantined) and an optional
``reason``. Only users with the update right on that project may; cross-site posts are
refused before this runs (app/cross_site.py).
"""

from __future__ import annotations

import logging

from bottle import Bottle, request, response

from ..auth import Access, Refusal
from ..cache_refresh import CacheRefresher
from ..dists import project_name
from .store import STATUSES, PolicyStore, ProjectStatus

log = logging.getLogger("wharf.policy")
MAX_REASON = 500


def register(app: Bottle, access: Access, store: PolicyStore, refresher: CacheRefresher | None = None) -> None:
    @app.post("/_/status/<name>")
    def set_project_status(name: str):
        user = access.require("update")
        project = project_name(name)
        if project is None:
            raise Refusal(400, f"not a valid project name: {name[:100]!r}")
        access.require_project(user, project)
        status = request.forms.getunicode("status") or ""
        reason = (request.forms.getunicode("reason") or "").strip()
        if status not in STATUSES:
            raise Refusal(400, f"status must be one of {', '.join(STATUSES)}")
        if len(reason) > MAX_REASON:
            raise Refusal(400, f"reason is longer than {MAX_REASON} characters")
        store.set_status(project, ProjectStatus(status, reason), user or "-")
        if refresher is not None:  # every nginx drops what it showed before, before the answer
            catalog = app.config["wharf.catalog"]
            refresher.refresh_project(project, catalog.project(project), catalog.view.seq)
        log.info("status of %s set to %s%s by %s from %s", project, status, f" ({reason!r})" if reason else "",
                 user, request.environ.get("REMOTE_ADDR") or "?")
        response.set_header("Content-Type", "text/plain; charset=utf-8")
        response.set_header("Cache-Control", "no-store")
        return f"{project} is now {status}\n"
