"""What the index counts for Prometheus: ``/metrics``, and the counters behind it.

Requests are counted by a WSGI wrapper around the app (route rule, method, status,
latency, requests in flight), errors of the storage and the database by a bottle plugin
that finds them behind the HTTP answer they became, and the few events only one place
knows (uploads, pull-through cache hits) by a one-line ``note(...)`` there. The catalog's
size is read from the worker's view at scrape time; the change propagation lag is
measured whenever this worker applies journal entries (``Catalog.sync``).

Under gunicorn the workers share their counts through files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multi-process mode), which
deploy/gunicorn/gunicorn.conf.py.j2 sets, empties at start and tidies when a worker
exits; without it (tests, ``create_app`` in one process) the counts are this process's.

Who may read /metrics: addresses in ``metrics_allow`` (the scrapers; loopback by
default) without credentials; anyone else needs a user with the list right. On an index
whose lists are public, an anonymous reader elsewhere gets in only with ``metrics_public``:
a public index does not show its traffic to the internet by default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable

import bottle

from .auth import Access, Unauthorized
from .catalog import Catalog
from .databases import DatabaseUnavailable, unavailable_errors
from .proxy import ProxyHeaders
from .settings import Settings
from .storage import StorageUnavailable

log = logging.getLogger("wharf.metrics")

CONFIG_KEY = "wharf.metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets (seconds): pages answer in milliseconds, uploads and cold pulls in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Routes whose successful GETs are package downloads (.metadata files are not counted).
DOWNLOAD_ROUTES = ("/packages/<path:path>", "/upstream/<project>/<filename>")
UNMATCHED = "(unmatched)"  # the route label of requests no route took (404s): never the raw path


class Metrics:
    """This app's counters, in its own registry (in-process) or in the shared files (gunicorn)."""

    def __init__(self, catalog: Catalog):
        # prometheus_client picks its value store (memory or multi-process files) when it
        # is first imported: here, in the worker, after gunicorn's config set the directory.
        import prometheus_client as prom

        self.prom = prom
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = None if self.multiprocess else prom.CollectorRegistry()
        self.catalog = catalog
        self._failed_once = False
        reg = {"registry": self.registry}  # None: only the shared files hold them
        self.requests = prom.Counter("wharf_http_requests", "HTTP requests answered, by route rule, method and status.",
                                     ["route", "method", "status"], **reg)
        self.latency = prom.Histogram("wharf_http_request_duration_seconds",
                                      "Seconds the app took to answer (the body's sending excluded), by route rule.",
                                      ["route"], buckets=LATENCY_BUCKETS, **reg)
        self.in_flight = prom.Gauge("wharf_http_requests_in_flight",
                                    "Requests being answered now (sync workers: busy workers).",
                                    multiprocess_mode="livesum", **reg)
        self.workers = prom.Gauge("wharf_workers", "Worker processes serving the app.",
                                  multiprocess_mode="livesum", **reg)
        self.uploads = prom.Counter("wharf_uploads", "Files published by upload.", **reg)
        self.upload_bytes = prom.Counter("wharf_upload_bytes", "Bytes of the files published by upload.", **reg)
        self.downloads = prom.Counter("wharf_downloads", "Package files sent or redirected to (by the app, "
                                      "not from nginx's cache).", **reg)
        self.download_bytes = prom.Counter("wharf_download_bytes", "Bytes of the package files the app sent.", **reg)
        self.lag = prom.Histogram("wharf_change_propagation_seconds",
                                  "Seconds from an upload's record in the catalog to this worker applying it.",
                                  buckets=LAG_BUCKETS, **reg)
        self.storage_errors = prom.Counter("wharf_storage_errors", "Requests failed because the file "
                                           "storage could not be reached.", **reg)
        self.database_errors = prom.Counter("wharf_database_errors", "Requests failed because the "
                                            "database could not be reached.", **reg)
        self.upstream_hits = prom.Counter("wharf_upstream_cache_hits", "Pull-through files served from the cache.", **reg)
        self.upstream_misses = prom.Counter("wharf_upstream_cache_misses", "Pull-through files fetched upstream.", **reg)
        self.workers.set(1)
        self._newest_upload = self._newest_upload_time()

    # --- what the places that know tell us ------------------------------------------------
    @contextlib.contextmanager
    def _recording(self):
        """Counting never fails a request: in multi-process mode a metric lives in a file, and
        a full disk must leave the index answering (507s included), not turn every request
        into a 500. The first failure is logged; the metrics just miss what they could not keep."""
        try:
            yield
        except (OSError, ValueError) as exc:
            if not self._failed_once:
                self._failed_once = True
                log.warning("metrics could not be recorded (%s); requests go on without them", exc)

    def note(self, event: str, amount: float = 0) -> None:
        """Count an event: "upload" (amount: bytes), "upstream_hit", "upstream_miss"."""
        with self._recording():
            self._note(event, amount)

    def _note(self, event: str, amount: float) -> None:
        if event == "upload":
            self.uploads.inc()
            self.upload_bytes.inc(amount)
        elif event == "upstream_hit":
            self.upstream_hits.inc()
        elif event == "upstream_miss":
            self.upstream_misses.inc()

    # --- requests ----------------------------------------------------------------------
    def wrap(self, wsgi: Callable) -> Callable:
        """``wsgi`` counted: route, method, status, latency, in flight, downloads."""
        def counted(environ: dict, start_response: Callable) -> Iterable[bytes]:
            seen: dict = {}

            def start(status: str, headers: list, exc_info=None):
                seen["status"], seen["headers"] = status, headers
                return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

            began = time.perf_counter()
            with self._recording():
                self.in_flight.inc()
            try:
                return wsgi(environ, start)
            finally:
                with self._recording():
                    self.in_flight.dec()
                    self._count(environ, seen, time.perf_counter() - began)
        return counted

    def _count(self, environ: dict, seen: dict, seconds: float) -> None:
        route = environ.get("bottle.route")
        rule = route.rule if route is not None else UNMATCHED
        status = seen.get("status", "500")[:3]
        method = environ.get("REQUEST_METHOD", "GET")
        method = method if method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS") else "other"
        self.requests.labels(rule, method, status).inc()
        self.latency.labels(rule).observe(seconds)
        if (rule in DOWNLOAD_ROUTES and method == "GET" and status in ("200", "206", "302")
                and not environ.get("PATH_INFO", "").endswith(".metadata")):
            self.downloads.inc()
            length = next((v for k, v in seen.get("headers", ()) if k.lower() == "content-length"), "0")
            self.download_bytes.inc(int(length) if length.isdigit() and status != "302" else 0)

    def errors_plugin(self, callback: Callable) -> Callable:
        """A bottle plugin: count storage and database failures behind whatever answer they became."""
        def checked(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except Exception as exc:
                with self._recording():
                    self._count_failure(exc)
                raise
        return checked

    def _count_failure(self, exc: BaseException | None) -> None:
        seen = set()
        while exc is not None and id(exc) not in seen:  # the HTTP answer, then what caused it
            seen.add(id(exc))
            if isinstance(exc, StorageUnavailable):
                self.storage_errors.inc()
                return
            if isinstance(exc, (DatabaseUnavailable, *unavailable_errors())):
                self.database_errors.inc()
                return
            inner = getattr(exc, "exception", None)
            exc = inner if isinstance(inner, BaseException) else (exc.__cause__ or exc.__context__)

    # --- propagation lag -----------------------------------------------------------------
    def _newest_upload_time(self) -> float | None:
        try:
            row = self.catalog.db().execute("SELECT max(uploaded_at) FROM uploads").fetchone()
        except Exception:  # a database that is down: measure from the next sync on
            return None
        return row[0] if row and row[0] is not None else 0.0

    def watch_sync(self, sync: Callable[[], bool]) -> Callable[[], bool]:
        """``Catalog.sync`` that also observes how long the newest upload took to reach this worker.

        The journal of changes keeps no times; the upload records do, so the lag is
        measured on uploads (yanks and removals travel the same journal). Across nodes
        it includes the difference of their clocks.
        """
        def synced() -> bool:
            changed = sync()
            if changed:
                newest = self._newest_upload_time()
                if newest is not None and self._newest_upload is not None and newest > self._newest_upload:
                    with self._recording():
                        self.lag.observe(max(0.0, time.time() - newest))
                if newest is not None:
                    self._newest_upload = newest
            return changed
        return synced

    # --- the page ------------------------------------------------------------------------
    def collect(self):
        """The catalog's size as this worker sees it (a collector read at scrape time)."""
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("wharf_catalog_projects", "Projects in the catalog.", value=len(self.catalog.view.names))
        with contextlib.suppress(Exception):  # the database down: the gauge is left out, not the scrape
            yield GaugeMetricFamily("wharf_catalog_files", "Files in the catalog.", value=self.catalog.file_count())

    def page(self) -> bytes:
        """Every worker's counts in Prometheus' text format."""
        prom = self.prom
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = prom.CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = self.registry
        catalog_size = prom.CollectorRegistry()
        catalog_size.register(self)
        return prom.generate_latest(registry) + prom.generate_latest(catalog_size)


def note(event: str, amount: float = 0) -> None:
    """Count an event of the current request's app (see ``Metrics.note``); nothing if it has no metrics."""
    try:
        metrics = bottle.request.app.config.get(CONFIG_KEY)
    except (KeyError, RuntimeError, AttributeError):  # outside a request (the CLI)
        return
    if metrics is not None:
        metrics.note(event, amount)


def check_reader(settings: Settings, access: Access, allowed: ProxyHeaders) -> None:
    """Raise 401/403 unless this request may read /metrics (see the module's docstring)."""
    # REMOTE_ADDR as ProxyHeaders left it (the client behind a trusted nginx); bottle's
    # remote_addr would believe any X-Forwarded-For a client sends.
    if allowed.trusts(bottle.request.environ.get("REMOTE_ADDR", "")):
        return
    if access.protects("list"):
        access.require("list")
    elif not settings.metrics_public and access.user() is None:
        raise Unauthorized("/metrics needs a user (or an address in metrics_allow)")


def register(app: bottle.Bottle, settings: Settings, catalog: Catalog, access: Access) -> Callable:
    """Serve /metrics; the app's WSGI callable with its requests counted (bottle sets ``wsgi`` once)."""
    metrics = Metrics(catalog)
    app.config[CONFIG_KEY] = metrics
    app.install(metrics.errors_plugin)
    catalog.sync = metrics.watch_sync(catalog.sync)  # catch_up and the watcher both sync
    # The same address matching as trusted_proxies: IPs or networks.
    allowed = ProxyHeaders(None, settings.metrics_allow)

    @app.get("/metrics")
    def metrics_page():
        check_reader(settings, access, allowed)
        bottle.response.set_header("Content-Type", metrics.prom.CONTENT_TYPE_LATEST)
        bottle.response.set_header("Cache-Control", "no-store")
        return metrics.page()

    return metrics.wrap(app.wsgi)
