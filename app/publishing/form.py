"""The body of a publishing request and the form it carries, read as it arrives.

Bottle's own form parsing, which buffers, is never touched: small fields go into memory
within limits, and the ``content`` part goes in chunks to a new file in storage while
its digests are computed, so memory does not grow with the file.
"""

from __future__ import annotations

import contextlib
import errno
import re
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import parse_qsl

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from ..auth import Refusal
from ..storage import NewFile, Storage, new_hasher

READ_CHUNK = 256 * 1024
# Limits on everything but the file: twine sends the README as ``description``.
MAX_FIELD_BYTES = 4 * 1024 * 1024
MAX_FORM_BYTES = 16 * 1024 * 1024
MAX_PARTS = 4096
# A refused request's unread body is read and dropped up to this much, for at most this
# long, so the client gets to read the answer instead of a connection reset; beyond either
# the connection is closed. The time bound keeps a client that trickles its body from
# holding a worker (behind nginx bodies arrive whole; gunicorn alone meets such clients).
DRAIN_LIMIT = 64 * 1024 * 1024
DRAIN_SECONDS = 2.0


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
        self.socket = environ.get("gunicorn.socket")  # the connection, where the server says

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
        """Read and drop what is left, if it is not too much (DRAIN_LIMIT, DRAIN_SECONDS)."""
        if not self.terminated or (self.length is not None and self.length - self.received > DRAIN_LIMIT):
            return
        if self.socket is not None:
            self._drain_socket()
            return
        dropped = 0
        with contextlib.suppress(ClientGone):
            while dropped < DRAIN_LIMIT and (chunk := self.read()):
                dropped += len(chunk)

    def _drain_socket(self) -> None:
        # Straight from the socket, each wait bounded: the server's own reader would wait
        # for a whole chunk however slowly it comes. Nothing is read after this (the
        # answer is a refusal), so bytes the server had already buffered do not matter.
        deadline = time.monotonic() + DRAIN_SECONDS
        left = DRAIN_LIMIT if self.length is None else self.length - self.received
        with contextlib.suppress(OSError, ValueError):
            while left > 0:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([self.socket], [], [], wait)[0]:
                    return
                data = self.socket.recv(min(left, READ_CHUNK), socket.MSG_DONTWAIT)
                if not data:
                    return
                left -= len(data)


@dataclass
class Received:
    """The uploaded file, complete, not yet published."""

    filename: str
    file: NewFile
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


class FormReader:
    """Reads a form body: small fields into memory, the ``content`` file to storage."""

    def __init__(self, storage: Storage, stack: contextlib.ExitStack, *, max_file_size: int,
                 algorithms: tuple[str, ...], check_file: Callable[[str], None] | None = None):
        self.storage = storage
        self.stack = stack
        self.max_file_size = max_file_size
        self.algorithms = algorithms  # the digests computed of the file as it arrives
        # Called with the file's name before its bytes are read, to refuse early.
        self.check_file = check_file

    def read(self, body: Body, content_type: str) -> Form:
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
        if self.check_file is not None:
            self.check_file(filename)
        new = self.stack.enter_context(self.storage.new_file(filename))
        return Incoming(filename, new, self.algorithms, self.max_file_size)


class Incoming:
    """The file part as it arrives: written to a new file in storage and hashed on the way."""

    def __init__(self, filename: str, new: NewFile, algorithms: tuple[str, ...], limit: int):
        self.filename, self.new, self.limit = filename, new, limit
        self.hashers = {name: new_hasher(name) for name in algorithms}
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise Refusal(413, f"file is larger than the index accepts ({human_size(self.limit)})")
        self.new.write(chunk)
        for hasher in self.hashers.values():
            hasher.update(chunk)

    def finish(self) -> Received:
        digests = {name: hasher.hexdigest() for name, hasher in self.hashers.items()}
        return Received(self.filename, self.new, self.size, digests)


def human_size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:g} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
