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
