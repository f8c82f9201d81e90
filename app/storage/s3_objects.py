"""One object at a time in S3-compatible storage: reading it by ranges, writing a new one.

``translated`` turns boto3's errors into the Storage interface's; ``RangedReader`` reads an
object as a seekable stream of ranged GETs; ``S3NewFile`` streams an upload into the
bucket and publishes it conditionally (see app/storage/s3.py for the whole design).
"""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from . import StorageUnavailable

if TYPE_CHECKING:
    from .s3 import S3Storage

# Uploads up to this size are kept in memory; above it they stream as parts of about this
# size (S3: at least 5 MiB, at most 10,000 parts: files up to 80 GiB). A part is held
# twice at most (its chunks and the joined part): the worker's memory grows by ~2 parts.
PART_SIZE = 8 * 1024 * 1024
# Parts of the server-side copy that publishes a big upload (S3 allows 5 MiB to 5 GiB).
COPY_PART_SIZE = 512 * 1024 * 1024
# Where unpublished uploads live under the prefix (a dot-folder: never listed).
UPLOADS = ".wharf-uploads/"
# A reader's buffer: GETs are reopened only on a seek outside it.
READ_AHEAD = 1024 * 1024
# An object up to this size is read with one GET into memory: reading a wheel's metadata
# seeks three or four times (end of the archive, central directory, member), and each
# seek outside the buffer would be another request to the store.
WHOLE_OBJECT = READ_AHEAD


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


class RangedReader(io.RawIOBase):
    """A seekable read-only view of one object: a GET from the position on, reopened on a seek."""

    def __init__(self, client, bucket: str, key: str, size: int, body=None):
        self.client, self.bucket, self.key, self.size = client, bucket, key, size
        self.position = 0
        # ``body``: a GET of the whole object already open (read from the start on).
        self._body = body
        self._body_at = 0 if body is not None else -1

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
        self.chunks: list[bytes] = []  # what is not sent yet
        self.buffered = 0
        self.upload_id: str | None = None  # the multipart upload to self.tmp
        self.parts: list[dict] = []
        self.sealed = False  # self.tmp is a complete object
        self.published = False

    def write(self, data: bytes) -> int:
        if self.sealed or self.published:
            raise ValueError("the file was already read back or published")
        self.chunks.append(bytes(data))
        self.buffered += len(data)
        self.size += len(data)
        if self.buffered >= PART_SIZE:
            self._send_part(self._take_buffered())
        return len(data)

    def _take_buffered(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks, self.buffered = [], 0
        return data

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
        if self.chunks:
            self._send_part(self._take_buffered())
        with translated(f"uploading {self.relpath}"):
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.tmp, UploadId=self.upload_id,
                                                  MultipartUpload={"Parts": self.parts})
        self.upload_id, self.sealed = None, True

    def open(self) -> tuple[BinaryIO, int]:
        if self.upload_id is None and not self.sealed:
            return io.BytesIO(b"".join(self.chunks)), self.size  # small: still in memory
        self._seal()
        reader = RangedReader(self.client, self.bucket, self.tmp, self.size)
        return io.BufferedReader(reader, READ_AHEAD), self.size

    def publish(self, *, replace: bool = False) -> str:
        condition = {} if replace else {"IfNoneMatch": "*"}
        what = f"publishing {self.relpath}"
        if self.upload_id is None and not self.sealed:
            with translated(what):
                self.client.put_object(Bucket=self.bucket, Key=self.target, Body=b"".join(self.chunks), **condition)
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
                done = self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.target, UploadId=upload_id,
                                                             MultipartUpload={"Parts": parts}, **condition)
                # Some stores (SeaweedFS 4.x, seen) check If-None-Match on completion apart
                # from the commit, so two racing completions can both succeed, the later
                # replacing the earlier: the one whose object is not there has lost.
                if condition and self.client.head_object(Bucket=self.bucket, Key=self.target)["ETag"] != done["ETag"]:
                    raise FileExistsError(f"{what}: another upload of this name was published first")
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.target, UploadId=upload_id)
            raise

    def discard(self) -> None:
        """Remove what was written but not (or no longer needed once) published."""
        self.chunks, self.buffered = [], 0
        with contextlib.suppress(Exception):
            if self.upload_id is not None:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.tmp, UploadId=self.upload_id)
                self.upload_id = None
            if self.sealed:
                self.client.delete_object(Bucket=self.bucket, Key=self.tmp)
                self.sealed = False
