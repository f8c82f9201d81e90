"""app/storage: the Storage interface on LocalStorage (list, stat, open, atomic writes, remove)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage import FileKey, LocalStorage, Storage, storage_for


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "sub" / "deeper").mkdir(parents=True)
    (first / ".wharf").mkdir()
    second.mkdir()
    for path, data in (("a-1.0.tar.gz", b"a"), ("sub/b-1.0-py3-none-any.whl", b"bb"),
                       ("sub/deeper/c-1.0.zip", b"ccc"), ("notes.txt", b"not a dist"),
                       (".wharf/d-1.0.tar.gz", b"state"), (".upload-0-e-1.0.tar.gz.part", b"partial")):
        (first / path).write_bytes(data)
    (second / "f-2.0.tar.gz").write_bytes(b"ffff")
    return first, second


@pytest.fixture
def storage(roots) -> LocalStorage:
    return LocalStorage(roots)


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_local_storage_implements_the_interface(storage: LocalStorage):
    for name in [n for n in vars(Storage) if not n.startswith("_")]:
        assert callable(getattr(storage, name)), name
    assert storage.root_names() == [str(root) for root in storage.roots]


def test_storage_for_the_settings_is_the_packages_directories(roots, tmp_path: Path):
    settings = Settings(packages=roots)
    assert storage_for(settings).root_names() == [str(r) for r in roots]
    dest = tmp_path / "dest"
    dest.mkdir()
    assert storage_for(settings, dest=dest).root_names() == [str(dest), *(str(r) for r in roots)]
    assert storage_for(settings, dest=roots[1]).root_names() == [str(roots[1]), str(roots[0])]


def test_list_dir_gives_distribution_files_and_subdirectories_not_dot_names(storage: LocalStorage, roots):
    listing = storage.list_dir(0, "")
    assert sorted(listing.files) == ["a-1.0.tar.gz"]
    assert listing.files["a-1.0.tar.gz"] == os.stat(roots[0] / "a-1.0.tar.gz").st_ino
    assert listing.subdirs == ["sub"]
    assert storage.list_dir(0, "sub").subdirs == ["sub/deeper"]
    assert storage.list_dir(0, "missing") is None


def test_list_files_walks_the_whole_tree(storage: LocalStorage):
    assert sorted(storage.list_files(0)) == ["a-1.0.tar.gz", "sub/b-1.0-py3-none-any.whl", "sub/deeper/c-1.0.zip"]
    assert list(storage.list_files(1)) == ["f-2.0.tar.gz"]


def test_stat_of_files_and_directories(storage: LocalStorage, roots):
    st = os.stat(roots[0] / "sub" / "b-1.0-py3-none-any.whl")
    assert storage.stat_file(0, "sub/b-1.0-py3-none-any.whl") == FileKey(2, st.st_mtime_ns, st.st_ino)
    assert storage.stat_file(0, "missing-1.0.tar.gz") is None
    assert storage.stat_dir(0, "sub") == os.stat(roots[0] / "sub").st_mtime_ns
    assert storage.stat_dir(0, "missing") is None


def test_open_gives_a_stream_and_its_size(storage: LocalStorage):
    stream, size = storage.open(1, "f-2.0.tar.gz")
    with stream:
        assert size == 4 and stream.read() == b"ffff"
    with pytest.raises(FileNotFoundError):
        storage.open(0, "missing-1.0.tar.gz")


def test_digests_read_through_the_storage(storage: LocalStorage):
    assert storage.digests(0, "sub/deeper/c-1.0.zip", ("sha256", "md5")) == {
        "sha256": hashlib.sha256(b"ccc").hexdigest(), "md5": hashlib.md5(b"ccc").hexdigest()}


@pytest.mark.parametrize("relpath", ["../outside-1.0.tar.gz", "sub/../../outside-1.0.tar.gz", "/etc/passwd",
                                     "a\0b-1.0.tar.gz", "sub//x-1.0.tar.gz", "./a-1.0.tar.gz"])
def test_names_outside_the_roots_are_refused(storage: LocalStorage, relpath: str, roots):
    (roots[0].parent / "outside-1.0.tar.gz").write_bytes(b"secret")
    with pytest.raises(ValueError):
        storage.write(relpath, io.BytesIO(b"x"))
    with pytest.raises(ValueError):
        storage.delete(0, relpath)
    if ".." in relpath or relpath.startswith("/") or "\0" in relpath:
        with pytest.raises(ValueError):
            storage.open(0, relpath)
        with pytest.raises(ValueError):
            storage.stat_file(0, relpath)
    assert (roots[0].parent / "outside-1.0.tar.gz").read_bytes() == b"secret"


def test_write_from_a_stream_publishes_the_whole_file(storage: LocalStorage, roots):
    assert storage.write("new-1.0.tar.gz", io.BytesIO(b"x" * 3_000_000)) == "new-1.0.tar.gz"
    assert (roots[0] / "new-1.0.tar.gz").read_bytes() == b"x" * 3_000_000
    assert storage.write("sub/deeper/new-2.0.tar.gz", io.BytesIO(b"y")) == "sub/deeper/new-2.0.tar.gz"
    assert (roots[0] / "sub" / "deeper" / "new-2.0.tar.gz").read_bytes() == b"y"
    assert hidden(roots[0] / "sub" / "deeper") == []


class Failing(io.RawIOBase):
    """A source that gives some bytes, then fails (a client that went away)."""

    def __init__(self):
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.calls += 1
        if self.calls > 3:
            raise ConnectionResetError("gone")
        buffer[:5] = b"chunk"
        return 5


def test_a_write_that_fails_midway_leaves_nothing(storage: LocalStorage, roots):
    before = hidden(roots[0])
    with pytest.raises(ConnectionResetError):
        storage.write("broken-1.0.tar.gz", Failing())
    assert not (roots[0] / "broken-1.0.tar.gz").exists()
    assert hidden(roots[0]) == before


def test_a_new_file_can_be_read_back_before_it_is_published(storage: LocalStorage, roots):
    with storage.new_file("checked-1.0.tar.gz") as new:
        new.write(b"abc")
        new.write(b"def")
        stream, size = new.open()
        with stream:
            assert (stream.read(), size, new.size) == (b"abcdef", 6, 6)
        assert not (roots[0] / "checked-1.0.tar.gz").exists()  # not published yet
    assert not (roots[0] / "checked-1.0.tar.gz").exists()  # never published: gone
    assert hidden(roots[0]) == [".upload-0-e-1.0.tar.gz.part", ".wharf"]


def test_publish_never_replaces_unless_asked(storage: LocalStorage, roots):
    with pytest.raises(FileExistsError), storage.new_file("a-1.0.tar.gz") as new:
        new.write(b"other")
        new.publish()
    assert (roots[0] / "a-1.0.tar.gz").read_bytes() == b"a"
    with storage.new_file("a-1.0.tar.gz") as new:
        new.write(b"other")
        new.publish(replace=True)
    assert (roots[0] / "a-1.0.tar.gz").read_bytes() == b"other"
    assert hidden(roots[0]) == [".upload-0-e-1.0.tar.gz.part", ".wharf"]


def test_concurrent_writes_of_one_name_have_one_winner(storage: LocalStorage, roots):
    writers = 8
    barrier = threading.Barrier(writers)
    outcomes: list[str] = []

    def write(number: int) -> None:
        with storage.new_file("race-1.0.tar.gz") as new:
            new.write(bytes([number]) * 100_000)
            barrier.wait()
            try:
                new.publish()
                outcomes.append(f"won {number}")
            except FileExistsError:
                outcomes.append("lost")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == writers - 1
    number = int(winners[0].split()[1])
    assert (roots[0] / "race-1.0.tar.gz").read_bytes() == bytes([number]) * 100_000
    assert hidden(roots[0]) == [".upload-0-e-1.0.tar.gz.part", ".wharf"]


def test_delete(storage: LocalStorage, roots):
    assert storage.delete(1, "f-2.0.tar.gz") is True
    assert not (roots[1] / "f-2.0.tar.gz").exists()
    assert storage.delete(1, "f-2.0.tar.gz") is False


def test_stale_temporaries_are_removed_fresh_ones_kept(storage: LocalStorage, roots):
    stale = roots[0] / ".upload-0-e-1.0.tar.gz.part"
    os.utime(stale, (1, 1))
    with storage.new_file("fresh-1.0.tar.gz") as new:
        new.write(b"x")
        assert storage.remove_stale_temporaries(60) == 1
        assert not stale.exists()
        assert len([n for n in hidden(roots[0]) if n.endswith(".part")]) == 1  # the one being written
        new.publish()
    assert (roots[0] / "fresh-1.0.tar.gz").read_bytes() == b"x"


def test_readable_names_missing_roots(tmp_path: Path, roots):
    assert LocalStorage(roots).readable() == []
    assert LocalStorage((tmp_path / "gone",)).readable() == [f"{tmp_path / 'gone'} is not a directory"]
