"""Bad input over real HTTP to a real gunicorn: every malformed request gets a 4xx, nothing changes.

Requests are written byte for byte (raw sockets), so they can be what no HTTP library would
send: broken multipart bodies, names and versions that disagree, path tricks in every field
(``..``, absolute paths, backslashes, percent-encoding, Unicode look-alikes, NUL), huge
headers and fields, invalid UTF-8, wrong methods. They come from a hand-written corpus and
from hypothesis (derandomized, so CI sees the same requests every run). Uploads carry a
valid user, so they get past authentication to the parsing behind it.

Afterwards the whole sandbox (packages directory, password file, a decoy directory that
absolute paths point into) is byte-for-byte what it was, and the server log holds no
traceback.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, given, settings as hypothesis_settings, strategies as st

from app.auth import set_password
from tests.support import WharfProcess, make_sdist, make_wheel

from .harness import (BOUNDARY, PASSWORD, Answer, Raw, basic, exchange, form, multipart_headers, part,
                      request_bytes, snapshot, upload_fields)

pytestmark = pytest.mark.slow

AUTH = basic("alice", PASSWORD)
GENERATED_UPLOADS = 170
GENERATED_READS = 150


# --- the server and its sandbox ------------------------------------------------------------------
class Sandbox:
    def __init__(self, root: Path):
        self.root = root
        self.packages = root / "deep" / "a" / "b" / "packages"  # so ../../.. stays in the sandbox
        self.outside = root / "outside"  # where absolute-path tricks point
        self.outside.mkdir(parents=True)
        (self.outside / "keep.txt").write_text("nothing may be written beside me\n")
        make_wheel(self.packages, "seed", "1.0")
        make_sdist(self.packages, "seed", "1.0")
        make_wheel(self.packages, "victim", "1.0")
        self.htpasswd = root / "secrets" / "htpasswd"
        set_password(self.htpasswd, "alice", PASSWORD, rounds=4)
        self.fresh = {v: make_wheel(root.parent / "dists", "fresh", v).read_bytes() for v in ("1.0", "2.0", "0.1.dev3")}
        self.answers: dict[bytes, tuple[str, Answer]] = {}

    def send(self, port: int, raw: Raw) -> Answer:
        answer = exchange(port, raw)
        self.answers[hashlib.sha256(raw.data).digest() + bytes([raw.half_close])] = (raw.label, answer)
        return answer


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("bad-input")
    box = Sandbox(base / "sandbox")
    # The catalog's state lives in the packages directory (the default): it must not change either.
    with WharfProcess(box.packages, "--password-file", str(box.htpasswd), "--timeout", "60",
                      log=base / "server.log") as server:
        box.server = server
        box.port = server.port
        box.before = snapshot(box.root, skip=_VOLATILE)
        box.index_before = exchange(box.port, Raw(request_bytes("GET", "/simple/", [("Host", "x")]))).body
        yield box


# SQLite's shared-memory indexes and WALs change on any read transaction; the databases
# themselves are compared.
_STATE = "deep/a/b/packages/.wharf"
_VOLATILE = tuple(f"{_STATE}/{name}.sqlite3-{suffix}" for name in ("catalog", "durable", "policy", "tokens")
                  for suffix in ("shm", "wal"))


def is_4xx(answer: Answer) -> bool:
    return answer.status is not None and 400 <= answer.status < 500


def answered_right(raw: Raw, answer: Answer) -> bool:
    """A 4xx; or, for bytes that never finish a request line, a closed connection."""
    if raw.unfinished:
        return answer.status is None and "closed" in answer.error or is_4xx(answer)
    return is_4xx(answer)


def describe(raw: Raw, answer: Answer) -> str:
    return f"{raw.label}: {answer.status} {answer.error} {answer.body[:200]!r}\nrequest: {raw.data[:600]!r}"


# --- building blocks --------------------------------------------------------------------------
FRESH = "fresh-1.0-py3-none-any.whl"
SEED = "seed-1.0-py3-none-any.whl"

# Ways to dress a file name so it points somewhere else or only looks like the real one.
FILENAME_TRICKS: list[bytes | str] = [
    f"../{FRESH}", f"../../{FRESH}", f"../../../outside/{FRESH}", f"..\\{FRESH}", f"..\\..\\outside\\{FRESH}",
    f"/tmp/{FRESH}", "{outside}/" + FRESH, f"C:\\temp\\{FRESH}", f"\\\\server\\share\\{FRESH}", f"./{FRESH}",
    f"%2e%2e%2f{FRESH}", f"..%2f{FRESH}", f"%2e%2e%5c{FRESH}", f"%2F{FRESH}", "fresh%2d1.0-py3-none-any.whl",
    f"{FRESH}\x00.txt", "fresh\x00-1.0-py3-none-any.whl", f"\x00{FRESH}", f".{FRESH}",
    f".upload-0000000000000000-{FRESH}.part", f"{FRESH}/", f"{FRESH}/.", f"{FRESH}/..",
    f"\uff0e\uff0e\uff0f{FRESH}", f"\u2025\u2215{FRESH}", f"..\u2215{FRESH}", f"\u2024\u2024/{FRESH}",
    "fresh\u2010-1.0-py3-none-any.whl", "", "fresh", "fresh-1.0", "fresh-1.0-py3-none-any", "fresh-1.0.txt",
    "fresh-1.0-py3-none-any.whl.exe", "fresh-1.0.win32.exe", "fresh-1.0-py3-none-any.WHL",
    "fresh-" + "1" * 250 + "-py3-none-any.whl", b"fresh-1.0-py3-none-any\xff\xfe.whl", b"\xc0\xae\xc0\xae/" + FRESH.encode(),
    "fresh-1.0-py3-none-any.whl\r\nX-Injected: 1",
]
# Names that look like "fresh" but are other strings (they must never become projects).
LOOKALIKES = ["\uff46\uff52\uff45\uff53\uff48", "fr\u0435sh", "fre\u0455h", "\U0001d41f\U0001d42b\U0001d41e\U0001d42c\U0001d421",
              "fr\u00e9sh", "fresh\u200b", "f\u0280esh", "fresh\u00a0x", "fre sh", "fre<sh>"]
BAD_NAMES = ["other", "../fresh", "fresh/..", "fresh\x00", "fresh\\", "/fresh", "%66resh", "fresh-other",
             "\uff46\uff52\uff45\uff53\uff48", "fr\u0435sh", "seed", "victim"]
BAD_VERSIONS = ["9.9", "2.0", "1.0/../2.0", "1.0\x00", "../1.0", "one", "1.0; rm -rf /", "\u0661.\u0660",
                "1.0\\", "%31.0", "1.0-", "1..0"]
PATH_TRICKS: list[str] = [
    "..", "../..", "../../..", "..%2f..", "%2e%2e", "%2E%2e%2F%2e%2E", "%2e%2e/%2e%2e/secrets/htpasswd",
    "..%5c..%5csecrets%5chtpasswd", "..\\..\\secrets", "%5c", "%00", "seed%00", f"{SEED}%00.metadata",
    "%2fetc%2fpasswd", "/etc/passwd", "//etc/passwd", "%ef%bc%8e%ef%bc%8e%ef%bc%8f", "%c0%ae%c0%ae%c0%af",
    "%ff", "%fe%ff", "%25%32%65%25%32%65", ".wharf", ".wharf/catalog.sqlite", ".upload-x.part", "%2e",
    "%e2%80%a5%e2%88%95", "seed%2f..%2f..", f"{SEED}/..", f"{SEED}.metadata/..", "%0d%0aX-Injected:%201",
    "C:%5cwindows", "~root", "%u002e%u002e", "..;/", "..%00/",
]
PREFIXES = ["/simple/", "/packages/", "/project/", "/projects/", "/static/", "/simple/seed/", f"/packages/{SEED}",
            "/", "/legacy/", "/health/"]


def upload(box: Sandbox, *, filename: bytes | str = FRESH, data: bytes | None = None, name: str = "fresh",
           version: str = "1.0", fields: list[tuple[str, bytes | str]] | None = None, path: str = "/",
           method: str = "POST", auth: str | None = AUTH, label: str = "") -> Raw:
    data = box.fresh["1.0"] if data is None else data
    if isinstance(filename, str):
        filename = filename.replace("{outside}", str(box.outside))
    fields = upload_fields(name, version, data) if fields is None else fields
    body = form(fields, (filename, data))
    return Raw(request_bytes(method, path, multipart_headers(auth), body), label or f"upload {filename!r}")


# --- the corpus: written by hand, one request per idea -----------------------------------------
def corpus(box: Sandbox) -> list[Raw]:
    fresh = box.fresh["1.0"]
    good = upload_fields("fresh", "1.0", fresh)
    cases: list[Raw] = []
    add = cases.append

    # File names that try to leave the directory or pass for another file.
    for trick in FILENAME_TRICKS:
        add(upload(box, filename=trick, label=f"filename {trick!r}"))
    for name in LOOKALIKES:  # name, file name and METADATA all agree: a look-alike project
        wheel = _wheel(name, "1.0")
        add(upload(box, filename=f"{name}-1.0-py3-none-any.whl", data=wheel, name=name,
                   label=f"look-alike project {name!r}"))
        sdist = _sdist(name, "1.0")
        fields = upload_fields(name, "1.0", sdist)
        fields[4] = ("filetype", "sdist")
        add(upload(box, filename=f"{name}-1.0.tar.gz", data=sdist, fields=fields, label=f"look-alike sdist {name!r}"))
    # Names and versions that disagree with the file, or are not names and versions.
    for name in BAD_NAMES:
        add(upload(box, name=name, label=f"name field {name!r}"))
    for version in BAD_VERSIONS:
        add(upload(box, version=version, label=f"version field {version!r}"))
    # The archive's own metadata disagreeing with its file name (pip refuses to install such files).
    add(upload(box, data=_wheel("fresh", "1.0", metadata_name="other"), label="METADATA names another project"))
    add(upload(box, data=_wheel("fresh", "1.0", metadata_version="7.0"), label="METADATA has another version"))
    add(upload(box, data=_wheel("fresh", "1.0", metadata_name="../../evil"), label="METADATA name is a path"))
    # Digests.
    for field_, value in [("sha256_digest", "0" * 64), ("sha256_digest", "z" * 64), ("sha256_digest", "../" * 20),
                          ("md5_digest", "0" * 32), ("blake2_256_digest", "f" * 64), ("sha256_digest", "")]:
        add(upload(box, fields=[(k, value if k == field_ else v) for k, v in good] + ([(field_, value)] if field_ not in dict(good) else []),
                   label=f"digest {field_}={value!r}"))
    add(upload(box, fields=[(k, v) for k, v in good if not k.endswith("_digest")], label="no digest"))
    # Missing or wrong form fields.
    for missing in (":action", "name", "version"):
        add(upload(box, fields=[(k, v) for k, v in good if k != missing], label=f"no {missing}"))
    for action in ("FILE_UPLOAD", "file_upload\x00", "../file_upload", "", "submit", "doc_upload", "file_upload " * 40):
        add(upload(box, fields=[(k, action if k == ":action" else v) for k, v in good], label=f":action {action[:20]!r}"))
    add(upload(box, fields=[(k, "2" if k == "protocol_version" else v) for k, v in good], label="protocol_version 2"))
    add(upload(box, fields=good + [("description", b"caf\xe9 \xff\xfe")], label="field not UTF-8"))
    add(upload(box, fields=[(b"n\xffame".decode("latin-1"), "x")] + good[:2] + good[3:], label="odd field name, no name"))
    # Broken archives under a good name, with a digest that matches the broken bytes.
    for label, data in [("empty file", b""), ("not a zip", b"hello world\n" * 100), ("truncated zip", fresh[:-1]),
                        ("half a zip", fresh[: len(fresh) // 2]), ("zip header only", fresh[:30]),
                        ("zip without METADATA", _zip({"fresh/__init__.py": b""})),
                        ("two METADATA", _zip({"fresh-1.0.dist-info/METADATA": b"Name: fresh\nVersion: 1.0\n",
                                               "fresh-2.0.dist-info/METADATA": b"Name: fresh\nVersion: 2.0\n"})),
                        ("a tar.gz named .whl", _sdist("fresh", "1.0")),
                        ("bad CRC", _bad_crc(fresh))]:
        add(upload(box, data=data, label=f"archive: {label}"))
    for label, data in [("gzip of nothing", b"\x1f\x8b\x08\x00" + b"\x00" * 6), ("not a tar", b"x" * 600),
                        ("truncated tar.gz", _sdist("fresh", "1.0")[:-40])]:
        fields = upload_fields("fresh", "1.0", data)
        fields[4] = ("filetype", "sdist")
        add(upload(box, filename="fresh-1.0.tar.gz", data=data, fields=fields, label=f"sdist: {label}"))

    # Multipart structure.
    body = form(good, ("fresh-1.0-py3-none-any.whl", fresh))
    headers = multipart_headers(AUTH)
    for label, raw_headers, raw_body in [
        ("no boundary", [("Host", "x"), ("Authorization", AUTH), ("Content-Type", "multipart/form-data")], body),
        ("other boundary", multipart_headers(AUTH, b"another-boundary"), body),
        ("empty boundary", multipart_headers(AUTH, b'""'), body),
        ("boundary 200 chars", multipart_headers(AUTH, b"b" * 200), body),
        ("no closing boundary", headers, form(good, ("fresh-1.0-py3-none-any.whl", fresh), closed=False)),
        ("closing boundary only", headers, b"--" + BOUNDARY + b"--\r\n"),
        ("garbage before the first boundary", headers, b"x" * 100 + body.replace(b"--" + BOUNDARY, b"-X" + BOUNDARY, 1)),
        ("part without headers", headers, b"--" + BOUNDARY + b"\r\n\r\nvalue\r\n" + body),
        ("part header without colon", headers, body.replace(b"Content-Disposition: form-data", b"Content-Disposition form-data", 1)),
        ("part header not UTF-8", headers, body.replace(b'name=":action"', b'name=":act\xffion"', 1)),
        ("20 part headers", headers, b"--" + BOUNDARY + b"\r\n" + b"X-H: 1\r\n" * 20
         + b'Content-Disposition: form-data; name="a"\r\n\r\nb\r\n' + body),
        ("header line 100 KiB", headers, b"--" + BOUNDARY + b"\r\nX-H: " + b"h" * 100_000 + b"\r\n" + body[len(b"--" + BOUNDARY + b"\r\n"):]),
        ("5000 parts", headers, b"".join(part("p", "v") for _ in range(5000)) + body),
        ("two files", headers, form(good, ("fresh-1.0-py3-none-any.whl", fresh))[: -len(BOUNDARY) - 6]
         + part("content", fresh, filename="fresh-1.0-py3-none-any.whl") + b"--" + BOUNDARY + b"--\r\n"),
        ("file with remove_file", headers, form([(":action", "remove_file"), ("filename", SEED)], (SEED, fresh))),
        ("CR only line ends", headers, body.replace(b"\r\n", b"\r")),
        ("LF only line ends", headers, body.replace(b"\r\n", b"\n")),
        ("field 5 MiB", headers, form(good + [("description", "d" * (5 * 1024 * 1024))], ("fresh-1.0-py3-none-any.whl", fresh))),
        ("text/plain", [("Host", "x"), ("Authorization", AUTH), ("Content-Type", "text/plain")], body),
        ("json", [("Host", "x"), ("Authorization", AUTH), ("Content-Type", "application/json")], b'{":action": "file_upload"}'),
        ("no content type", [("Host", "x"), ("Authorization", AUTH)], body),
        ("urlencoded, not UTF-8", [("Host", "x"), ("Authorization", AUTH), ("Content-Type", "application/x-www-form-urlencoded")],
         b":action=remove_pkg&name=%ff%fe&version=1.0"),
        ("urlencoded upload", [("Host", "x"), ("Authorization", AUTH), ("Content-Type", "application/x-www-form-urlencoded")],
         b":action=file_upload&name=fresh&version=1.0&content=PK"),
        ("multipart with charset junk", [("Host", "x"), ("Authorization", AUTH),
                                         ("Content-Type", b"multipart/form-data; boundary=" + BOUNDARY + b"; charset=\xff")], body[:-4]),
    ]:
        add(Raw(request_bytes("POST", "/", raw_headers, raw_body), f"multipart: {label}"))
    # Bodies that end early, or lengths that lie.
    add(Raw(request_bytes("POST", "/", headers + [("Content-Length", str(len(body) + 1000))], body, content_length=False),
            "body shorter than Content-Length", half_close=True))
    add(Raw(request_bytes("POST", "/", headers + [("Content-Length", str(len(body) // 2))], body, content_length=False),
            "body longer than Content-Length"))
    add(Raw(request_bytes("POST", "/", headers + [("Content-Length", "2147483648000")], b"", content_length=False),
            "Content-Length 2 TB"))
    for value in ("abc", "-1", "1e3", "0x10", " ", "12, 12", "99999999999999999999999999"):
        add(Raw(request_bytes("POST", "/", headers + [("Content-Length", value)], body, content_length=False),
                f"Content-Length {value!r}"))
    add(Raw(request_bytes("POST", "/", headers + [("Content-Length", "10"), ("Content-Length", "20")], body,
                          content_length=False), "two Content-Lengths"))
    add(Raw(request_bytes("POST", "/", headers + [("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
                          b"5\r\nhello\r\n0\r\n\r\n", content_length=False), "chunked and Content-Length"))
    add(Raw(request_bytes("POST", "/", headers + [("Transfer-Encoding", "chunked")], b"zz\r\nhello\r\n0\r\n\r\n",
                          content_length=False), "chunk size not hex"))
    add(Raw(request_bytes("POST", "/", headers + [("Transfer-Encoding", "chunked")],
                          hex(len(body) + 50)[2:].encode() + b"\r\n" + body, content_length=False), "chunk cut short", half_close=True))
    add(Raw(request_bytes("POST", "/", headers + [("Transfer-Encoding", "gzip, chunked")], b"0\r\n\r\n",
                          content_length=False), "gzip transfer coding"))
    add(Raw(request_bytes("POST", "/", headers + [("Transfer-Encoding", "identity")], body), "identity transfer coding"))
    add(Raw(request_bytes("POST", "/", headers, b"", content_length=False), "no Content-Length, no body"))
    # Credentials that are not credentials.
    for auth in (None, basic("alice", "wrong"), basic("mallory", PASSWORD), "Basic !!!!", "Basic " + "QQ" * 3000,
                 "Basic " + __import__("base64").b64encode(b"\xff\xfe:\xff").decode(), "Bearer " + PASSWORD,
                 "Basic YWxpY2U=", "Digest username=alice", "Basic \u00e9t\u00e9", "Basic YWxpY2U6\u00ff", basic("alice\x00", PASSWORD), basic("", "")):
        add(upload(box, auth=auth, label=f"auth {str(auth)[:30]!r}"))
    # Removals and yanks aimed outside the index or at nothing.
    for fields in ([("filename", "../../../secrets/htpasswd")], [("filename", "/etc/passwd")],
                   [("filename", f"../{SEED}")], [("filename", f"%2e%2e%2f{SEED}")], [("filename", f"{SEED}\x00")],
                   [("filename", f"..\\{SEED}")], [("filename", str(box.outside / "keep.txt"))],
                   [("filename", ".wharf/catalog.sqlite")], [("filename", "s\u0435ed-1.0-py3-none-any.whl")],
                   [("name", "../seed"), ("version", "1.0")], [("name", "seed"), ("version", "1.0/../1.0")],
                   [("name", "seed\x00"), ("version", "1.0")], [("name", "s\u0435ed"), ("version", "1.0")],
                   [("name", "seed"), ("version", "../../")], [("name", "seed")], [("version", "1.0")], []):
        for action in ("remove_file", "remove_pkg", "yank", "unyank"):
            add(Raw(request_bytes("POST", "/", headers, form([(":action", action), *fields])),
                    f"{action} {fields!r}"))

    # Reads: path tricks on every read route, with and without credentials.
    for prefix in PREFIXES:
        for trick in PATH_TRICKS:
            target = prefix + trick
            add(Raw(request_bytes("GET", target, [("Host", "x")]), f"GET {target}"))
    for target in (f"/packages/{SEED}/..%2f..%2f..%2fsecrets%2fhtpasswd", f"/packages/{SEED}%2f.metadata",
                   f"/packages/{SEED}.metadata%00", f"/packages/{SEED}.METADATA", f"/packages/x/../{SEED}",
                   f"/packages/./{SEED}", f"/packages//{SEED}", f"/packages/{SEED}.metadata.metadata",
                   "/packages/seed-1.0.tar.gz.metadata", "/simple/seed/%2e%2e/", "/simple/%2e%2e%2f/",
                   "/projects/?page=0", "/projects/?page=-1", "/projects/?page=abc", "/projects/?page=99999999",
                   "/projects/?q=%ff%fe", "/projects/?q=" + "x" * 300, "/projects/?" + "&".join(f"a{i}=1" for i in range(30)),
                   "/simple/?format=%ff", "/simple/?format=../json", "/simple/seed/?format=text%2fplain",
                   "/static/wharf.css%00", "/static/..%2f__init__.py", "/static/%2e%2e", "/static/wharf.css/..",
                   "/_auth/update", "/_auth/%2e%2e", "/_auth/list%00", "/upstream/seed/" + SEED,
                   "/project/seed/%2e%2e/", "/project/%ff/", "/simple/%ff/", "/" + "a/" * 2000):
        add(Raw(request_bytes("GET", target, [("Host", "x")]), f"GET {target}"))
        if not target.startswith("/_auth/"):  # nginx's credential check: alice may update
            add(Raw(request_bytes("GET", target, [("Host", "x"), ("Authorization", AUTH)]), f"GET {target} as alice"))
    add(Raw(request_bytes("GET", "/simple/", [("Host", "x"), ("Accept", "text/plain")]), "Accept: text/plain"))
    add(Raw(request_bytes("GET", "/simple/seed/", [("Host", "x"), ("Accept", "application/vnd.pypi.simple.v9+json")]),
            "Accept: a version we do not speak"))
    add(Raw(request_bytes("GET", f"/packages/{SEED}", [("Host", "x"), ("Range", "bytes=999999-")]), "range past the end"))
    add(Raw(request_bytes("GET", f"/packages/{SEED}", [("Host", "x"), ("Range", "bytes=-0")]), "empty suffix range"))

    # Wrong methods on every route (DELETE only where nothing can be deleted).
    routes = ["/", "/legacy/", "/legacy", "/simple/", "/simple/seed/", "/simple/seed", "/packages/", f"/packages/{SEED}",
              f"/packages/{SEED}.metadata", "/projects/", "/project/seed/", "/static/wharf.css", "/health", "/_auth/list"]
    for route in routes:
        for method in ("PUT", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO"):
            add(Raw(request_bytes(method, route, [("Host", "x"), ("Authorization", AUTH)], b"x=1"), f"{method} {route}"))
        if route not in ("/", "/legacy/", "/legacy"):
            add(Raw(request_bytes("POST", route, multipart_headers(AUTH), form(good, (FRESH, fresh))), f"POST {route}"))
        if not route.startswith("/packages/"):
            add(Raw(request_bytes("DELETE", route, [("Host", "x"), ("Authorization", AUTH)]), f"DELETE {route}"))
    for route in ("/", "/legacy/"):
        add(Raw(request_bytes("GET", route.replace("/", "/legacy", 1) if route == "/" else route, [("Host", "x")]), f"GET {route}"))
    for target, auth in ((f"/packages/{SEED}", None), (f"/packages/{SEED}", basic("alice", "nope")),
                         ("/packages/../secrets/htpasswd", AUTH), ("/packages/%2e%2e%2fsecrets%2fhtpasswd", AUTH),
                         ("/packages/.wharf/catalog.sqlite", AUTH), (f"/packages/{SEED}%00", AUTH),
                         (f"/packages/{SEED}.metadata", AUTH), ("/packages/s\u0435ed-1.0-py3-none-any.whl", AUTH),
                         ("/packages/" + quote(str(box.outside / "keep.txt")), AUTH), ("/packages/", AUTH)):
        add(Raw(request_bytes("DELETE", target, [("Host", "x")] + ([("Authorization", auth)] if auth else [])),
                f"DELETE {target} ({'no user' if not auth else auth[:14]})"))

    # Not HTTP, or HTTP bent out of shape.
    for label, data in [
        ("garbage line", b"GARBAGE\r\n\r\n"),
        ("HTTP/9.9", b"GET /simple/ HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("lower-case method", b"get /simple/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("NUL in request line", b"GET /simple/\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("space in target", b"GET /simple/ seed/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("raw bytes in target", b"GET /simple/\xff\xfe/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("raw UTF-8 look-alike in target", "GET /simple/\uff53\uff45\uff45\uff44/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()),
        ("absolute-form to elsewhere", b"GET http://evil.example/../secrets/htpasswd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("asterisk-form GET", b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("header without colon", b"GET /simple/ HTTP/1.1\r\nHost x\r\n\r\n"),
        ("space before colon", b"GET /simple/ HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("NUL in header", b"GET /simple/ HTTP/1.1\r\nHost: x\r\nAccept: text/\x00html\r\n\r\n"),
        ("obsolete line folding", b"GET /simple/ HTTP/1.1\r\nHost: x\r\nAccept: text/html,\r\n  */*\r\n\r\n"),
        ("header name not a token", b"GET /simple/ HTTP/1.1\r\nHost: x\r\nAcc(ept): x\r\n\r\n"),
        ("request line 10 KiB", b"GET /simple/" + b"a" * 10_000 + b"/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("header 16 KiB", b"GET /simple/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 16_000 + b"\r\n\r\n"),
        ("header 1 MiB", b"GET /simple/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 1_048_576 + b"\r\n\r\n"),
        ("200 headers", b"GET /simple/ HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n"),
        ("Authorization 64 KiB", b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + b"Q" * 65_536 + b"\r\nContent-Length: 0\r\n\r\n"),
        ("bare LF line ends", b"GET /simple/%00 HTTP/1.1\nHost: x\n\n"),
        ("CR without LF", b"GET /simple/ HTTP/1.1\rHost: x\r\n\r\n"),
        ("TLS hello, then a line end", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x01" * 64 + b"\r\n\r\n"),
        ("invalid method chars", b"G@T /simple/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"),
    ]:
        # Closing our side tells the server nothing more is coming (else it would wait for the rest).
        add(Raw(data, f"http: {label}", half_close=True))
    for label, data in [("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
                        ("CR only", b"GET /simple/ HTTP/1.1\rHost: x\r\r"), ("nothing", b"")]:
        add(Raw(data, f"unfinished: {label}", half_close=True, unfinished=True))
    return cases


# --- generated requests -----------------------------------------------------------------------
def _zip(members: dict[str, bytes]) -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return stream.getvalue()


def _wheel(name: str, version: str, *, metadata_name: str | None = None, metadata_version: str | None = None) -> bytes:
    dist = (re.sub(r"[^\w.]", "_", name) or "x") + f"-{version}"  # member names must be paths
    return _zip({"module/__init__.py": b"",
                 f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {metadata_name or name}\n"
                                               f"Version: {metadata_version or version}\n".encode(),
                 f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                 f"{dist}.dist-info/RECORD": b""})


def _sdist(name: str, version: str) -> bytes:
    import tarfile
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w:gz") as archive:
        for path, data in {f"{name}-{version}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
                           f"{name}-{version}/setup.py": b"raise SystemExit\n"}.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return stream.getvalue()


def _bad_crc(wheel: bytes) -> bytes:
    """The wheel with one stored CRC changed (local header and central directory alike)."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        crc = archive.infolist()[0].CRC.to_bytes(4, "little")
    return wheel.replace(crc, bytes(b ^ 0xFF for b in crc))


