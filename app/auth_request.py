"""The credential check nginx makes before serving or accepting anything: GET /_auth/<action>.

nginx's ``auth_request`` sends a subrequest here, with the client's Authorization header,
for every request to a protected location, cache hits included; 204 lets nginx answer
(from its cache or the app), 401 (with WWW-Authenticate) goes back to the client. So a
shared cache can hold protected pages without ever handing them to someone who could not
have fetched them (deploy/nginx/site.conf.j2 explains the whole design).

The same check runs before nginx reads a request body: a request that could change
something (any method but GET, HEAD and OPTIONS, named by nginx in X-Original-Method)
needs the update right, whatever action the location protects. So an anonymous upload
is refused before one byte of it is spooled, and so is one a browser sent from another
site (app/cross_site.py). nginx passes on only 401 and 403 from
here: a throttled address gets 403 with X-Wharf-Retry-After, which nginx turns into
429 with Retry-After, and a refusal's reason goes in X-Wharf-Refusal.
"""

from __future__ import annotations

from bottle import Bottle, HTTPError, HTTPResponse, request

from .auth import Access, Throttled
from .cross_site import cross_site_reason
from .settings import ACTIONS, Settings

READ_METHODS = ("GET", "HEAD", "OPTIONS")


def register(app: Bottle, settings: Settings, access: Access) -> None:
    @app.get("/_auth/<action>")
    def auth_check(action: str):
        if action not in ACTIONS:
            raise HTTPError(404, f"no such action {action[:50]!r}: use {', '.join(ACTIONS)}")
        method = request.environ.get("HTTP_X_ORIGINAL_METHOD", "GET").upper()
        # A change a browser sent from another site is refused here already, before nginx
        # reads its body (the subrequest carries the client's Origin and Sec-Fetch-Site).
        reason = cross_site_reason({**request.environ, "REQUEST_METHOD": method})
        try:
            if reason is not None:
                raise HTTPError(403, f"Forbidden: {reason}")
            access.require(action if method in READ_METHODS else "update")
        except Throttled as refusal:
            raise HTTPResponse(status=403, headers={
                "Cache-Control": "no-store", "X-Wharf-Retry-After": refusal.headers["Retry-After"]}) from None
        except HTTPError as refusal:
            if refusal.status_code == 403:
                refusal.add_header("X-Wharf-Refusal", str(refusal.body)[:300])
            refusal.add_header("Cache-Control", "no-store")
            raise
        # Never stored by anyone: the answer depends on the credentials.
        raise HTTPResponse(status=204, headers={"Cache-Control": "no-store"})
