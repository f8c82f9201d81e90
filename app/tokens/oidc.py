"""OIDC identity tokens (JWTs) from CI systems: the issuers' keys, and verifying a token.

An issuer's signing keys are found the OpenID Connect way: its discovery document
(``{issuer}/.well-known/openid-configuration``) names ``jwks_uri``. Keys are kept for an
hour and fetched again when a token names a key id not seen yet (at most every
``REFRESH_GAP`` seconds per issuer, so junk key ids cannot make the index hammer the
issuer). Only issuers an administrator configured are ever fetched, over https; plain
http only for loopback issuers (tests) or with ``oidc_allow_http``.

The signature is checked with PyJWT against the issuer's key (asymmetric algorithms
only: never ``none`` or an HMAC an attacker could key with a public key), then ``iss``,
``aud``, ``exp``, ``nbf`` and ``iat`` with a small leeway for clock skew.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import jwt

KEYS_MAX_AGE = 3600.0
REFRESH_GAP = 10.0
LEEWAY = 30  # seconds of clock skew allowed on exp, nbf and iat
FETCH_TIMEOUT = 10.0
MAX_DOCUMENT = 1024 * 1024
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class OidcRefused(Exception):
    """An identity token that is not accepted, and why (short, safe to tell the client)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class IssuerKeys:
    """Signing keys per issuer, from its discovery document and JWKS, cached."""

    def __init__(self, allow_http: bool = False):
        self.allow_http = allow_http
        self._keys: dict[str, tuple[float, dict[str, jwt.PyJWK]]] = {}
        self._tried: dict[str, float] = {}
        self._lock = threading.Lock()

    def _check_url(self, url: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme == "https" or (scheme == "http" and (self.allow_http or is_loopback(url))):
            return
        raise OidcRefused("issuer-unreachable", f"will not fetch keys from {url[:200]}: not https")

    def _fetch_json(self, url: str) -> dict:
        self._check_url(url)
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(url) else []
        opener = urllib.request.build_opener(*handlers)
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "wharf"})
        try:
            with opener.open(request, timeout=FETCH_TIMEOUT) as answer:
                data = json.loads(answer.read(MAX_DOCUMENT + 1)[:MAX_DOCUMENT])
        except (OSError, ValueError, urllib.error.URLError) as exc:
            raise OidcRefused("issuer-unreachable", f"cannot read {url[:200]}: {exc}") from None
        if not isinstance(data, dict):
            raise OidcRefused("issuer-unreachable", f"{url[:200]} is not a JSON object")
        return data

    def _load(self, issuer: str) -> dict[str, jwt.PyJWK]:
        discovery = self._fetch_json(issuer + "/.well-known/openid-configuration")
        if str(discovery.get("issuer", "")).rstrip("/") != issuer:
            raise OidcRefused("issuer-mismatch", f"the discovery document of {issuer} names another issuer")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise OidcRefused("issuer-unreachable", f"the discovery document of {issuer} has no jwks_uri")
        keys: dict[str, jwt.PyJWK] = {}
        for item in self._fetch_json(jwks_uri).get("keys", []):
            try:
                key = jwt.PyJWK.from_dict(item)
            except (jwt.exceptions.PyJWKError, jwt.exceptions.InvalidKeyError, TypeError, ValueError):
                continue  # a key type this index cannot use: the others still work
            if item.get("use", "sig") == "sig":
                keys[item.get("kid", "")] = key
        return keys

    def key(self, issuer: str, kid: str) -> jwt.PyJWK:
        """The issuer's key ``kid``: cached, fetched when old or unknown (OidcRefused if none)."""
        now = time.monotonic()
        with self._lock:
            fetched, keys = self._keys.get(issuer, (0.0, {}))
            stale = now - fetched > KEYS_MAX_AGE
            if (stale or kid not in keys) and now - self._tried.get(issuer, -REFRESH_GAP) >= REFRESH_GAP:
                self._tried[issuer] = now
                keys = self._load(issuer)
                self._keys[issuer] = (now, keys)
        if kid not in keys:
            raise OidcRefused("invalid-token", f"the token was signed with a key {issuer} does not publish ({kid[:60]!r})")
        return keys[kid]


def unverified_issuer(token: str) -> str:
    """The ``iss`` a token claims, before anything is verified (to pick the issuer's keys)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.exceptions.PyJWTError as exc:
        raise OidcRefused("invalid-token", f"not a JWT: {exc}") from None
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise OidcRefused("invalid-token", "the token names no issuer (iss)")
    return issuer.rstrip("/")


def verify_token(token: str, issuer: str, audience: str, keys: IssuerKeys) -> dict:
    """The claims of a token ``issuer`` signed for ``audience``, all checked; OidcRefused otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.exceptions.PyJWTError as exc:
        raise OidcRefused("invalid-token", f"not a JWT: {exc}") from None
    if header.get("alg") not in ALGORITHMS:
        raise OidcRefused("invalid-token", f"signature algorithm {str(header.get('alg'))[:20]!r} is not accepted")
    key = keys.key(issuer, str(header.get("kid", "")))
    try:
        claims = jwt.decode(token, key=key.key, algorithms=[header["alg"]], audience=audience, leeway=LEEWAY,
                          options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_iss": False})
    except jwt.exceptions.ExpiredSignatureError:
        raise OidcRefused("expired-token", "the token has expired") from None
    except jwt.exceptions.InvalidAudienceError:
        raise OidcRefused("invalid-audience", f"the token is not for this index (audience must be {audience!r})") from None
    except jwt.exceptions.ImmatureSignatureError:
        raise OidcRefused("invalid-token", "the token is not valid yet (nbf or iat in the future)") from None
    except jwt.exceptions.InvalidSignatureError:
        raise OidcRefused("invalid-signature", "the token's signature does not verify") from None
    except jwt.exceptions.MissingRequiredClaimError as exc:
        raise OidcRefused("invalid-token", f"the token has no {exc.claim} claim") from None
    except jwt.exceptions.PyJWTError as exc:
        raise OidcRefused("invalid-token", f"the token is not valid: {exc}") from None
    if str(claims.get("iss", "")).rstrip("/") != issuer:
        raise OidcRefused("unknown-issuer", "the token's issuer is not the one its keys came from")
    return claims
