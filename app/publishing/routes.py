"""The HTTP side of publishing: the legacy upload API's actions and ``DELETE /packages/<file>``.

An upload is checked (name, version, digests, archive, metadata) while it is still a new,
unpublished file in storage; only then is it published, by a link that fails if the name
is already taken, so two uploads cannot race past the duplicate check.
"""

from __future__ import annotations

import contextlib
import errno
import logging

import jinja2
from bottle import Bottle, HTTPError, request, response
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .. import metrics
from ..auth import Access, Refusal
from ..cache_refresh import CacheRefresher, refreshed
from ..catalog import Catalog, CatalogUnavailable, DistFile, FileConflict
from ..dists import (CoreMetadata, DistName, InvalidDistribution, check_archive, parse_filename, project_name,
                     read_core_metadata)
from ..policy.rules import LocalRules
from ..settings import Settings
from ..storage import StorageUnavailable
from .changes import remove_files, select_files, yank_files
from .release_slots import shadowed_file
from .form import MAX_FORM_BYTES, Body, Form, FormReader, Received, human_size

log = logging.getLogger("wharf.upload")

# A new file's temporary name in storage adds ~30 bytes to it; most filesystems stop at 255.
MAX_FILENAME_BYTES = 200
ACTIONS = ("file_upload", "remove_pkg", "remove_file", "yank", "unyank")
UPLOAD_TYPES = ("bdist_wheel", "sdist", "bdist_egg")
# Warehouse's digest fields and our names for the hashes.
DIGEST_FIELDS = {"sha256_digest": "sha256", "blake2_256_digest": "blake2b_256", "md5_digest": "md5"}


def upload_filename(filename: str | None) -> DistName:
    """Check a file name before anything is written to it; returns what it says."""
    if not filename:
        raise Refusal(400, "the content part has no filename")
    if len(filename.encode("utf-8", "replace")) > MAX_FILENAME_BYTES:
        raise Refusal(400, f"filename is longer than {MAX_FILENAME_BYTES} bytes")
    try:
        dist = parse_filename(filename)
    except InvalidDistribution as exc:
        raise Refusal(400, f"invalid distribution filename: {exc}") from None
    if dist.packagetype not in UPLOAD_TYPES:
        raise Refusal(400, f"{filename}: {dist.packagetype} files are not accepted; upload wheels or sdists")
    # packaging parses "ｆｒｅｓｈ-1.0.tar.gz" or "a b-1.0.tar.gz" without complaint; such a
    # project could never be installed (or even reached under /simple/) and only looks like
    # another one, so a published name must be a PEP 508 name: ASCII letters, digits, . _ -
    if project_name(dist.name) is None:
        raise Refusal(400, f"{filename}: {dist.name!r} is not a valid project name "
                           "(ASCII letters, digits, '.', '_' and '-', starting and ending with a letter or digit)")
    return dist


