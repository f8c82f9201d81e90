"""The health endpoint: can the index read its packages, and is its catalog current?"""

from __future__ import annotations

import json
import time

from bottle import Bottle, response

from .catalog import Catalog
from .settings import Settings


def register(app: Bottle, settings: Settings, catalog: Catalog, upstream=None) -> None:
    @app.route(settings.health_endpoint, method=["GET", "HEAD"])
    def health():
        problems = catalog.storage.readable()
        view = catalog.view
        body = {
            "status": "error" if problems else "ok",
            "problems": problems,
            "projects": len(view.projects),
            "files": view.file_count,
            "time": time.time(),
        }
        if upstream is not None:  # the pull-through cache (app/upstream.py); its state never fails health
            body["upstream"] = upstream.status()
        response.status = 503 if problems else 200
        response.set_header("Content-Type", "application/json")
        response.set_header("Cache-Control", "no-store")
        return json.dumps(body).encode()
