"""The catalog (app/catalog/): indexing, restarts without re-hashing, and following the directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.catalog import Catalog
from app.settings import Settings
from app.storage import LocalStorage
from tests.support import make_sdist, make_wheel

DEADLINE = 15.0  # generous: the machine is shared; the watcher normally needs well under a second


def settle(*paths: Path, age: float = 3600) -> None:
    past = time.time() - age
    for path in paths:
        os.utime(path, (past, past))


class CountingStorage(LocalStorage):
    """LocalStorage that remembers which files it hashed (to prove what was not re-read)."""

    def __init__(self, roots):
        super().__init__(roots)
        self.hashed: list[str] = []

    def digests(self, root, relpath, algorithms):
        self.hashed.append(relpath)
        return super().digests(root, relpath, algorithms)


def open_catalog(packages: Path | tuple[Path, ...], watch: bool = False, storage_class=LocalStorage,
                 **options) -> Catalog:
    roots = packages if isinstance(packages, tuple) else (packages,)
    options.setdefault("scan_interval", 0.1)
    settings = Settings(packages=roots, **options)
    catalog = Catalog(settings, storage_class(settings.packages))
    return catalog.start() if watch else catalog.open()


def wait_for(condition: Callable[[], object], what: str, deadline: float = DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {deadline}s: {what}")


def rows(catalog: Catalog) -> list[tuple]:
    with sqlite3.connect(catalog.db_path) as conn:
        return conn.execute("SELECT * FROM files ORDER BY root, relpath").fetchall()


@pytest.fixture
def tree(packages: Path) -> dict[str, Path]:
    files = {
        "a1": make_wheel(packages, "Alpha", "1.0", requires_python=">=3.8", summary="first"),
        "a2": make_sdist(packages, "Alpha", "1.10"),
        "a3": make_wheel(packages, "alpha", "1.9"),
        "a4": make_wheel(packages, "alpha", "2.0b1"),
        "b1": make_wheel(packages / "team" / "beta", "Beta.Lib", "0.1"),
        "hidden": make_wheel(packages / ".cache", "hidden", "1.0"),
        "deep_hidden": make_wheel(packages / "team" / ".git" / "objects", "hidden2", "1.0"),
    }
    (packages / "notes.txt").write_text("not a distribution")
    (packages / "broken-name.whl").write_bytes(b"not even a wheel name")
    (packages / ".alpha-3.0.tar.gz").write_bytes(b"a hidden file")
    settle(*files.values(), packages / ".alpha-3.0.tar.gz", packages / "broken-name.whl")
    return files


# --- indexing --------------------------------------------------------------------------------------
def test_index_a_directory(packages, tree, closing):
    catalog = closing(open_catalog(packages))
    view = catalog.view
    assert view.names == ("alpha", "beta-lib")
    assert catalog.file_count() == 5
    alpha = catalog.project("alpha")
    assert alpha.versions == ("1.0", "1.9", "1.10", "2.0b1")  # PEP 440 order
    assert alpha.latest == "1.10"  # a final release beats a newer pre-release
    for key in ("a1", "a2", "a3", "a4", "b1"):
        path = tree[key]
        relpath = path.relative_to(packages).as_posix()
        dist = catalog.find(relpath)
        assert dist is not None, relpath
        assert dist.filename == path.name
        assert dist.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert dist.size == path.stat().st_size
        assert dist.upload_time == pytest.approx(path.stat().st_mtime)
        assert catalog.find_filename(path.name) == dist
    first = catalog.find(tree["a1"].name)
    assert (first.requires_python, first.summary, first.packagetype) == (">=3.8", "first", "bdist_wheel")
    assert first.metadata_sha256 == hashlib.sha256(catalog.read_metadata(first)).hexdigest()
    sdist = catalog.find(tree["a2"].name)
    assert sdist.packagetype == "sdist" and sdist.metadata_sha256 is None
    assert catalog.read_metadata(sdist) is None
    assert catalog.find("team/beta/beta_lib-0.1-py3-none-any.whl").name == "Beta.Lib"


def test_dot_folders_and_non_distributions_are_skipped(packages, tree, closing):
    catalog = closing(open_catalog(packages))
    urls = set(catalog.relpaths())
    assert not any(part.startswith(".") for url in urls for part in url.split("/"))
    assert catalog.project("hidden") is None and catalog.project("hidden2") is None
    assert catalog.find("notes.txt") is None and catalog.find("broken-name.whl") is None
    assert catalog.find_filename("nonsense") is None


def test_unreadable_archive_is_listed_without_metadata(packages, closing):
    bad = packages / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"this is not a zip file")
    settle(bad)
    catalog = closing(open_catalog(packages))
    dist = catalog.find(bad.name)
    assert dist is not None and dist.metadata_sha256 is None
    assert dist.sha256 == hashlib.sha256(b"this is not a zip file").hexdigest()


def test_hash_algo_adds_a_second_digest(packages, tree, closing):
    catalog = closing(open_catalog(packages, hash_algo="md5"))
    dist = catalog.find(tree["a1"].name)
    assert set(dist.hashes) == {"sha256", "md5"}
    assert dist.hashes["md5"] == hashlib.md5(tree["a1"].read_bytes()).hexdigest()


def test_state_dir_keeps_the_packages_directory_plain(tmp_path, packages, tree, closing):
    before = sorted(p.relative_to(packages) for p in packages.rglob("*"))
    catalog = closing(open_catalog(packages, state_dir=tmp_path / "state"))
    assert catalog.file_count() == 5
    assert (tmp_path / "state" / "catalog.sqlite3").exists()
    assert sorted(p.relative_to(packages) for p in packages.rglob("*")) == before


# --- restarts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("watch", [False, True])
def test_restart_does_not_rehash(packages, tree, closing, watch):
    first = open_catalog(packages, storage_class=CountingStorage)
    assert len(first.storage.hashed) == 5
    before = rows(first)
    view = first.view
    first_projects = {name: first.project(name) for name in view.names}
    first.close()

    second = closing(open_catalog(packages, watch=watch, storage_class=CountingStorage))
    if watch:
        # Let the watcher's first pass (a full sweep that stats every file) finish.
        wait_for(lambda: second.last_scan is not None, "the first sweep")
        time.sleep(0.3)
    assert second.storage.hashed == []
    assert rows(second) == before
    assert second.view.names == view.names
    assert all(second.project(name) == first_projects[name] for name in view.names)


def test_restart_trusts_size_mtime_and_inode(packages, tree, closing):
    # Rewrite a file in place keeping its size, mtime and inode: only reading it could tell,
    # and a restart must not read it. (Its recorded hash is then the old one.)
    path = tree["a1"]
    original = hashlib.sha256(path.read_bytes()).hexdigest()
    closing(open_catalog(packages)).close()
    st = path.stat()
    with open(path, "r+b") as stream:
        stream.seek(st.st_size - 1)
        stream.write(bytes([path.read_bytes()[-1] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_ino == st.st_ino
    catalog = closing(open_catalog(packages))
    assert catalog.find(path.name).sha256 == original


@pytest.mark.parametrize("change", ["rewrite", "replace", "touch"])
def test_changed_file_is_redone(packages, tree, closing, change):
    path = tree["a1"]
    first = open_catalog(packages, storage_class=CountingStorage)
    old = first.find(path.name)
    first.close()
    if change == "rewrite":  # same inode, new bytes and size
        path.write_bytes(make_wheel(packages.parent / "other", "Alpha", "1.0", summary="rebuilt").read_bytes())
    elif change == "replace":  # a new inode renamed over it, as rsync does
        new = make_wheel(packages.parent / "other", "Alpha", "1.0", summary="replaced")
        os.replace(new, path)
    else:  # same bytes, new mtime
        pass
    settle(path, age=60)
    catalog = closing(open_catalog(packages, storage_class=CountingStorage))
    assert catalog.storage.hashed == [path.name]
    dist = catalog.find(path.name)
    assert dist.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    if change != "touch":
        assert dist.sha256 != old.sha256
        assert dist.summary == ("rebuilt" if change == "rewrite" else "replaced")
        assert dist.metadata_sha256 != old.metadata_sha256


def test_file_removed_while_stopped_is_gone_after_restart(packages, tree, closing):
    closing(open_catalog(packages)).close()
    tree["a2"].unlink()
    shutil.rmtree(packages / "team")
    catalog = closing(open_catalog(packages))
    assert catalog.find(tree["a2"].name) is None
    assert catalog.project("beta-lib") is None
    assert catalog.file_count() == 3


def test_a_root_dropped_from_the_settings_is_forgotten(tmp_path, packages, tree, closing):
    extra = tmp_path / "extra"
    settle(make_wheel(extra, "gamma", "1.0"))
    state = tmp_path / "state"
    both = closing(open_catalog((packages, extra), state_dir=state))
    assert both.project("gamma") is not None
    both.close()
    one = closing(open_catalog(packages, state_dir=state))
    assert one.project("gamma") is None
    assert one.file_count() == 5


def test_earlier_root_shadows_a_later_one(tmp_path, closing):
    first, second = tmp_path / "first", tmp_path / "second"
    mine = make_wheel(first, "same", "1.0", summary="first root")
    theirs = make_wheel(second, "same", "1.0", summary="second root")
    settle(mine, theirs)
    catalog = closing(open_catalog((first, second), state_dir=tmp_path / "state"))
    assert catalog.find(mine.name).root == 0
    assert catalog.find(mine.name).summary == "first root"
    # The shadowed file is not listed either: its hash would describe bytes nobody can fetch.
    assert [f.summary for f in catalog.project("same").files] == ["first root"]
    assert catalog.file_count() == 1


# --- changes made through the app ---------------------------------------------------------------
def test_record_forget_and_yank(packages, tree, closing):
    catalog = closing(open_catalog(packages))
    new = make_wheel(packages, "Alpha", "3.0")
    dist = catalog.record(new.name)  # shown at once, even though the file is brand new
    assert dist is not None and catalog.project("alpha").latest == "3.0"
    assert catalog.record("missing-1.0.tar.gz") is None

    assert catalog.set_yanked([dist], "bad") == 1
    assert catalog.find(new.name).yanked == "bad"
    assert catalog.project("alpha").latest == "1.10"  # yanked files are not "latest"
    catalog.set_yanked([catalog.find(new.name)], None)
    assert catalog.find(new.name).yanked is None

    assert catalog.forget(catalog.find(new.name)) is True
    assert not new.exists()
    assert catalog.find(new.name) is None
    assert catalog.project("alpha").versions == ("1.0", "1.9", "1.10", "2.0b1")


# --- following the directory while running ----------------------------------------------------
@pytest.mark.slow
def test_files_added_and_removed_by_hand_are_followed(packages, tree, closing):
    catalog = closing(open_catalog(packages, watch=True))
    wait_for(lambda: catalog.project("alpha"), "the initial catalog")

    added = make_wheel(packages, "handmade", "1.0")  # like cp/scp: appears with a fresh mtime
    dist = wait_for(lambda: catalog.find(added.name), "a copied-in file appears")
    assert dist.sha256 == hashlib.sha256(added.read_bytes()).hexdigest()
    assert dist.metadata_sha256 is not None

    nested = make_sdist(packages / "new" / "sub" / "dir", "nested", "1.0")
    make_wheel(packages / "new" / ".hidden", "nothere", "1.0")
    wait_for(lambda: catalog.find("new/sub/dir/" + nested.name), "a file in a new subdirectory appears")
    assert catalog.project("nothere") is None

    added.unlink()
    wait_for(lambda: catalog.find(added.name) is None, "a deleted file disappears")
    assert catalog.project("handmade") is None

    shutil.rmtree(packages / "new")
    wait_for(lambda: catalog.project("nested") is None, "a deleted directory's files disappear")
    tree["b1"].unlink()
    wait_for(lambda: catalog.project("beta-lib") is None, "a file deleted in a known subdirectory disappears")
    assert catalog.file_count() == 4


def test_a_file_replaced_by_rename_is_redone_while_running(packages, tree, closing):
    # rsync and `mv` put a new file (a new inode) in place under the same name.
    catalog = closing(open_catalog(packages, watch=True))
    wait_for(lambda: catalog.last_scan is not None, "the first sweep")
    path = tree["a1"]
    old = catalog.find(path.name).sha256
    staged = make_wheel(packages / ".staging", "Alpha", "1.0", summary="replaced")
    os.replace(staged, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() != old
    dist = wait_for(lambda: (d := catalog.find(path.name)) and d.sha256 != old and d, "the new bytes' hash")
    assert dist.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dist.summary == "replaced"


@pytest.mark.slow
def test_every_worker_sees_changes(packages, tree, closing):
    # Gunicorn workers each hold a catalog on the same state directory; one of them scans.
    workers = [closing(open_catalog(packages, watch=True)) for _ in range(3)]
    assert sum(w._scanner is not None for w in workers) <= 1
    added = make_wheel(packages / "team", "shared", "1.0")
    for worker in workers:
        wait_for(lambda w=worker: w.find("team/" + added.name), "every worker sees the new file")
    added.unlink()
    for worker in workers:
        wait_for(lambda w=worker: w.find("team/" + added.name) is None, "every worker forgets it")


@pytest.mark.slow
def test_a_scanner_that_stops_is_replaced(packages, tree, closing):
    workers = [closing(open_catalog(packages, watch=True)) for _ in range(2)]
    wait_for(lambda: any(w._scanner is not None for w in workers), "one worker scans")
    leader = next(w for w in workers if w._scanner is not None)
    other = next(w for w in workers if w is not leader)
    leader.close()
    added = make_wheel(packages, "after", "1.0")
    wait_for(lambda: other.find(added.name), "the remaining worker takes over and sees new files")


def test_a_file_being_written_is_not_served(packages, tree, closing):
    catalog = closing(open_catalog(packages, watch=True))
    wait_for(lambda: catalog.last_scan is not None, "the first sweep")
    final = make_wheel(packages.parent / "src", "slow", "1.0", padding=200_000).read_bytes()
    target = packages / "slow-1.0-py3-none-any.whl"
    target.write_bytes(final[: len(final) // 3])
    # Whatever the clock does, a file modified "just now" is still being copied.
    future = time.time() + 30
    os.utime(target, (future, future))
    # A finished file in the same directory: once it shows, that directory was looked at.
    settle(make_wheel(packages, "sentinel", "1.0"))
    wait_for(lambda: catalog.project("sentinel"), "a finished file beside it appears")
    assert catalog.find(target.name) is None
    with open(target, "ab") as stream:
        stream.write(final[len(final) // 3:])
    settle(target, age=10)
    dist = wait_for(lambda: catalog.find(target.name), "the finished file appears")
    assert dist.size == len(final)
    assert dist.sha256 == hashlib.sha256(final).hexdigest()


@pytest.mark.slow
def test_a_slow_copy_is_never_seen_half_written(packages, closing):
    catalog = closing(open_catalog(packages, watch=True))
    final = make_wheel(packages.parent / "src", "slowcopy", "1.0", padding=300_000).read_bytes()
    target = packages / "slowcopy-1.0-py3-none-any.whl"
    done = threading.Event()

    def copy() -> None:  # like scp over a slow link: many small writes
        with open(target, "wb") as stream:
            for offset in range(0, len(final), 8192):
                stream.write(final[offset:offset + 8192])
                stream.flush()
                time.sleep(0.01)
        done.set()

    writer = threading.Thread(target=copy)
    writer.start()
    seen = []
    try:
        while not done.is_set():
            dist = catalog.find(target.name)
            if dist is not None:
                seen.append(dist.size)
            time.sleep(0.02)
    finally:
        writer.join()
    assert all(size == len(final) for size in seen), f"served while being written: sizes {sorted(set(seen))}"
    dist = wait_for(lambda: catalog.find(target.name), "the finished copy appears")
    assert dist.size == len(final)
    assert dist.sha256 == hashlib.sha256(final).hexdigest()


def test_a_second_catalog_on_a_watched_directory_does_not_wait_for_the_lock(tmp_path):
    """`wharf index` or a CLI command next to a running server loads instead of hanging."""
    from app.catalog import Catalog
    from app.settings import Settings
    from app.storage import LocalStorage

    packages = tmp_path / "packages"
    make_wheel(packages, "one", "1.0")
    settings = Settings(packages=(packages,), scan_interval=0.05)
    running = Catalog(settings, LocalStorage(settings.packages)).start()
    try:
        other = Catalog(settings, LocalStorage(settings.packages))
        assert other.refresh() == (1, 1)
        other.open()
        assert other.project("one") is not None
        other.close()
    finally:
        running.close()


def _open_at_the_barrier(packages: Path, barrier, errors) -> None:
    settings = Settings(packages=(packages,))
    barrier.wait()
    try:
        Catalog(settings, LocalStorage(settings.packages)).open(sweep=False).close()
    except Exception as exc:  # reported to the test, which names it
        errors.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_processes_opening_a_new_catalog_at_once_all_succeed(tmp_path):
    """gunicorn starts its workers together; on a fresh state directory each one creates the
    database. SQLite answers "database is locked" without waiting to a second process switching
    the same new file to WAL (this failed a CI run), so setting up is done one process at a time."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for round_ in range(15):
        packages = tmp_path / f"round{round_}"
        make_wheel(packages, "one", "1.0")
        barrier = ctx.Barrier(5)
        workers = [ctx.Process(target=_open_at_the_barrier, args=(packages, barrier, errors)) for _ in range(5)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [worker.exitcode for worker in workers] == [0] * 5
        assert errors.empty(), errors.get()


# --- an index larger than a worker's cache (issue 20: a million files) ---------------------------
def test_an_index_within_the_cache_bound_is_held_whole(packages, tree, closing):
    catalog = closing(open_catalog(packages))
    assert catalog.holds_everything() and len(catalog.projects) == 2
    catalog.record(make_wheel(packages, "gamma", "1.0").name)
    assert catalog.holds_everything(), "a change keeps it whole (loaded at once, not at the next read)"


def test_a_bounded_cache_loads_projects_on_demand_and_keeps_few(packages, tree, closing):
    for n in range(6):
        make_wheel(packages, f"extra-{n}", "1.0")
    catalog = closing(open_catalog(packages, catalog_cache_files=3))
    assert len(catalog.view.names) == 8 and not catalog.holds_everything()
    assert len(catalog.projects) == 0, "nothing loaded until asked for"
    for name in catalog.view.names:
        project = catalog.project(name)
        assert project is not None and project.name == name
        assert catalog.projects.files <= 3 or len(catalog.projects) == 1
    # every file is still found by its URL, through its project
    assert catalog.find(tree["a1"].name).sha256 == hashlib.sha256(tree["a1"].read_bytes()).hexdigest()
    assert catalog.find("team/beta/beta_lib-0.1-py3-none-any.whl") is not None
    assert catalog.find("team/beta/beta_lib-9.9-py3-none-any.whl") is None
    assert catalog.project("no-such-project") is None
    # a change drops the stale copy; the next read has it
    alpha = catalog.project("alpha")
    dist = catalog.record(make_wheel(packages, "alpha", "3.0").name)
    assert catalog.project("alpha") is not alpha and catalog.project("alpha").latest == "3.0"
    catalog.set_yanked([dist], "bad")
    assert catalog.find(dist.relpath).yanked == "bad"
    assert catalog.file_count() == 5 + 6 + 1


def test_a_load_that_raced_a_change_is_not_kept(packages, tree, closing):
    catalog = closing(open_catalog(packages, catalog_cache_files=1))
    generation = catalog.projects.generation
    stale = catalog.projects.peek("alpha") or catalog.project("alpha")
    catalog.projects.drop(["alpha"])
    catalog.projects.put(stale, generation)  # loaded before the drop: must not come back
    assert catalog.projects.peek("alpha") is None


def test_reads_of_projects_not_in_memory_fail_cleanly_when_the_database_does(packages, tree, closing):
    from app.catalog import CatalogUnavailable

    catalog = closing(open_catalog(packages, catalog_cache_files=1))
    assert catalog.project("alpha") is not None  # cached
    catalog._local.conn.close()  # the database goes away under the worker
    catalog.db = lambda: (_ for _ in ()).throw(sqlite3.OperationalError("unable to open database file"))
    assert catalog.project("alpha") is not None, "what is in memory is still served"
    with pytest.raises(CatalogUnavailable):
        catalog.project("beta-lib")


def test_what_changed_between_two_views_is_known_until_it_is_forgotten(packages, tree, closing):
    from collections import deque

    catalog = closing(open_catalog(packages))
    catalog._deltas = deque(maxlen=2)  # remember only the last two changes
    start = catalog.view
    catalog.record(make_wheel(packages, "alpha", "5.0").name)
    after_one = catalog.view
    assert [name for name, before in catalog.changes_between(start, after_one)] == ["alpha"]
    assert catalog.changes_between(start, after_one)[0][1].versions[-1] == "2.0b1", "alpha as it was before"
    catalog.record(make_wheel(packages, "beta-lib", "5.0").name)
    catalog.record(make_wheel(packages, "gamma", "5.0").name)
    assert catalog.changes_between(start, catalog.view) is None, "the first change was forgotten"
    assert [n for n, _ in catalog.changes_between(after_one, catalog.view)] == ["beta-lib", "gamma"]
