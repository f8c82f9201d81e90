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
each pay for bcrypt.
"""

from __future__ import annotations

import base64
import contextlib
import binascii
import configparser
import fnmatch
import hashlib
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bottle import HTTPError, request
from packaging.utils import canonicalize_name
from passlib.apache import HtpasswdFile
from passlib.context import CryptContext

from .settings import Settings

log = logging.getLogger("wharf.auth")

REALM = "wharf"
SCHEMES = ("bcrypt", "sha256_crypt", "sha512_crypt", "apr_md5_crypt", "md5_crypt", "ldap_sha1")
# bcrypt only reads the first 72 bytes; Apache's htpasswd silently truncates, the bcrypt
# library refuses longer input, so verification truncates as the hash was made.
BCRYPT_MAX_BYTES = 72
# How long a successful check is remembered, and how many are.
VERIFIED_TTL = 60.0
VERIFIED_MAX = 4096


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


class Forbidden(Refusal):
    def __init__(self, message: str):
        super().__init__(403, message)


@dataclass(frozen=True)
class ProjectRules:
    """Which projects each user may update: ``[projects] alice = mylib, mylib-*``.

    Users not listed may update any project, unless a ``*`` entry gives the default.
    Patterns are fnmatch patterns over normalized names.
    """

    patterns: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, text: str, source: str = "<permissions>") -> ProjectRules:
        parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        parser.optionxform = str  # user names are case-sensitive, as in htpasswd
        parser.read_string(text, source=source)
        patterns: dict[str, tuple[str, ...]] = {}
        if parser.has_section("projects"):
            for user, value in parser.items("projects"):
                items = value.replace(",", " ").split()
                patterns[user.strip()] = tuple(canonicalize_name(p) for p in items)
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
        self._verified: dict[bytes, float] = {}
        self._secret = secrets.token_bytes(32)
        self._fallback_hash: str | None = None
        self._lock = threading.Lock()

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

    def verify(self, user: str, password: str) -> bool:
        users, stamp = self._load()
        if users is None:
            return False
        key = hashlib.blake2b(b"\0".join([user.encode("utf-8", "replace"), password.encode("utf-8", "replace"),
                                          repr(stamp).encode()]), key=self._secret, digest_size=32).digest()
        now = time.monotonic()
        if self._verified.get(key, 0.0) > now:
            return True
        try:
            hash_ = users.get_hash(user)
        except ValueError:  # a name htpasswd cannot hold (":" or a newline)
            hash_ = None
        if hash_ is None:
            self._check(password, self._decoy(users, user))
            return False
        if not self._check(password, hash_):
            return False
        with self._lock:
            if len(self._verified) >= VERIFIED_MAX:
                self._verified = {k: v for k, v in self._verified.items() if v > now}
                if len(self._verified) >= VERIFIED_MAX:
                    self._verified.clear()
            self._verified[key] = now + VERIFIED_TTL
        return True

    def user(self) -> str | None:
        """The authenticated user of this request, or None."""
        creds = self.credentials()
        if creds and self.verify(*creds):
            return creds[0]
        return None

    # --- project rights ----------------------------------------------------------------
    def _project_rules(self) -> ProjectRules | None:
        """The current rules; None if there is no permissions file. Raises if unreadable."""
        path = self.settings.permissions_file
        if path is None:
            return None
        stamp = _stamp(path)
        with self._lock:
            if stamp is None:
                self._rules, self._rules_stamp = None, None
                self._rules_error = f"permissions file {path} is not readable"
            elif stamp != self._rules_stamp:
                self._rules_stamp = stamp
                try:
                    self._rules = ProjectRules.parse(Path(path).read_text(encoding="utf-8"), str(path))
                    self._rules_error = None
                except (OSError, UnicodeDecodeError, configparser.Error) as exc:
                    self._rules = None
                    self._rules_error = f"permissions file {path} is unreadable: {exc}"
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
        """Raise 403 unless ``user`` may update ``project``."""
        if user is None or not self.may_update(user, project):
            raise Forbidden(f"user {user!r} may not update project {canonicalize_name(project)!r}")

    # --- the gate ------------------------------------------------------------------------
    def require(self, action: str) -> str | None:
        """Raise 401/403 unless the action is open or the request carries a valid user."""
        if action == "update" and not self.takes_uploads:
            raise Forbidden("this index takes no uploads: it has no password file (start it with --password-file)")
        if not self.protects(action):
            return None
        creds = self.credentials()
        if creds is None:
            raise Unauthorized(f"authentication required to {action}")
        if not self.verify(*creds):
            log.info("wrong credentials for user %r from %s", creds[0][:100], request.environ.get("REMOTE_ADDR"))
            raise Unauthorized("invalid username or password")
        return creds[0]


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
    _write_atomically(path, users.to_string())
    return existed


def delete_user(path: Path, user: str) -> bool:
    """Remove ``user`` from the file; False if it was not there."""
    path = Path(path)
    users = HtpasswdFile(str(path))
    if not users.delete(user):
        return False
    _write_atomically(path, users.to_string())
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