TRICK_CHARS = ["..", "/", "\\", "%2f", "%5c", "%2e", "\x00", "%00", "\uff0e", "\uff0f", "\u2215", "\u2025", "\u0435",
               "\u200b", ":", "~", " ", "\t", "%ff", "|", "*", "?", "<", ">", '"']


def _text(min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8", exclude_characters="\r\n\""), min_size=min_size, max_size=12)


def _tricky(base: str) -> st.SearchStrategy[str]:
    """``base`` with a path trick put somewhere into it."""
    return st.builds(lambda trick, at, junk: base[:at] + trick + junk + base[at:],
                     st.sampled_from(TRICK_CHARS), st.integers(0, len(base)), _text())


@st.composite
def broken_uploads(draw, box: Sandbox) -> Raw:
    """A valid upload of "fresh", then broken in one to three ways (any one of them is enough)."""
    version = draw(st.sampled_from(sorted(box.fresh)))
    data = box.fresh[version]
    filename: bytes | str = f"fresh-{version}-py3-none-any.whl"
    fields: list[tuple[str, bytes | str]] = upload_fields("fresh", version, data)
    method, path, auth, content_type = "POST", draw(st.sampled_from(["/", "/legacy/", "/legacy"])), AUTH, None
    body_cut = None
    ways = draw(st.lists(st.integers(0, 11), min_size=1, max_size=3, unique=True).map(sorted))
    labels = []
    for way in ways:
        if way == 0:  # a look-alike project: file name and name field agree, METADATA too
            name = draw(st.sampled_from(LOOKALIKES) | _tricky("fresh"))
            filename = f"{name}-{version}-py3-none-any.whl"
            data = _wheel(name, version)
            fields = upload_fields(name, version, data)
            labels.append(f"look-alike {name!r}")
        elif way == 1:  # a file name with a trick in it
            filename = draw(st.sampled_from(FILENAME_TRICKS) | _tricky(str(filename)))
            labels.append(f"filename {filename!r}")
        elif way == 2:
            bad = draw(st.sampled_from(BAD_NAMES) | _tricky("fresh"))
            fields = [(k, bad if k == "name" else v) for k, v in fields]
            labels.append(f"name {bad!r}")
        elif way == 3:
            bad = draw(st.sampled_from(BAD_VERSIONS) | _tricky(version).filter(lambda v: not re.fullmatch(r"[\s.v0-9]*", v)))
            fields = [(k, bad if k == "version" else v) for k, v in fields]
            labels.append(f"version {bad!r}")
        elif way == 4:
            digest = draw(st.text("0123456789abcdef", min_size=64, max_size=64) | _text())
            fields = [(k, digest if k == "sha256_digest" else v) for k, v in fields]
            labels.append("digest")
        elif way == 5:  # broken bytes whose digest is sent right: only reading the archive can tell
            cut = draw(st.integers(0, len(data) - 1))
            data = data[:cut] + draw(st.binary(max_size=64))
            if data and zipfile.is_zipfile(io.BytesIO(data)):
                data = data[:-1]
            fields = [(k, hashlib.sha256(data).hexdigest() if k == "sha256_digest" else v) for k, v in fields]
            labels.append(f"archive cut at {cut}")
        elif way == 6:
            action = draw(st.sampled_from(["", "FILE_UPLOAD", "file-upload", "remove", "doc_upload"]) | _tricky("file_upload"))
            fields = [(k, action if k == ":action" else v) for k, v in fields]
            labels.append(f":action {action!r}")
        elif way == 7:
            value = draw(st.binary(min_size=1, max_size=32).map(lambda b: b"\xff" + b))
            fields = fields + [(draw(st.sampled_from(["description", "summary", "author"])), value)]
            labels.append("field not UTF-8")
        elif way == 8:
            auth = draw(st.sampled_from([None, basic("alice", "wrong"), basic("nobody", PASSWORD), "Basic =",
                                         "Bearer x"]) | _text().map(lambda t: "Basic " + t))
            labels.append(f"auth {auth!r}")
        elif way == 9:
            content_type = draw(st.sampled_from([b"text/plain", b"multipart/form-data", b"multipart/mixed; boundary=" + BOUNDARY,
                                                 b"multipart/form-data; boundary=other", b"application/octet-stream"]))
            labels.append(f"content type {content_type!r}")
        elif way == 10:
            body_cut = draw(st.integers(0, 400))
            labels.append(f"body cut {body_cut} bytes before its end")
        else:
            method = draw(st.sampled_from(["PUT", "PATCH", "DELETE"] + (["GET"] if path != "/" else [])))
            labels.append(f"method {method}")
    body = form(fields, (filename, data))
    headers = multipart_headers(auth)
    if content_type is not None:
        headers[1] = ("Content-Type", content_type)
    if body_cut is not None:
        sent = body[: len(body) - body_cut - 1]
        return Raw(request_bytes(method, path, headers + [("Content-Length", str(len(body)))], sent, content_length=False),
                   "; ".join(labels), half_close=True)
    return Raw(request_bytes(method, path, headers, body), "; ".join(labels))


