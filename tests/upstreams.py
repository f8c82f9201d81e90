"""Upstream indexes for the availability tests (mirror, pull-through); no internet needed.

``build_upstream`` fills a directory for a second Wharf to serve. ``TinyIndex`` is a tiny
upstream in a thread, optionally with HTTPS from a throwaway CA and Basic auth, that can
lie: it serves PEP 503 HTML pages only (so Wharf's HTML fallback is what reads them), with
sha256 fragments and PEP 658 metadata for wheels. A file listed in ``lies`` is listed with
the hash of its true bytes but served with other bytes: what a compromised mirror or a
tampering proxy would do.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import socketserver
import ssl
import subprocess
import threading
import zipfile
from pathlib import Path
from urllib.parse import quote, unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from tests.support import make_sdist, make_wheel


def build_upstream(directory: Path) -> None:
    """toplib -> midlib -> leaflib, with wheels that differ between Python 3.11 and 3.12.

    toplib 2.0 needs Python >= 3.12, so 3.11 resolves toplib 1.0; leaflib has a cp311 and a
    cp312 wheel; toplib 2.0 also needs newdep, but only on Python >= 3.12 (a marker pip,
    running on 3.11, judges wrongly). otherlib is upstream but nobody asks for it.
    """
    make_wheel(directory, "leaflib", "1.0", tag="cp311-none-any")
    make_wheel(directory, "leaflib", "1.0", tag="cp312-none-any")
    make_sdist(directory, "leaflib", "1.0")
    make_wheel(directory, "midlib", "1.0", requires=("leaflib>=1",))
    make_sdist(directory, "midlib", "1.0", requires=("leaflib>=1",))
    make_wheel(directory, "toplib", "1.0", requires=("midlib",), requires_python=">=3.8")
    make_sdist(directory, "toplib", "1.0", requires=("midlib",), requires_python=">=3.8")
    top2 = ("midlib", "leaflib>=1", 'newdep; python_version >= "3.12"')
    make_wheel(directory, "toplib", "2.0", requires=top2, requires_python=">=3.12")
    make_sdist(directory, "toplib", "2.0", requires=top2, requires_python=">=3.12")
    make_wheel(directory, "newdep", "1.0")
    make_wheel(directory, "otherlib", "1.0")


def make_ca_and_leaf(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, leaf.pem, leaf.key): a throwaway CA and a CA-signed leaf for 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, leaf = (directory / n for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem"))
    ext = directory / "leaf.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=wharf test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(leaf), "-days", "2", "-extfile", str(ext))
    return ca, leaf, key


def _project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return parse_wheel_filename(filename)[0]
    return parse_sdist_filename(filename)[0]


def _wheel_metadata(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class TinyIndex:
    """A simple index in a thread: ``files`` are served, ``lies`` swap a file's bytes.

    With ``cert``/``key`` it speaks HTTPS, with ``user`` it wants Basic auth, and with
    ``files_url`` its pages link files at that absolute URL (another origin) instead.
    """

    def __init__(self, files: list[Path], cert: Path | None = None, key: Path | None = None,
                 user: str | None = None, password: str = "", lies: dict[str, bytes] | None = None,
                 files_url: str | None = None):
        self.files = {p.name: p.read_bytes() for p in files}
        self.lies = dict(lies or {})
        self.files_url = files_url
        self.token = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header sent)
        self.server = make_server("127.0.0.1", 0, self.app, server_class=_ThreadingServer, handler_class=_Quiet)
        self.scheme = "http"
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, user: str = "", password: str = "") -> str:
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
        return f"{self.scheme}://{auth}127.0.0.1:{self.port}/simple/"

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def authorized(self, header: str | None) -> bool:
        return self.token is None or header == self.token

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> TinyIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        header = environ.get("HTTP_AUTHORIZATION")
        self.requests.append((path, header))
        if not self.authorized(header):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="tiny"'),
                                                ("Content-Type", "text/plain")])
            return [b"401 who are you?\n"]
        parts = [unquote(p) for p in path.split("/") if p]
        if len(parts) == 1 and parts[0] == "simple":
            body = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted({_project_of(f) for f in self.files}))
            return self._send(start_response, body.encode(), "text/html")
        if len(parts) == 2 and parts[0] == "simple":
            return self._page(start_response, canonicalize_name(parts[1]))
        if len(parts) == 2 and parts[0] == "files":
            name = parts[1]
            if name.endswith(".metadata") and name[: -len(".metadata")] in self.files:
                return self._send(start_response, _wheel_metadata(self.files[name[: -len(".metadata")]]),
                                  "application/octet-stream")
            if name in self.files:
                return self._send(start_response, self.lies.get(name, self.files[name]), "application/octet-stream")
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"404 not here\n"]

    def _page(self, start_response, project: str):
        links = []
        for name, data in sorted(self.files.items()):
            if _project_of(name) != project:
                continue
            attrs = ""
            if name.endswith(".whl"):
                metadata = _wheel_metadata(data)
                attrs = f' data-core-metadata="sha256={hashlib.sha256(metadata).hexdigest()}"'
                for line in metadata.decode().splitlines():
                    if line.startswith("Requires-Python:"):
                        attrs += f' data-requires-python="{html.escape(line.split(":", 1)[1].strip())}"'
            href = (self.files_url or "../../files/") + quote(name)
            links.append(f'<a href="{href}#sha256={hashlib.sha256(data).hexdigest()}"'
                         f'{attrs}>{name}</a><br>')
        if not links:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"404 no such project\n"]
        body = f"<!DOCTYPE html><html><body><h1>{project}</h1>\n" + "\n".join(links) + "\n</body></html>\n"
        return self._send(start_response, body.encode(), "text/html; charset=utf-8")

    @staticmethod
    def _send(start_response, body: bytes, kind: str):
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]
