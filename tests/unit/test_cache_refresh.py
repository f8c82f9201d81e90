"""What a change makes the app refresh in nginx (app/cache_refresh.py), and what errors let caches keep."""

from __future__ import annotations

from app.cache_refresh import SIMPLE_VARIANTS, changed_paths, endpoints, holds_key, index_lifetime, shared_key
from app.catalog import View
from app.catalog.catalog import UNKNOWN
from app.catalog.records import DistFile, Project
from app.settings import Settings


def dist(project: str, version: str, sha: str = "a" * 64, yanked: str | None = None) -> DistFile:
    filename = f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
    return DistFile(0, filename, filename, project, project, version, "bdist_wheel", 10, 1.0, sha, None,
                    None, None, None, yanked)


def view(*files: DistFile, serial: int = 1) -> tuple[View, dict[str, Project]]:
    grouped: dict[str, list[DistFile]] = {}
    for f in files:
        grouped.setdefault(f.project, []).append(f)
    projects = {name: Project.build(name, fs, {}) for name, fs in grouped.items()}
    return View(tuple(sorted(projects)), serial), projects


def paths(old: tuple[View, dict], new: tuple[View, dict], known: bool = True) -> list[str]:
    """changed_paths for every project that differs (with its old state if ``known``)."""
    (old_view, before), (new_view, after) = old, new
    changes = [(name, before.get(name) if known else UNKNOWN)
               for name in sorted(before.keys() | after.keys()) if before.get(name) is not after.get(name)]
    return changed_paths(changes, old_view, new_view, after.get)


def test_an_upload_to_a_new_project_refreshes_its_page_the_index_the_list_and_the_file():
    old = view(dist("a", "1.0"))
    new = view(dist("a", "1.0"), dist("b-c", "2.0"))
    assert paths(old, new) == ["/simple/b-c/", "/simple/", "/packages/",
                                       "/packages/b_c-2.0-py3-none-any.whl", "/packages/b_c-2.0-py3-none-any.whl.metadata"]


def test_a_yank_refreshes_only_the_project_page():
    old = view(dist("a", "1.0"))
    assert paths(old, view(dist("a", "1.0", yanked="bad"))) == ["/simple/a/"]


def test_other_bytes_under_the_same_name_refresh_the_file():
    changed = paths(view(dist("a", "1.0")), view(dist("a", "1.0", sha="b" * 64)))
    assert "/packages/a-1.0-py3-none-any.whl" in changed and "/simple/" not in changed


def test_a_reload_without_changes_refreshes_nothing():
    assert paths(view(dist("a", "1.0")), view(dist("a", "1.0"), serial=2)) == []


def test_a_removed_project_leaves_the_index():
    assert paths(view(dist("a", "1.0"), dist("b", "1.0")), view(dist("b", "1.0")))[:2] == ["/simple/a/", "/simple/"]


def test_a_project_this_worker_never_loaded_refreshes_its_pages_and_new_files():
    old, new = view(dist("a", "1.0")), view(dist("a", "1.0"), dist("a", "2.0"))
    changed = paths(old, new, known=False)
    assert changed[0] == "/simple/a/" and "/packages/a-2.0-py3-none-any.whl" in changed and "/simple/" not in changed


def test_a_worker_that_no_longer_knows_what_changed_refreshes_the_indexes():
    assert changed_paths(None, view(dist("a", "1.0"))[0], view(dist("b", "1.0"), serial=2)[0], {}.get) == [
        "/simple/", "/packages/"]


def test_endpoints_default_to_the_local_nginx_and_can_be_off():
    assert endpoints(Settings(https_port=8443)) == ("127.0.0.1:8444",)
    assert endpoints(Settings(refresh_listen="*:9000")) == ("127.0.0.1:9000",)
    assert endpoints(Settings(cache_refresh=("http://10.0.0.5:444/", "10.0.0.6:444"))) == ("10.0.0.5:444", "10.0.0.6:444")
    off = Settings(cache_refresh=("off",), index_max_age=1)
    assert endpoints(off) == () and index_lifetime(off) == 1
    assert index_lifetime(Settings()) == Settings().index_cache_lifetime
    assert len(SIMPLE_VARIANTS) == 3


