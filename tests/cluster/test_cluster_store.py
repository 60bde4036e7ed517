"""The cluster's atomic steps (cluster/store.py) against the test's real redis-server: expiry
claimed once, a refreshed record surviving its old deadline, fencing of dialog writes, claims,
adoption refused while a lease lives and each dialog going to exactly one adopter."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from cluster_env import RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from storage_records import binding, subscription

from presenced.cluster.store import ClusterStore, NotOwnerError

T0 = 1_700_000_000.0


async def store(redis_server: RedisServer, node: str) -> ClusterStore:
    s = ClusterStore(redis_server.url, "t:", node)
    await s.open()
    return s


async def test_expiry_is_claimed_once_and_a_refresh_survives(redis_server: RedisServer) -> None:
    a, b = await store(redis_server, "a"), await store(redis_server, "b")
    try:
        old = binding(expires_at=T0 + 10)
        await a.put_binding(old)
        assert await a.expire_binding(old.aor, old.contact, T0 + 5) == old  # not due yet
        assert await a.expire_binding(old.aor, old.contact, T0 + 10) is None  # claimed
        assert await b.load_bindings() == []
        # Refreshed by b while a's timer for the old deadline fires: the new record survives.
        new = binding(expires_at=T0 + 100)
        await b.put_binding(new)
        assert await a.expire_binding(new.aor, new.contact, T0 + 10) == new
        assert await a.load_bindings() == [new]
    finally:
        await a.close()
        await b.close()


async def test_dialog_writes_are_fenced_by_ownership(redis_server: RedisServer) -> None:
    a, b = await store(redis_server, "a"), await store(redis_server, "b")
    try:
        sub = subscription("d1")
        await a.put_subscription(sub)
        assert [s.id for s in await a.load_subscriptions()] == ["d1"]
        assert await b.claim("d1") == sub
        assert await b.claim("nope") is None
        try:
            await a.put_subscription(sub)
            raise AssertionError("a wrote a dialog it no longer owns")
        except NotOwnerError:
            pass
        await a.delete_subscription("d1")  # refused quietly: b's record stays
        assert await a.load_subscriptions() == []
        assert [s.id for s in await b.load_subscriptions()] == ["d1"]
    finally:
        await a.close()
        await b.close()


async def test_adoption_waits_for_the_lease_and_splits_the_dialogs(redis_server: RedisServer) -> None:
    dead, b, c = [await store(redis_server, n) for n in ("dead", "b", "c")]
    try:
        for i in range(300):
            await dead.put_subscription(subscription(f"s{i}"))
        await dead.client.set(dead.lease_key("dead"), "x", px=60_000)
        assert await b.adopt("dead") is None  # its lease lives
        await dead.client.delete(dead.lease_key("dead"))

        async def drain(s: ClusterStore) -> list[str]:
            got: list[str] = []
            while True:
                out = await s.adopt("dead", batch=25)
                assert out is not None
                got += [r.id for r in out[1]]
                if out[0] == 0:
                    return got
        first, second = await asyncio.gather(drain(b), drain(c))
        assert sorted(first + second) == sorted(f"s{i}" for i in range(300))
        assert not set(first) & set(second)
        assert len(await b.load_subscriptions()) == len(first)
        assert await dead.load_subscriptions() == []
    finally:
        for s in (dead, b, c):
            await s.close()


async def test_ended_watchers_are_kept_per_node(redis_server: RedisServer) -> None:
    from presenced.pa.records import EndedWatchers

    a, b = await store(redis_server, "a"), await store(redis_server, "b")
    try:
        bob = ("i1", "sip:bob@example.com", "terminated", "rejected")
        ended = EndedWatchers("alice@example.com", (bob,), T0)
        await a.put_ended_watchers(ended)
        assert await a.load_ended_watchers() == [ended]
        assert await b.load_ended_watchers() == []  # b's winfo lists b's dialogs only
        await a.delete_ended_watchers("alice@example.com")
        assert await a.load_ended_watchers() == []
    finally:
        await a.close()
        await b.close()
