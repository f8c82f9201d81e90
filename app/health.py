"""The health endpoint: can the index read its packages, take uploads and log users in?

``ok`` (200): everything works. ``degraded`` (200): reads are served but something the
operator set up does not work (an unreadable password file, an unwritable packages or
state directory, a permissions file that refuses every update, a catalog scanner that
has stopped finishing its passes), each with a reason.
``error`` (503): reads fail (a packages directory is unreadable, or on a private index
nobody can log in). Load balancers ask anonymously: on a private index they learn only
up (``ok``) or down (``error``); a user sees the reasons, counts and the upstream.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bottle import Bottle, response

from .auth import Access
from .catalog import Catalog
from .settings import Settings


def unwritable(settings: Settings, catalog: Catalog, access: Access) -> list[str]:
    """Directories the index must write to but cannot (access(2) also knows read-only mounts)."""
    found = []
    places: list[tuple[str, Path]] = [("state directory", Path(settings.state_path))]
    roots = getattr(catalog.storage, "roots", None)  # object storage (s3://) has no directory
    if access.takes_uploads and roots:  # without users no upload ever writes to the packages directory
        places.append(("packages directory", Path(roots[0])))
    for what, path in places:
        if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
            found.append(f"{what} {path} is not writable: uploads and the catalog fail")
        elif not path.exists():
            found.append(f"{what} {path} does not exist")
    return found


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access, upstream=None) -> None:
    @app.route(settings.health_endpoint, method=["GET", "HEAD"])
    def health():
        failing = catalog.storage.readable()
        login = access.problems()
        if login and access.protects("list") and any("password file" in p for p in login):
            failing += [p for p in login if "password file" in p]  # a private index nobody can read
        scanner = catalog.scanner_problem()
        degraded = [p for p in login + unwritable(settings, catalog, access) + ([scanner] if scanner else [])
                    if p not in failing]
        status = "error" if failing else "degraded" if degraded else "ok"
        body: dict = {"status": status, "time": time.time()}
        if not access.protects("list") or access.user() is not None:
            body.update(problems=failing + degraded, projects=len(catalog.view.names), files=_file_count(catalog),
                        indexing=catalog.indexing())
            if upstream is not None:  # the pull-through cache (app/upstream/pull_through.py); never fails health
                body["upstream"] = upstream.status()
        else:
            body["status"] = "error" if failing else "ok"  # anonymous callers of a private index: up or down
        response.status = 503 if failing else 200
        response.set_header("Content-Type", "application/json")
        response.set_header("Cache-Control", "no-store")
        return json.dumps(body).encode()


def _file_count(catalog) -> int | None:
    """The catalog's file count, or None while its database does not answer (health still does)."""
    try:
        return catalog.file_count()
    except Exception:  # noqa: BLE001 (the database's own error types vary by engine)
        return None
