"""Who the client is (htpasswd users via passlib) and which actions need a user.

Actions follow pypiserver: ``update`` (upload, remove, yank), ``download`` and ``list``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading

from bottle import HTTPError, request
from passlib.apache import HtpasswdFile

from .settings import Settings

log = logging.getLogger("wharf.auth")

REALM = "wharf"


class Unauthorized(HTTPError):
    def __init__(self, message: str):
        super().__init__(401, message)
        self.add_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')


class Access:
    """Checks credentials against an htpasswd file that is re-read when it changes."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path = settings.password_file if settings.password_file not in ("", ".") else None
        self._file: HtpasswdFile | None = None
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def protects(self, action: str) -> bool:
        return self.settings.protects(action)

    def _users(self) -> HtpasswdFile | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            log.warning("password file %s is not readable", self.path)
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._file = HtpasswdFile(self.path)
                self._stamp = stamp
            return self._file

    def credentials(self) -> tuple[str, str] | None:
        header = request.environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None

    def verify(self, user: str, password: str) -> bool:
        users = self._users()
        if users is None:
            return False
        return bool(users.check_password(user, password))

    def user(self) -> str | None:
        """The authenticated user of this request, or None."""
        creds = self.credentials()
        if creds and self.verify(*creds):
            return creds[0]
        return None

    def require(self, action: str) -> str | None:
        """Raise 401 unless the action is open or the request carries a valid user."""
        if not self.protects(action):
            return None
        creds = self.credentials()
        if creds is None:
            raise Unauthorized(f"authentication required to {action}")
        if not self.verify(*creds):
            raise Unauthorized("invalid username or password")
        return creds[0]
