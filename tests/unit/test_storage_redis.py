"""Redis backend against a real redis-server: the same behaviours as the memory/SQLite tests.

One throw-away redis-server (no RDB, no AOF, its own temp dir) runs for the module on a free
127.0.0.1 port; each test gets its own key prefix, so tests never see each other's records.
Without /usr/bin/redis-server the module is skipped locally and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from storage_records import binding, publication, subscription

from presenced.pa.records import Publication
from presenced.storage import StorageClosedError, StorageError, open_storage
from presenced.storage.redis import DEFAULT_PREFIX, RedisStorage, redact_url, split_prefix

# --- the redis-server fixture ---------------------------------------------------------------------

_REDIS_SERVER = "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = shutil.which("redis-server") or (
        _REDIS_SERVER if os.path.exists(_REDIS_SERVER) else None
    )
    if server is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is missing in CI: install the Debian redis-server package")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _answers_ping(port):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"redis-server exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not answer PING within 10 s")
            time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


_prefixes = itertools.count()


@pytest.fixture
def url(redis_port: int) -> str:
    return f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture
def prefix() -> str:
    return f"t{os.getpid()}-{next(_prefixes)}:"


@pytest.fixture
async def storage(url: str, prefix: str) -> AsyncIterator[RedisStorage]:
    store = RedisStorage(url, prefix=prefix)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def raw_client(url: str) -> Any:
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url)


# --- record round-trips (same behaviours as tests/unit/test_storage.py) ---------------------------


async def test_binding_put_replace_delete_load(storage: RedisStorage) -> None:
    await storage.put_binding(binding())
    assert await storage.load_bindings() == [binding()]

    refreshed = binding(expires_at=1_900_003_600.0, cseq=8, q=None, user_agent=None)
    await storage.put_binding(refreshed)  # same (aor, contact): replaces
    other = binding("sip:alice@192.0.2.2:5060")
    await storage.put_binding(other)
    loaded = sorted(await storage.load_bindings(), key=lambda b: b.contact)
    assert loaded == [refreshed, other]

    await storage.delete_binding("alice@example.com", "sip:alice@192.0.2.1:5060")
    await storage.delete_binding("alice@example.com", "sip:nobody@192.0.2.9")  # absent: no error
    assert await storage.load_bindings() == [other]


async def test_binding_key_is_aor_and_contact_not_contact_alone(storage: RedisStorage) -> None:
    # The same contact registered under two AORs is two bindings (RFC 3261 §10.3).
    await storage.put_binding(binding())
    await storage.put_binding(binding(aor="bob@example.com"))
    assert sorted(b.aor for b in await storage.load_bindings()) == [
        "alice@example.com",
        "bob@example.com",
    ]


async def test_subscription_put_replace_delete_load_keeps_every_field(
    storage: RedisStorage,
) -> None:
    sub = subscription()
    no_routes = subscription("cid-2;a;b", route_set=(), event_id=None, state="active")
    await storage.put_subscription(sub)
    await storage.put_subscription(no_routes)
    loaded = sorted(await storage.load_subscriptions(), key=lambda s: s.id)
    assert loaded == [sub, no_routes]
    assert type(loaded[0].route_set) is tuple
    assert loaded[0].route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert loaded[1].route_set == ()

    bumped = msgspec.structs.replace(sub, local_cseq=4, version=5, state="active")
    await storage.put_subscription(bumped)
    assert sorted(await storage.load_subscriptions(), key=lambda s: s.id) == [bumped, no_routes]

    await storage.delete_subscription(sub.id)
    await storage.delete_subscription("absent")
    assert await storage.load_subscriptions() == [no_routes]


async def test_publication_put_replace_delete_load_keeps_binary_body(
    storage: RedisStorage,
) -> None:
    pub = publication()
    await storage.put_publication(pub)
    loaded = await storage.load_publications()
    assert loaded == [pub]
    assert type(loaded[0].body) is bytes
    assert loaded[0].body == b"<?xml version='1.0'?>\x00\xff\xfe<presence/>"
    assert loaded[0].expires_at == 1_900_000_200.0

    modified = publication(body=bytes(range(256)) * 64, expires_at=1_900_000_300.125)
    await storage.put_publication(modified)
    assert await storage.load_publications() == [modified]

    await storage.delete_publication("etag-1")
    await storage.delete_publication("absent")
    assert await storage.load_publications() == []


async def test_put_publication_with_replaces_swaps_the_etag(storage: RedisStorage) -> None:
    # RFC 3903 §4.4: a refresh/modify answers with a new entity-tag; the old one is gone.
    await storage.put_publication(publication("old"))
    await storage.put_publication(publication("bystander", presentity="bob@example.com"))
    await storage.put_publication(publication("new"), replaces="old")
    assert sorted(p.etag for p in await storage.load_publications()) == ["bystander", "new"]


async def test_put_publication_replacing_itself_keeps_it(storage: RedisStorage) -> None:
    await storage.put_publication(publication("same"))
    await storage.put_publication(publication("same", body=b"v2"), replaces="same")
    assert await storage.load_publications() == [publication("same", body=b"v2")]


async def test_publication_replace_is_never_seen_half_done(
    storage: RedisStorage, url: str, prefix: str
) -> None:
    # RFC 3903 §4.4 via MULTI/EXEC: a reader on another connection must always see exactly one
    # ETag for the presentity -- never both (HSET first) nor none (HDEL first, then HSET).
    reader = RedisStorage(url, prefix=prefix)
    await reader.open()
    try:
        await storage.put_publication(publication("e0"))
        done = False
        seen: list[int] = []

        async def swap() -> None:
            nonlocal done
            for i in range(1, 300):
                await storage.put_publication(publication(f"e{i}"), replaces=f"e{i - 1}")
            done = True

        async def watch() -> None:
            while not done:
                seen.append(len(await reader.load_publications()))

        await asyncio.gather(swap(), watch())
        assert len(seen) > 20  # the reader really did interleave with the writer
        assert set(seen) == {1}
        assert [p.etag for p in await reader.load_publications()] == ["e299"]
    finally:
        await reader.close()


async def test_load_returns_a_copy(storage: RedisStorage) -> None:
    await storage.put_binding(binding())
    first = await storage.load_bindings()
    first.clear()
    assert len(await storage.load_bindings()) == 1


async def test_thousand_gathered_puts_all_land(storage: RedisStorage) -> None:
    await asyncio.gather(
        *(storage.put_binding(binding(f"sip:alice@192.0.2.1:{5000 + i}")) for i in range(1000))
    )
    await asyncio.gather(
        *(storage.put_subscription(subscription(f"cid-{i};l;r")) for i in range(1000))
    )
    # More than one HSCAN page (scan_count 1000, and hashes this big are not listpacks).
    assert len(await storage.load_bindings()) == 1000
    assert len(await storage.load_subscriptions()) == 1000


async def test_load_spanning_many_scan_pages_returns_each_record_once(
    url: str, prefix: str
) -> None:
    store = RedisStorage(url, prefix=prefix, scan_count=7)
    await store.open()
    try:
        await asyncio.gather(*(store.put_publication(publication(f"e{i}")) for i in range(500)))
        loaded = await store.load_publications()
        assert sorted(p.etag for p in loaded) == sorted(f"e{i}" for i in range(500))
    finally:
        await store.close()


async def test_records_survive_close_and_reopen(url: str, prefix: str) -> None:
    store = RedisStorage(url, prefix=prefix)
    await store.open()
    await store.put_binding(binding())
    await store.put_subscription(subscription())
    await store.put_publication(publication())
    await store.close()

    store = RedisStorage(url, prefix=prefix)
    await store.open()
    try:
        assert await store.load_bindings() == [binding()]
        assert await store.load_subscriptions() == [subscription()]
        assert await store.load_publications() == [publication()]
    finally:
        await store.close()


async def test_same_instance_can_reopen_after_close(storage: RedisStorage) -> None:
    await storage.put_binding(binding())
    await storage.close()
    await storage.open()
    assert await storage.load_bindings() == [binding()]


async def test_write_after_close_raises_closed_error(storage: RedisStorage) -> None:
    await storage.close()
    await storage.close()  # idempotent
    with pytest.raises(StorageClosedError, match="not open"):
        await storage.put_binding(binding())
    with pytest.raises(StorageClosedError):
        await storage.load_publications()
    with pytest.raises(StorageClosedError):
        await storage.put_publication(publication("b"), replaces="a")


async def test_open_twice_is_an_error(storage: RedisStorage) -> None:
    with pytest.raises(StorageError, match="already open"):
        await storage.open()


# --- key layout and prefixes -----------------------------------------------------------------------


async def test_records_live_in_one_hash_per_type_under_the_prefix(
    storage: RedisStorage, url: str, prefix: str
) -> None:
    await storage.put_binding(binding())
    await storage.put_subscription(subscription())
    await storage.put_publication(publication())
    raw = await raw_client(url)
    try:
        assert sorted(await raw.keys(f"{prefix}*")) == [
            f"{prefix}bindings".encode(),
            f"{prefix}publications".encode(),
            f"{prefix}subscriptions".encode(),
        ]
        assert await raw.hkeys(f"{prefix}bindings") == [
            b"alice@example.com\x00sip:alice@192.0.2.1:5060"
        ]
        assert await raw.hkeys(f"{prefix}subscriptions") == [b"cid-1;tagL;tagR"]
        value = await raw.hget(f"{prefix}publications", "etag-1")
        assert msgspec.msgpack.decode(value, type=Publication) == publication()
    finally:
        await raw.aclose()


async def test_different_prefixes_do_not_see_each_other(url: str, prefix: str) -> None:
    a, b = RedisStorage(url, prefix=prefix + "a:"), RedisStorage(url, prefix=prefix + "b:")
    await a.open()
    await b.open()
    try:
        await a.put_binding(binding())
        assert await b.load_bindings() == []
        assert await a.load_bindings() == [binding()]
    finally:
        await a.close()
        await b.close()


async def test_undecodable_record_gives_storage_error(
    storage: RedisStorage, url: str, prefix: str
) -> None:
    raw = await raw_client(url)
    try:
        await raw.hset(f"{prefix}publications", "junk", b"\xc1 not msgpack")
    finally:
        await raw.aclose()
    with pytest.raises(StorageError, match="undecodable record"):
        await storage.load_publications()


async def test_redis_command_error_becomes_storage_error(
    storage: RedisStorage, url: str, prefix: str
) -> None:
    raw = await raw_client(url)
    try:
        await raw.set(f"{prefix}bindings", "a string, not a hash")
    finally:
        await raw.aclose()
    with pytest.raises(StorageError, match=r"put_binding.*WRONGTYPE"):
        await storage.put_binding(binding())


# --- factory, URLs and connection errors ----------------------------------------------------------


async def test_open_storage_builds_redis_backend_with_url_prefix(
    url: str, prefix: str, tmp_path: Path
) -> None:
    store = open_storage(f"{url}?prefix={prefix}", tmp_path)
    assert isinstance(store, RedisStorage)
    assert store.prefix == prefix
    await store.open()
    try:
        await store.put_binding(binding())
    finally:
        await store.close()
    direct = RedisStorage(url, prefix=prefix)
    await direct.open()
    try:
        assert await direct.load_bindings() == [binding()]
    finally:
        await direct.close()


def test_default_prefix_and_url_helpers() -> None:
    assert RedisStorage("redis://h:6379/0").prefix == DEFAULT_PREFIX == "presenced:"
    assert split_prefix("redis://h/0?prefix=x:&ssl_cert_reqs=none") == (
        "redis://h/0?ssl_cert_reqs=none",
        "x:",
    )
    assert split_prefix("redis://h/0") == ("redis://h/0", None)
    assert redact_url("redis://u:s3cret@h:1/2") == "redis://u:***@h:1/2"
    assert redact_url("redis://h:1/2") == "redis://h:1/2"


async def test_unreachable_url_gives_clear_error_with_password_hidden() -> None:
    port = _free_port()  # nothing listens here
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    store = RedisStorage(url)
    with pytest.raises(
        StorageError, match=rf"cannot connect to Redis at redis://:\*\*\*@127\.0\.0\.1:{port}/0"
    ) as info:
        await store.open()
    assert "s3cret" not in str(info.value)
    with pytest.raises(StorageClosedError):
        await store.put_binding(binding())


async def test_missing_redis_package_says_install_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes `import redis.asyncio` raise ImportError, as when the
    # optional dependency is not installed.
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(StorageError, match=r"install presenced\[redis\]"):
        await RedisStorage("redis://127.0.0.1:1/0").open()


async def test_rules_put_replace_delete_load(storage: RedisStorage) -> None:
    from presenced.pa.records import RulesDocument

    doc = RulesDocument("alice@example.com", b"<cp:ruleset/>\x00\xff", "e1", 1_900_000_000.25)
    await storage.put_rules(doc)
    assert await storage.load_rules() == [doc]
    newer = msgspec.structs.replace(doc, document=b"<x/>", etag="e2")
    await storage.put_rules(newer)
    await storage.put_rules(RulesDocument("bob@example.com", b"<y/>", "e3", 1.0))
    assert sorted(await storage.load_rules(), key=lambda d: d.aor)[0] == newer
    await storage.delete_rules("bob@example.com")
    await storage.delete_rules("nobody@example.com")
    assert await storage.load_rules() == [newer]


async def test_ended_watchers_put_replace_delete_load(storage: RedisStorage) -> None:
    from presenced.pa.records import EndedWatchers

    bob = ("i1", "sip:bob@example.com", "terminated", "rejected")
    ended = EndedWatchers("alice@example.com", (bob,), 1_900_000_000.25)
    await storage.put_ended_watchers(ended)
    await storage.put_ended_watchers(EndedWatchers("dave@example.com", (bob,), 1.0))
    await storage.delete_ended_watchers("dave@example.com")
    await storage.delete_ended_watchers("nobody@example.com")
    assert await storage.load_ended_watchers() == [ended]
