"""Both store backends behind one fixture: every test in test_shared_suite.py runs on each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rtsep.store.base import SessionStore


@dataclass
class Backend:
    """Opens stores on one storage (a data dir, a database) as separate processes would."""

    name: str
    location: str
    opened: list[SessionStore] = field(default_factory=list)

    def open(self, replica_id: str = "replica-a") -> SessionStore:
        if self.name == "sqlite":
            from rtsep.store.sqlite import SqliteSessionStore

            store: SessionStore = SqliteSessionStore(Path(self.location))
        else:
            from rtsep.store.postgres import PostgresSessionStore

            store = PostgresSessionStore(self.location, replica_id=replica_id, background=False)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        b = Backend("sqlite", str(tmp_path / "data"))
    else:
        b = Backend("postgresql", request.getfixturevalue("postgres").create_database())
    yield b
    b.close_all()
