"""podman for the deploy tests, configured as ENVIRONMENT.md says works here.

Base images are expensive (debootstrap, ~40 s), so they are made once and kept under the
test cache (``WHARF_TEST_CACHE``, default ``~/.cache/wharf-test``): the Debian root
filesystem as a tarball and podman's storage. The paths and the lock files are the ones
tests/deploy/test_container.py uses, so whichever test runs first builds the base for
both.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("WHARF_TEST_CACHE") or Path.home() / ".cache" / "wharf-test")
BASE_TARBALL = CACHE / "debian-bookworm-minbase.tar"
# The name a Dockerfile's FROM uses, so the local base needs no registry.
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
# Fixed places: podman records its storage paths and refuses to run with others.
PODMAN_STORAGE = CACHE / "podman-storage"
PODMAN_RUN = Path(f"/tmp/wharf-test-podman-{os.getuid()}")


class Podman:
    """podman with its own config and storage; every call gets the same environment."""

    def __init__(self) -> None:
        PODMAN_RUN.mkdir(parents=True, exist_ok=True)
        PODMAN_STORAGE.mkdir(parents=True, exist_ok=True)
        containers_conf = PODMAN_RUN / "containers.conf"
        storage_conf = PODMAN_RUN / "storage.conf"
        _write_if_changed(containers_conf,
                          "[containers]\n"
                          'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n'
                          "[engine]\n"
                          'runtime = "runc"\n'
                          'cgroup_manager = "cgroupfs"\n'
                          'events_logger = "file"\n'
                          f'tmp_dir = "{PODMAN_RUN / "libpod"}"\n')
        _write_if_changed(storage_conf,
                          "[storage]\n"
                          'driver = "overlay"\n'
                          f'graphroot = "{PODMAN_STORAGE}"\n'
                          f'runroot = "{PODMAN_RUN / "runroot"}"\n')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("WHARF_", "DOCKER_", "COMPOSE_"))}
        self.env.update(CONTAINERS_CONF=str(containers_conf), CONTAINERS_STORAGE_CONF=str(storage_conf))

    def __call__(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def unusable(self) -> str | None:
        """Why podman cannot run containers here, or None."""
        if shutil.which("podman") is None:
            return "podman is not installed (apt-get install podman buildah runc)"
        try:
            info = self("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
        except subprocess.TimeoutExpired:
            return "podman info did not answer within 60 s"
        if info.returncode != 0:
            return f"podman info failed: {info.stderr.strip()[-500:]}"
        return None


def _write_if_changed(path: Path, text: str) -> None:
    # Another test process may be reading it right now: replace it only when needed, whole.
    if path.exists() and path.read_text() == text:
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def apt_mirror() -> str:
    """The Debian mirror apt uses here (debootstrap fetches the base from it)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        match = re.search(r"^URIs:\s*(\S+)", path.read_text(), re.M)
        if match and "security" not in match.group(1):
            return match.group(1)
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", listing.read_text(), re.M)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Two test runs (or two suites sharing the cache) must not build one thing twice."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base_tarball(scratch: Path) -> Path:
    """A minimal Debian bookworm root filesystem as a tarball, made once (~40 s)."""
    with cache_lock("base"):
        if BASE_TARBALL.exists():
            return BASE_TARBALL
        if shutil.which("debootstrap") is None:
            pytest.skip("debootstrap is not installed and no cached base image exists")
        rootfs = scratch / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), apt_mirror()],
                       check=True, capture_output=True, timeout=900)
        partial = BASE_TARBALL.with_suffix(".tar.partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
                       check=True, timeout=300)
        partial.rename(BASE_TARBALL)
        shutil.rmtree(rootfs, ignore_errors=True)
        return BASE_TARBALL


def ensure_base_image(podman: Podman, scratch: Path) -> str:
    """The Debian base as a podman image (imported from the cached tarball once)."""
    with cache_lock("base-image"):
        if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
            podman("import", "--quiet", str(ensure_base_tarball(scratch)), BASE_IMAGE)
    return BASE_IMAGE


# --- several containers that reach each other (tests/deploy/test_ansible_cluster.py) ---------
def ensure_image(podman: Podman, tag: str, containerfile: str, scratch: Path) -> str:
    """``tag`` built from ``containerfile`` (``{base}`` is the Debian base), once per cache."""
    lock = re.sub(r"\W+", "-", tag)
    with cache_lock(f"image-{lock}"):
        if podman("image", "exists", tag, check=False).returncode != 0:
            (scratch / "Containerfile").write_text(containerfile.format(base=ensure_base_image(podman, scratch)))
            podman("build", "--pull=never", "--tag", tag, str(scratch), timeout=900)
    return tag


@contextlib.contextmanager
def network(podman: Podman, name: str) -> Iterator[str]:
    """A bridge network of this test's own (no other test can tear it down), removed after."""
    podman("network", "create", name)
    try:
        yield name
    finally:
        podman("network", "rm", "--force", name, check=False)


def container_address(podman: Podman, container: str, network_name: str) -> str:
    """The IPv4 address ``container`` has on ``network_name``."""
    return podman("inspect", "--format", f"{{{{(index .NetworkSettings.Networks \"{network_name}\").IPAddress}}}}",
                  container).stdout.strip()
