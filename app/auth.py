"""Who the client is (htpasswd users via passlib) and what they may do.

Actions follow pypiserver: ``update`` (upload, remove, yank), ``download`` and ``list``.
``settings.authenticate`` names the actions that need a user; ``update`` always does,
whatever it says (an index nobody can log in to takes no uploads at all). An optional
permissions file restricts users to named projects.

Passwords: bcrypt, sha256-crypt, sha512-crypt, apr1 (Apache MD5), md5-crypt and ``{SHA}``
entries are accepted; plaintext and DES crypt are not (passlib's htpasswd default would
take any unrecognised entry as a plaintext password). Checks are constant-time (passlib),
and an unknown user costs a full hash check too, so response times don't tell which
names exist. Successful checks are remembered for a minute, keyed by a keyed hash of the
user, password and password-file version, so pip's dozens of requests per install don't
each pay for bcrypt; failed ones for five minutes, so a repeated wrong password costs no
check either, and an address that keeps failing is refused without a check for a while
(app/throttle.py). The key of those hashes is random per process and never leaves memory.

API tokens (app/tokens) work wherever a password does (user ``__token__`` or the owner's
name): an HMAC and one lookup per request, never bcrypt, never remembered, so a revoked one
fails at once. A token never gives more than its owner has (who must still be a user;
the permissions file still applies); its projects and actions narrow that further.

The permissions file fails closed: anything but the documented shape (one ``[projects]``
section listing at least one user) refuses every update, says why in the log and in
``/health``, and is read again when it changes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import configparser
import fnmatch
import hashlib
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path

from bottle import HTTPError, request
from packaging.utils import canonicalize_name
from passlib.apache import HtpasswdFile
from passlib.context import CryptContext

from .atomic import write_file
from .cache_refresh import KEY_HEADER, holds_key
from .settings import Settings
from .throttle import FailureThrottle, Memory

if TYPE_CHECKING:
    from .tokens.tokens import Grant, Tokens

log = logging.getLogger("wharf.auth")

REALM = "wharf"
# Where a request's token grant is kept (request.environ): a token's scope is per request.
GRANT_KEY = "wharf.token.grant"
REFUSAL_KEY = "wharf.token.refusal"
SCHEMES = ("bcrypt", "sha256_crypt", "sha512_crypt", "apr_md5_crypt", "md5_crypt", "ldap_sha1")
# bcrypt only reads the first 72 bytes; Apache's htpasswd silently truncates, the bcrypt
# library refuses longer input, so verification truncates as the hash was made.
BCRYPT_MAX_BYTES = 72
# How long a successful check is remembered, and how many are; the same for failed ones.
VERIFIED_TTL = 60.0
VERIFIED_MAX = 4096
REFUSED_TTL = 300.0
REFUSED_MAX = 16384
# A project pattern: a name's characters and fnmatch's wildcards.
_PATTERN = re.compile(r"^[A-Za-z0-9._*?!\[\]-]+$")


class Refusal(HTTPError):
    """An HTTP error whose reason phrase is the message itself.

    twine shows only the status line of a failed upload and uv only the body, so the
    one-line reason goes in both.
    """

    def __init__(self, code: int, message: str):
        line = " ".join(message.split())[:300]
        # A status line is latin-1 without control characters; keep it printable ASCII.
        reason = line.encode("ascii", "backslashreplace").decode("ascii")
        reason = "".join(c if " " <= c <= "~" else "?" for c in reason) or "error"
        super().__init__(f"{code} {reason}", line)


class Unauthorized(Refusal):
    def __init__(self, message: str):
        super().__init__(401, message)
        self.add_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        # No cache may keep it: the right password must work at once.
        self.add_header("Cache-Control", "no-store")


class Forbidden(Refusal):
    def __init__(self, message: str):
        super().__init__(403, message)


class Throttled(Refusal):
    """Too many failed logins from one address: 429, and when to come back."""

    def __init__(self, wait: float):
        seconds = max(int(wait + 0.999), 1)
        super().__init__(429, f"too many failed logins from this address; try again in {seconds} s")
        self.add_header("Retry-After", str(seconds))
        self.add_header("Cache-Control", "no-store")


@dataclass(frozen=True)
class ProjectRules:
    """Which projects each user may update: ``[projects] alice = mylib, mylib-*``.

    Users not listed may update any project, unless a ``*`` entry gives the default.
    Patterns are fnmatch patterns over normalized names.
    """

    patterns: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, text: str, source: str = "<permissions>") -> ProjectRules:
        """The rules in ``text``; ValueError (or configparser.Error) unless it has the documented shape."""
        parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), default_section="\0none")
        parser.optionxform = str  # user names are case-sensitive, as in htpasswd
        parser.read_string(text, source=source)
        others = [name for name in parser.sections() if name != "projects"]
        if others:
            raise ValueError(f"unknown section [{others[0]}]: the file has one section, [projects]")
        if not parser.has_section("projects"):
            raise ValueError("no [projects] section")
        patterns: dict[str, tuple[str, ...]] = {}
        for user, value in parser.items("projects"):
            items = value.replace(",", " ").split()
            bad = [item for item in items if not _PATTERN.match(item)]
            if not user.strip() or bad:
                raise ValueError(f"not a project pattern for user {user.strip()!r}: {(bad or [''])[0]!r}")
            patterns[user.strip()] = tuple(canonicalize_name(p) for p in items)
        if not patterns:
            raise ValueError("the [projects] section lists no user")
        return cls(patterns)

    def allows(self, user: str, project: str) -> bool:
        wanted = self.patterns.get(user, self.patterns.get("*"))
        if wanted is None:
            return True
        name = canonicalize_name(project)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in wanted)


def _stamp(path: Path | str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Access:
    """Checks credentials and project rights; re-reads its files when they change."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path = settings.password_file if settings.password_file not in ("", ".") else None
        self.context = CryptContext(schemes=list(SCHEMES))
        self._users: HtpasswdFile | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._rules: ProjectRules | None = None
        self._rules_stamp: tuple[int, int, int] | None = None
        self._rules_error: str | None = None
        self._verified = Memory(VERIFIED_TTL, VERIFIED_MAX)
        self._refused = Memory(REFUSED_TTL, REFUSED_MAX)
        self.throttle = FailureThrottle(settings.login_failures_allowed, settings.login_failure_window)
        self._secret = secrets.token_bytes(32)
        self._fallback_hash: str | None = None
        self._lock = threading.Lock()
        # The app servers' key that lets nginx's refresh server read pages (create_app sets it).
        self.refresh_key: str | None = None
        self.tokens: Tokens | None = None  # set by app/tokens' register
        self._load()
        with contextlib.suppress(LookupError):
            self._project_rules()  # a broken permissions file is logged at start, not at the first upload

    # --- what needs a user ---------------------------------------------------------------
    def protects(self, action: str) -> bool:
        """Whether ``action`` needs a user: the ``authenticate`` actions, and uploads always."""
        return action == "update" or action in self.settings.authenticate

    @property
    def takes_uploads(self) -> bool:
        return self.path is not None

    # --- the password file -----------------------------------------------------------------
    def _load(self) -> tuple[HtpasswdFile | None, tuple[int, int, int] | None]:
        if self.path is None:
            return None, None
        stamp = _stamp(self.path)
        if stamp is None:
            log.warning("password file %s is not readable", self.path)
            return None, None
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._users = HtpasswdFile(self.path, context=self.context)
                except (OSError, ValueError) as exc:
                    log.error("cannot read password file %s: %s", self.path, exc)
                    self._users = None
                self._stamp = stamp
                self._verified.clear()
                self._refused.clear()
            return self._users, self._stamp

    def credentials(self) -> tuple[str, str] | None:
        header = request.environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):  # ValueError: not ASCII at all
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None

    def _check(self, password: str, hash_: str | bytes) -> bool:
        secret = password.encode("utf-8")
        try:
            if self.context.identify(hash_) == "bcrypt":
                secret = secret[:BCRYPT_MAX_BYTES]
            return bool(self.context.verify(secret, hash_))
        except (ValueError, TypeError) as exc:
            log.warning("unusable password entry (%s)", exc)
            return False

    def _decoy(self, users: HtpasswdFile, user: str) -> str:
        """A real entry's hash to check an unknown user against, so it costs the same.

        Chosen by a keyed hash of the name: each unknown name always costs what one of
        the file's users costs, and unknown names cost what known ones do on average.
        """
        names = sorted(users.users())
        if names:
            pick = int.from_bytes(hashlib.blake2b(user.encode("utf-8", "replace"), key=self._secret,
                                                  digest_size=8).digest(), "big")
            found = users.get_hash(names[pick % len(names)])
            if found is not None:
                return found.decode() if isinstance(found, bytes) else found
        if self._fallback_hash is None:
            self._fallback_hash = self.context.handler("bcrypt").hash(secrets.token_hex(16))
        return self._fallback_hash

    def _key(self, user: str, password: str, stamp: object) -> bytes:
        return hashlib.blake2b(b"\0".join([user.encode("utf-8", "replace"), password.encode("utf-8", "replace"),
                                           repr(stamp).encode()]), key=self._secret, digest_size=32).digest()

    def verify(self, user: str, password: str) -> bool:
        """Whether the password is the user's; a pair checked recently costs no hash check."""
        users, stamp = self._load()
        if users is None:
            return False
        key = self._key(user, password, stamp)
        if self._verified.holds(key):
            return True
        if self._refused.holds(key):
            return False
        try:
            hash_ = users.get_hash(user)
        except ValueError:  # a name htpasswd cannot hold (":" or a newline)
            hash_ = None
        if hash_ is None:
            self._check(password, self._decoy(users, user))
            self._refused.add(key)
            return False
        if not self._check(password, hash_):
            self._refused.add(key)
            return False
        self._verified.add(key)
        return True

    def _known(self, user: str) -> bool:
        users = self._users
        try:
            return users is not None and users.get_hash(user) is not None
        except ValueError:
            return False

    # --- API tokens (app/tokens) --------------------------------------------------------
    def grant(self) -> Grant | None:
        """The token grant this request authenticated with, if it used a token."""
        return request.environ.get(GRANT_KEY)

    def _check_token(self, user: str, token: str) -> bool:
        """Whether ``token`` is valid for ``user``; the grant (or the refusal) goes in the request."""
        self._load()
        grant, refusal = self.tokens.grant_for(user, token, self._known, request.environ.get("REMOTE_ADDR") or "?")
        request.environ[GRANT_KEY if grant else REFUSAL_KEY] = grant or refusal
        return grant is not None

    def _who(self, user: str) -> str:
        grant = self.grant()
        return grant.user if grant is not None else user

    def authenticate(self, user: str, password: str) -> bool:
        """``verify`` for this request's client address, throttled (raises Throttled)."""
        if self.tokens is not None and self.tokens.looks_like(password):
            return self._check_token(user, password)
        users, stamp = self._load()
        key = self._key(user, password, stamp)
        address = request.environ.get("REMOTE_ADDR") or "?"
        if users is not None and self._verified.holds(key):
            return True  # a user already logged in is let through even from a noisy address
        if users is None or not self._refused.holds(key):
            # Only a check that costs a hash counts: a client repeating one wrong password
            # (a stale CI secret) costs nothing and locks nobody else behind its address out.
            wait = self.throttle.wait(address)
            if wait:
                raise Throttled(wait)
            if self.verify(user, password):
                return True
            self.throttle.fail(address)
        # A name that is no user may be a password typed into the wrong field: not logged.
        log.info("wrong credentials for %s from %s",
                 f"user {user[:100]!r}" if self._known(user) else "an unknown user", address)
        return False

    def user(self) -> str | None:
        """The authenticated user of this request, or None (also when its address is throttled)."""
        creds = self.credentials()
        try:
            if creds and self.authenticate(*creds):
                return self._who(creds[0])
        except Throttled:
            pass
        return None

    def problems(self) -> list[str]:
        """What stops users from logging in or uploading as configured (for /health); empty if nothing."""
        found = []
        if self.path is not None:
            try:
                with open(self.path, "rb"):
                    pass
            except OSError as exc:
                found.append(f"password file {self.path} is not readable ({exc.strerror}): nobody can log in")
            else:
                if self._load()[0] is None:
                    found.append(f"password file {self.path} cannot be parsed: nobody can log in")
        try:
            self._project_rules()
        except LookupError as exc:
            found.append(f"{exc}: all updates are refused")
        return found

    # --- project rights ----------------------------------------------------------------
    def _project_rules(self) -> ProjectRules | None:
        """The current rules; None if there is no permissions file. Raises if unreadable."""
        path = self.settings.permissions_file
        if path is None:
            return None
        stamp = _stamp(path)
        with self._lock:
            if stamp is None:
                if self._rules_error is None or self._rules_stamp is not None:
                    log.error("permissions file %s is not readable; refusing all updates until it is fixed", path)
                self._rules, self._rules_stamp = None, None
                self._rules_error = f"permissions file {path} is not readable"
            elif stamp != self._rules_stamp:
                self._rules_stamp = stamp
                try:
                    self._rules = ProjectRules.parse(Path(path).read_text(encoding="utf-8"), str(path))
                    self._rules_error = None
                except (OSError, UnicodeDecodeError, ValueError, configparser.Error) as exc:
                    self._rules = None
                    detail = " ".join(str(exc).split())[:300]
                    self._rules_error = f"permissions file {path} is not in the documented shape: {detail}"
                    log.error("%s; refusing all updates until it is fixed", self._rules_error)
            if self._rules_error:
                raise LookupError(self._rules_error)
            return self._rules

    def may_update(self, user: str, project: str) -> bool:
        try:
            rules = self._project_rules()
        except LookupError as exc:
            log.error("%s: refusing all updates until it is fixed", exc)
            return False  # fail closed
        return rules is None or rules.allows(user, project)

    def require_project(self, user: str | None, project: str) -> None:
        """Raise 403 unless ``user`` (and the request's token, if any) may update ``project``."""
        grant = self.grant()
        if grant is not None:
            refusal = grant.refuse_project(project, request.environ)
            if refusal:
                raise Forbidden(refusal)
            if grant.record.kind == "oidc":
                return  # a trusted publisher: the publishers file, the administrator's, named its projects
        if user is None or not self.may_update(user, project):
            raise Forbidden(f"user {user!r} may not update project {canonicalize_name(project)!r}")

    # --- the gate ------------------------------------------------------------------------
    def require(self, action: str) -> str | None:
        """Raise 401/403 unless the action is open or the request carries a valid user."""
        if action == "update" and not self.takes_uploads:
            raise Forbidden("this index takes no uploads: it has no password file (start it with one: "
                            "-P FILE for pypi-server, --password-file FILE for wharf)")
        if not self.protects(action):
            return None
        if action != "update" and holds_key(request.get_header(KEY_HEADER), self.refresh_key):
            return None  # nginx's refresh of a cached page (app/cache_refresh.py): reads only
        creds = self.credentials()
        if creds is None:
            raise Unauthorized(f"authentication required to {action}")
        if not self.authenticate(*creds):
            raise Unauthorized(request.environ.get(REFUSAL_KEY) or "invalid username or password")
        grant = self.grant()
        refusal = grant.refuse_action(action, request.environ) if grant is not None else None
        if refusal:
            raise Forbidden(refusal)
        if action == "update":
            try:
                self._project_rules()
            except LookupError as exc:  # fail closed, before any body is read
                raise Forbidden(f"{exc}: all updates are refused until it is fixed") from None
        return self._who(creds[0])


