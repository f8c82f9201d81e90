"""Read-your-writes through nginx: after a change, every nginx fetches again the pages it touched.

nginx keeps index pages for ``index_cache_lifetime`` (an hour by default), so a busy index
answers almost everything from its cache. What keeps those copies true is this module:
after an upload, removal, yank or a file the scanner found, and before the change is
acknowledged, the app sends every nginx (``cache_refresh``; by default the local one at
``refresh_listen``) a HEAD request for each page whose content changed. nginx's refresh
server (deploy/nginx/site.conf.j2, section 12) shares the cache zone and keys of the
public server but never answers from the cache (``proxy_cache_bypass 1``): it fetches the
page from an app server and stores the answer in place of the old copy, a 404 included
(the app's 404s are cacheable for a few seconds for exactly that reason). A HEAD is
fetched from the app as a GET, so nginx stores the whole page and sends the app none of it.

The refresh needs no nginx module (Debian's purge module crashed nginx) and works for any
number of nginx hosts. Which pages changed is read from two catalog views, before and
after: a project's simple page in each variant the cache key tells apart, the /simple/
index when a project appeared or went, the /packages/ list, and the bytes and
``.metadata`` of each file that came, went or changed.

A refresh that fails (nginx unreachable, slower than ``refresh_timeout``) is logged and
does not fail the change: that nginx may serve the old page until the lifetime runs out.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from .atomic import shared_secret
from .catalog import Catalog, Project, View
from .databases import unavailable_errors
from .settings import Settings

log = logging.getLogger("wharf.cache")

# The Accept header of each variant nginx's cache key tells apart ($wharf_variant in
# site.conf): plain HTML, PEP 691 JSON, and the versioned HTML type.
SIMPLE_VARIANTS = ("text/html", "application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+html")
# The header that carries the app servers' shared key, so a refresh may read protected pages.
KEY_HEADER = "X-Wharf-Refresh"
# The change journal position a refresh reflects: the app server nginx asks (maybe another
# node, which polls the shared journal) first catches up to it, so it never answers the
# refresh with the page as it was before the change.
SEQ_HEADER = "X-Wharf-Refresh-Seq"
KEY_FILE = "nginx-refresh.key"


def endpoints(settings: Settings) -> tuple[str, ...]:
    """host:port of every nginx refresh server; empty when refreshes are off."""
    if tuple(settings.cache_refresh) == ("off",):
        return ()
    if settings.cache_refresh:
        return tuple(e.removeprefix("http://").rstrip("/") for e in settings.cache_refresh)
    return (local_endpoint(settings),)


def local_endpoint(settings: Settings) -> str:
    """Where this server's own nginx takes refreshes (refresh_listen, else 127.0.0.1:https_port+1)."""
    listen = settings.refresh_listen or f"127.0.0.1:{settings.https_port + 1}"
    host, _, port = listen.rpartition(":")
    if not host or host.strip("[]") in ("*", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def index_lifetime(settings: Settings) -> int:
    """Seconds nginx may keep an index page: long while nginx is refreshed, else index_max_age."""
    return settings.index_cache_lifetime if endpoints(settings) else settings.index_max_age


def shared_key(state_dir: Path, catalog=None) -> str | None:
    """The key app servers show nginx's refresh server: made once, kept in the shared
    database when there is one (every node's refreshes reach every node), else in the
    state directory."""
    if catalog is not None:
        try:
            key = catalog.shared_secret("nginx-refresh")
        except unavailable_errors() as exc:
            log.warning("cannot read the shared refresh key from the database (%s): refreshes of this node "
                        "reaching another node may be refused", exc)
            key = None
        if key:
            return key
    path = state_dir / KEY_FILE
    try:
        return shared_secret(path) or None
    except OSError as exc:
        log.warning("cannot read or make %s (%s): refreshes of protected pages will be refused", path, exc.strerror)
        return None


def holds_key(header: str | None, key: str | None) -> bool:
    """Whether a request's refresh header carries the app servers' key."""
    return bool(key and header and hmac.compare_digest(header.encode(), key.encode()))


def changed_paths(changes: list[tuple[str, object]] | None, old: View, new: View,
                  current: Callable[[str], Project | None]) -> list[str]:
    """The URL paths (canonical, as the pages link them) whose content differs between two views.

    ``changes``: each changed project with its Project in ``old`` (or anything else if the
    worker never loaded it: then its files' own URLs are not known to have changed), or
    None if the worker no longer knows what changed (a reload): then the index pages.
    ``current`` gives a project as it is now.
    """
    if old is new:
        return []
    if changes is None:
        return ["/simple/", "/packages/"]
    pages: list[str] = []
    files: list[str] = []
    index = False
    for name, before in sorted(changes, key=lambda change: change[0]):
        before = before if isinstance(before, Project) else None
        after = current(name) if new.lists(name) else None
        if before is not None and after is not None and before.files == after.files:
            continue  # reloaded, not changed
        pages.append(f"/simple/{name}/")
        index |= old.lists(name) != new.lists(name)
        sha_before = {f.relpath: f.sha256 for f in before.files} if before else {}
        sha_after = {f.relpath: f.sha256 for f in after.files} if after else {}
        for relpath in sorted(sha_before.keys() | sha_after.keys()):
            if sha_before.get(relpath) != sha_after.get(relpath):
                url = "/packages/" + quote(relpath)
                files += [url, url + ".metadata"]
    if index:
        pages.append("/simple/")
    if files or index:
        pages.append("/packages/")
    return pages + files


class CacheRefresher:
    """Sends the refreshes of a change to every nginx, within ``refresh_timeout``."""

    def __init__(self, settings: Settings, key: str | None, catalog: Catalog | None = None):
        self.catalog = catalog  # what changed between two views, and projects as they are now
        self.endpoints = endpoints(settings)
        self.implicit = not settings.cache_refresh  # the local nginx nobody configured
        self.timeout = settings.refresh_timeout
        self.key = key
        self._quiet: set[str] = set()
        self._lock = threading.Lock()
        self.last_seconds = 0.0

    def refresh_since(self, old: View, new: View) -> None:
        """Refresh what changed from ``old`` to ``new`` on every nginx; returns when done or timed out."""
        if not self.endpoints or self.catalog is None:
            return
        try:
            paths = changed_paths(self.catalog.changes_between(old, new), old, new, self.catalog.project)
        except unavailable_errors() as exc:  # the change is made: a refresh never fails it
            log.warning("could not tell which pages changed (%s): nginx may serve the old ones until "
                        "index_cache_lifetime", exc)
            paths = ["/simple/", "/packages/"]
        self.refresh_paths(paths, new.seq)

    def refresh_project(self, name: str, project: Project | None, seq: int) -> None:
        """Refresh everything of one project (its status changed: pages, and whether files are served)."""
        files = [f"/packages/{quote(f.relpath)}" for f in project.files] if project else []
        self.refresh_paths([f"/simple/{name}/", "/packages/", *files, *(url + ".metadata" for url in files)], seq)

    def wanted_seq(self, request) -> int:
        """The journal position a refresh request must see (0 for any other request)."""
        value = request.get_header(SEQ_HEADER)
        if not value or not holds_key(request.get_header(KEY_HEADER), self.key):
            return 0
        try:
            return max(int(value), 0)
        except ValueError:
            return 0

    def refresh_paths(self, paths: list[str], seq: int = 0) -> None:
        """Refresh these URL paths on every nginx; returns when done or timed out."""
        if not paths or not self.endpoints:
            return
        start = time.monotonic()
        deadline = start + self.timeout
        if len(self.endpoints) == 1:
            self._refresh(self.endpoints[0], paths, deadline, seq)
        else:
            with ThreadPoolExecutor(len(self.endpoints)) as pool:
                list(pool.map(lambda endpoint: self._refresh(endpoint, paths, deadline, seq), self.endpoints))
        self.last_seconds = time.monotonic() - start

    def _requests(self, paths: Iterable[str]) -> list[tuple[str, str | None]]:
        return [(path, accept) for path in paths
                for accept in (SIMPLE_VARIANTS if path.startswith("/simple/") else (None,))]

    def _refresh(self, endpoint: str, paths: list[str], deadline: float, seq: int) -> None:
        host, _, port = endpoint.rpartition(":")
        conn = None
        done = 0
        requests = self._requests(paths)
        try:
            conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=max(deadline - time.monotonic(), 0.05))
            for path, accept in requests:
                headers = {"Accept": accept} if accept else {}
                if self.key:
                    headers[KEY_HEADER] = self.key
                    if seq:
                        headers[SEQ_HEADER] = str(seq)
                conn.timeout = max(deadline - time.monotonic(), 0.05)
                if conn.sock is not None:
                    conn.sock.settimeout(conn.timeout)
                conn.request("HEAD", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status not in (200, 404):
                    log.warning("nginx at %s refreshed %s with %d: its cached copy may be stale for up to "
                                "index_cache_lifetime", endpoint, path, response.status)
                done += 1
            with self._lock:
                self._quiet.discard(endpoint)
        except (OSError, http.client.HTTPException) as exc:
            self._failed(endpoint, exc, len(requests) - done)
        finally:
            if conn is not None:
                conn.close()

    def _failed(self, endpoint: str, exc: Exception, missed: int) -> None:
        reason = "timed out" if isinstance(exc, TimeoutError) else (getattr(exc, "strerror", None) or repr(exc))
        with self._lock:
            quiet = self.implicit and isinstance(exc, ConnectionRefusedError) and endpoint in self._quiet
            self._quiet.add(endpoint)
        # With no cache_refresh configured, a refused connection usually means no nginx runs
        # in front of this app (wharf serve alone): said once, then at debug level.
        (log.debug if quiet else log.warning)(
            "could not refresh nginx at %s (%s; %d page(s) not refreshed): it may serve the old copies until "
            "index_cache_lifetime", endpoint, reason, missed)


@contextlib.contextmanager
def refreshed(refresher: CacheRefresher | None, current):
    """Refresh, before leaving the block, whatever the block changed in ``current()`` (a View)."""
    before = current()
    try:
        yield
    finally:
        if refresher is not None:
            refresher.refresh_since(before, current())
