"""Unit-test fixtures: Wharf apps on temporary paths, closed after each test.

``make_app(**settings)`` builds an app with ``create_app`` on the test's ``packages``
directory (or the directories given) and closes it afterwards, whatever happened:
closing stops the catalog's background watcher and releases its lock and database.
``closing(thing)`` does the same for anything else a test opens that has ``close()``
(catalogs built by hand).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import bottle
import pytest

from app import Settings, create_app
from app.auth import set_password


class Closable(Protocol):
    def close(self) -> None: ...


class Closer:
    """What a test opened, closed last-opened first when the test ends."""

    def __init__(self) -> None:
        self.opened: list[Closable] = []

    def __call__(self, thing):
        self.opened.append(thing)
        return thing

    def close(self) -> None:
        while self.opened:
            self.opened.pop().close()


class AppMaker:
    """Makes index apps on temporary paths; ``close()`` closes every app made so far."""

    def __init__(self, tmp_path: Path, packages: Path, closer: Closer) -> None:
        self.tmp_path, self.packages, self.closer = tmp_path, packages, closer
        self.apps: list[bottle.Bottle] = []

    def __call__(self, packages: Path | tuple[Path, ...] | None = None, *,
                 users: Mapping[str, str] | None = None, watch: bool = False, **settings: Any) -> bottle.Bottle:
        """An app on ``packages`` (default: the test's packages dir) with ``settings`` on top.

        ``users`` ({"alice": "pw"}) are written to a temporary htpasswd file (bcrypt at the
        lowest cost, to keep tests fast) that becomes the password file. ``watch`` starts
        the catalog's background watcher, as a server does.
        """
        roots = packages if isinstance(packages, tuple) else (packages or self.packages,)
        if users is not None:
            htpasswd = self.tmp_path / "htpasswd"
            for user, password in users.items():
                set_password(htpasswd, user, password, rounds=4)
            settings.setdefault("password_file", str(htpasswd))
        app = create_app(Settings(packages=roots, **settings).validated(), watch=watch)
        self.apps.append(app)
        self.closer(app.config["wharf.catalog"])
        return app

    def close(self) -> None:
        """Close every app made so far (before making one that replaces them)."""
        while self.apps:
            self.apps.pop().config["wharf.catalog"].close()


@pytest.fixture
def closing() -> Iterator[Closer]:
    closer = Closer()
    yield closer
    closer.close()


@pytest.fixture
def make_app(tmp_path: Path, packages: Path, closing: Closer) -> AppMaker:
    return AppMaker(tmp_path, packages, closing)