@st.composite
def tricky_reads(draw) -> Raw:
    """A read (simple, file, metadata, web) whose path or query has a trick in it."""
    method = draw(st.sampled_from(["GET", "HEAD"]))
    prefix = draw(st.sampled_from(PREFIXES + ["/simple/seed/", f"/packages/{SEED}.metadata"]))
    segments = draw(st.lists(st.sampled_from(PATH_TRICKS) | _text(1).map(lambda t: quote(t, safe="")), min_size=1, max_size=4))
    segments.insert(draw(st.integers(0, len(segments))), draw(st.sampled_from(PATH_TRICKS)))
    joiner = draw(st.sampled_from(["/", "%2f", "\\", "%5c", ""]))
    target = prefix + joiner.join(segments)
    if draw(st.booleans()):
        target += draw(st.sampled_from([f"/{SEED}", ".metadata", "/", ""]))
    if draw(st.booleans()):
        target += "?" + draw(st.sampled_from(["format=%ff", "page=-1", "q=%fe", "format=json", "v=..", "x=%00"]))
    headers = [("Host", draw(st.sampled_from(["x", "127.0.0.1", "../..", "evil.example:1"])))]
    if draw(st.booleans()):
        headers.append(("Authorization", AUTH))
    if draw(st.booleans()):
        headers.append(draw(st.sampled_from([("Accept", "application/vnd.pypi.simple.v1+json"), ("Range", "bytes=0-10"),
                                             ("If-None-Match", "*"), ("Accept-Encoding", "gzip")])))
    return Raw(request_bytes(method, target, headers, b"", content_length=False), f"{method} {target}",
               head=method == "HEAD")


