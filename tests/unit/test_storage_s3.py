"""app/storage/s3.py: the Storage interface on a real S3-compatible store (SeaweedFS)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import threading
import time

import pytest

from app.settings import Settings
from app.storage import FileKey, Storage, StorageUnavailable, storage_for
from app.storage import s3_objects as s3_module
from app.storage.s3 import S3Storage, etag_number, parse_timestamp

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(bucket: str, seaweedfs) -> Settings:
    return Settings(storage_url=f"s3://{bucket}/pkgs", s3_endpoint_url=seaweedfs.endpoint, s3_list_interval=0.2)


@pytest.fixture
def store(settings: Settings, seaweedfs) -> S3Storage:
    return S3Storage(settings, client=seaweedfs.client())


@pytest.fixture
def client(seaweedfs):
    return seaweedfs.client()


def put(client, bucket: str, key: str, data: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=data)


def keys(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", ()))


def test_s3_storage_implements_the_interface_and_is_chosen_by_the_url(store: S3Storage, settings, bucket):
    for name in [n for n in vars(Storage) if not n.startswith("_")]:
        assert callable(getattr(store, name)), name
    chosen = storage_for(settings)
    assert isinstance(chosen, S3Storage) and chosen.root_names() == [f"s3://{bucket}/pkgs"]
    with pytest.raises(ValueError):
        Settings(storage_url="s3://").validated()
    with pytest.raises(ValueError):
        store.key("../escape-1.0.tar.gz")


def test_the_client_reads_credentials_and_endpoint_as_boto3_does(bucket, seaweedfs, monkeypatch):
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    store = storage_for(Settings(storage_url=f"s3://{bucket}/pkgs"))  # AWS_ENDPOINT_URL, keys, region
    assert store.readable() == []
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    refused = storage_for(Settings(storage_url=f"s3://{bucket}/pkgs"))
    assert refused.readable() and "not readable" in refused.readable()[0]


def test_the_client_reads_timestamps_as_boto3_does(settings, seaweedfs, client, bucket, monkeypatch):
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    put(client, bucket, "pkgs/a-1.0.tar.gz", b"a")
    ours = S3Storage(settings).client  # make_client: a faster timestamp parser, in a session of its own
    listed = ours.list_objects_v2(Bucket=bucket, Prefix="pkgs/")["Contents"][0]["LastModified"]
    assert listed == client.list_objects_v2(Bucket=bucket, Prefix="pkgs/")["Contents"][0]["LastModified"]
    head = ours.head_object(Bucket=bucket, Key="pkgs/a-1.0.tar.gz")["LastModified"]
    assert head == client.head_object(Bucket=bucket, Key="pkgs/a-1.0.tar.gz")["LastModified"]
    assert listed.tzinfo is not None and head.tzinfo is not None and abs(listed - head).total_seconds() < 1
    assert parse_timestamp(1_700_000_000) == parse_timestamp("Tue, 14 Nov 2023 22:13:20 GMT")
    with pytest.raises(ValueError):
        parse_timestamp("not a time")


def test_listing_maps_common_prefixes_to_folders_and_skips_dot_names(store, client, bucket):
    for key, data in (("pkgs/a-1.0.tar.gz", b"a"), ("pkgs/sub/b-1.0-py3-none-any.whl", b"bb"),
                      ("pkgs/sub/deeper/c-1.0.zip", b"ccc"), ("pkgs/notes.txt", b"no"),
                      ("pkgs/.wharf-uploads/x-e-1.0.tar.gz", b"tmp"), ("pkgs/.wharf/d-1.0.tar.gz", b"d"),
                      ("other/z-1.0.tar.gz", b"outside the prefix")):
        put(client, bucket, key, data)
    listing = store.list_dir(0, "")
    assert sorted(listing.files) == ["a-1.0.tar.gz"] and listing.subdirs == ["sub"]
    assert store.list_dir(0, "sub").subdirs == ["sub/deeper"]
    assert store.list_dir(0, "missing") is None and store.stat_dir(0, "missing") is None
    assert sorted(store.list_files(0)) == ["a-1.0.tar.gz", "sub/b-1.0-py3-none-any.whl", "sub/deeper/c-1.0.zip"]
    head = client.head_object(Bucket=bucket, Key="pkgs/sub/b-1.0-py3-none-any.whl")
    key = store.stat_file(0, "sub/b-1.0-py3-none-any.whl")
    assert key == FileKey(2, int(head["LastModified"].timestamp()) * 10**9, etag_number(head["ETag"]))
    assert listing.files["a-1.0.tar.gz"] == store.stat_file(0, "a-1.0.tar.gz").inode
    assert store.stat_file(0, "missing-1.0.tar.gz") is None


def test_stat_dir_changes_when_a_listing_changes_and_lists_at_most_each_interval(store, client, bucket):
    put(client, bucket, "pkgs/a-1.0.tar.gz", b"a")
    first = store.stat_dir(0, "")
    assert 0 < first < 2**56  # never mistaken for a recent mtime by the scanner
    put(client, bucket, "pkgs/b-1.0.tar.gz", b"b")
    assert store.stat_dir(0, "") == first  # within s3_list_interval: the cached listing
    time.sleep(0.25)
    second = store.stat_dir(0, "")
    assert second != first
    put(client, bucket, "pkgs/b-1.0.tar.gz", b"b rewritten")
    time.sleep(0.25)
    assert store.stat_dir(0, "") not in (first, second)
    client.delete_object(Bucket=bucket, Key="pkgs/b-1.0.tar.gz")
    time.sleep(0.25)
    assert store.stat_dir(0, "") == first


def test_open_reads_ranges_without_fetching_the_whole_object(store, client, bucket, monkeypatch):
    data = os.urandom(3 * 1024 * 1024 + 17)
    put(client, bucket, "pkgs/big-1.0.tar.gz", data)
    asked: list[str] = []
    real = store.client.get_object
    monkeypatch.setattr(store.client, "get_object", lambda **kw: asked.append(kw["Range"]) or real(**kw))
    stream, size = store.open(0, "big-1.0.tar.gz")
    with stream:
        assert size == len(data)
        stream.seek(-10, os.SEEK_END)
        assert stream.read() == data[-10:]
        stream.seek(100)
        assert stream.read(5) == data[100:105]
        stream.seek(0)
        assert stream.read() == data
        assert not stream.seekable() is False
    assert asked == [f"bytes={len(data) - 10}-", "bytes=100-", "bytes=0-"]
    assert store.digests(0, "big-1.0.tar.gz", ("sha256", "md5")) == {
        "sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
    with pytest.raises(FileNotFoundError):
        store.open(0, "missing-1.0.tar.gz")


def test_a_small_object_is_read_with_one_get(settings, seaweedfs, client, bucket, monkeypatch):
    # A listing that stays fresh for the whole test (the fixture's lists again every 0.2 s).
    store = S3Storage(dataclasses.replace(settings, s3_list_interval=600), client=seaweedfs.client())
    data = os.urandom(200_000)  # a wheel: reading its metadata seeks three or four times
    put(client, bucket, "pkgs/small-1.0.tar.gz", data)
    asked: list[tuple[str, str | None]] = []
    for name in ("get_object", "head_object"):
        real = getattr(store.client, name)
        monkeypatch.setattr(store.client, name,
                            lambda real=real, name=name, **kw: asked.append((name, kw.get("Range"))) or real(**kw))

    def read_around(stream, expected: bytes) -> None:
        with stream:
            stream.seek(-10, os.SEEK_END)
            assert stream.read() == expected[-10:]
            stream.seek(100)
            assert stream.read(5) == expected[100:105]
            stream.seek(0)
            assert stream.read() == expected

    stream, size = store.open(0, "small-1.0.tar.gz")  # not listed: a HEAD tells its size
    assert size == len(data)
    read_around(stream, data)
    assert asked == [("head_object", None), ("get_object", None)]
    asked.clear()
    store.list_dir(0, "")  # a fresh listing tells the size: no HEAD
    stream, size = store.open(0, "small-1.0.tar.gz")
    read_around(stream, data)
    assert asked == [("get_object", None)]
    # Replaced by a big object since it was listed: read by ranges, never whole.
    big = os.urandom(s3_module.WHOLE_OBJECT + 4096)
    put(client, bucket, "pkgs/small-1.0.tar.gz", big)
    asked.clear()
    stream, size = store.open(0, "small-1.0.tar.gz")
    assert size == len(big) and isinstance(stream.raw, s3_module.RangedReader)
    read_around(stream, big)
    assert asked == [("get_object", None), ("get_object", f"bytes={len(big) - 10}-"),
                     ("get_object", "bytes=100-"), ("get_object", "bytes=0-")]
    # Listed, then removed: FileNotFoundError, as before.
    client.delete_object(Bucket=bucket, Key="pkgs/small-1.0.tar.gz")
    with pytest.raises(FileNotFoundError):
        store.open(0, "small-1.0.tar.gz")


def test_a_presigned_url_is_reused_for_a_tenth_of_its_lifetime(settings, seaweedfs, client, bucket):
    import urllib.request

    put(client, bucket, "pkgs/a-1.0.tar.gz", b"the bytes")
    store = S3Storage(dataclasses.replace(settings, s3_url_lifetime=100), client=seaweedfs.client())
    assert store.url_reuse == 10
    first = store.presigned_url("a-1.0.tar.gz")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(first, timeout=10) as answer:
        assert answer.read() == b"the bytes"
    time.sleep(1.1)  # expiry times are whole seconds: a URL signed now would differ
    assert store.presigned_url("a-1.0.tar.gz") == first
    typed = store.presigned_url("a-1.0.tar.gz", ResponseContentType="application/zip")
    assert typed != first and "response-content-type" in typed
    store.url_reuse = 1.0
    assert store.presigned_url("a-1.0.tar.gz") != first  # older than url_reuse: signed again


@pytest.mark.parametrize("size", [1000, s3_module.PART_SIZE * 2 + 5])
def test_a_new_file_is_hidden_until_published_and_readable_before(store, client, bucket, size):
    data = os.urandom(size)
    with store.new_file("n-1.0.tar.gz") as new:
        for start in range(0, size, 1 << 20):
            new.write(data[start:start + (1 << 20)])
        assert new.size == size
        assert keys(client, bucket) == [] or all(".wharf-uploads/" in k for k in keys(client, bucket))
        stream, got = new.open()
        with stream:
            assert got == size and hashlib.sha256(stream.read()).digest() == hashlib.sha256(data).digest()
        assert new.publish() == "n-1.0.tar.gz"
    assert keys(client, bucket) == ["pkgs/n-1.0.tar.gz"]  # the temporary object is gone
    assert client.get_object(Bucket=bucket, Key="pkgs/n-1.0.tar.gz")["Body"].read() == data
    assert store.stat_file(0, "n-1.0.tar.gz").size == size


def test_of_two_publishers_of_one_name_exactly_one_wins(store, client, bucket):
    # A small file: one conditional PutObject, atomic on SeaweedFS. (A big file's
    # conditional CompleteMultipartUpload is not atomic there: docs/storage.md.)
    size = 1000
    results: list[str] = []
    barrier = threading.Barrier(2)

    def upload(fill: bytes) -> None:
        with store.new_file("race-1.0.tar.gz") as new:
            new.write(fill * size)
            new.open()[0].close()
            barrier.wait()
            try:
                new.publish()
                results.append(fill.decode())
            except FileExistsError:
                results.append("lost")

    threads = [threading.Thread(target=upload, args=(fill,)) for fill in (b"a", b"b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results)[1] == "lost" and sorted(results)[0] in "ab"
    winner = results[0] if results[0] != "lost" else results[1]
    assert client.get_object(Bucket=bucket, Key="pkgs/race-1.0.tar.gz")["Body"].read() == winner.encode() * size
    assert keys(client, bucket) == ["pkgs/race-1.0.tar.gz"]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    store.write("race-1.0.tar.gz", io.BytesIO(b"replaced"), replace=True)
    assert client.get_object(Bucket=bucket, Key="pkgs/race-1.0.tar.gz")["Body"].read() == b"replaced"


def test_a_big_file_is_published_only_where_no_object_is(store, client, bucket):
    big = s3_module.PART_SIZE + 5
    store.write("big-1.0.tar.gz", io.BytesIO(b"a" * big))
    with pytest.raises(FileExistsError):
        store.write("big-1.0.tar.gz", io.BytesIO(b"b" * big))
    assert client.get_object(Bucket=bucket, Key="pkgs/big-1.0.tar.gz")["Body"].read(3) == b"aaa"
    assert keys(client, bucket) == ["pkgs/big-1.0.tar.gz"]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    store.write("big-1.0.tar.gz", io.BytesIO(b"c" * big), replace=True)
    assert client.get_object(Bucket=bucket, Key="pkgs/big-1.0.tar.gz")["Body"].read(3) == b"ccc"


@pytest.mark.parametrize("size", [1000, s3_module.PART_SIZE * 2 + 5])
def test_an_aborted_upload_leaves_no_object(store, client, bucket, size):
    with pytest.raises(RuntimeError), store.new_file("gone-1.0.tar.gz") as new:
        new.write(b"x" * size)
        new.open()[0].close()
        raise RuntimeError("client went away")
    assert keys(client, bucket) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_delete_and_the_stale_upload_sweep(store, client, bucket, monkeypatch):
    put(client, bucket, "pkgs/a-1.0.tar.gz", b"a")
    assert store.delete(0, "a-1.0.tar.gz") is True
    assert store.delete(0, "a-1.0.tar.gz") is False
    put(client, bucket, "pkgs/.wharf-uploads/old-x-1.0.tar.gz", b"left by a killed server")
    client.create_multipart_upload(Bucket=bucket, Key="pkgs/.wharf-uploads/old-y-1.0.tar.gz")
    assert store.remove_stale_temporaries(3600) == 0  # young: kept
    assert store.remove_stale_temporaries(0) == 0  # the sweep lists the bucket once a minute at most
    monkeypatch.setattr(store, "_last_sweep", 0.0)
    time.sleep(1.1)
    assert store.remove_stale_temporaries(1) == 2
    assert keys(client, bucket) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_unreachable_store_is_storage_unavailable_and_keeps_the_last_listing(settings, client, bucket):
    put(client, bucket, "pkgs/a-1.0.tar.gz", b"a")
    from tests.support import free_port

    store = S3Storage(settings)
    before = store.stat_dir(0, "")
    store.client = S3Storage(dataclasses.replace(settings, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")).client
    time.sleep(0.25)
    started = time.monotonic()
    assert store.stat_dir(0, "") == before  # a blip does not empty the catalog
    with pytest.raises(StorageUnavailable):
        store.open(0, "a-1.0.tar.gz")
    with pytest.raises(StorageUnavailable), store.new_file("b-1.0.tar.gz") as new:
        new.write(b"b")
        new.publish()
    assert time.monotonic() - started < 10
    assert store.readable() and "not readable" in store.readable()[0]
