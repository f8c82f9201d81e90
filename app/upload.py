"""Publishing: uploads from twine and ``uv publish``, removals and yanks (the ``update`` action).

The upload API is Warehouse's legacy one, which pypiserver also speaks: a multipart POST to
``/`` or ``/legacy/`` with ``:action=file_upload``, the file in the ``content`` part and
its digests in ``sha256_digest``, ``blake2_256_digest`` and ``md5_digest``.

The body is parsed here as it arrives (bottle's own form parsing, which buffers, is never
touched): the file part goes in chunks to a hidden temporary file in the upload directory
while its digests are computed, so memory does not grow with the file. Only a complete,
verified file is published, by a link that fails if the name is already taken, so two
uploads cannot race past the duplicate check; anything else removes the temporary file.

Other actions, all needing ``update`` and the right to the project:
``remove_pkg`` (name, version; as pypiserver), ``remove_file`` (filename),
``yank`` / ``unyank`` (filename, or name and version; optional reason; PEP 592), and
``DELETE /packages/<file>``.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import hashlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl

import jinja2
from bottle import Bottle, HTTPError, request, response
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .auth import Access, Refusal
from .catalog import Catalog, DistFile
from .dists import (CoreMetadata, DistName, InvalidDistribution, check_archive, parse_filename, project_name,
                    read_core_metadata)
from .settings import Settings
from .storage import new_hasher

log = logging.getLogger("wharf.upload")

READ_CHUNK = 256 * 1024
# Limits on everything but the file: twine sends the README as ``description``.
MAX_FIELD_BYTES = 4 * 1024 * 1024
MAX_FORM_BYTES = 16 * 1024 * 1024
MAX_PARTS = 4096
# A refused request's unread body is read and dropped up to this much, so the client gets
# to read the answer instead of a connection reset; beyond it the connection is closed.
DRAIN_LIMIT = 64 * 1024 * 1024
# The temporary file's name adds ~30 bytes to the file's; most filesystems stop at 255.
MAX_FILENAME_BYTES = 200
ACTIONS = ("file_upload", "remove_pkg", "remove_file", "yank", "unyank")
UPLOAD_TYPES = ("bdist_wheel", "sdist", "bdist_egg")
# Warehouse's digest fields and our names for the hashes.
DIGEST_FIELDS = {"sha256_digest": "sha256", "blake2_256_digest": "blake2b_256", "md5_digest": "md5"}


def _hasher(name: str):
    if name == "md5":
        return hashlib.md5(usedforsecurity=False)
    return new_hasher(name)


class ClientGone(Exception):
    """The request body ended before its declared length (the client went away)."""


class Body:
    """The request body as it arrives: read in chunks, never more than declared."""

    def __init__(self, environ: dict):
        self.stream: BinaryIO = environ["wsgi.input"]
        declared = (environ.get("CONTENT_LENGTH") or "").strip()
        self.length: int | None = int(declared) if declared.isdigit() else None
        # Without a length only a server that marks the end (gunicorn, for chunked bodies) will do.
        self.terminated = self.length is not None or bool(environ.get("wsgi.input_terminated"))
        self.received = 0

    def read(self) -> bytes:
        size = READ_CHUNK if self.length is None else min(READ_CHUNK, self.length - self.received)
        if size <= 0:
            return b""
        try:
            chunk = self.stream.read(size)
        except Exception as exc:  # the server's reader fails in its own ways when a client drops
            raise ClientGone(str(exc) or type(exc).__name__) from None
        if not chunk and self.length is not None:
            raise ClientGone(f"the body ended after {self.received} of {self.length} bytes")
        self.received += len(chunk)
        return chunk

    def drain(self) -> None:
        """Read and drop what is left, if it is not too much (see DRAIN_LIMIT)."""
        if not self.terminated or (self.length is not None and self.length - self.received > DRAIN_LIMIT):
            return
        dropped = 0
        with contextlib.suppress(ClientGone):
            while dropped < DRAIN_LIMIT and (chunk := self.read()):
                dropped += len(chunk)


@dataclass
class Received:
    """The uploaded file, complete, in its temporary place."""

    filename: str
    path: Path
    size: int
    digests: dict[str, str]


@dataclass
class Form:
    """What a form body said: its fields, and the file if one came."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file: Received | None = None

    def get(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0].strip() if values else ""


_FILENAME = re.compile(r';\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', re.IGNORECASE)


def _plain_filename(segment: MultipartSegment) -> str | None:
    """The filename exactly as sent: the parser would turn ``C:\\x\\f.whl`` into ``f.whl``."""
    match = _FILENAME.search(segment.header("Content-Disposition") or "")
    if match is None:
        return segment.filename
    return match.group(1) if match.group(1) is not None else match.group(2)


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


