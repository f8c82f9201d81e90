"""What pip resolves against while a cooldown is on: the upstream seen through Wharf's own policy.

pip's ``--uploaded-prior-to`` knows one cutoff, and fails outright on an index whose
listing has a file without an upload time; the policy also has exemptions, break-glass
pins and a rule for untimed files. So ``wharf mirror`` runs a throwaway pull-through
index (the same code the server runs: app/upstream/pull_through.py and
app/policy/cooldown.py) on a loopback port for the duration of the resolution, and pip
asks that one: it only ever sees files the policy lets through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..settings import Settings


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # pip's requests are not the user's business
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


@contextlib.contextmanager
def filtered_index(settings: Settings, index_url: str, cert: Path | None) -> Iterator[str]:
    """The URL of a loopback simple index that shows ``index_url`` as the cooldown allows."""
    from .. import create_app  # the app factory sits above this module

    with tempfile.TemporaryDirectory(prefix="wharf-mirror-view-") as tmp:
        root = Path(tmp)
        (root / "packages").mkdir()
        view = dataclasses.replace(settings, packages=(root / "packages",), state_dir=root / "state",
                                   upstream_cache_dir=root / "cache", upstream_url=index_url, upstream_cert=cert,
                                   upstream_max_age=3600, password_file="", authenticate=("update",),
                                   server_base_url="", welcome_file=None, permissions_file=None)
        app = create_app(view.validated(), watch=False)
        server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_Quiet)
        thread = threading.Thread(target=server.serve_forever, name="wharf-mirror-view", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}/simple/"
        finally:
            server.shutdown()
            server.server_close()
            app.config["wharf.catalog"].close()
            app.config["wharf.policy"].close()
