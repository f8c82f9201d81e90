"""The health endpoint: can the index read its packages, and is its catalog current?"""

from __future__ import annotations

import json
import time

from bottle import Bottle, response

from .auth import Access
from .catalog import Catalog
from .settings import Settings


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access, upstream=None) -> None:
    @app.route(settings.health_endpoint, method=["GET", "HEAD"])
    def health():
        problems = catalog.storage.readable()
        body = {"status": "error" if problems else "ok", "time": time.time()}
        # Load balancers ask anonymously: on a private index they learn up or down, and
        # only a user sees counts, paths and the upstream.
        if not access.protects("list") or access.user() is not None:
            view = catalog.view
            body.update(problems=problems, projects=len(view.projects), files=view.file_count)
            if upstream is not None:  # the pull-through cache (app/upstream.py); never fails health
                body["upstream"] = upstream.status()
        response.status = 503 if problems else 200
        response.set_header("Content-Type", "application/json")
        response.set_header("Cache-Control", "no-store")
        return json.dumps(body).encode()