def test_the_shared_key_is_made_once_and_private(tmp_path):
    key = shared_key(tmp_path)
    assert key and shared_key(tmp_path) == key
    assert (tmp_path / "nginx-refresh.key").stat().st_mode & 0o777 == 0o600
    assert holds_key(key, key) and not holds_key("x", key) and not holds_key(None, key) and not holds_key(key, None)


def call(app, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict[str, str]]:
    import io
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = {k.lower(): v for k, v in response_headers}
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "localhost", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "REMOTE_ADDR": "127.0.0.1",
               "CONTENT_LENGTH": "0", **(headers or {})}
    b"".join(app(environ, start_response))
    return captured["status"], captured["headers"]


def test_errors_tell_caches_how_long_to_keep_them(make_app):
    app = make_app(users={"alice": "pw"}, authenticate=("update", "list"), cache_refresh=("off",))
    assert call(app, "/simple/")[0] == 401
    assert call(app, "/simple/")[1]["cache-control"] == "no-store"
    status, headers = call(app, "/simple/", headers={"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc="})
    assert status == 200 and "x-accel-expires" in headers
    status, headers = call(app, "/simple/nothing-here/", headers={"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc="})
    # Wharf's nginx keeps no ordinary 404 (X-Accel-Expires 0), only one its refresh asked for.
    assert status == 404 and headers["cache-control"] == "max-age=5" and headers["x-accel-expires"] == "0"
    key = app.config["wharf.settings"].state_path.joinpath("nginx-refresh.key").read_text().strip()
    status, headers = call(app, "/simple/nothing-here/", headers={"HTTP_X_WHARF_REFRESH": key})
    assert status == 404 and headers["x-accel-expires"] == "5"


def test_the_refresh_key_reads_protected_pages_and_changes_nothing(make_app):
    app = make_app(users={"alice": "pw"}, authenticate=("update", "list", "download"), cache_refresh=("off",))
    key = app.config["wharf.settings"].state_path.joinpath("nginx-refresh.key").read_text().strip()
    assert call(app, "/simple/", headers={"HTTP_X_WHARF_REFRESH": key})[0] == 200
    assert call(app, "/simple/", headers={"HTTP_X_WHARF_REFRESH": "0" * 64})[0] == 401
    assert call(app, "/", "POST", headers={"HTTP_X_WHARF_REFRESH": key})[0] == 401


def test_without_refreshes_nginx_keeps_pages_only_index_max_age(make_app):
    import time
    app = make_app(cache_refresh=("off",))
    before = int(time.time())
    status, headers = call(app, "/simple/")
    assert status == 200 and before <= int(headers["x-accel-expires"][1:]) <= int(time.time())


def test_only_a_refresh_with_the_key_asks_for_a_journal_position(tmp_path):
    from app.cache_refresh import KEY_HEADER, SEQ_HEADER, CacheRefresher

    class Request:
        def __init__(self, headers):
            self.headers = headers

        def get_header(self, name):
            return self.headers.get(name)

    refresher = CacheRefresher(Settings(packages=(tmp_path,)), "k" * 64)
    assert refresher.wanted_seq(Request({SEQ_HEADER: "12", KEY_HEADER: "k" * 64})) == 12
    assert refresher.wanted_seq(Request({SEQ_HEADER: "12"})) == 0
    assert refresher.wanted_seq(Request({SEQ_HEADER: "12", KEY_HEADER: "x" * 64})) == 0
    assert refresher.wanted_seq(Request({SEQ_HEADER: "twelve", KEY_HEADER: "k" * 64})) == 0
    assert refresher.wanted_seq(Request({SEQ_HEADER: "-3", KEY_HEADER: "k" * 64})) == 0
