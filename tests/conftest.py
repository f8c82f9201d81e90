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
