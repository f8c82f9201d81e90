"""What the robustness tests share: HTTP with byte-level control, multipart bodies, file-tree
snapshots, and the figures of processes (RSS, peak RSS, open files) read from /proc."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import ssl
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

BOUNDARY = b"robustness-7d0c2f"
PASSWORD = "s3cret horse battery"  # the uploader's password, searched for in every log


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass(frozen=True)
class Raw:
    """One request exactly as it goes on the wire."""

    data: bytes
    label: str = ""
    # Close our sending side after the bytes: a body shorter than its Content-Length then
    # ends (the server sees EOF) instead of leaving the server waiting for the rest.
    half_close: bool = False
    head: bool = False  # a HEAD request: the answer has no body
    # Bytes that never finish a request line: there is no request to answer, and closing
    # the connection (as gunicorn and nginx do) is the right response.
    unfinished: bool = False


@dataclass
class Answer:
    status: int | None  # None: no HTTP answer at all (reset or closed before a status line)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""


def request_bytes(method: bytes | str, target: bytes | str, headers: list[tuple[bytes | str, bytes | str]],
                  body: bytes = b"", *, content_length: bool = True, version: bytes = b"HTTP/1.1") -> bytes:
    """A request line, headers (in order, as given) and body; Content-Length added unless told not to."""
    def b(value: bytes | str) -> bytes:
        return value if isinstance(value, bytes) else value.encode("utf-8")

    lines = [b(method) + b" " + b(target) + b" " + version]
    lines += [b(name) + b": " + b(value) for name, value in headers]
    if content_length and body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(port: int, raw: Raw, *, tls: ssl.SSLContext | None = None, timeout: float = 60) -> Answer:
    """Send ``raw`` on a fresh connection to 127.0.0.1:port and read one answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        try:
            sock.sendall(raw.data)
            if raw.half_close and tls is None:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the server answered and closed before taking everything
            sent_error = f"send: {exc}"
        else:
            sent_error = ""
        response = http.client.HTTPResponse(sock, method="HEAD" if raw.head else "GET")
        try:
            response.begin()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Answer(None, error=f"{sent_error} read: {type(exc).__name__}: {exc}".strip())
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body, sent_error)
    finally:
        sock.close()


# --- multipart/form-data, byte for byte ---------------------------------------------------------
def part(name: bytes | str, value: bytes | str, *, filename: bytes | str | None = None,
         extra_headers: bytes = b"") -> bytes:
    def b(v: bytes | str) -> bytes:
        return v if isinstance(v, bytes) else v.encode("utf-8")

    disposition = b'Content-Disposition: form-data; name="' + b(name) + b'"'
    if filename is not None:
        disposition += b'; filename="' + b(filename) + b'"'
        disposition += b"\r\nContent-Type: application/octet-stream"
    return b"--" + BOUNDARY + b"\r\n" + disposition + b"\r\n" + extra_headers + b"\r\n" + b(value) + b"\r\n"


def form(fields: list[tuple[str, bytes | str]], file: tuple[bytes | str, bytes] | None = None, *,
         closed: bool = True) -> bytes:
    body = b"".join(part(name, value) for name, value in fields)
    if file is not None:
        body += part("content", file[1], filename=file[0])
    return body + (b"--" + BOUNDARY + b"--\r\n" if closed else b"")


def upload_fields(name: str, version: str, data: bytes) -> list[tuple[str, str]]:
    return [(":action", "file_upload"), ("protocol_version", "1"), ("name", name), ("version", version),
            ("filetype", "bdist_wheel"), ("pyversion", "py3"), ("metadata_version", "2.1"),
            ("sha256_digest", hashlib.sha256(data).hexdigest())]


def multipart_headers(auth: str | None, boundary: bytes = BOUNDARY) -> list[tuple[bytes | str, bytes | str]]:
    headers: list[tuple[bytes | str, bytes | str]] = [
        ("Host", "127.0.0.1"), ("Content-Type", b"multipart/form-data; boundary=" + boundary)]
    if auth:
        headers.append(("Authorization", auth))
    return headers


# --- what is on disk --------------------------------------------------------------------------
def snapshot(tree: Path, *, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """Every file, directory and link under ``tree``: relative path -> (mode, sha256 or target)."""
    found: dict[str, tuple[int, str]] = {}
    for path in sorted(tree.rglob("*")):
        rel = str(path.relative_to(tree))
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            found[rel] = (st.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        elif stat.S_ISLNK(st.st_mode):
            found[rel] = (st.st_mode, os.readlink(path))
        else:
            found[rel] = (st.st_mode, "")
    return found


# --- processes --------------------------------------------------------------------------------
def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def shared_rss_kib(pid: int) -> int:
    """Resident shared memory (nginx's cache-key zone, say): it grows up to its size, not leaks."""
    return _status_kib(pid, "RssShmem")


def peak_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return found


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def files_open_under(pid: int, directory: Path) -> list[str]:
    """Paths under ``directory`` that the process has open (its temporary uploads, say)."""
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(directory) + "/"):
                found.append(target)
    except OSError:
        pass
    return found


# --- HTTPS through the stack's nginx ----------------------------------------------------------
class Client:
    """HTTPS requests to 127.0.0.1:port trusting one CA; a fresh connection per request."""

    def __init__(self, port: int, ca: Path, *, tls: bool = True):
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca)) if tls else None

    def connect(self, timeout: float = 60) -> http.client.HTTPConnection:
        if self.context is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=timeout)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
                timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        conn = self.connect(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, headers)

    def upload(self, filename: str, data: bytes, name: str, version: str, auth: str, *,
               chunk: int = 0, pause: float = 0.0) -> tuple[int, bytes]:
        """A twine-style upload; with ``chunk``, the body goes out in pieces ``pause`` apart."""
        body = form(upload_fields(name, version, data), (filename, data))
        conn = self.connect(120)
        try:
            conn.putrequest("POST", "/")
            conn.putheader("Content-Type", "multipart/form-data; boundary=" + BOUNDARY.decode())
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Authorization", auth)
            conn.endheaders()
            step = chunk or len(body)
            for start in range(0, len(body), step):
                conn.send(body[start:start + step])
                if pause:
                    time.sleep(pause)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Session:
    """Requests over one kept-alive connection (reconnecting when the server closes it)."""

    def __init__(self, client: Client):
        self.client = client
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = self.client.connect(30)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, http.client.CannotSendRequest, ConnectionError):
                self.close()
                if attempt:
                    raise
                continue
            if response.will_close:
                self.close()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
