"""Ended watchers kept for offline winfo (RFC 3857) in the memory and SQLite backends; Redis
and the cluster store: tests/unit/test_storage_redis.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from presenced.pa.records import EndedWatchers
from presenced.storage.base import Storage
from presenced.storage.memory import MemoryStorage
from presenced.storage.sqlite import SqliteStorage

BOB = ("i1", "sip:bob@example.com", "terminated", "rejected")
CAROL = ("i2", "sip:carol@example.com", "waiting", "timeout")


@pytest.fixture(params=["memory", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store: Storage = (
        MemoryStorage() if request.param == "memory" else SqliteStorage(tmp_path / "e.db")
    )
    await store.open()
    yield store
    await store.close()


async def test_ended_watchers_put_replace_delete_load(storage: Storage) -> None:
    first = EndedWatchers("alice@example.com", (BOB,), 1_900_000_000.5)
    await storage.put_ended_watchers(first)
    assert await storage.load_ended_watchers() == [first]
    both = EndedWatchers("alice@example.com", (BOB, CAROL), 1_900_000_001.0)
    await storage.put_ended_watchers(both)
    await storage.put_ended_watchers(EndedWatchers("dave@example.com", (CAROL,), 2.0))
    await storage.delete_ended_watchers("dave@example.com")
    await storage.delete_ended_watchers("nobody@example.com")  # absent: no error
    assert await storage.load_ended_watchers() == [both]


async def test_sqlite_ended_watchers_survive_reopen(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "e.db")
    await store.open()
    ended = EndedWatchers("alice@example.com", (BOB, CAROL), 5.0)
    await store.put_ended_watchers(ended)
    await store.close()
    again = SqliteStorage(tmp_path / "e.db")
    await again.open()
    assert await again.load_ended_watchers() == [ended]
    await again.close()
