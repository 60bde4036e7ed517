"""The cluster's pipelined Redis connection (cluster/link.py) against a real redis-server:
commands of one event-loop turn in one write with replies matched in order, error replies as
values, AUTH and SELECT from the URL, a stopped (SIGSTOP) or restarted Redis failing the
waiting callers and the next call reconnecting, the feed's messages in order (a lagging reader
pausing the socket, not growing a queue), and a store
whose scripts Redis forgot loading them again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import hiredis
import pytest
from cluster_env import RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from storage_records import binding

from presenced.cluster import link as link_module
from presenced.cluster.link import LinkDown, RedisFeed, RedisLink
from presenced.cluster.store import ClusterStore


async def test_one_turns_commands_leave_in_one_write_and_replies_keep_their_order(
        redis_server: RedisServer) -> None:
    link = RedisLink(redis_server.url)
    try:
        assert await link.call("PING") == b"PONG"
        writes = link.writes
        replies = await asyncio.gather(*(link.call("INCR", "n") for _ in range(200)))
        assert replies == list(range(1, 201))
        assert link.writes == writes + 1
        # Calls made while earlier ones are still in flight get their own replies.
        first = asyncio.ensure_future(link.call("SET", "k", b"v1"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(link.call("GET", "k"))
        assert await first == b"OK" and await second == b"v1"
        assert await link.call("GET", "missing") is None
    finally:
        await link.close()


async def test_an_error_reply_is_a_value_and_the_link_goes_on(redis_server: RedisServer) -> None:
    link = RedisLink(redis_server.url)
    try:
        bad, good = await asyncio.gather(link.call("NOSUCHCOMMAND"), link.call("ECHO", b"x"))
        assert isinstance(bad, hiredis.ReplyError) and "unknown command" in str(bad)
        assert good == b"x"
    finally:
        await link.close()
    with pytest.raises(LinkDown):
        await link.call("PING")  # closed for good


async def test_password_and_database_come_from_the_url(redis_server: RedisServer) -> None:
    admin = RedisLink(redis_server.url)
    try:
        assert await admin.call("CONFIG", "SET", "requirepass", "s3cret") == b"OK"
        wrong = RedisLink(f"redis://:nope@127.0.0.1:{redis_server.port}/0")
        with pytest.raises(LinkDown, match="refused AUTH"):
            await wrong.call("PING")
        await wrong.close()
        db2 = RedisLink(f"redis://:s3cret@127.0.0.1:{redis_server.port}/2")
        assert await db2.call("SET", "where", b"db2") == b"OK"
        db0 = RedisLink(f"redis://:s3cret@127.0.0.1:{redis_server.port}/0")
        assert await db0.call("GET", "where") is None
        assert await db2.call("GET", "where") == b"db2"
        await db0.close()
        await db2.close()
    finally:
        await admin.close()
    with pytest.raises(ValueError, match="redis:// only"):
        RedisLink("rediss://127.0.0.1:6379/0")


async def test_a_silent_redis_fails_the_waiting_calls_and_the_link_recovers(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_module, "WATCH_INTERVAL", 0.2)
    link = RedisLink(redis_server.url, command_timeout=1.0)
    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    try:
        assert await link.call("PING") == b"PONG"
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(LinkDown, match="no reply from Redis"):
                await asyncio.wait_for(link.call("PING"), 10)
            assert time.monotonic() - t0 < 3
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await link.call("PING") == b"PONG"  # a new connection
    finally:
        await link.close()


async def test_a_restarted_redis_is_reached_again(redis_server: RedisServer) -> None:
    link = RedisLink(redis_server.url)
    try:
        assert await link.call("SET", "kept", b"1") == b"OK"
        redis_server.stop()
        with pytest.raises(LinkDown):
            await link.call("PING")
        with pytest.raises(LinkDown, match="cannot connect"):
            await link.call("PING")
        redis_server.start()
        assert await link.call("PING") == b"PONG"
    finally:
        await link.close()


async def test_the_feed_delivers_in_order_and_reports_its_loss(redis_server: RedisServer) -> None:
    feed = RedisFeed(redis_server.url)
    link = RedisLink(redis_server.url)
    try:
        await feed.subscribe("chan")
        sent = [f"m{i}".encode() for i in range(50)]
        assert await asyncio.gather(*(link.call("PUBLISH", "chan", m) for m in sent)) == [1] * 50
        assert [await feed.next() for _ in sent] == sent
        assert await link.call("PUBLISH", "chan", b"last") == 1
        await asyncio.sleep(0.2)  # received before the loss: still delivered
        redis_server.stop()
        assert await asyncio.wait_for(feed.next(), 5) == b"last"
        with pytest.raises(LinkDown):
            await asyncio.wait_for(feed.next(), 5)
    finally:
        await feed.close()
        await link.close()


async def test_a_lagging_feed_reader_stops_reading_and_loses_nothing(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_module, "FEED_PAUSE", 4)
    monkeypatch.setattr(link_module, "FEED_RESUME", 1)
    feed = RedisFeed(redis_server.url)
    link = RedisLink(redis_server.url)
    try:
        await feed.subscribe("big")
        sent = [bytes([65 + i % 26]) * 65536 + str(i).encode() for i in range(50)]
        await asyncio.gather(*(link.call("PUBLISH", "big", m) for m in sent))
        await asyncio.sleep(0.5)  # nobody takes: the link reads up to the pause and stops
        assert feed._paused and len(feed._messages) < len(sent)
        got = [await asyncio.wait_for(feed.next(), 5) for _ in sent]
        assert got == sent and not feed._paused
    finally:
        await feed.close()
        await link.close()


async def test_a_store_loads_its_scripts_again_when_redis_forgot_them(
        redis_server: RedisServer) -> None:
    store = ClusterStore(redis_server.url, "t:", "a")
    await store.open()
    try:
        assert store.link is not None
        assert await store.link.call("SCRIPT", "FLUSH") == b"OK"
        b = binding()
        await store.put_binding(b)
        assert await store.load_bindings() == [b]
    finally:
        await store.close()
