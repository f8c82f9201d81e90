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
killed process leaves is swept by ``remove_stale_temporaries``. Reading and writing one
object (ranged reads, uploads) is app/storage/s3_objects.py.

Per request costs (bench/backends.py): a small object is read with one GET (a wheel's
metadata would otherwise take a HEAD and a GET per seek), and a presigned URL is reused
for a tenth of its lifetime (signing costs about as much as the rest of a download).
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import hashlib
import io
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

from ..dists import has_dist_suffix
from ..settings import Settings
from . import DirListing, FileKey, StorageUnavailable, read_digests, write_stream
from .s3_objects import READ_AHEAD, UPLOADS, WHOLE_OBJECT, RangedReader, S3NewFile, translated

log = logging.getLogger("wharf.storage")

# The stale-upload sweep lists the bucket: at most once per this many seconds.
SWEEP_EVERY = 60.0
# Presigned URLs kept for reuse, per process (signing one costs about as much as the rest of
# a download request); the oldest are forgotten beyond this many.
PRESIGNED_KEPT = 4096


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
    import botocore.session
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=32)
    # botocore parses each timestamp with dateutil: 40% of the CPU time of listing a
    # folder (the scanner does, every s3_list_interval). The store's are ISO 8601 (in XML)
    # or HTTP dates (headers), which the standard library reads much faster.
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return boto3.session.Session(botocore_session=core).client(
        "s3", endpoint_url=settings.s3_endpoint_url or None, config=config)


def parse_timestamp(value) -> datetime.datetime:
    """An S3 timestamp as an aware datetime: ISO 8601, an HTTP date, or epoch seconds."""
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            from botocore.utils import parse_timestamp as slow

            return slow(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.timezone.utc)


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
        # A presigned URL is handed out again for a tenth of its lifetime (at most 5 minutes):
        # whoever gets one can still use it for at least 90% of s3_url_lifetime.
        self.url_reuse = min(self.url_lifetime / 10, 300.0)
        self._presigned: dict[tuple, tuple[float, str]] = {}

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
        listed = self._listed(relpath)
        if listed is not None:
            return listed
        try:
            with translated(relpath):
                head = self.client.head_object(Bucket=self.bucket, Key=self.key(relpath))
        except FileNotFoundError:
            return None
        return key_of(head["ContentLength"], head["LastModified"], head["ETag"])

    def open(self, root: int, relpath: str) -> tuple[BinaryIO, int]:
        """A seekable reader and the object's size.

        A small object (up to WHOLE_OBJECT, as a fresh listing or a HEAD tells) is read with
        one GET; a bigger one is read by ranged GETs, never whole in memory.
        """
        key = self.key(relpath)
        listed = self._listed(relpath)
        if listed is not None and listed.size <= WHOLE_OBJECT:
            return self._open_whole(relpath, key)  # no HEAD: the listing told the size
        with translated(relpath):
            size = self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        if size <= WHOLE_OBJECT:
            return self._open_whole(relpath, key)
        return io.BufferedReader(RangedReader(self.client, self.bucket, key, size), READ_AHEAD), size

    def _listed(self, relpath: str) -> FileKey | None:
        """The file's key from its folder's listing, if that is younger than list_interval."""
        reldir, _, name = relpath.rpartition("/")
        with self._lock:
            listing = self._listings.get(reldir)
        if listing is not None and time.monotonic() - listing.at < self.list_interval:
            return listing.files.get(name)
        return None

    def _open_whole(self, relpath: str, key: str) -> tuple[BinaryIO, int]:
        with translated(relpath):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            size = answer["ContentLength"]
            if size > WHOLE_OBJECT:  # replaced by a bigger object since it was listed
                reader = RangedReader(self.client, self.bucket, key, size, body=answer["Body"])
                return io.BufferedReader(reader, READ_AHEAD), size
            data = answer["Body"].read()
        if len(data) != size:
            raise StorageUnavailable(f"{relpath}: the object store ended the body early")
        return io.BytesIO(data), size

    def digests(self, root: int, relpath: str, algorithms: tuple[str, ...]) -> dict[str, str]:
        return read_digests(self, root, relpath, algorithms)

    def presigned_url(self, relpath: str, **response_headers: str) -> str:
        """A GET URL for the object that needs no credentials, valid s3_url_lifetime seconds.

        ``response_headers`` (e.g. ResponseContentType) ask the store to answer with them.
        A URL made less than ``url_reuse`` seconds ago is handed out again.
        """
        wanted = (relpath, tuple(sorted(response_headers.items())))
        now = time.monotonic()
        with self._lock:
            kept = self._presigned.get(wanted)
        if kept is not None and now - kept[0] < self.url_reuse:
            return kept[1]
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(relpath), **response_headers},
            ExpiresIn=self.url_lifetime)
        with self._lock:
            if len(self._presigned) >= PRESIGNED_KEPT:
                for old in sorted(self._presigned, key=lambda k: self._presigned[k][0])[:PRESIGNED_KEPT // 4]:
                    del self._presigned[old]
            self._presigned[wanted] = (now, url)
        return url

    # --- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def new_file(self, relpath: str) -> Iterator[S3NewFile]:
        new = S3NewFile(self, relpath)
        try:
            yield new
        finally:
            new.discard()

    def write(self, relpath: str, source: BinaryIO, *, replace: bool = False) -> str:
        return write_stream(self, relpath, source, replace=replace)

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


