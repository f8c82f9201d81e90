"""Fixtures of the robustness tests: the figures they measure, and a test CA for the stacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.conftest import LocalCA, make_test_ca
from tests.support import ROOT

FIGURES_FILE = ROOT / "test-artifacts" / "robustness.json"


class Figures:
    """What the tests measured (requests tried, faults injected, recovery times, memory), by test."""

    def __init__(self) -> None:
        self.values: dict[str, dict] = {}

    def record(self, name: str, values: dict) -> None:
        self.values.setdefault(name, {}).update(values)


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return make_test_ca(tmp_path_factory.mktemp("robustness-ca"))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _FIGURES.values:
        return
    terminalreporter.section("robustness figures")
    for name, values in _FIGURES.values.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
    # Kept for the README's reliability section; merged with figures of earlier runs.
    try:
        FIGURES_FILE.parent.mkdir(exist_ok=True)
        old = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.is_file() else {}
        old.update(_FIGURES.values)
        FIGURES_FILE.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    except (OSError, ValueError):
        pass


# --- one public stack (wharf stack: supervisord, gunicorn, nginx) shared by the stack tests ------
@pytest.fixture(scope="session")
def public_stack(tmp_path_factory: pytest.TempPathFactory):
    """``wharf stack`` with its own local CA; uploads need alice (password harness.PASSWORD)."""
    from app.auth import set_password
    from tests.deploy.test_render import NGINX
    from tests.deploy.test_stack import Stack
    from tests.support import make_wheel

    from .harness import PASSWORD

    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (apt-get install nginx)")
    root = tmp_path_factory.mktemp("public-stack") / "stack"
    make_wheel(root / "packages", "alpha", "1.0")
    for n in range(5):
        make_wheel(root / "packages", f"seed-{n}", "1.0", padding=32 * 1024)
    users = root.parent / "htpasswd"
    set_password(users, "alice", PASSWORD, rounds=4)
    stack = Stack(root, "--password-file", str(users))
    yield stack
    stack.stop()
