"""What a token store keeps and the small interface every store implements.

Tokens are durable state: unlike the file catalog they cannot be derived from anything,
so they live apart from it (``tokens.sqlite3`` in the state directory, or PostgreSQL). A store only
keeps records and one-time token ids; hashing, scopes and expiry are decided in
app/tokens/tokens.py, so a PostgreSQL store is one more class with these methods.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TokenRecord:
    """One API token as stored: never its secret, only a keyed hash of it."""

    id: str
    digest: str
    user: str  # the owner; for a minted token "publisher:<name>"
    kind: str  # "user" (wharf token create, POST /_/tokens) or "oidc" (minted by trusted publishing)
    projects: tuple[str, ...] = ()  # fnmatch patterns over normalized names; () means every project
    actions: tuple[str, ...] = ("update",)
    description: str = ""
    created: float = 0.0
    expires: float | None = None
    last_used: float | None = None
    revoked: float | None = None
    details: dict = field(default_factory=dict, compare=False)  # e.g. the publisher and claims of a minted token

    def public(self) -> dict:
        """The record without its digest (the CLI's and the HTTP API's listings)."""
        return {"id": self.id, "user": self.user, "kind": self.kind, "projects": list(self.projects),
                "actions": list(self.actions), "description": self.description, "created": self.created,
                "expires": self.expires, "last_used": self.last_used, "revoked": self.revoked}


class TokenStore(abc.ABC):
    """Durable token records and once-only OIDC token ids."""

    @abc.abstractmethod
    def add(self, record: TokenRecord) -> None:
        """Store a new record (its id is new)."""

    @abc.abstractmethod
    def get(self, token_id: str) -> TokenRecord | None:
        """The record with this id, revoked and expired ones included; None if there is none."""

    @abc.abstractmethod
    def list(self, user: str | None = None) -> list[TokenRecord]:
        """Every record (of ``user``), oldest first."""

    @abc.abstractmethod
    def revoke(self, token_id: str, when: float) -> bool:
        """Mark the token revoked; False if there is no such token or it was revoked already."""

    @abc.abstractmethod
    def touch(self, token_id: str, when: float) -> None:
        """Remember when the token was last used."""

    @abc.abstractmethod
    def claim_once(self, issuer: str, jti: str, expires: float) -> bool:
        """True the first time (issuer, jti) is claimed; False ever after, until ``expires`` has passed."""

    @abc.abstractmethod
    def purge(self, before: float) -> None:
        """Forget once-only ids and minted tokens that expired before ``before``."""

    def shared_key(self) -> bytes | None:
        """The digest key, if the store keeps one for every node (PostgreSQL); else None (the state dir's)."""
        return None

    def close(self) -> None:
        """Release connections (a no-op unless the store holds some)."""


def open_store(state_dir: Path, database_url: str = "") -> TokenStore:
    """The token store: in the PostgreSQL database of ``database_url``, else ``tokens.sqlite3`` in the state directory."""
    if database_url:
        from .postgres import PostgresTokenStore

        return PostgresTokenStore(database_url)
    from .sqlite import SQLiteTokenStore

    return SQLiteTokenStore(Path(state_dir) / "tokens.sqlite3")
