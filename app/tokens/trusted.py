"""Trusted publishing: an OIDC identity token from a CI job, exchanged for a 15-minute upload token.

The exchange is the one PyPI made and ``uv publish --trusted-publishing`` speaks (and PEP
807 proposes for every index): the client asks for the audience, gets an identity token
for it from its CI system, and posts it here. Every refusal names its reason (the client
shows it) and goes in the audit log with the token's issuer and subject; nothing is
minted unless the signature, issuer, audience, times, every configured claim and a
never-seen token id all check out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .oidc import IssuerKeys, OidcRefused, unverified_issuer, verify_token
from .publishers import Publishers
from .tokens import TokenRefused, Tokens

audit = logging.getLogger("wharf.audit")

MINTED_LIFETIME = 15 * 60  # PEP 807: at least 15 minutes, at most 6 hours


@dataclass(frozen=True)
class Minted:
    token: str
    expires: int
    publishers: tuple[str, ...]
    projects: tuple[str, ...]


class TrustedPublishing:
    """Verifies identity tokens against the publishers file and mints upload tokens."""

    def __init__(self, publishers: Publishers, tokens: Tokens, audience: str, keys: IssuerKeys):
        self.publishers = publishers
        self.tokens = tokens
        self.audience = audience
        self.keys = keys

    def mint(self, identity_token: str, address: str) -> Minted:
        """A new upload token for ``identity_token``'s publishers; OidcRefused (audit-logged) otherwise."""
        subject = "?"
        issuer = "?"
        try:
            issuer = unverified_issuer(identity_token)
            candidates = [p for p in self.publishers.current() if p.issuer == issuer]
            if not candidates:
                raise OidcRefused("unknown-issuer", f"no trusted publisher on this index uses the issuer {issuer[:200]!r}")
            claims = verify_token(identity_token, issuer, self.audience, self.keys)
            subject = str(claims.get("sub", "?"))
            matched, reasons = [], []
            for publisher in candidates:
                wrong = publisher.mismatches(claims)
                if wrong:
                    reasons.append(f"{publisher.name}: {'; '.join(wrong)}")
                else:
                    matched.append(publisher)
            if not matched:
                raise OidcRefused("invalid-publisher", "no trusted publisher matches this token ("
                                  + " | ".join(reasons)[:600] + ")")
            if not self.tokens.store.claim_once(issuer, str(claims["jti"]), float(claims["exp"]) + 60):
                raise OidcRefused("replayed-token", f"this identity token (jti {str(claims['jti'])[:80]!r}) was used already")
        except OidcRefused as refusal:
            audit.info("refused trusted publishing from %s (issuer %s, subject %s): %s", address, issuer[:200],
                       subject[:200], refusal)
            raise
        projects = tuple(dict.fromkeys(p for publisher in matched for p in publisher.projects))
        names = tuple(p.name for p in matched)
        token, record = self.tokens.create(
            "publisher:" + "+".join(names), projects=projects, actions=("update",), lifetime=MINTED_LIFETIME,
            kind="oidc", description=f"trusted publishing: {subject[:150]}", by=f"trusted publishing from {address}",
            details={"issuer": issuer, "sub": subject, "jti": str(claims["jti"]),
                     **{k: str(claims[k])[:200] for k in ("repository", "project_path", "ref", "environment",
                                                          "job_workflow_ref", "ci_config_ref_uri") if k in claims}})
        self.tokens.store.purge(time.time() - 86400)
        audit.info("minted token %s for publisher %s (issuer %s, subject %s) from %s: projects %s, until %s",
                   record.id, "+".join(names), issuer, subject[:200], address, ",".join(projects),
                   time.strftime("%H:%M:%S UTC", time.gmtime(record.expires)))
        return Minted(token, int(record.expires or 0), names, projects)

    def burn(self, token: str, address: str) -> None:
        """Revoke a minted token its holder is done with (uv does after publishing)."""
        try:
            grant = self.tokens.check(token)
        except TokenRefused:
            return  # nothing to burn: the answer is the same either way
        if grant.record.kind == "oidc":
            self.tokens.revoke(grant.record.id, by=f"its holder at {address}")
