from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import client_env


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    directory = tmp_path / "packages"
    directory.mkdir()
    return directory


@pytest.fixture
def clientenv(tmp_path: Path) -> dict[str, str]:
    return client_env(tmp_path / "client-home")


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL cluster for the whole session (tests/postgres.py)."""
    from tests.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def database_url(postgres) -> str:
    """A fresh, empty PostgreSQL database on the session's cluster."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory):
    """One real S3-compatible store (SeaweedFS) for the session; tests make their own buckets."""
    from tests.s3 import SeaweedFS

    store = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield store
    store.stop()


@pytest.fixture
def bucket(seaweedfs, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket on the session's SeaweedFS."""
    import re
    import secrets

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return seaweedfs.make_bucket(f"{name}-{secrets.token_hex(4)}")
