"""Talking to an upstream index: its listings (PEP 691 JSON, HTML fallback) and verified downloads."""

from __future__ import annotations

import contextlib
import http.client
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..dists import METADATA_SUFFIX
from ..simple_pages import JSON_V1
from ..storage import CHUNK, new_hasher
from .listings import HashMismatch, Listing, UpstreamError, UpstreamFile, parse_html_listing, parse_json_listing

ACCEPT = f"{JSON_V1}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
# Largest project listing we read (PyPI's biggest are a few MiB).
MAX_LISTING_BYTES = 64 * 1024 * 1024


def redact(url: str) -> str:
    """The URL without its password, for logs and pages."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" if parts.password is not None else f"{parts.username}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class UpstreamIndex:
    """An upstream simple index: listings (PEP 691 JSON, HTML fallback) and verified downloads.

    Credentials in the URL are sent (as HTTP Basic, up front) only to that URL's origin,
    never to file hosts elsewhere or across redirects; ``cert`` replaces the system CAs.
    """

    def __init__(self, url: str, cert: Path | None = None, timeout: float = 15.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) index URL: {redact(url)}")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.url = urlunsplit((parts.scheme, netloc, path, "", ""))
        self.display_url = redact(url)
        self.timeout = timeout
        context = ssl.create_default_context(cafile=str(cert) if cert else None)
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
        if parts.username is not None:
            passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
            passwords.add_password(None, f"{parts.scheme}://{netloc}/", unquote(parts.username),
                                   unquote(parts.password or ""), is_authenticated=True)
            handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
        self._opener = urllib.request.build_opener(*handlers)

    def project_url(self, project: str) -> str:
        return self.url + quote(project) + "/"

    def _request(self, url: str, accept: str | None = None, method: str = "GET"):
        """An open response (the caller closes it); HTTPError for error statuses."""
        headers = {"User-Agent": "wharf (pull-through cache)"}
        if accept:
            headers["Accept"] = accept
        request = urllib.request.Request(url, headers=headers, method=method)
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise UpstreamError(f"{redact(url)}: {reason}") from None

    @contextlib.contextmanager
    def _open(self, url: str, accept: str | None = None, method: str = "GET") -> Iterator:
        response = self._request(url, accept, method)
        try:
            yield response
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError(f"{redact(url)}: {exc}") from None
        finally:
            response.close()

    def open_file(self, file: UpstreamFile):
        """The upstream's response for ``file`` (the caller reads, verifies and closes it)."""
        try:
            return self._request(file.url)
        except urllib.error.HTTPError as exc:
            raise UpstreamError(f"{redact(file.url)} answered {exc.code} {exc.reason}") from None

    def project(self, name: str) -> Listing | None:
        """The listing of ``name`` (normalized), or None if upstream has no such project."""
        url = self.project_url(name)
        try:
            with self._open(url, ACCEPT) as response:
                body = response.read(MAX_LISTING_BYTES + 1)
                kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                final_url = response.geturl()
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return None
            raise UpstreamError(f"{redact(url)} answered {exc.code} {exc.reason}") from None
        if len(body) > MAX_LISTING_BYTES:
            raise UpstreamError(f"the listing of {name} is larger than {MAX_LISTING_BYTES} bytes")
        if kind == JSON_V1 or kind.endswith("+json") or kind == "application/json":
            return parse_json_listing(name, body, final_url)
        return parse_html_listing(name, body, final_url)

    def download(self, file: UpstreamFile, stream: BinaryIO, progress=None) -> int:
        """Write ``file``'s bytes to ``stream``; raise HashMismatch unless they match the listing."""
        return self._fetch_verified(file.url, file.check_hashes(), stream, file.filename, progress)

    def download_metadata(self, file: UpstreamFile, stream: BinaryIO) -> int:
        """Write ``file``'s PEP 658 metadata to ``stream``, verified like a file."""
        if not file.core_metadata:
            raise HashMismatch(f"upstream's listing gives no metadata hash for {file.filename}")
        return self._fetch_verified(file.url + METADATA_SUFFIX, file.core_metadata, stream,
                                    file.filename + METADATA_SUFFIX, None)

    def _fetch_verified(self, url: str, expected: dict[str, str], stream: BinaryIO, what: str, progress) -> int:
        verifier = Verifier(expected, what)
        try:
            with self._open(url) as response:
                while chunk := response.read(CHUNK):
                    verifier.update(chunk)
                    stream.write(chunk)
                    if progress:
                        progress(len(chunk))
        except urllib.error.HTTPError as exc:
            raise UpstreamError(f"{redact(url)} answered {exc.code} {exc.reason}") from None
        verifier.check()
        return verifier.size

    def probe(self) -> None:
        """Raise UpstreamError unless the upstream answers at all (any HTTP status but 401/403/5xx)."""
        try:
            with self._open(self.url, method="HEAD"):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403) or exc.code >= 500:
                raise UpstreamError(f"{self.display_url} answered {exc.code} {exc.reason}") from None


class Verifier:
    """Hashes bytes as they pass and checks them against the hashes a listing gave."""

    def __init__(self, expected: dict[str, str], what: str):
        self.expected = {algo: digest.lower() for algo, digest in expected.items()}
        self.what = what
        self.hashers = {algo: new_hasher(algo) for algo in self.expected}
        self.size = 0

    def update(self, chunk: bytes) -> None:
        for hasher in self.hashers.values():
            hasher.update(chunk)
        self.size += len(chunk)

    def check(self) -> None:
        for algo, hasher in self.hashers.items():
            if hasher.hexdigest() != self.expected[algo]:
                raise HashMismatch(f"{self.what}: upstream sent bytes whose {algo} is {hasher.hexdigest()}, "
                                   f"not the {self.expected[algo]} its listing gives")
