"""Rules documents in the memory and SQLite backends (Redis: tests/unit/test_storage_redis.py),
and the rules service over them: etags, `expect` (RFC 4825 §7.11), validation, reload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from presenced.pa.policy.evaluate import Policy
from presenced.pa.policy.rules import simple_rules
from presenced.pa.records import RulesDocument
from presenced.services.ports import RulesInvalid, RulesPreconditionFailed
from presenced.services.rules import RulesService
from presenced.storage.base import Storage
from presenced.storage.memory import MemoryStorage
from presenced.storage.sqlite import SqliteStorage

ALLOW_BOB = simple_rules([("a", "allow", ["bob@example.com"])])


@pytest.fixture(params=["memory", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store: Storage = (
        MemoryStorage() if request.param == "memory" else SqliteStorage(tmp_path / "r.db")
    )
    await store.open()
    yield store
    await store.close()


async def test_rules_put_replace_delete_load(storage: Storage) -> None:
    doc = RulesDocument("alice@example.com", b"<cp:ruleset/>\x00\xff", "e1", 1_900_000_000.25)
    await storage.put_rules(doc)
    assert await storage.load_rules() == [doc]
    newer = RulesDocument("alice@example.com", b"<x/>", "e2", 1_900_000_001.0)
    await storage.put_rules(newer)
    await storage.put_rules(RulesDocument("bob@example.com", b"<y/>", "e3", 1.0))
    await storage.delete_rules("bob@example.com")
    await storage.delete_rules("nobody@example.com")  # absent: no error
    assert await storage.load_rules() == [newer]


async def test_sqlite_rules_survive_reopen(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "r.db")
    await store.open()
    doc = RulesDocument("alice@example.com", ALLOW_BOB, "e1", 5.0)
    await store.put_rules(doc)
    await store.close()
    again = SqliteStorage(tmp_path / "r.db")
    await again.open()
    assert await again.load_rules() == [doc]
    await again.close()


class Applied:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, presentity: str) -> None:
        self.calls.append(presentity)


async def test_put_get_delete_with_etags_and_apply() -> None:
    storage = MemoryStorage()
    await storage.open()
    applied = Applied()
    policy = Policy()
    rules = RulesService(storage, policy, applied)
    assert await rules.get_rules("alice@example.com") is None
    etag = await rules.put_rules("sip:alice@Example.COM", ALLOW_BOB)
    assert await rules.get_rules("alice@example.com") == (ALLOW_BOB, etag)
    assert applied.calls == ["alice@example.com"]
    assert policy.has_rules("alice@example.com")
    assert [d.aor for d in await storage.load_rules()] == ["alice@example.com"]
    second = await rules.put_rules("alice@example.com", ALLOW_BOB, expect=etag)
    assert second != etag  # a changed resource gets a new entity tag
    assert await rules.delete_rules("alice@example.com", expect=second) is True
    assert await rules.delete_rules("alice@example.com") is False
    assert not policy.has_rules("alice@example.com")
    assert await storage.load_rules() == []


@pytest.mark.parametrize(("existing", "expect", "ok"), [
    (False, "", True), (True, "", False), (False, "*", False), (True, "*", True),
    (True, "stale", False), (False, "stale", False), (True, None, True), (False, None, True),
])
async def test_expect_follows_if_match_and_if_none_match(existing: bool, expect: str,
                                                         ok: bool) -> None:
    storage = MemoryStorage()
    await storage.open()
    rules = RulesService(storage, Policy())
    if existing:
        await rules.put_rules("alice@example.com", ALLOW_BOB)
    before = await rules.get_rules("alice@example.com")
    if ok:
        await rules.put_rules("alice@example.com", ALLOW_BOB, expect=expect)
    else:
        with pytest.raises(RulesPreconditionFailed):
            await rules.put_rules("alice@example.com", ALLOW_BOB, expect=expect)
        assert await rules.get_rules("alice@example.com") == before


async def test_current_etag_satisfies_expect() -> None:
    storage = MemoryStorage()
    await storage.open()
    rules = RulesService(storage, Policy())
    etag = await rules.put_rules("alice@example.com", ALLOW_BOB)
    with pytest.raises(RulesPreconditionFailed):
        await rules.delete_rules("alice@example.com", expect="other")
    assert await rules.delete_rules("alice@example.com", expect=etag)


@pytest.mark.parametrize("body", [
    b"not xml", b"<ruleset/>", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>',
    b'<cp:ruleset xmlns:cp="urn:ietf:params:xml:ns:common-policy"><cp:rule/></cp:ruleset>',
])
async def test_invalid_documents_are_refused_and_nothing_is_stored(body: bytes) -> None:
    storage = MemoryStorage()
    await storage.open()
    applied = Applied()
    rules = RulesService(storage, Policy(), applied)
    with pytest.raises(RulesInvalid) as info:
        await rules.put_rules("alice@example.com", body)
    assert info.value.detail
    assert await storage.load_rules() == [] and applied.calls == []


async def test_reload_applies_what_another_writer_stored() -> None:
    storage = MemoryStorage()
    await storage.open()
    applied = Applied()
    policy = Policy()
    rules = RulesService(storage, policy, applied)
    await rules.load()
    await storage.put_rules(RulesDocument("carol@example.com", ALLOW_BOB, "x1", 1.0))
    await rules.reload()
    assert applied.calls == ["carol@example.com"] and policy.has_rules("carol@example.com")
    await storage.delete_rules("carol@example.com")
    await rules.reload()
    assert applied.calls == ["carol@example.com"] * 2 and not policy.has_rules("carol@example.com")