class FormReader:
    """Reads a form body: small fields into memory, the ``content`` file to storage."""

    def __init__(self, catalog: Catalog, settings: Settings, stack: contextlib.ExitStack,
                 check_file: Callable[[str], None] | None = None):
        self.catalog = catalog
        self.settings = settings
        self.stack = stack
        # Called with the file's name before its bytes are read, to refuse early.
        self.check_file = check_file
        self.algorithms = tuple(dict.fromkeys(("sha256", "blake2b_256", "md5", *catalog.algorithms)))

    def read(self, body: Body) -> Form:
        content_type = request.environ.get("CONTENT_TYPE", "")
        kind, options = parse_options_header(content_type)
        if kind == "multipart/form-data" and options.get("boundary"):
            return self._multipart(body, options["boundary"])
        if kind == "application/x-www-form-urlencoded":
            return self._urlencoded(body)
        raise Refusal(400, "expected a multipart/form-data body (as twine and uv publish send)")

    def _urlencoded(self, body: Body) -> Form:
        data = bytearray()
        while chunk := body.read():
            data += chunk
            if len(data) > MAX_FORM_BYTES:
                raise Refusal(413, f"form is larger than {MAX_FORM_BYTES} bytes")
        form = Form()
        try:
            pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise Refusal(400, "form is not UTF-8") from None
        for key, value in pairs:
            form.fields.setdefault(key, []).append(value)
        return form

    def _multipart(self, body: Body, boundary: str) -> Form:
        form = Form()
        form_bytes = 0
        field_name: str | None = None
        field_data = bytearray()
        incoming: Incoming | None = None
        parser = PushMultipartParser(boundary, content_length=body.length if body.length is not None else -1,
                                     max_header_count=16, max_segment_count=MAX_PARTS)
        try:
            while not parser.closed:
                for event in parser.parse(body.read()):
                    if isinstance(event, MultipartSegment):  # a part begins
                        if event.name == "content" and event.filename is not None:
                            if form.file is not None or incoming is not None:
                                raise Refusal(400, "more than one file in the upload")
                            incoming = self._receive(_plain_filename(event) or "")
                        else:
                            field_name, field_data = event.name or "", bytearray()
                    elif event:  # a chunk of the current part
                        if incoming is not None:
                            incoming.write(event)
                        else:
                            field_data += event
                            form_bytes += len(event)
                            if len(field_data) > MAX_FIELD_BYTES or form_bytes > MAX_FORM_BYTES:
                                raise Refusal(413, f"form field {field_name!r} is too large")
                    elif incoming is not None:  # the end of the file part
                        form.file, incoming = incoming.finish(), None
                    elif field_name is not None:  # the end of a field
                        try:
                            form.fields.setdefault(field_name, []).append(field_data.decode("utf-8"))
                        except UnicodeDecodeError:
                            raise Refusal(400, f"form field {field_name!r} is not UTF-8") from None
                        field_name = None
        except MultipartError as exc:
            raise Refusal(400, f"malformed or truncated multipart body: {exc}") from None
        except ClientGone as exc:
            raise Refusal(400, f"incomplete request body: {exc}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise Refusal(507, "not enough disk space on the index for this file") from None
            raise
        return form

    def _receive(self, filename: str) -> Incoming:
        upload_filename(filename)
        if self.check_file is not None:
            self.check_file(filename)
        stream, path = self.stack.enter_context(self.catalog.storage.temporary(filename))
        return Incoming(filename, stream, path, self.algorithms, self.settings.max_upload_size)


class Incoming:
    """The file part as it arrives: written to its temporary file and hashed on the way."""

    def __init__(self, filename: str, stream: BinaryIO, path: Path, algorithms: tuple[str, ...], limit: int):
        self.filename, self.stream, self.path, self.limit = filename, stream, path, limit
        self.hashers = {name: _hasher(name) for name in algorithms}
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise Refusal(413, f"file is larger than the index accepts ({_human(self.limit)})")
        self.stream.write(chunk)
        for hasher in self.hashers.values():
            hasher.update(chunk)

    def finish(self) -> Received:
        self.stream.flush()
        digests = {name: hasher.hexdigest() for name, hasher in self.hashers.items()}
        return Received(self.filename, self.path, self.size, digests)


def _human(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:g} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


# --- what the actions do (shared by HTTP and the CLI) -------------------------------------
def select_files(catalog: Catalog, *, name: str = "", version: str = "", filename: str = "") -> list[DistFile]:
    """The files a removal or yank is about: one filename, or every file of a release.

    Raises ValueError for a version that is not a version.
    """
    if filename:
        found = catalog.find_filename(filename)
        return [found] if found else []
    project = catalog.project(canonicalize_name(name))
    if project is None:
        return []
    wanted = Version(version)
    return [f for f in project.files if Version(f.version) == wanted]


def remove_files(catalog: Catalog, files: Iterable[DistFile]) -> list[str]:
    """Delete files from disk and index; a removed file's yank is forgotten with it."""
    removed = []
    for f in files:
        catalog.forget(f)
        removed.append(f.relpath)
        if catalog.find_filename(f.filename) is None:
            catalog.set_yanked([f], None)  # a later upload of that name starts unyanked
    return removed


def yank_files(catalog: Catalog, files: list[DistFile], reason: str | None) -> int:
    """Yank (reason: a string, maybe empty) or unyank (None) the files."""
    return catalog.set_yanked(files, reason)


# --- HTTP ----------------------------------------------------------------------------------
class Publisher:
    """The HTTP side of publishing."""

    def __init__(self, settings: Settings, catalog: Catalog, access: Access):
        self.settings = settings
        self.catalog = catalog
        self.storage = catalog.storage
        self.access = access

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
                raise Refusal(413, f"upload is larger than the index accepts ({_human(self.settings.max_upload_size)})")
            self.storage.remove_stale_temporaries(self.settings.timeout + 60)
            with contextlib.ExitStack() as stack:
                def check_file(filename: str) -> None:
                    self.access.require_project(user, parse_filename(filename).project)

                form = FormReader(self.catalog, self.settings, stack, check_file).read(body)
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
        try:
            check_archive(received.path, dist, filename)
            metadata = read_core_metadata(received.path, dist)
        except InvalidDistribution as exc:
            message = str(exc).replace(received.path.name, filename)
            raise Refusal(400, f"not a valid {dist.packagetype} file: {message}") from None
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
        try:
            relpath = self.storage.publish(received.path, filename, replace=self.settings.overwrite)
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
            self.catalog.record(relpath, hashes)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # The file fitted, the catalog's record of it did not. Take a new file back, so
            # the client's failure is the whole truth (a replaced file cannot be taken back;
            # the catalog picks it up once there is room).
            if existing is None:
                self.storage.delete(0, relpath)
            raise Refusal(507, "not enough disk space on the index to record this file") from None
        replaced = " (replacing the previous file)" if existing is not None else ""
        log.info("uploaded %s%s, %d bytes, sha256 %s, by %s from %s",
                 filename, replaced, received.size, sha256, user, self.client())
        return f"uploaded {filename}{replaced}\n"

    # --- removal and yanks -----------------------------------------------------------------
    def _targets(self, form: Form, user: str, *, by_file: bool | None) -> tuple[list[DistFile], str]:
        filename, name, version = form.get("filename"), form.get("name"), form.get("version")
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
        removed = remove_files(self.catalog, files)
        log.info("removed %s (%s) by %s from %s", what, ", ".join(removed), user, self.client())
        return f"removed {', '.join(removed)}\n"

    def remove_file(self, form: Form, user: str) -> str:
        files, what = self._targets(form, user, by_file=True)
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
            dist = self.catalog.find(path)
            if dist is None:
                raise Refusal(404, "no such package file")
            self.access.require_project(user, dist.project)
        except HTTPError as error:
            body.drain()
            log.info("refused DELETE %s from %s (user %s): %s", path[:200], self.client(), user or "-", error.body)
            raise
        removed = remove_files(self.catalog, [dist])
        log.info("removed %s by %s from %s", ", ".join(removed), user, self.client())
        return f"removed {', '.join(removed)}\n"


def register(app: Bottle, settings: Settings, catalog: Catalog, access: Access,
             templates: jinja2.Environment) -> Publisher:
    publisher = Publisher(settings, catalog, access)
    catalog.storage.remove_stale_temporaries(settings.timeout + 60)

    def answer(text: str) -> str:
        response.set_header("Content-Type", "text/plain; charset=utf-8")
        response.set_header("Cache-Control", "no-store")
        return text

    @app.post("/")
    @app.post("/legacy")
    @app.post("/legacy/")
    def legacy_upload():
        return answer(publisher.handle_form())

    @app.route("/packages/<path:path>", method="DELETE")
    def delete_package_file(path: str):
        return answer(publisher.delete(path))

    return publisher


# --- the command line (wharf yank | unyank | remove) ------------------------------------
def cli_targets(catalog: Catalog, target: list[str]) -> tuple[list[DistFile], str]:
    """``FILENAME`` or ``NAME VERSION`` as given on the command line."""
    if len(target) == 1:
        files = select_files(catalog, filename=target[0])
        what = target[0]
    elif len(target) == 2:
        files = select_files(catalog, name=target[0], version=target[1])
        what = f"{canonicalize_name(target[0])} {target[1]}"
    else:
        raise ValueError("give a FILENAME, or a project NAME and VERSION")
    if not files:
        raise LookupError(f"{what} not found")
    return files, what


def log_cli(action: str, what: str, detail: str = "") -> None:
    """Log a change made from the command line: who, what, where."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = f"uid {os.getuid()}"
    log.info("%s %s%s by %s from the command line on %s", action, what, detail, who, socket.gethostname())
