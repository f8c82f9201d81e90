"""Scoped API tokens and trusted publishing (OIDC).

- store.py / sqlite.py: the durable records (``tokens.sqlite3`` in the state directory);
- tokens.py: making, checking and scoping tokens (``wharf_<id>_<secret>``, HMAC-SHA256);
- publishers.py: the trusted publishers file; oidc.py: verifying CI identity tokens;
- trusted.py: the exchange of an identity token for a 15-minute upload token;
- routes.py: /_/tokens, /_/oidc/ and PEP 807's discovery; cli.py: ``wharf token|publisher``.

``register`` plugs tokens into app/auth.py's Access, so every route that takes a password
(uploads, downloads, listings, nginx's /_auth/ check) takes a token too.
"""

from __future__ import annotations

from bottle import Bottle

from ..auth import Access
from ..settings import Settings
from .oidc import IssuerKeys
from .publishers import Publishers
from .routes import register_token_api, register_trusted_publishing
from .store import open_store
from .tokens import Tokens, server_secret
from .trusted import TrustedPublishing

__all__ = ["register", "open_tokens"]


def open_tokens(settings: Settings) -> Tokens:
    """The tokens of the index these settings describe (for the app and the CLI)."""
    store = open_store(settings.state_path, settings.database_url)
    return Tokens(store, store.shared_key() or server_secret(settings.state_path))


def register(app: Bottle, settings: Settings, access: Access) -> Tokens:
    tokens = open_tokens(settings)
    access.tokens = tokens
    register_token_api(app, access, tokens)
    if settings.publishers_file is not None:
        trusted = TrustedPublishing(Publishers(settings.publishers_file), tokens,
                                    settings.oidc_audience or settings.server_name,
                                    IssuerKeys(allow_http=settings.oidc_allow_http))
        register_trusted_publishing(app, trusted)
    return tokens
