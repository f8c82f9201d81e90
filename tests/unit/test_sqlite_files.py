"""State databases opened by many processes at once: every one boots (no "database is locked")."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from app.policy.store import SQLitePolicyStore
from app.sqlite_files import open_sqlite
from app.tokens.sqlite import SQLiteTokenStore

pytestmark = pytest.mark.slow
PROCESSES, ROUNDS = 6, 8


def _open(kind: str, path: str, barrier, failures) -> None:
    barrier.wait()
    try:
        if kind == "policy":
            SQLitePolicyStore(Path(path)).status("demo")
        elif kind == "tokens":
            SQLiteTokenStore(Path(path)).get("nope")
        else:
            open_sqlite(Path(path), schema="CREATE TABLE IF NOT EXISTS t(x);").execute("SELECT count(*) FROM t")
    except Exception as exc:  # the failure is the finding
        failures.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("kind", ["plain", "policy", "tokens"])
def test_workers_starting_together_all_open_a_new_database(tmp_path: Path, kind: str):
    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    for round_ in range(ROUNDS):
        path = tmp_path / f"round-{round_}" / "state.sqlite3"
        barrier = context.Barrier(PROCESSES)
        processes = [context.Process(target=_open, args=(kind, str(path), barrier, failures)) for _ in range(PROCESSES)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
            assert process.exitcode == 0
    found = []
    while not failures.empty():
        found.append(failures.get())
    assert not found, found
