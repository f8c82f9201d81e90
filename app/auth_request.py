"""The credential check nginx makes before serving protected content: GET /_auth/<action>.

nginx's ``auth_request`` sends a subrequest here, with the client's Authorization header,
for every request to a protected location, cache hits included; 204 lets nginx answer
(from its cache or the app), 401 (with WWW-Authenticate) goes back to the client. So a
shared cache can hold protected pages without ever handing them to someone who could not
have fetched them (deploy/nginx/site.conf.j2 explains the whole design).
"""

from __future__ import annotations

from bottle import Bottle, HTTPError, HTTPResponse

from .auth import Access
from .settings import ACTIONS, Settings


def register(app: Bottle, settings: Settings, access: Access) -> None:
    @app.get("/_auth/<action>")
    def auth_check(action: str):
        if action not in ACTIONS:
            raise HTTPError(404, f"no such action {action[:50]!r}: use {', '.join(ACTIONS)}")
        access.require(action)
        # Never stored by anyone: the answer depends on the credentials.
        raise HTTPResponse(status=204, headers={"Cache-Control": "no-store"})
