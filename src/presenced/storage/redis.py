"""Redis backend: redis-py's asyncio client, one hash per record type, msgpack values.

Layout (with the default prefix ``presenced:``)::

    presenced:bindings       field aor + "\\x00" + contact -> msgpack(Binding)
    presenced:subscriptions  field id                      -> msgpack(Subscription)
    presenced:publications   field etag                    -> msgpack(Publication)
    presenced:rules          field aor                     -> msgpack(RulesDocument)
    presenced:ended          field presentity              -> msgpack(EndedWatchers)

Values are msgspec msgpack encodings of the record structs: exact for floats, `bytes` bodies
stay binary and `route_set` decodes back to a tuple. Several presenced nodes may share one Redis
(and one prefix); every write is a single command or one MULTI/EXEC, so Redis serialises them.

Durability
----------
Redis replies to a write once it is applied in memory and appended to the AOF buffer; when the
awaitable here returns, Redis has acknowledged it. So killing *presenced* after the await loses
nothing. What can lose acknowledged writes is the *Redis* process dying, and that depends on
its persistence settings, not on this module:

- ``appendonly no`` (RDB snapshots only, or nothing): a kill -9 of redis-server loses every write
  since the last snapshot. Not suitable for presenced.
- ``appendonly yes`` + ``appendfsync everysec`` (the usual production setting): Redis write(2)s
  the AOF before it sends the replies of that event-loop turn, so a kill -9 of redis-server loses
  nothing acknowledged -- the kernel page cache outlives the process. An OS crash or power cut
  loses up to about a second; under a stalled disk Redis may delay the AOF write by up to 2 s
  (it logs "Asynchronous AOF fsync is taking too long"), which widens that window.
- ``appendonly yes`` + ``appendfsync always``: the AOF is fsync'ed before the reply; survives
  power loss too, at the cost of one fsync per event-loop turn (shared by concurrent writers).

Replication is asynchronous: a failover to a replica can drop the last acknowledged writes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

from presenced.pa.records import (
    Binding,
    EndedWatchers,
    Publication,
    RulesDocument,
    Subscription,
    decode_binding,
    decode_ended,
    decode_publication,
    decode_rules,
    decode_subscription,
    encode_msgpack,
)
from presenced.storage import StorageClosedError, StorageError

DEFAULT_PREFIX = "presenced:"



def redact_url(url: str) -> str:
    """``redis://user:secret@host/0`` -> ``redis://user:***@host/0`` for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def split_prefix(url: str) -> tuple[str, str | None]:
    """Take a ``?prefix=...`` query parameter out of `url` (redis-py would reject it)."""
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = None
    rest: list[tuple[str, str]] = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        else:
            rest.append((name, value))
    if prefix is None:
        return url, None
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


def _binding_field(aor: str, contact: str) -> str:
    # NUL cannot occur in a SIP URI or AOR, so the pair splits unambiguously.
    return f"{aor}\x00{contact}"