# --- managing the password file (wharf passwd) ------------------------------------------
def set_password(path: Path, user: str, password: str, rounds: int | None = None) -> bool:
    """Create or update ``user`` with a bcrypt hash; True if the user existed.

    The file is replaced atomically, so a running index never reads half of it.
    """
    if not user or ":" in user or any(c in user for c in "\r\n\0"):
        raise ValueError(f"not a valid user name: {user!r}")
    if not password:
        raise ValueError("the password is empty")
    if len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
        raise ValueError(f"the password is longer than bcrypt's {BCRYPT_MAX_BYTES} bytes")
    path = Path(path)
    users = HtpasswdFile(str(path), new=not path.exists(), default_scheme="bcrypt")
    handler = users.context.handler("bcrypt").using(ident="2y", **({"rounds": rounds} if rounds else {}))
    existed = users.set_hash(user, handler.hash(password))
    _write(path, users.to_string())
    return existed


def delete_user(path: Path, user: str) -> bool:
    """Remove ``user`` from the file; False if it was not there."""
    path = Path(path)
    users = HtpasswdFile(str(path))
    if not users.delete(user):
        return False
    _write(path, users.to_string())
    return True


def _write(path: Path, data: bytes) -> None:
    """Replace the password file atomically, keeping the mode its owner chose (new: 0640)."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    write_file(path, data, mode=mode)
