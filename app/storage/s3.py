"""Package files in S3-compatible object storage: AWS S3, MinIO, Ceph RGW, SeaweedFS, R2.

Only requests that every one of those stores answers are used: ListObjectsV2 with a
prefix and a delimiter, HeadObject, GetObject with Range, PutObject, multipart upload
(with UploadPartCopy), DeleteObject, presigned GETs. No bucket notifications.

The mapping onto the Storage interface (app/storage/__init__.py):
- one root, the bucket's prefix (``s3://BUCKET/PREFIX``); a "directory" is a common prefix;
- a FileKey is (size, LastModified in whole seconds as ns, a stable int from the ETag);
- ``stat_dir`` returns a digest of the folder's listing, re-listed at most every
  ``s3_list_interval`` seconds (a bucket has no directory mtimes): the cost of noticing
  objects added or removed by hand is one LIST per 1,000 objects per folder per interval.
  The digest is kept below 2**56 so that the scanner never takes it for a recent mtime.

New files: a file up to PART_SIZE is held in memory and published with one PutObject;
a bigger one is streamed as a multipart upload to a hidden key ``PREFIX/.uploads/...``
(never listed), read back from there for the upload checks, and published by a
server-side multipart copy. Publishing without ``replace`` sends ``If-None-Match: *``
(PutObject, CompleteMultipartUpload), so of two writers of one name one gets
FileExistsError. An abandoned upload is aborted and its temporary object deleted; what a
killed process leaves is swept by ``remove_stale_temporaries``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

from ..dists import has_dist_suffix
from ..settings import Settings
from . import CHUNK, DirListing, FileKey, StorageUnavailable, new_hasher

log = logging.getLogger("wharf.storage")

# Uploads up to this size are kept in memory; above it they stream as parts of this size.
PART_SIZE = 16 * 1024 * 1024
# Parts of the server-side copy that publishes a big upload (S3 allows 5 MiB to 5 GiB).
COPY_PART_SIZE = 512 * 1024 * 1024
# Where unpublished uploads live under the prefix (a dot-folder: never listed).
UPLOADS = ".wharf-uploads/"
# The stale-upload sweep lists the bucket: at most once per this many seconds.
SWEEP_EVERY = 60.0
# A GET that a reader reopens after a seek asks for at least this much.
READ_AHEAD = 1024 * 1024


def parse_storage_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET/PREFIX``; the prefix has no slashes at its ends."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://BUCKET/PREFIX URL: {url!r}")
    return parts.netloc, parts.path.strip("/")


def make_client(settings: Settings):
    """A boto3 S3 client: credentials, region and profile as boto3 finds them.

    Timeouts are short and retries few, so an unreachable store makes a request fail in
    seconds (503) rather than hold a worker for minutes.
    """
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=32)
    return boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """boto3's errors as the interface's: FileNotFoundError, FileExistsError, StorageUnavailable."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("404", "NoSuchKey", "NotFound") or status == 404:
            raise FileNotFoundError(f"{what}: no such object") from None
        if code in ("412", "PreconditionFailed") or status == 412:
            raise FileExistsError(f"{what}: the object exists") from None
        raise StorageUnavailable(f"{what}: the object store answered {status} {code}: {error.get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"{what}: the object store cannot be reached: {exc}") from exc


def etag_number(etag: str) -> int:
    """A stable int (below 2**56) from an ETag: the FileKey's "inode"."""
    return int.from_bytes(hashlib.blake2b(etag.strip('"').encode(), digest_size=7).digest(), "big")


def key_of(size: int, last_modified, etag: str) -> FileKey:
    # Whole seconds: ListObjectsV2 gives milliseconds, HeadObject an HTTP date.
    return FileKey(size, int(last_modified.timestamp()) * 1_000_000_000, etag_number(etag))


@dataclass(frozen=True, slots=True)
class Listing:
    """One folder as the last LIST saw it."""

    at: float  # time.monotonic() of the listing
    files: dict[str, FileKey]
    subdirs: list[str]
    digest: int


class S3Storage:
    """Package files under one prefix of one bucket (implements app.storage.Storage)."""

    def __init__(self, settings: Settings, client=None):
        self.bucket, self.prefix = parse_storage_url(settings.storage_url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.list_interval = settings.s3_list_interval
        self.url_lifetime = settings.s3_url_lifetime
        self.client = client if client is not None else make_client(settings)
        self._listings: dict[str, Listing] = {}
        self._lock = threading.Lock()
        self._last_sweep = 0.0
        self._problem: tuple[float, list[str]] = (0.0, [])

    def root_names(self) -> list[str]:
        return [self.url]

    def key(self, relpath: str) -> str:
        if relpath.startswith("/") or "\0" in relpath or any(p in ("", ".", "..") for p in relpath.split("/")):
            raise ValueError(f"not a path under the storage's prefix: {relpath!r}")
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def _folder(self, reldir: str) -> str:
        return self.key(reldir) + "/" if reldir else (f"{self.prefix}/" if self.prefix else "")

    # --- reading ---------------------------------------------------------------------
    def readable(self) -> list[str]:
        """One small LIST, at most every list_interval (the health check calls this often)."""
        checked, problems = self._problem
        if time.monotonic() - checked < min(self.list_interval, 5.0):
            return problems
        try:
            with translated(self.url):
                self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._folder(""), MaxKeys=1)
            problems = []
        except (OSError, ValueError) as exc:
            problems = [f"{self.url} is not readable: {exc}"]
        self._problem = (time.monotonic(), problems)
        return problems

    def _listing(self, reldir: str) -> Listing | None:
        """The folder's listing, listed again when older than list_interval; None if empty."""
        with self._lock:
            cached = self._listings.get(reldir)
        if cached is not None and time.monotonic() - cached.at < self.list_interval:
            return cached
        folder = self._folder(reldir)
        files: dict[str, FileKey] = {}
        subdirs: list[str] = []
        digest = hashlib.blake2b(digest_size=7)
        try:
            with translated(f"listing {self.url}/{reldir}"):
                pages = self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=folder, Delimiter="/")
                for page in pages:
                    for common in page.get("CommonPrefixes", ()):
                        name = common["Prefix"][len(folder):].rstrip("/")
                        if name and not name.startswith("."):
                            subdirs.append(f"{reldir}/{name}" if reldir else name)
                            digest.update(f"d {name}\n".encode())
                    for item in page.get("Contents", ()):
                        name = item["Key"][len(folder):]
                        if name and not name.startswith(".") and has_dist_suffix(name):
                            files[name] = key_of(item["Size"], item["LastModified"], item["ETag"])
                            digest.update(f"f {name} {item['Size']} {item['ETag']}\n".encode())
        except StorageUnavailable as exc:
            # A store that blips must not make every file vanish from the catalog: keep
            # what was seen last (the next interval tries again).
            log.warning("%s", exc)
            return cached
        if not files and not subdirs and reldir:
            listing = None
        else:
            listing = Listing(time.monotonic(), files, subdirs, int.from_bytes(digest.digest(), "big"))
        with self._lock:
            if listing is None:
                self._listings.pop(reldir, None)
            else:
                self._listings[reldir] = listing
        return listing

    def stat_dir(self, root: int, reldir: str) -> int | None:
        """A digest of the folder's listing (changes when an object is added, removed or
        rewritten), or None for a folder with no objects left."""
        listing = self._listing(reldir)
        return None if listing is None else listing.digest

    def list_dir(self, root: int, reldir: str) -> DirListing | None:
        listing = self._listing(reldir)
        if listing is None:
            return None
        return DirListing({name: key.inode for name, key in listing.files.items()}, list(listing.subdirs))

    def list_files(self, root: int) -> Iterator[str]:
        folder = self._folder("")
        with translated(f"listing {self.url}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                for item in page.get("Contents", ()):
                    relpath = item["Key"][len(folder):]
                    if relpath and has_dist_suffix(relpath) and not any(
                            part.startswith(".") or not part for part in relpath.split("/")):
                        yield relpath

    def stat_file(self, root: int, relpath: str) -> FileKey | None:
        reldir, _, name = relpath.rpartition("/")
        with self._lock:
            listing = self._listings.get(reldir)
        if listing is not None and name in listing.files and time.monotonic() - listing.at < self.list_interval:
            return listing.files[name]
        try:
            with translated(relpath):
                head = self.client.head_object(Bucket=self.bucket, Key=self.key(relpath))
        except FileNotFoundError:
            return None
        return key_of(head["ContentLength"], head["LastModified"], head["ETag"])

    def open(self, root: int, relpath: str) -> tuple[BinaryIO, int]:
        """A seekable reader over ranged GETs (never the whole object in memory) and its size."""
        key = self.key(relpath)
        with translated(relpath):
            size = self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        return io.BufferedReader(RangedReader(self.client, self.bucket, key, size), READ_AHEAD), size

    def digests(self, root: int, relpath: str, algorithms: tuple[str, ...]) -> dict[str, str]:
        hashers = {name: new_hasher(name) for name in algorithms}
        stream, _size = self.open(root, relpath)
        with stream:
            while chunk := stream.read(CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
        return {name: hasher.hexdigest() for name, hasher in hashers.items()}

    def presigned_url(self, relpath: str, **response_headers: str) -> str:
        """A GET URL for the object that needs no credentials, valid s3_url_lifetime seconds.

        ``response_headers`` (e.g. ResponseContentType) ask the store to answer with them.
        """
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(relpath), **response_headers},
            ExpiresIn=self.url_lifetime)

    # --- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def new_file(self, relpath: str) -> Iterator[S3NewFile]:
        new = S3NewFile(self, relpath)
        try:
            yield new
        finally:
            new.discard()

    def write(self, relpath: str, source: BinaryIO, *, replace: bool = False) -> str:
        with self.new_file(relpath) as new:
            while chunk := source.read(CHUNK):
                new.write(chunk)
            return new.publish(replace=replace)

    def delete(self, root: int, relpath: str) -> bool:
        key = self.key(relpath)
        try:
            with translated(relpath):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return False
        with translated(relpath):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        self.forget_listed(relpath)
        return True

    def remember_listed(self, relpath: str, key: FileKey) -> None:
        """Put a file this process just wrote into its folder's cached listing."""
        reldir, _, name = relpath.rpartition("/")
        with self._lock:
            listing = self._listings.get(reldir)
            if listing is not None:
                self._listings[reldir] = Listing(listing.at, {**listing.files, name: key},
                                                 listing.subdirs, listing.digest)

    def forget_listed(self, relpath: str) -> None:
        reldir, _, name = relpath.rpartition("/")
        with self._lock:
            listing = self._listings.get(reldir)
            if listing is not None and name in listing.files:
                files = {n: k for n, k in listing.files.items() if n != name}
                self._listings[reldir] = Listing(listing.at, files, listing.subdirs, listing.digest)

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Delete temporary upload objects and abort multipart uploads older than ``older_than`` s.

        Lists the bucket, so it runs at most once per SWEEP_EVERY seconds per process.
        """
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_EVERY:
            return 0
        self._last_sweep = now
        cutoff = time.time() - older_than
        count = 0
        try:
            with translated(f"sweeping {self.url}"):
                uploads = self._folder("") + UPLOADS
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=uploads):
                    for item in page.get("Contents", ()):
                        if item["LastModified"].timestamp() < cutoff:
                            self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                            count += 1
                pending = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self._folder(""))
                for upload in pending.get("Uploads", ()):
                    if upload["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        count += 1
        except (OSError, ValueError) as exc:
            log.warning("stale uploads not swept: %s", exc)
        return count


class RangedReader(io.RawIOBase):
    """A seekable read-only view of one object: a GET from the position on, reopened on a seek."""

    def __init__(self, client, bucket: str, key: str, size: int):
        self.client, self.bucket, self.key, self.size = client, bucket, key, size
        self.position = 0
        self._body = None
        self._body_at = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(base + offset, 0)
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.size or not len(buffer):
            return 0
        if self._body is None or self._body_at != self.position:
            self._close_body()
            with translated(self.key):
                answer = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-")
            self._body, self._body_at = answer["Body"], self.position
        with translated(self.key):
            data = self._body.read(len(buffer))
        if not data:
            raise StorageUnavailable(f"{self.key}: the object store ended the body early")
        buffer[:len(data)] = data
        self.position += len(data)
        self._body_at = self.position
        return len(data)

    def _close_body(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._close_body()
        super().close()


class S3NewFile:
    """An upload on its way into the bucket (implements app.storage.NewFile)."""

    def __init__(self, storage: S3Storage, relpath: str):
        self.storage, self.relpath = storage, relpath
        self.client, self.bucket = storage.client, storage.bucket
        self.target = storage.key(relpath)
        self.tmp = storage._folder("") + f"{UPLOADS}{secrets.token_hex(8)}-{relpath.rsplit('/', 1)[-1]}"
        self.size = 0
        self.buffer = bytearray()
        self.upload_id: str | None = None  # the multipart upload to self.tmp
        self.parts: list[dict] = []
        self.sealed = False  # self.tmp is a complete object
        self.published = False

    def write(self, data: bytes) -> int:
        if self.sealed or self.published:
            raise ValueError("the file was already read back or published")
        self.buffer += data
        self.size += len(data)
        while len(self.buffer) >= PART_SIZE:
            self._send_part(bytes(self.buffer[:PART_SIZE]))
            del self.buffer[:PART_SIZE]
        return len(data)

    def _send_part(self, data: bytes) -> None:
        with translated(f"uploading {self.relpath}"):
            if self.upload_id is None:
                self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.tmp)["UploadId"]
            number = len(self.parts) + 1
            answer = self.client.upload_part(Bucket=self.bucket, Key=self.tmp, UploadId=self.upload_id,
                                             PartNumber=number, Body=data)
            self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _seal(self) -> None:
        """Make the temporary object whole (a big upload's last part and completion)."""
        if self.sealed or self.upload_id is None:
            return
        if self.buffer:
            self._send_part(bytes(self.buffer))
            self.buffer.clear()
        with translated(f"uploading {self.relpath}"):
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.tmp, UploadId=self.upload_id,
                                                  MultipartUpload={"Parts": self.parts})
        self.upload_id, self.sealed = None, True

    def open(self) -> tuple[BinaryIO, int]:
        if self.upload_id is None and not self.sealed:
            return io.BytesIO(bytes(self.buffer)), self.size  # small: still in memory
        self._seal()
        reader = RangedReader(self.client, self.bucket, self.tmp, self.size)
        return io.BufferedReader(reader, READ_AHEAD), self.size

    def publish(self, *, replace: bool = False) -> str:
        condition = {} if replace else {"IfNoneMatch": "*"}
        what = f"publishing {self.relpath}"
        if self.upload_id is None and not self.sealed:
            with translated(what):
                self.client.put_object(Bucket=self.bucket, Key=self.target, Body=bytes(self.buffer), **condition)
        else:
            self._seal()
            self._copy_into_place(condition, what)
        self.published = True
        self.discard()
        with contextlib.suppress(OSError):
            key = self.storage.stat_file(0, self.relpath)
            if key is not None:
                self.storage.remember_listed(self.relpath, key)
        return self.relpath

    def _copy_into_place(self, condition: dict, what: str) -> None:
        # A server-side multipart copy, completed with the condition: CopyObject takes no
        # If-None-Match for its destination on every store, CompleteMultipartUpload does.
        with translated(what):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.target)["UploadId"]
        try:
            parts = []
            for number, first in enumerate(range(0, self.size, COPY_PART_SIZE), start=1):
                last = min(first + COPY_PART_SIZE, self.size) - 1
                with translated(what):
                    answer = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=self.target, UploadId=upload_id, PartNumber=number,
                        CopySource={"Bucket": self.bucket, "Key": self.tmp}, CopySourceRange=f"bytes={first}-{last}")
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            with translated(what):
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.target, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts}, **condition)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.target, UploadId=upload_id)
            raise

    def discard(self) -> None:
        """Remove what was written but not (or no longer needed once) published."""
        self.buffer = bytearray()
        with contextlib.suppress(Exception):
            if self.upload_id is not None:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.tmp, UploadId=self.upload_id)
                self.upload_id = None
            if self.sealed:
                self.client.delete_object(Bucket=self.bucket, Key=self.tmp)
                self.sealed = False