class RedisStorage:
    """`Storage` on a Redis server. A write is acknowledged by Redis when its awaitable returns."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        max_connections: int = 32,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        scan_count: int = 1000,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        url, url_prefix = split_prefix(url)
        self.url = url
        # redis-py spells the Unix-socket scheme "unix://"; config accepts "redis+unix://" too.
        self._client_url = "unix://" + url[13:] if url.startswith("redis+unix://") else url
        self.prefix = prefix if prefix is not None else (url_prefix or DEFAULT_PREFIX)
        self._shown = redact_url(url)
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._scan_count = scan_count
        self._bindings_key = f"{self.prefix}bindings"
        self._subscriptions_key = f"{self.prefix}subscriptions"
        self._publications_key = f"{self.prefix}publications"
        self._rules_key = f"{self.prefix}rules"
        self._ended_key = f"{self.prefix}ended"
        self._client: Any = None  # redis.asyncio.Redis once open
        self._pool: Any = None
        self._redis_error: type[BaseException] = Exception

    # --- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Build the connection pool and PING, so a down or misconfigured Redis fails here."""
        if self._client is not None:
            raise StorageError(f"redis storage {self._shown} is already open")
        try:
            aioredis = importlib.import_module("redis.asyncio")
            exceptions = importlib.import_module("redis.exceptions")
        except ImportError as exc:
            raise StorageError(
                f"storage url {self._shown} needs the redis package: install presenced[redis]"
            ) from exc
        try:
            # A bounded, blocking pool: a burst of writers queues for a connection instead of
            # opening one socket each.
            pool = aioredis.BlockingConnectionPool.from_url(
                self._client_url,
                max_connections=self._max_connections,
                timeout=self._command_timeout,
                socket_connect_timeout=self._connect_timeout,
                socket_timeout=self._command_timeout,
            )
        except ValueError as exc:
            raise StorageError(f"invalid Redis url {self._shown}: {exc}") from exc
        client = aioredis.Redis(connection_pool=pool)
        try:
            await client.ping()
        except (exceptions.RedisError, OSError) as exc:
            await client.aclose()
            await pool.aclose()
            raise StorageError(f"cannot connect to Redis at {self._shown}: {exc}") from exc
        self._redis_error = exceptions.RedisError
        self._pool = pool
        self._client = client

    async def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        client, pool = self._client, self._pool
        self._client = self._pool = None
        if client is not None:
            await client.aclose()
            await pool.aclose()

    # --- helpers --------------------------------------------------------------------------------

    def _open_client(self) -> Any:
        client = self._client
        if client is None:
            raise StorageClosedError(
                f"redis storage {self._shown} is not open (closed or never opened)"
            )
        return client

    def _failed(self, op: str, exc: BaseException) -> StorageError:
        err = StorageError(f"redis {op} on {self._shown} failed: {exc}")
        err.__cause__ = exc
        return err

    async def _hset(self, op: str, key: str, field: str, value: bytes) -> None:
        client = self._open_client()
        try:
            await client.hset(key, field, value)
        except self._redis_error as exc:
            raise self._failed(op, exc) from exc

    async def _hdel(self, op: str, key: str, field: str) -> None:
        client = self._open_client()
        try:
            await client.hdel(key, field)
        except self._redis_error as exc:
            raise self._failed(op, exc) from exc

    async def _load(self, op: str, key: str, decode: Callable[[bytes], Any]) -> list[Any]:
        # HSCAN in pages rather than one HGETALL: other nodes' commands interleave between pages
        # instead of waiting behind a 100k-entry reply. A field can repeat across pages while
        # Redis rehashes, so pages merge into a dict keyed by field.
        client = self._open_client()
        raw: dict[bytes, bytes] = {}
        cursor = 0
        try:
            while True:
                cursor, page = await client.hscan(key, cursor, count=self._scan_count)
                raw.update(page)
                if cursor == 0:
                    break
        except self._redis_error as exc:
            raise self._failed(op, exc) from exc
        try:
            return [decode(value) for value in raw.values()]
        except msgspec.DecodeError as exc:
            raise StorageError(f"redis {op}: undecodable record under {key!r}: {exc}") from exc

    # --- the Storage protocol --------------------------------------------------------------------

    async def put_binding(self, binding: Binding) -> None:
        await self._hset(
            "put_binding",
            self._bindings_key,
            _binding_field(binding.aor, binding.contact),
            encode_msgpack(binding),
        )

    async def delete_binding(self, aor: str, contact: str) -> None:
        await self._hdel("delete_binding", self._bindings_key, _binding_field(aor, contact))

    async def load_bindings(self) -> list[Binding]:
        return await self._load("load_bindings", self._bindings_key, decode_binding)

    async def put_subscription(self, sub: Subscription) -> None:
        await self._hset("put_subscription", self._subscriptions_key, sub.id, encode_msgpack(sub))

    async def delete_subscription(self, sub_id: str) -> None:
        await self._hdel("delete_subscription", self._subscriptions_key, sub_id)

    async def load_subscriptions(self) -> list[Subscription]:
        return await self._load("load_subscriptions", self._subscriptions_key, decode_subscription)

    async def put_publication(self, pub: Publication, replaces: str | None = None) -> None:
        if replaces is None or replaces == pub.etag:
            await self._hset("put_publication", self._publications_key, pub.etag, encode_msgpack(pub))
            return
        # RFC 3903 §4.4: the new entity-tag replaces the old one. MULTI/EXEC so no reader (or
        # crash) ever sees both ETags or neither.
        client = self._open_client()
        value = encode_msgpack(pub)
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hdel(self._publications_key, replaces)
                pipe.hset(self._publications_key, pub.etag, value)
                await pipe.execute()
        except self._redis_error as exc:
            raise self._failed("put_publication", exc) from exc

    async def delete_publication(self, etag: str) -> None:
        await self._hdel("delete_publication", self._publications_key, etag)

    async def load_publications(self) -> list[Publication]:
        return await self._load("load_publications", self._publications_key, decode_publication)

    async def put_rules(self, rules: RulesDocument) -> None:
        await self._hset("put_rules", self._rules_key, rules.aor, encode_msgpack(rules))

    async def delete_rules(self, aor: str) -> None:
        await self._hdel("delete_rules", self._rules_key, aor)

    async def load_rules(self) -> list[RulesDocument]:
        return await self._load("load_rules", self._rules_key, decode_rules)

    async def put_ended_watchers(self, ended: EndedWatchers) -> None:
        await self._hset("put_ended_watchers", self._ended_key, ended.presentity, encode_msgpack(ended))

    async def delete_ended_watchers(self, presentity: str) -> None:
        await self._hdel("delete_ended_watchers", self._ended_key, presentity)

    async def load_ended_watchers(self) -> list[EndedWatchers]:
        return await self._load("load_ended_watchers", self._ended_key, decode_ended)