# --- the tests ----------------------------------------------------------------------------------
def test_malformed_requests_get_a_4xx_and_change_nothing(sandbox: Sandbox, figures):
    failures = []
    for raw in corpus(sandbox):
        answer = sandbox.send(sandbox.port, raw)
        if not answered_right(raw, answer):
            failures.append(describe(raw, answer))
    assert not failures, f"{len(failures)} corpus requests without a 4xx:\n" + "\n\n".join(failures)
    corpus_count = len(sandbox.answers)

    common = dict(derandomize=True, database=None, deadline=None, phases=[Phase.generate, Phase.shrink],
                  suppress_health_check=list(HealthCheck))

    @hypothesis_settings(max_examples=GENERATED_UPLOADS, **common)
    @given(broken_uploads(sandbox))
    def uploads(raw: Raw) -> None:
        answer = sandbox.send(sandbox.port, raw)
        assert is_4xx(answer), describe(raw, answer)

    @hypothesis_settings(max_examples=GENERATED_READS, **common)
    @given(tricky_reads())
    def reads(raw: Raw) -> None:
        answer = sandbox.send(sandbox.port, raw)
        assert is_4xx(answer), describe(raw, answer)

    uploads()
    reads()

    total = len(sandbox.answers)
    statuses = Counter(str(answer.status or "closed") for _, answer in sandbox.answers.values())
    figures.record("bad_input", {"distinct_requests": total, "from_corpus": corpus_count,
                                 "generated": total - corpus_count, "statuses": dict(sorted(statuses.items())),
                                 "5xx": sum(n for s, n in statuses.items() if s.startswith("5"))})
    assert total >= 300, total
    # Nothing changed anywhere in the sandbox, and the index lists what it listed.
    assert snapshot(sandbox.root, skip=_VOLATILE) == sandbox.before
    assert not any(Path(d, FRESH).exists() for d in ("/tmp", "/", str(Path.cwd())))
    assert exchange(sandbox.port, Raw(request_bytes("GET", "/simple/", [("Host", "x")]))).body == sandbox.index_before
    log = sandbox.server.log()
    assert "Traceback" not in log and " ERROR " not in log and "[ERROR]" not in log, log[-5000:]
