"""A private PostgreSQL cluster for tests: initdb in a temporary directory, a free loopback port.

``initdb`` refuses to run as root, so the cluster belongs to the ``postgres`` user when
the tests run as root. ``PostgresServer.stop()``/``start()`` let fault tests kill it and
bring it back on the same port and data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.support import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresServer:
    """One cluster on 127.0.0.1:<port>, user ``wharf`` with trust authentication."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="wharf-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.base.chmod(0o755)
        subprocess.run(_as_owner([str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "wharf",
                                  "--no-sync", "-E", "UTF8"]), check=True, capture_output=True)

    def start(self) -> None:
        subprocess.run(_as_owner([str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.base / "log"),
                                  "-o", f"-p {self.port} -k {self.base} -h 127.0.0.1 -c fsync=off", "start"]),
                       check=True, capture_output=True, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_owner([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
                       capture_output=True, timeout=60)

    def kill(self) -> None:
        """Stop the server at once, as a crash would (the postmaster gets SIGKILL)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Its backends notice the postmaster is gone and exit; a restart waits for them.
        self.stop("immediate")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://wharf@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on this cluster; its URL."""
        import psycopg

        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
