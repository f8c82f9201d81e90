"""app.publishing through the WSGI app: good and bad uploads, removals, yanks, the CLI commands."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from passlib.hash import bcrypt

from app import cli
from tests.support import make_sdist, make_wheel

BOUNDARY = "wharf-test-boundary-7f3a"
MAX = 256 * 1024  # max_upload_size in these tests


# --- a multipart body, built by hand so it can be wrong in every way -------------------------
def encode_form(fields: list[tuple[str, str | bytes]], file: tuple[str, bytes] | None = None,
                file_first: bool = False) -> bytes:
    parts = []
    for name, value in fields:
        data = value.encode() if isinstance(value, str) else value
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data + b"\r\n")
    if file is not None:
        filename, data = file
        head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode("utf-8", "surrogateescape")
        part = head + data + b"\r\n"
        parts.insert(0, part) if file_first else parts.append(part)
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def upload_fields(name: str, version: str, data: bytes, **override: str | None) -> list[tuple[str, str]]:
    fields = {
        ":action": "file_upload", "protocol_version": "1", "metadata_version": "2.1",
        "name": name, "version": version, "filetype": "bdist_wheel", "pyversion": "py3",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(data, digest_size=32).hexdigest(),
        "md5_digest": hashlib.md5(data).hexdigest(),
    }
    fields.update(override)
    return [(k, v) for k, v in fields.items() if v is not None]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]
    body: str


@dataclass
class Index:
    app: object
    packages: Path
    dists: Path

    def request(self, path: str, method: str = "GET", body: bytes = b"", *, auth: str | None = basic("alice", "pw-alice"),
                content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
                headers: dict[str, str] | None = None, length: int | None = None, chunks: int | None = None) -> Answer:
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "test",
            "REMOTE_ADDR": "192.0.2.7", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.input": Trickle(body, chunks) if chunks else io.BytesIO(body), "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body) if length is None else length), "CONTENT_TYPE": content_type,
        }
        if auth:
            environ["HTTP_AUTHORIZATION"] = auth
        for key, value in (headers or {}).items():
            environ["HTTP_" + key.upper().replace("-", "_")] = value
        seen = {}

        def start_response(status, response_headers, exc_info=None):
            seen["status"], seen["headers"] = status, {k.lower(): v for k, v in response_headers}

        result = self.app(environ, start_response)
        data = b"".join(result)
        code, _, reason = seen["status"].partition(" ")
        return Answer(int(code), reason, seen["headers"], data.decode())

    def upload(self, path: Path, *, filename: str | None = None, data: bytes | None = None, **kwargs) -> Answer:
        data = path.read_bytes() if data is None else data
        name, version = path.name.split("-")[:2]
        if path.name.endswith(".tar.gz"):
            version = version[: -len(".tar.gz")]
        body = encode_form(upload_fields(name, version, data), (filename or path.name, data))
        return self.request("/", "POST", body, **kwargs)

    def form(self, auth: str | None = basic("alice", "pw-alice"), path: str = "/", **fields: str) -> Answer:
        return self.request(path, "POST", encode_form([(k.replace("action", ":action"), v) for k, v in fields.items()]),
                            auth=auth)

    def project_json(self, name: str) -> dict | None:
        answer = self.request(f"/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}, auth=None)
        return json.loads(answer.body) if answer.status == 200 else None


class Trickle(io.RawIOBase):
    """A wsgi.input that hands out at most ``chunk`` bytes per read, as a socket does."""

    def __init__(self, data: bytes, chunk: int):
        self.data, self.chunk, self.pos = data, chunk, 0

    def read(self, size: int = -1) -> bytes:
        size = self.chunk if size < 0 else min(size, self.chunk)
        out = self.data[self.pos:self.pos + size]
        self.pos += len(out)
        return out


def write_users(path: Path, **users: str) -> Path:
    path.write_text("".join(f"{user}:{bcrypt.using(rounds=4).hash(pw)}\n" for user, pw in users.items()))
    return path


def make_index(make_app, tmp_path: Path, **settings) -> Index:
    packages = tmp_path / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    htpasswd = write_users(tmp_path / "htpasswd", alice="pw-alice", bob="pw-bob")
    rules = tmp_path / "permissions.ini"
    rules.write_text("[projects]\nbob = bobs-lib, bobs-lib-*\n")
    options = dict(state_dir=tmp_path / "state", password_file=str(htpasswd),
                   permissions_file=rules, max_upload_size=MAX)
    options.update(settings)
    app = make_app(packages, **options)
    return Index(app, packages, tmp_path / "dists")


@pytest.fixture
def index(make_app, tmp_path: Path) -> Index:
    return make_index(make_app, tmp_path)


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under the directory, hidden ones too, with its sha256."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


# --- the happy path ------------------------------------------------------------------------
def test_upload_publishes_and_indexes_at_once(index: Index):
    wheel = make_wheel(index.dists, "demo-pkg", "1.0")
    answer = index.upload(wheel)
    assert answer.status == 200, answer
    assert (index.packages / wheel.name).read_bytes() == wheel.read_bytes()
    page = index.project_json("demo-pkg")
    assert [f["filename"] for f in page["files"]] == [wheel.name]
    assert page["files"][0]["hashes"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert [p.name for p in index.packages.iterdir() if p.name.startswith(".upload-")] == []


def test_sdist_upload_and_file_part_first(index: Index):
    sdist = make_sdist(index.dists, "demo-pkg", "2.0")
    data = sdist.read_bytes()
    body = encode_form(upload_fields("Demo_Pkg", "2.0", data), (sdist.name, data), file_first=True)
    answer = index.request("/legacy/", "POST", body)
    assert answer.status == 200, answer
    assert index.project_json("demo-pkg")["files"][0]["filename"] == sdist.name


def test_large_upload_arriving_in_small_reads(make_app, tmp_path: Path):
    # Far beyond bottle's MEMFILE_MAX (100 KiB), read in socket-sized pieces.
    big = make_index(make_app, tmp_path / "big", max_upload_size=64 * 1024 * 1024)
    wheel = make_wheel(big.dists, "bulky", "1.0", padding=5 * 1024 * 1024)
    answer = big.upload(wheel, chunks=65536 - 17)
    assert answer.status == 200, answer
    assert hashlib.sha256((big.packages / wheel.name).read_bytes()).digest() == hashlib.sha256(wheel.read_bytes()).digest()


def test_identical_reupload_changes_nothing(index: Index):
    wheel = make_wheel(index.dists, "demo-pkg", "1.0")
    assert index.upload(wheel).status == 200
    stat = (index.packages / wheel.name).stat()
    answer = index.upload(wheel)
    assert answer.status == 200 and "nothing changed" in answer.body
    again = (index.packages / wheel.name).stat()
    assert (again.st_mtime_ns, again.st_ino) == (stat.st_mtime_ns, stat.st_ino)


def test_duplicate_with_other_bytes_is_409_unless_overwrite(index: Index, make_app, tmp_path: Path):
    first = make_wheel(index.dists / "a", "demo-pkg", "1.0")
    second = make_wheel(index.dists / "b", "demo-pkg", "1.0", summary="different bytes")
    assert index.upload(first).status == 200
    answer = index.upload(second)
    assert answer.status == 409
    assert "already exists" in answer.reason and "already exists" in answer.body
    assert (index.packages / first.name).read_bytes() == first.read_bytes()

    other = make_index(make_app, tmp_path / "overwrite", overwrite=True)
    assert other.upload(first).status == 200
    answer = other.upload(second)
    assert answer.status == 200 and "replacing" in answer.body
    assert (other.packages / first.name).read_bytes() == second.read_bytes()
    page = other.project_json("demo-pkg")
    assert page["files"][0]["hashes"]["sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()


def test_duplicate_on_disk_but_not_yet_indexed(index: Index):
    # Copied in by hand a moment ago: the link-based publish still refuses to replace it.
    wheel = make_wheel(index.dists / "a", "demo-pkg", "1.0")
    other = make_wheel(index.dists / "b", "demo-pkg", "1.0", summary="other")
    (index.packages / wheel.name).write_bytes(wheel.read_bytes())
    answer = index.upload(other)
    assert answer.status == 409 and "already exists" in answer.body
    assert (index.packages / wheel.name).read_bytes() == wheel.read_bytes()
    assert index.upload(wheel).status == 200  # the same bytes: fine, and now indexed
    assert index.project_json("demo-pkg")["files"][0]["filename"] == wheel.name


# --- the bad-upload table ----------------------------------------------------------------------
def _wheel_bytes(tmp: Path) -> tuple[str, bytes]:
    path = make_wheel(tmp, "demo-pkg", "1.0")
    return path.name, path.read_bytes()


def _zip_without_metadata() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("demo_pkg/__init__.py", "")
    return buffer.getvalue()


def _case(fields=None, filename=None, data=None, **request):
    return {"fields": fields or {}, "filename": filename, "data": data, "request": request}


BAD_UPLOADS = {
    "wrong sha256": (400, "sha256_digest does not match", _case({"sha256_digest": "0" * 64})),
    "wrong md5": (400, "md5_digest does not match", _case({"md5_digest": "0" * 32})),
    "wrong blake2": (400, "blake2_256_digest does not match", _case({"blake2_256_digest": "f" * 64})),
    "no digest at all": (400, "no digest", _case({"sha256_digest": None, "md5_digest": None, "blake2_256_digest": None})),
    "name mismatch": (400, "does not match the file", _case({"name": "other-pkg"})),
    "version mismatch": (400, "does not match the file", _case({"version": "1.1"})),
    "invalid version": (400, "invalid version", _case({"version": "one"})),
    "slash in filename": (400, "invalid distribution filename", _case(filename="sub/demo_pkg-1.0-py3-none-any.whl")),
    "backslash in filename": (400, "invalid distribution filename", _case(filename="sub\\demo_pkg-1.0-py3-none-any.whl")),
    "windows path": (400, "invalid distribution filename", _case(filename="C:\\dist\\demo_pkg-1.0-py3-none-any.whl")),
    "dot-dot": (400, "invalid distribution filename", _case(filename="../demo_pkg-1.0-py3-none-any.whl")),
    "NUL in filename": (400, "", _case(filename="demo_pkg-1.0-py3-none-any.whl\0.txt")),
    "hidden filename": (400, "invalid distribution filename", _case(filename=".demo_pkg-1.0-py3-none-any.whl")),
    "not a dist name": (400, "invalid distribution filename", _case(filename="demo_pkg.whl")),
    "exe installer": (400, "not accepted", _case(filename="demo_pkg-1.0.win32.exe")),
    "random bytes as wheel": (400, "not a valid bdist_wheel", _case(data=os.urandom(3000))),
    "random bytes as sdist": (400, "not a valid sdist", _case({"version": "1.0"}, filename="demo_pkg-1.0.tar.gz", data=os.urandom(3000))),
    "zip without METADATA": (400, "not a valid bdist_wheel", _case(data=_zip_without_metadata())),
    "missing content": (400, "missing the file", _case(filename="")),
    "missing name": (400, "missing form field 'name'", _case({"name": None})),
    "missing version": (400, "missing form field 'version'", _case({"version": None})),
    "missing :action": (400, "missing :action", _case({":action": None})),
    "wrong :action": (400, "unknown :action", _case({":action": "file_uplaod"})),
    "file with remove_pkg": (400, "uploads use :action=file_upload", _case({":action": "remove_pkg"})),
    "protocol 2": (400, "protocol_version", _case({"protocol_version": "2"})),
    "oversize": (413, "larger than the index accepts", _case(data=b"PK" + os.urandom(MAX + 10))),
    "oversize by Content-Length": (413, "larger than the index accepts", _case(length=MAX + 64 * 1024 * 1024)),
    "truncated multipart": (400, "multipart", _case(cut=200)),
    "body shorter than Content-Length": (400, "incomplete request body", _case(length_extra=5000)),
    "not multipart": (400, "multipart/form-data", _case(content_type="application/json")),
    "anonymous": (401, "authentication required", _case(auth=None)),
    "wrong password": (401, "invalid username or password", _case(auth=basic("alice", "nope"))),
    "unknown user": (401, "invalid username or password", _case(auth=basic("mallory", "pw-alice"))),
    "project not allowed": (403, "may not update project 'demo-pkg'", _case(auth=basic("bob", "pw-bob"))),
}


@pytest.mark.parametrize("status, message, case", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_bad_upload_is_refused_and_changes_nothing(index: Index, status: int, message: str, case: dict):
    existing = make_wheel(index.dists / "existing", "demo-pkg", "0.9")
    assert index.upload(existing).status == 200
    before = snapshot(index.packages)
    catalog_before = index.project_json("demo-pkg")

    filename, data = _wheel_bytes(index.dists)
    if case["data"] is not None:
        data = case["data"]
    if case["filename"] is not None:
        filename = case["filename"]
    fields = upload_fields("demo-pkg", "1.0", data)
    for key, value in case["fields"].items():
        fields = [(k, v) for k, v in fields if k != key] + ([(key, value)] if value is not None else [])
    body = encode_form(fields, (filename, data) if filename else None)
    request = dict(case["request"])
    if "cut" in request:
        body = body[: len(body) - request.pop("cut")]
    length = request.pop("length", None)
    if "length_extra" in request:
        length = len(body) + request.pop("length_extra")
    answer = index.request("/", "POST", body, length=length, **request)

    assert answer.status == status, answer
    assert message in answer.body and message in answer.reason.replace("\\x00", "\0") or not message
    assert "\n" not in answer.reason and answer.body.count("\n") == 1
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Basic ")
    assert snapshot(index.packages) == before
    assert index.project_json("demo-pkg") == catalog_before


def test_conflict_table_entry(index: Index):
    """The 409 row of the table: the directory is unchanged by a refused duplicate."""
    first = make_wheel(index.dists / "a", "demo-pkg", "1.0")
    assert index.upload(first).status == 200
    before = snapshot(index.packages)
    second = make_wheel(index.dists / "b", "demo-pkg", "1.0", summary="other bytes")
    answer = index.upload(second)
    assert answer.status == 409 and "already exists" in answer.reason
    assert snapshot(index.packages) == before


def test_no_password_file_means_no_uploads(make_app, tmp_path: Path):
    index = make_index(make_app, tmp_path, password_file="", permissions_file=None)
    wheel = make_wheel(index.dists, "demo-pkg", "1.0")
    answer = index.upload(wheel, auth=None)
    assert answer.status == 403 and "no password file" in answer.body
    open_index = make_index(make_app, tmp_path / "open", password_file=".", authenticate=(), permissions_file=None)
    answer = open_index.upload(wheel, auth=None)
    assert answer.status == 403 and "takes no uploads" in answer.reason
    assert not (index.packages / wheel.name).exists()


def test_restricted_user_publishes_own_projects(index: Index):
    for name in ("bobs-lib", "Bobs_Lib.Extra"):
        wheel = make_wheel(index.dists, name, "1.0")
        assert index.upload(wheel, auth=basic("bob", "pw-bob")).status == 200, name
    wheel = make_wheel(index.dists, "bobs-libber", "1.0")
    assert index.upload(wheel, auth=basic("bob", "pw-bob")).status == 403


def test_stale_temporary_files_are_swept(index: Index):
    stale = index.packages / ".upload-0123456789abcdef-demo_pkg-1.0-py3-none-any.whl.part"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    fresh = index.packages / ".upload-fedcba9876543210-demo_pkg-1.1-py3-none-any.whl.part"
    fresh.write_bytes(b"still arriving")
    assert index.upload(make_wheel(index.dists, "demo-pkg", "1.0")).status == 200
    assert not stale.exists() and fresh.exists()


# --- removal and yanks ---------------------------------------------------------------------
def _publish_release(index: Index, name: str = "demo-pkg", version: str = "1.0") -> list[str]:
    wheel = make_wheel(index.dists, name, version)
    sdist = make_sdist(index.dists, name, version)
    assert index.upload(wheel).status == 200
    assert index.upload(sdist).status == 200
    return [wheel.name, sdist.name]


def _files(index: Index, name: str = "demo-pkg") -> dict[str, object]:
    page = index.project_json(name)
    return {f["filename"]: f["yanked"] for f in page["files"]} if page else {}


def test_yank_and_unyank_a_release_and_a_file(index: Index):
    wheel, sdist = _publish_release(index)
    answer = index.form(action="yank", name="Demo_Pkg", version="1.0", reason="broken on 3.12")
    assert answer.status == 200, answer
    assert _files(index) == {wheel: "broken on 3.12", sdist: "broken on 3.12"}
    html = index.request("/simple/demo-pkg/", auth=None).body
    assert 'data-yanked="broken on 3.12"' in html
    assert index.form(action="unyank", filename=sdist).status == 200
    assert _files(index) == {wheel: "broken on 3.12", sdist: False}
    assert index.form(action="unyank", name="demo-pkg", version="1.0").status == 200
    assert _files(index) == {wheel: False, sdist: False}
    assert index.form(action="yank", filename=wheel).status == 200
    assert _files(index) == {wheel: True, sdist: False}


def test_remove_pkg_remove_file_and_delete(index: Index):
    wheel, sdist = _publish_release(index, version="1.0")
    wheel2, sdist2 = _publish_release(index, version="2.0")
    assert index.form(action="remove_file", filename=sdist).status == 200
    assert not (index.packages / sdist).exists()
    assert set(_files(index)) == {wheel, wheel2, sdist2}
    answer = index.request(f"/packages/{sdist2}", "DELETE", content_type="")
    assert answer.status == 200, answer
    assert set(_files(index)) == {wheel, wheel2}
    assert index.form(action="remove_pkg", name="demo_pkg", version="2.0").status == 200
    assert set(_files(index)) == {wheel}
    assert sorted(p.name for p in index.packages.iterdir() if not p.name.startswith(".")) == [wheel]


@pytest.mark.parametrize("fields, auth, status", [
    ({"action": "remove_pkg", "name": "demo-pkg", "version": "9.9"}, "alice", 404),
    ({"action": "remove_pkg", "name": "demo-pkg"}, "alice", 400),
    ({"action": "remove_pkg", "name": "demo-pkg", "version": "not a version"}, "alice", 400),
    ({"action": "remove_file", "filename": "demo_pkg-9.9.tar.gz"}, "alice", 404),
    ({"action": "remove_file", "filename": "../etc/passwd"}, "alice", 400),
    ({"action": "remove_file"}, "alice", 400),
    ({"action": "yank", "name": "demo-pkg", "version": "1.0"}, None, 401),
    ({"action": "yank", "name": "demo-pkg", "version": "1.0"}, "wrong", 401),
    ({"action": "remove_pkg", "name": "demo-pkg", "version": "1.0"}, "bob", 403),
    ({"action": "yank", "filename": "demo_pkg-1.0.tar.gz"}, "bob", 403),
])
def test_bad_removals_and_yanks_change_nothing(index: Index, fields: dict, auth: str | None, status: int):
    _publish_release(index)
    before, files_before = snapshot(index.packages), _files(index)
    creds = {"alice": basic("alice", "pw-alice"), "bob": basic("bob", "pw-bob"), "wrong": basic("alice", "x"), None: None}
    answer = index.form(auth=creds[auth], **fields)
    assert answer.status == status, answer
    assert snapshot(index.packages) == before and _files(index) == files_before


def test_delete_needs_rights(index: Index):
    wheel, _sdist = _publish_release(index)
    assert index.request(f"/packages/{wheel}", "DELETE", auth=None, content_type="").status == 401
    assert index.request(f"/packages/{wheel}", "DELETE", auth=basic("bob", "pw-bob"), content_type="").status == 403
    assert index.request("/packages/nothing-1.0.tar.gz", "DELETE", content_type="").status == 404
    assert (index.packages / wheel).exists()


def test_urlencoded_forms_work_for_removal(index: Index):
    wheel, sdist = _publish_release(index)
    body = b"%3Aaction=remove_file&filename=" + sdist.encode()
    answer = index.request("/", "POST", body, content_type="application/x-www-form-urlencoded")
    assert answer.status == 200, answer
    assert set(_files(index)) == {wheel}


def test_removed_yanked_file_comes_back_unyanked(index: Index):
    wheel, _sdist = _publish_release(index)
    assert index.form(action="yank", filename=wheel).status == 200
    assert index.form(action="remove_file", filename=wheel).status == 200
    assert index.upload(index.dists / wheel).status == 200
    assert _files(index)[wheel] is False


# --- the command line ------------------------------------------------------------------------
def test_cli_yank_unyank_remove(index: Index, capsys):
    wheel, sdist = _publish_release(index)
    catalog = index.app.config["wharf.catalog"]
    args = ["--packages", str(index.packages), "--state-dir", str(catalog.state_dir)]
    assert cli.main(["yank", "demo-pkg", "1.0", "--reason", "use 1.1", *args]) == 0
    # The app catches up with changes made by other processes on its next request.
    assert _files(index) == {wheel: "use 1.1", sdist: "use 1.1"}
    assert cli.main(["unyank", wheel, *args]) == 0
    assert _files(index) == {wheel: False, sdist: "use 1.1"}
    assert cli.main(["remove", sdist, *args]) == 0
    assert _files(index) == {wheel: False}
    assert not (index.packages / sdist).exists()
    assert cli.main(["remove", "demo-pkg", "7.0", *args]) == 1
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["yank", "a", "b", "c", *args])