class Publisher:
    """The HTTP side of publishing."""

    def __init__(self, settings: Settings, catalog: Catalog, access: Access, policy: LocalRules):
        self.settings = settings
        self.policy = policy  # statuses (PEP 792), immutable file names: app/policy/rules.py
        self.catalog = catalog
        self.storage = catalog.storage
        self.access = access
        # The digests of an upload: those the client may send, and those the catalog keeps.
        self.algorithms = tuple(dict.fromkeys(("sha256", "blake2b_256", "md5", *catalog.algorithms)))

    @staticmethod
    def client() -> str:
        return request.environ.get("REMOTE_ADDR") or "?"

    def handle_form(self) -> str:
        body = Body(request.environ)
        user = None
        try:
            if not body.terminated:
                raise Refusal(411, "a Content-Length header is required")
            user = self.access.require("update")
            if body.length is not None and body.length > self.settings.max_upload_size + MAX_FORM_BYTES:
                raise Refusal(413, f"upload is larger than the index accepts ({human_size(self.settings.max_upload_size)})")
            self.storage.remove_stale_temporaries(self.settings.timeout + 60)
            with contextlib.ExitStack() as stack:
                def check_file(filename: str) -> None:
                    upload_filename(filename)
                    self.access.require_project(user, parse_filename(filename).project)
                    self.policy.check_upload(parse_filename(filename).project, filename)  # PEP 792

                reader = FormReader(self.storage, stack, max_file_size=self.settings.max_upload_size,
                                    algorithms=self.algorithms, check_file=check_file)
                form = reader.read(body, request.environ.get("CONTENT_TYPE", ""))
                action = form.get(":action")
                if not action:
                    raise Refusal(400, "missing :action (file_upload, remove_pkg, remove_file, yank, unyank)")
                if action not in ACTIONS:
                    raise Refusal(400, f"unknown :action {action[:50]!r}; this index knows {', '.join(ACTIONS)}")
                if action == "file_upload":
                    return self.upload(form, user)
                if form.file is not None:
                    raise Refusal(400, f"a file was sent with :action={action!r}; uploads use :action=file_upload")
                if action == "remove_pkg":
                    return self.remove_release(form, user)
                if action == "remove_file":
                    return self.remove_file(form, user)
                return self.yank(form, user, action == "yank")
        except StorageUnavailable as exc:
            # The object store is down: nothing was published (a new file is published
            # last, in one request); the client is told to try again.
            log.warning("%s from %s (user %s) refused: %s", request.path, self.client(), user or "-", exc)
            body.drain()
            error = Refusal(503, "the index's file storage cannot be reached; nothing was published, try again shortly")
            error.add_header("Retry-After", "10")
            raise error from None
        except HTTPError as error:
            body.drain()
            if error.status_code == 507:  # the operator has to make room
                log.error("refused %s from %s (user %s): %s", request.path, self.client(), user or "-", error.body)
            elif error.status_code < 500:
                log.info("refused %s from %s (user %s): %s", request.path, self.client(), user or "-", error.body)
            raise

    # --- file_upload -----------------------------------------------------------------------
    def upload(self, form: Form, user: str) -> str:
        received = form.file
        if received is None:
            raise Refusal(400, "missing the file: send it in a part named 'content'")
        for name in ("name", "version"):
            if not form.get(name):
                raise Refusal(400, f"missing form field {name!r}")
        protocol = form.get("protocol_version")
        if protocol and protocol != "1":
            raise Refusal(400, f"unsupported protocol_version {protocol[:20]!r}")
        filename = received.filename
        dist = upload_filename(filename)
        self.access.require_project(user, dist.project)
        if canonicalize_name(form.get("name")) != dist.project:
            raise Refusal(400, f"name {form.get('name')[:100]!r} does not match the file {filename}")
        try:
            version = Version(form.get("version"))
        except InvalidVersion:
            raise Refusal(400, f"invalid version {form.get('version')[:100]!r}") from None
        if version != dist.version:
            raise Refusal(400, f"version {form.get('version')[:100]!r} does not match the file {filename}")
        self._check_digests(form, received)
        stream, size = received.file.open()
        try:
            with stream:
                check_archive(stream, size, dist, filename)
                metadata = read_core_metadata(stream, dist, filename)
        except InvalidDistribution as exc:
            raise Refusal(400, f"not a valid {dist.packagetype} file: {exc}") from None
        self._check_metadata(metadata, dist, filename)
        return self._publish(received, user)

    @staticmethod
    def _check_metadata(data: bytes | None, dist: DistName, filename: str) -> None:
        """The archive's own metadata must name the project and version its file name does.

        pip refuses to install a file whose METADATA disagrees with its name, and the
        index would list it under one name while it installs as another.
        """
        if data is None:
            return  # an old sdist without PKG-INFO: nothing to compare
        try:
            metadata = CoreMetadata.parse(data)
        except Exception as exc:  # hostile bytes may fail the email parser in its own ways
            raise Refusal(400, f"{filename}: unreadable core metadata ({type(exc).__name__})") from None
        if metadata.name is not None and canonicalize_name(metadata.name) != dist.project:
            raise Refusal(400, f"{filename}: its metadata names the project {metadata.name[:100]!r}")
        if metadata.version is not None:
            try:
                same = Version(metadata.version) == dist.version
            except InvalidVersion:
                same = False
            if not same:
                raise Refusal(400, f"{filename}: its metadata says version {metadata.version[:100]!r}")

    @staticmethod
    def _check_digests(form: Form, received: Received) -> None:
        sent = {field_: form.get(field_).lower() for field_ in DIGEST_FIELDS if form.get(field_)}
        if not sent:
            raise Refusal(400, "no digest sent: include sha256_digest (or blake2_256_digest, md5_digest)")
        for field_, value in sent.items():
            if value != received.digests[DIGEST_FIELDS[field_]]:
                raise Refusal(400, f"{field_} does not match the uploaded file (corrupted in transit?)")

    def _publish(self, received: Received, user: str) -> str:
        filename = received.filename
        sha256 = received.digests["sha256"]
        existing = self.catalog.find_filename(filename)
        if existing is not None:
            if existing.sha256 == sha256:
                log.info("upload of %s by %s from %s: identical to the published file, nothing changed",
                         filename, user, self.client())
                return f"{filename} is already there with the same content; nothing changed\n"
            if not self.settings.overwrite or (existing.root, existing.relpath) != (0, filename):
                where = "" if (existing.root, existing.relpath) == (0, filename) else f" (as {existing.relpath})"
                raise Refusal(409, f"{filename} already exists{where} with different content")
        if not self.settings.overwrite:
            self._refuse_shadowing(filename, user)
        self.policy.check_republish(filename, sha256)  # a removed file's name keeps its bytes
        try:
            relpath = received.file.publish(replace=self.settings.overwrite)
        except FileExistsError:
            # On disk but not yet indexed, or a concurrent upload of the same name won.
            on_disk = self.storage.digests(0, filename, ("sha256",))["sha256"]
            if on_disk != sha256:
                raise Refusal(409, f"{filename} already exists with different content") from None
            self.catalog.record(filename)
            return f"{filename} is already there with the same content; nothing changed\n"
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise Refusal(507, "not enough disk space on the index for this file") from None
            raise
        hashes = {name: received.digests[name] for name in self.catalog.algorithms}
        try:
            self.catalog.record(relpath, hashes, uploaded_by=user, replace=self.settings.overwrite)
        except FileConflict as exc:
            # Another node published this name first (the database's unique upload record).
            if existing is None:
                self.storage.delete(0, relpath)
            raise Refusal(409, str(exc)) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # The file fitted, the catalog's record of it did not. Take a new file back, so
            # the client's failure is the whole truth (a replaced file cannot be taken back;
            # the catalog picks it up once there is room).
            if existing is None:
                self.storage.delete(0, relpath)
            raise Refusal(507, "not enough disk space on the index to record this file") from None
        except CatalogUnavailable as exc:
            # Acknowledged and listed, or refused and absent: never a failure followed by a
            # listing. The new file is taken back and the client told to try again.
            log.warning("upload of %s by %s refused: %s", filename, user, exc)
            if existing is None:
                self.storage.delete(0, relpath)
            error = Refusal(503, "the index's catalog is busy; nothing was published, try again shortly")
            error.add_header("Retry-After", "5")
            raise error from None
        replaced = " (replacing the previous file)" if existing is not None else ""
        log.info("uploaded %s%s, %d bytes, sha256 %s, by %s from %s",
                 filename, replaced, received.size, sha256, user, self.client())
        metrics.note("upload", received.size)
        return f"uploaded {filename}{replaced}\n"

    def _refuse_shadowing(self, filename: str, user: str) -> None:
        """409 for a file that would change what an existing release installs."""
        project = self.catalog.project(parse_filename(filename).project)
        other = shadowed_file(filename, (f.filename for f in project.files)) if project else None
        if other is not None:
            log.info("upload of %s by %s from %s refused: it would shadow %s", filename, user, self.client(), other)
            raise Refusal(409, f"{filename} would change what the published {other} installs (same release, "
                               "same platform); publish a new version instead")

    # --- removal and yanks -----------------------------------------------------------------
    def _targets(self, form: Form, user: str, *, by_file: bool | None) -> tuple[list[DistFile], str]:
        filename, name, version = form.get("filename"), form.get("name"), form.get("version")
        self.catalog.sync_before_write()
        if by_file or (by_file is None and filename):
            if not filename:
                raise Refusal(400, "missing form field 'filename'")
            try:
                project = parse_filename(filename).project
            except InvalidDistribution as exc:
                raise Refusal(400, f"invalid distribution filename: {exc}") from None
            self.access.require_project(user, project)
            files = select_files(self.catalog, filename=filename)
            what = filename
        else:
            for key, value in (("name", name), ("version", version)):
                if not value:
                    raise Refusal(400, f"missing form field {key!r}")
            self.access.require_project(user, name)
            try:
                files = select_files(self.catalog, name=name, version=version)
            except InvalidVersion:
                raise Refusal(400, f"invalid version {version[:100]!r}") from None
            what = f"{canonicalize_name(name)} {version}"
        if not files:
            raise Refusal(404, f"{what[:200]} not found")
        return files, what

    def remove_release(self, form: Form, user: str) -> str:
        files, what = self._targets(form, user, by_file=False)
        self.policy.record_removals(files, user)
        removed = remove_files(self.catalog, files)
        log.info("removed %s (%s) by %s from %s", what, ", ".join(removed), user, self.client())
        return f"removed {', '.join(removed)}\n"

    def remove_file(self, form: Form, user: str) -> str:
        files, what = self._targets(form, user, by_file=True)
        self.policy.record_removals(files, user)
        removed = remove_files(self.catalog, files)
        log.info("removed %s by %s from %s", ", ".join(removed), user, self.client())
        return f"removed {', '.join(removed)}\n"

    def yank(self, form: Form, user: str, yank: bool) -> str:
        files, what = self._targets(form, user, by_file=None)
        reason = form.get("reason") if yank else None
        yank_files(self.catalog, files, reason)
        verb = "yanked" if yank else "unyanked"
        log.info("%s %s (%s)%s by %s from %s", verb, what, ", ".join(f.filename for f in files),
                 f" reason {reason!r}" if reason else "", user, self.client())
        return f"{verb} {', '.join(f.filename for f in files)}\n"

    def delete(self, path: str) -> str:
        body = Body(request.environ)
        user = None
        try:
            user = self.access.require("update")
            self.catalog.sync_before_write()
            dist = self.catalog.find(path)
            if dist is None:
                raise Refusal(404, "no such package file")
            self.access.require_project(user, dist.project)
        except HTTPError as error:
            body.drain()
            log.info("refused DELETE %s from %s (user %s): %s", path[:200], self.client(), user or "-", error.body)
            raise
        self.policy.record_removals([dist], user)
        removed = remove_files(self.catalog, [dist])
        log.info("removed %s by %s from %s", ", ".join(removed), user, self.client())
        return f"removed {', '.join(removed)}\n"


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment, policy: LocalRules,
             refresher: CacheRefresher | None = None) -> Publisher:
    publisher = Publisher(settings, catalog, access, policy)
    catalog.storage.remove_stale_temporaries(settings.timeout + 60)

    def answer(text: str) -> str:
        response.set_header("Content-Type", "text/plain; charset=utf-8")
        response.set_header("Cache-Control", "no-store")
        return text

    @app.post("/")
    @app.post("/legacy")
    @app.post("/legacy/")
    def legacy_upload():
        # Whatever the action changed, every nginx has fetched it again before the answer.
        with refreshed(refresher, lambda: catalog.view):
            return answer(publisher.handle_form())

    @app.route("/packages/<path:path>", method="DELETE")
    def delete_package_file(path: str):
        with refreshed(refresher, lambda: catalog.view):
            return answer(publisher.delete(path))

    return publisher
