"""The pull-through cache (off unless ``upstream_url`` is set): upstream projects not hosted here.

The upstream's project page is served rewritten so every file comes through Wharf; each
file is downloaded on first request, checked against the hash upstream's listing gave,
kept, and served locally from then on.

Rules the cache keeps:
- a local project always wins over an upstream one of the same normalized name (the
  simple API only asks us for names the catalog does not have, and the file route checks
  again), so nobody can shadow a private package by publishing its name upstream;
- bytes whose hash does not match the listing are refused and never stored;
- when upstream cannot be reached, the last listing fetched is served, cut down to the
  files that are cached, so installs that worked before keep working;
- the upstream cooldown (app/policy/cooldown.py) hides files too new to offer and refuses
  their file and metadata URLs, cached or not; a project upstream marks quarantined
  (PEP 792) lists and serves nothing; upstream's status marker is passed on.

Cached files live under ``upstream_cache_path`` (by default in the state dot-folder), not in
the packages directories, kept by a LocalStorage of their own: they never become local
projects, so upstream keeps being asked for new releases. Listings and the upstream's
status are state files beside them, written whole by app/atomic.py.
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import jinja2
from bottle import Bottle, HTTPError, HTTPResponse, request, response

from ..atomic import write_file
from ..auth import Access
from ..caching import cache_control, http_date
from ..catalog import Catalog
from ..dists import METADATA_SUFFIX, project_name
from .. import metrics
from ..files import content_type, send_stored
from ..policy.cooldown import Cooldown
from ..settings import Settings
from ..simple_pages import Page, PageFile, render_project
from ..storage import CHUNK, LocalStorage
from .client import UpstreamIndex, Verifier, redact
from .listings import VERIFIABLE, HashMismatch, Listing, UpstreamError, UpstreamFile, safe_filename, versions_of

log = logging.getLogger("wharf.upstream")

# Files larger than this are passed on while they download (their first request), so that
# the client sees bytes before its read timeout; smaller ones are verified, then sent.
STREAM_AFTER = 4 * 1024 * 1024
# Upstream listings each worker keeps in memory (all of them are on disk).
MEMORY_LISTINGS = 256


# --- the pull-through cache -------------------------------------------------------------------
class PullThrough:
    """Projects not hosted here, served from the upstream through a verified local cache.

    ``status()`` is what the health endpoint and the web pages show about the upstream.
    """

    def __init__(self, settings: Settings, catalog: Catalog, templates: jinja2.Environment,
                 cooldown: Cooldown | None = None):
        self.settings = settings
        self.cooldown = cooldown or Cooldown()
        self.catalog = catalog
        self.templates = templates
        self.index = UpstreamIndex(settings.upstream_url, settings.upstream_cert, settings.upstream_timeout)
        self.root = Path(settings.upstream_cache_path)
        self.store = LocalStorage((self.root,))  # files/<project>/<file>, metadata/<project>/<file>.metadata
        self.private = False  # set by register(): whether downloads need a user
        self.allow = tuple(p.lower() for p in settings.upstream_allow)
        self.deny = tuple(p.lower() for p in settings.upstream_deny)
        self._listings: dict[str, Listing] = {}  # the most recent MEMORY_LISTINGS, by project
        # Rendered online pages, by (project, format), with when the cooldown next changes them.
        self._pages: dict[tuple[str, str], tuple[Page, float | None]] = {}
        self._missing: dict[str, float] = {}  # projects upstream said it lacks, and when
        self._probe_lock = threading.Lock()
        for sub in ("pages", "files", "metadata"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # --- policy --------------------------------------------------------------------------
    def allowed(self, project: str) -> bool:
        """Whether the upstream project ``project`` (normalized) may be served and cached."""
        if any(fnmatch.fnmatchcase(project, p) for p in self.deny):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(project, p) for p in self.allow)

    def serves(self, project: str) -> bool:
        # Local projects shadow upstream ones: never mix the two under one name.
        return (project_name(project) == project
                and self.catalog.project(project) is None and self.allowed(project))

    # --- listings ------------------------------------------------------------------------
    def _page_path(self, project: str) -> Path:
        return self.root / "pages" / f"{project}.json"

    def _stored(self, project: str) -> Listing | None:
        listing = self._listings.get(project)
        path = self._page_path(project)
        try:
            # Another worker may have fetched a newer one.
            if listing is None or path.stat().st_mtime > listing.fetched + 1:
                listing = Listing.from_json(path.read_text(encoding="utf-8"))
                self._remember(listing)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cached listing of %s: %s", project, exc)
            return listing
        return listing

    def listing(self, project: str) -> tuple[Listing | None, bool]:
        """(listing, online): a fresh listing, or the stored one when upstream is unreachable.

        Raises UpstreamError when upstream is unreachable and nothing is stored.
        """
        stored = self._stored(project)
        max_age = self.settings.upstream_max_age
        if stored is not None and time.time() - stored.fetched < max_age:
            return stored, True
        missing_since = self._missing.get(project)
        if stored is None and missing_since is not None and time.monotonic() - missing_since < max_age:
            return None, True
        try:
            fresh = self.index.project(project)
        except UpstreamError as exc:
            self._note(False, str(exc))
            if stored is None:
                raise
            log.info("upstream unreachable, serving the cached listing of %s: %s", project, exc)
            return stored, False
        self._note(True, None)
        if fresh is None:
            self._missing[project] = time.monotonic()
            return None, True
        self._missing.pop(project, None)
        write_file(self._page_path(project), fresh.to_json().encode())
        self._remember(fresh)
        return fresh, True

    def _remember(self, listing: Listing) -> None:
        self._listings.pop(listing.project, None)
        self._listings[listing.project] = listing
        while len(self._listings) > MEMORY_LISTINGS:  # big projects' listings run to megabytes
            self._listings.pop(next(iter(self._listings)))

    def project_page(self, project: str, fmt: str) -> Page | None:
        """The simple API page of an upstream project, or None if it is not served from upstream.

        Called by simple_api for names the catalog does not have.
        """
        if not self.serves(project):
            return None
        try:
            listing, online = self.listing(project)
        except UpstreamError as exc:
            raise _gateway_error(f"upstream unreachable and nothing of {project} is cached: {exc}") from None
        if listing is None:
            return None
        if online:
            page, until = self._pages.get((project, fmt), (None, None))
            if page is None or page.source is not listing or (until is not None and time.time() >= until):
                files, until = self._servable(listing)
                page = Page.of(listing, self._render(listing, files, fmt, online))
                if len(self._pages) >= 2 * MEMORY_LISTINGS:
                    self._pages.clear()
                self._pages[(project, fmt)] = (page, until)
            return page
        # Offline: only what is cached can be installed, so offer only that.
        files = tuple(f for f in self._servable(listing)[0] if self._cached(self._file_key(project, f.filename)))
        if not files:
            raise _gateway_error(f"upstream unreachable and no file of {project} is cached")
        return Page.of(listing, self._render(listing, files, fmt, online))

    def _servable(self, listing: Listing) -> tuple[tuple[UpstreamFile, ...], float | None]:
        """(the files a page offers, when the cooldown next lets one more in, or None)."""
        if listing.status and listing.status[0] == "quarantined":
            return (), None
        # A file without a hash we can check would be refused: don't offer it.
        files = [f for f in listing.files if any(a in f.hashes for a in VERIFIABLE)]
        if not self.cooldown.active:
            return tuple(files), None
        kept, until = self.cooldown.visible(listing.project, files)
        return tuple(kept), until

    def _advertised_metadata(self, project: str, f: UpstreamFile, online: bool) -> str | None:
        if not f.core_metadata or "sha256" not in f.core_metadata:
            return None
        if not online and not self._cached(self._metadata_key(project, f.filename)):
            return None  # offline, a metadata link we cannot serve would stop pip
        return f.core_metadata["sha256"]

    def _render(self, listing: Listing, files: tuple[UpstreamFile, ...], fmt: str, online: bool) -> bytes:
        project = listing.project
        entries = []
        for f in files:
            algo = next((a for a in VERIFIABLE if a in f.hashes), None)
            entries.append(PageFile(
                filename=f.filename, url=f"../../upstream/{quote(project)}/{quote(f.filename)}",
                hashes=dict(f.hashes), fragment=f"#{algo}={f.hashes[algo]}" if algo else "",
                requires_python=f.requires_python, yanked=f.yanked,
                metadata_sha256=self._advertised_metadata(project, f, online), size=f.size,
                upload_time=f.upload_time))
        versions = listing.versions if online and not self.cooldown.active else versions_of(files, ())
        return render_project(self.templates, fmt, project, versions, entries, listing.status)

    # --- files ---------------------------------------------------------------------------
    @staticmethod
    def _file_key(project: str, filename: str) -> str:
        return f"files/{project}/{filename}"

    @staticmethod
    def _metadata_key(project: str, filename: str) -> str:
        return f"metadata/{project}/{filename}{METADATA_SUFFIX}"

    def _cached(self, key: str) -> bool:
        return self.store.stat_file(0, key) is not None

    def fetch(self, project: str, filename: str, stream: bool = False) -> str | HTTPResponse:
        """An upstream file (or its .metadata): the cached copy, fetched and verified first if need be.

        With ``stream``, a large file not yet cached comes back as a response that passes
        the bytes on while they arrive (see ``_relay``); anything else is the key of the
        verified cached copy in ``store``. Raises HTTPError 404 for files upstream does not
        list, and HTTPResponse 502 when the file cannot be had or its bytes do not match
        upstream's hash (nothing is stored then).
        """
        is_metadata = filename.endswith(METADATA_SUFFIX)
        dist_name = filename[: -len(METADATA_SUFFIX)] if is_metadata else filename
        if not safe_filename(dist_name) or not self.serves(project):
            raise HTTPError(404, "no such upstream file")
        key = self._metadata_key(project, dist_name) if is_metadata else self._file_key(project, dist_name)
        if self._cached(key):
            # A policy tightened since the file was cached holds it back all the same.
            self._check_policy(project, self._stored(project), dist_name, filename)
            metrics.note("upstream_hit")
            return key
        metrics.note("upstream_miss")
        try:
            listing, _online = self.listing(project)
        except UpstreamError as exc:
            raise _gateway_error(f"upstream unreachable and {filename} is not cached: {exc}") from None
        entry = listing.file(dist_name) if listing else None
        if entry is None or (is_metadata and not entry.core_metadata):
            raise HTTPError(404, f"upstream does not list {filename}")
        self._check_policy(project, listing, dist_name, filename)
        try:
            if is_metadata:
                with self.store.new_file(key) as new:
                    self.index.download_metadata(entry, new)
                    new.publish(replace=True)
            else:
                verifier = Verifier(entry.check_hashes(), filename)
                upstream = self.index.open_file(entry)
                length = upstream.headers.get("Content-Length", "")
                if stream and length.isdigit() and int(length) > STREAM_AFTER:
                    return self._relay(upstream, verifier, key, int(length))
                try:
                    with self.store.new_file(key) as new:
                        while chunk := upstream.read(CHUNK):
                            verifier.update(chunk)
                            new.write(chunk)
                        verifier.check()
                        new.publish(replace=True)
                except (OSError, http.client.HTTPException) as exc:
                    raise UpstreamError(f"{redact(entry.url)}: {exc}") from None
                finally:
                    upstream.close()
        except HashMismatch as exc:
            log.warning("refused %s from upstream: %s", filename, exc)
            raise _gateway_error(f"refused {filename}: {exc}") from None
        except UpstreamError as exc:
            self._note(False, str(exc))
            raise _gateway_error(f"cannot fetch {filename} from upstream: {exc}") from None
        log.info("cached %s from upstream", filename)
        return key

    def _check_policy(self, project: str, listing: Listing | None, dist_name: str, filename: str) -> None:
        """Refuse (403, saying why and until when) a file of a quarantined project or one too new."""
        if listing is not None and listing.status and listing.status[0] == "quarantined":
            log.info("refused %s: upstream marks %s quarantined (PEP 792)", filename, project)
            raise _policy_error(f"upstream marks {project} quarantined; its files are not served")
        if not self.cooldown.active:
            return
        entry = listing.file(dist_name) if listing is not None else None
        verdict = self.cooldown.check(project, dist_name, entry.upload_time if entry else None, "download")
        if not verdict.allowed:
            raise _policy_error(verdict.explain(filename))

    def _relay(self, upstream, verifier: Verifier, key: str, length: int) -> HTTPResponse:
        """Pass a large file on as it arrives, holding back its last chunk until its hash checks.

        Bytes that do not match never reach the client whole (the connection is cut before
        the last chunk, short of its Content-Length) and are never stored.
        """
        def body() -> Iterator[bytes]:
            try:
                with self.store.new_file(key) as new:
                    held = b""
                    while chunk := upstream.read(CHUNK):
                        verifier.update(chunk)
                        new.write(chunk)
                        if held:
                            yield held
                        held = chunk
                    if verifier.size != length:
                        raise UpstreamError(f"{verifier.what}: upstream sent {verifier.size} of {length} bytes")
                    verifier.check()
                    new.publish(replace=True)
                log.info("cached %s from upstream", verifier.what)
                yield held
            except HashMismatch as exc:
                log.warning("refused %s from upstream, cut off before its last bytes: %s", verifier.what, exc)
                raise
            finally:
                upstream.close()

        return HTTPResponse(body(), status=200, headers={
            "Content-Type": content_type(key), "Content-Length": str(length),
            "Cache-Control": cache_control(self.settings.file_max_age, private=self.private, immutable=True)})

    def send(self, key: str, kind: str):
        """A cached file as the response: HEAD, conditional and range requests answered."""
        stat = self.store.stat_file(0, key)
        if stat is None:
            raise HTTPError(404, "no such upstream file")
        etag = f'"{stat.size:x}-{stat.mtime_ns:x}"'
        mtime = stat.mtime_ns / 1e9
        response.set_header("Content-Type", kind)
        response.set_header("ETag", etag)
        response.set_header("Last-Modified", http_date(mtime))
        response.set_header("Accept-Ranges", "bytes")
        response.set_header("Cache-Control", cache_control(self.settings.file_max_age, private=self.private,
                                                          immutable=True))
        return send_stored(self.store, 0, key, etag, mtime, gone="no such upstream file")

    # --- state for the health endpoint and web pages ---------------------------------------
    def _note(self, reachable: bool, error: str | None) -> None:
        state = {"reachable": reachable, "error": error, "checked": time.time()}
        with contextlib.suppress(OSError):
            write_file(self.root / "status.json", json.dumps(state).encode(), durable=False)

    def _probe(self) -> None:
        try:
            self.index.probe()
        except UpstreamError as exc:
            self._note(False, str(exc))
        else:
            self._note(True, None)
        finally:
            self._probe_lock.release()

    def cached_counts(self) -> tuple[int, int, int]:
        """(files, projects, bytes) in the cache."""
        files = projects = size = 0
        listing = self.store.list_dir(0, "files")
        for project in listing.subdirs if listing else ():
            names = self.store.list_dir(0, project)
            count = 0
            for name in names.files if names else ():
                stat = self.store.stat_file(0, f"{project}/{name}")
                if stat is not None:
                    count += 1
                    size += stat.size
            files += count
            projects += bool(count)
        return files, projects, size

    def status(self, probe_after: float = 60.0) -> dict:
        """The upstream as the health endpoint and web pages show it.

        {"url", "reachable" (true/false, null before the first contact), "error", "checked",
        "cached_files", "cached_projects", "cached_bytes"}. When the last contact is older
        than ``probe_after`` seconds a background probe is started; the answer never waits.
        """
        try:
            state = json.loads((self.root / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {"reachable": None, "error": None, "checked": None}
        if (state.get("checked") is None or time.time() - state["checked"] > probe_after) \
                and self._probe_lock.acquire(blocking=False):
            threading.Thread(target=self._probe, name="wharf-upstream-probe", daemon=True).start()
        files, projects, size = self.cached_counts()
        return {
            "url": self.index.display_url,
            "reachable": state.get("reachable"),
            "error": state.get("error"),
            "checked": state.get("checked"),
            "cached_files": files,
            "cached_projects": projects,
            "cached_bytes": size,
            "cooldown": self.cooldown.describe(),
        }


def _gateway_error(message: str) -> HTTPResponse:
    # Raised as a response, not an HTTPError: the app's error handler would hide the reason.
    return HTTPResponse(f"502 Bad Gateway: {message}\n", status=502,
                        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})


def _policy_error(message: str) -> HTTPResponse:
    # Held back by policy, not broken: a 403 with the reason, never cached (the policy can change).
    return HTTPResponse(f"403 Forbidden: {message}\n", status=403,
                        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment, cooldown: Cooldown | None = None) -> PullThrough | None:
    """The pull-through cache's file route; returns the cache (None when it is off)."""
    if not settings.upstream_url:
        return None
    cache = PullThrough(settings, catalog, templates, cooldown)
    cache.private = access.protects("download")

    @app.route("/upstream/<project>/<filename>", method=["GET", "HEAD"])
    def upstream_file(project: str, filename: str):
        access.require("download")
        key = cache.fetch(project, filename, stream=request.method == "GET")
        if isinstance(key, HTTPResponse):
            return key  # a large file on its first request, passed on as it arrives
        kind = "application/octet-stream" if filename.endswith(METADATA_SUFFIX) else content_type(filename)
        return cache.send(key, kind)

    log.info("pull-through cache of %s in %s", cache.index.display_url, cache.root)
    return cache
