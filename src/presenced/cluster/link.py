"""One pipelined connection to Redis for the cluster's per-request writes.

Every REGISTER, PUBLISH and SUBSCRIBE a node answers waits for one Lua script in Redis. Through
redis-py's client each such call cost ~150 µs of our CPU (connection pool, retry wrapper,
timeout tasks, observability hooks, stream reader), more than the rest of the request; on this
link a round trip costs ~47 µs, 17 µs of it in user space and the rest the two system calls
(docs/performance.md "Seventh pass"). The
protocol itself is not ours: hiredis (a redis-py dependency) packs the commands and parses the
replies. What is here is the plumbing:

- Commands queued in one turn of the event loop go out in one write (the group commit), and
  any number of writes may be in flight: Redis answers in order, so replies are matched to
  their callers first in, first out.
- A reply that is an error comes back as a `hiredis.ReplyError` value for the caller to judge
  (NOSCRIPT, a script's own error); a lost, refused or silent connection raises `LinkDown`
  in every caller waiting on it. Silent means no reply within `command_timeout`: a watchdog
  checks the oldest command once a second and drops the connection.
- The next call after a loss connects again (one attempt shared by all callers).
- The feed reader that lags stops reading the socket past `FEED_PAUSE` queued messages (Redis
  then holds them, as its pub/sub output-buffer limit allows), so the queue stays bounded.

`RedisFeed` is the same connection subscribed to the change feed: every write a node makes is
announced there, and every node (the writer too) reads it. The rest of the cluster's Redis
traffic (loads, leases, adoption) stays on redis-py: it is not per request.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
from typing import Any, cast
from urllib.parse import unquote, urlsplit

WATCH_INTERVAL = 1.0  # seconds between watchdog checks of the oldest command
# Feed messages received and not yet taken: above PAUSE the socket is not read (Redis holds
# the rest, and drops a subscriber past its client-output-buffer-limit: the node resyncs),
# below RESUME it is read again.
FEED_PAUSE, FEED_RESUME = 10_000, 1_000


class LinkDown(ConnectionError):
    """Redis could not be reached, dropped the connection or stopped answering."""


class _Wire(asyncio.Protocol):
    """The connected socket: replies fed to hiredis, each handed to the oldest waiting caller."""

    def __init__(self, link: RedisLink, reader: Any) -> None:
        self.link = link
        self.reader = reader
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.link._waiting
        while True:
            try:
                reply = self.reader.gets()
            except Exception as exc:  # hiredis.ProtocolError: nothing after it can be trusted
                self.link._drop(self, f"unreadable reply from Redis: {exc}")
                return
            if reply is False:
                return
            if not self.link._push(reply):
                if not waiting:
                    self.link._drop(self, "Redis sent a reply nobody asked for")
                    return
                fut = waiting.popleft()[1]
                if not fut.done():  # its caller was cancelled meanwhile
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._drop(self, f"Redis closed the connection ({exc or 'end of stream'})")


class RedisLink:
    """Commands to one Redis (`redis://[USER:PASSWORD@]HOST[:PORT][/DB]`), pipelined."""

    def __init__(self, url: str, *, connect_timeout: float = 2.0,
                 command_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis":  # config.py admits redis:// only: no TLS, no socket path
            raise ValueError(f"the cluster's Redis link speaks redis:// only (got {parts.scheme}://)")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        db = parts.path.lstrip("/")
        self.db = int(db) if db else 0
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._hiredis: Any = importlib.import_module("hiredis")
        self._pack = self._hiredis.pack_command
        self._wire: _Wire | None = None
        self._connecting: asyncio.Future[_Wire] | None = None
        self._waiting: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        self.writes = 0  # socket writes: how well commands are grouped (cluster /status)
        self.commands = 0

    # --- calls ----------------------------------------------------------------------------

    async def call(self, *args: str | bytes | int | float) -> Any:
        """One command's reply: bytes, int, list, None, or a `hiredis.ReplyError` value."""
        wire = self._wire
        if wire is None:
            wire = await self._connect()
        return await self._queue(self._pack(args))

    def _queue(self, packed: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((loop.time(), fut))
        self._out.append(packed)
        self.commands += 1
        if self._flush_handle is None:
            self._flush_handle = loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_handle = None
        out, self._out = self._out, []
        wire = self._wire
        if out and wire is not None and wire.transport is not None:
            wire.transport.write(out[0] if len(out) == 1 else b"".join(out))
            self.writes += 1

    def _push(self, reply: Any) -> bool:
        """A message Redis sent unasked (pub/sub): taken here, or False for a reply."""
        return False

    # --- connection -----------------------------------------------------------------------

    async def _connect(self) -> _Wire:
        if self._closed:
            raise LinkDown("the Redis link is closed")
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_future()
            task = loop.create_task(self._open())
            task.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, task: asyncio.Task[_Wire]) -> None:
        fut, self._connecting = self._connecting, None
        assert fut is not None
        exc = LinkDown("connecting to Redis was cancelled") if task.cancelled() else task.exception()
        if exc is None:
            fut.set_result(task.result())
        else:
            fut.set_exception(exc)
            fut.exception()  # marked retrieved: a connect nobody awaits any more logs nothing

    async def _open(self) -> _Wire:
        loop = asyncio.get_running_loop()
        hiredis = self._hiredis
        reader = hiredis.Reader()
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, wire = await loop.create_connection(lambda: _Wire(self, reader),
                                                       self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise LinkDown(f"cannot connect to Redis at {where}: {exc or 'timed out'}") from exc
        if self._closed:  # closed while connecting
            if wire.transport is not None:
                wire.transport.abort()
            raise LinkDown("the Redis link is closed")
        self._wire = wire
        self._arm_watchdog()
        setup: list[tuple[str, tuple[str | int, ...]]] = []
        if self.password is not None:
            setup.append(("AUTH", ("AUTH", self.username, self.password) if self.username
                                  else ("AUTH", self.password)))
        if self.db:
            setup.append(("SELECT", ("SELECT", self.db)))
        for name, cmd in setup:
            reply = await self._queue(self._pack(cmd))
            if isinstance(reply, hiredis.ReplyError):
                self._drop(wire, f"Redis refused {name}: {reply}")
                raise LinkDown(f"Redis at {where} refused {name}: {reply}")
        return wire

    def _arm_watchdog(self) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(WATCH_INTERVAL, self._watch)

    def _watch(self) -> None:
        self._watchdog = None
        wire = self._wire
        if wire is None:
            return
        if self._waiting:
            age = asyncio.get_running_loop().time() - self._waiting[0][0]
            if age > self.command_timeout:
                self._drop(wire, f"no reply from Redis in {age:.1f} s")
                return
        self._arm_watchdog()

    def _drop(self, wire: _Wire, why: str) -> None:
        """Fail every waiting caller and forget the connection; the next call reconnects."""
        if wire is not self._wire:
            return  # an older connection's late news
        self._wire = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if wire.transport is not None:
            wire.transport.abort()
        waiting, self._waiting = self._waiting, collections.deque()
        self._out = []
        error = LinkDown(why)
        for _, fut in waiting:
            if not fut.done():
                fut.set_exception(error)
        self._lost(error)

    def _lost(self, error: LinkDown) -> None:
        """The connection is gone (the feed's subscription with it)."""

    async def close(self) -> None:
        self._closed = True
        if self._wire is not None:
            self._drop(self._wire, "the Redis link is closed")


class RedisFeed(RedisLink):
    """A subscription to one pub/sub channel, its messages in Redis's order. Single use: once
    the connection is lost, `next()` raises `LinkDown` (after the messages already received)
    and the caller subscribes anew, comparing its state with Redis for what it missed."""

    def __init__(self, url: str, **kw: float) -> None:
        super().__init__(url, **kw)
        self._messages: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: LinkDown | None = None
        self._paused = False

    async def subscribe(self, channel: str) -> None:
        reply = await self.call("SUBSCRIBE", channel)
        if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
            raise LinkDown(f"Redis refused SUBSCRIBE {channel}: {reply}")

    async def next(self) -> bytes:
        while not self._messages:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._paused and len(self._messages) <= FEED_RESUME:
            self._paused = False
            if self._wire is not None and self._wire.transport is not None:
                self._wire.transport.resume_reading()
        return self._messages.popleft()

    def _push(self, reply: Any) -> bool:
        # RESP2 on a subscribed connection: [b"message", channel, data]
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            self._messages.append(reply[2])
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
            if not self._paused and len(self._messages) >= FEED_PAUSE:
                self._paused = True
                if self._wire is not None and self._wire.transport is not None:
                    self._wire.transport.pause_reading()
            return True
        return False

    def _lost(self, error: LinkDown) -> None:
        self._error = error
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
