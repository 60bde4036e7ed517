"""The cluster's store: the `Storage` protocol on Redis, every write stored and announced at once.

Same record layout as `storage/redis.py` (one hash per record type, msgpack values, same
prefix), plus what several nodes need. Each write is one Lua script (one round trip, atomic):
it changes the records *and* publishes the change on the feed channel, so no node ever sees a
change that did not commit, and every node sees committed changes in Redis's own order.

    {p}bindings / {p}subscriptions / {p}publications   hashes, as storage/redis.py
    {p}bindexp  {p}pubexp      sorted sets: field -> expires_at (expiry claimed once)
    {p}owner                   hash sub_id -> node id (the only node that NOTIFYs it)
    {p}node:{id}:subs          set of the sub_ids a node owns (what it loads, what is adopted)
    {p}lease:{id}              a node's liveness lease (string with a TTL)
    {p}nodes                   hash node id -> msgpack([host, ...]) its Request-URI hosts
    {p}rules                   hash aor -> msgpack(RulesDocument), as storage/redis.py
    {p}node:{id}:ended         hash presentity -> msgpack(EndedWatchers): the ended presence
                               watchers of the dialogs a node owned, not yet shown by winfo
    {p}feed                    pub/sub channel of changes (see `FeedMessage` in node.py)

Group commit: each script goes to Redis on the node's pipelined link (cluster/link.py), and
the scripts of requests handled in the same turn of the event loop leave in one write, as the
SQLite writer commits them in one transaction; Redis answers them in order. Each request still
awaits its own script's answer before its SIP answer goes out.

Fencing: a subscription write from a node that no longer owns the dialog is refused
(`NotOwnerError`), so a node that lost a dialog (adopted while it was cut off) cannot
overwrite the new owner's record or CSeq lease.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterable
from typing import Any

from presenced.cluster.link import LinkDown, RedisFeed, RedisLink
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

RETRY_AFTER = 5  # seconds a client is told to wait when Redis cannot take a write


class ClusterUnavailable(Exception):
    """Redis did not take the operation; the services answer 503 with this Retry-After."""

    retry_after = RETRY_AFTER


class NotOwnerError(ClusterUnavailable):
    """This node no longer owns the dialog it tried to write (another node adopted it)."""


# KEYS: hash, zset, feed; ARGV: field, value, expires_at, message
_PUT_EXPIRING = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
"""
# KEYS: hash, zset, feed; ARGV: field, message
_DELETE_EXPIRING = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n > 0 then redis.call('PUBLISH', KEYS[3], ARGV[2]) end
return n
"""
# Expiry claimed once: delete only when the stored deadline is due; a record refreshed
# meanwhile (by any node) survives and is returned. KEYS: hash, zset, feed; ARGV: field, now,
# message
_EXPIRE = """
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if s and tonumber(s) > tonumber(ARGV[2]) then
  return redis.call('HGET', KEYS[1], ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) > 0 then redis.call('PUBLISH', KEYS[3], ARGV[3]) end
return false
"""
# KEYS: hash, feed; ARGV: field, value ('' deletes), message
_PUT_ANNOUNCED = """
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""
# KEYS: publications, pubexp, feed; ARGV: etag, value, expires_at, replaced etag or '', message
_PUT_PUBLICATION = """
if ARGV[4] ~= '' and ARGV[4] ~= ARGV[1] then
  redis.call('HDEL', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[4])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[5])
return 1
"""
# KEYS: subscriptions, owner, my set; ARGV: id, value, me
_PUT_SUBSCRIPTION = """
local o = redis.call('HGET', KEYS[2], ARGV[1])
if o and o ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if not o then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[1])
end
return 1
"""
# KEYS: subscriptions, owner, my set; ARGV: id, me
_DELETE_SUBSCRIPTION = """
local o = redis.call('HGET', KEYS[2], ARGV[1])
if o and o ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""
# A request of a dialog another node owns reached us: take it over. KEYS: subscriptions,
# owner, feed, node-set prefix; ARGV: id, me, message. Returns the record, or nil (no dialog).
_CLAIM = """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return false end
local o = redis.call('HGET', KEYS[2], ARGV[1])
if o == ARGV[2] then return rec end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if o then redis.call('SREM', KEYS[4] .. o .. ':subs', ARGV[1]) end
redis.call('SADD', KEYS[4] .. ARGV[2] .. ':subs', ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return rec
"""
# A dead node's dialogs, a batch at a time; refused while its lease lives. SPOP makes each
# dialog go to exactly one adopter when several survivors race. KEYS: subscriptions, owner,
# node-set prefix, the dead node's lease, nodes; ARGV: dead, me, batch.
# Returns {remaining, id1, record1, id2, record2, ...}.
_ADOPT = """
if redis.call('EXISTS', KEYS[4]) == 1 then return {-1} end
local src = KEYS[3] .. ARGV[1] .. ':subs'
local dst = KEYS[3] .. ARGV[2] .. ':subs'
local ids = redis.call('SPOP', src, tonumber(ARGV[3]))
local out = {0}
for _, id in ipairs(ids) do
  if redis.call('HGET', KEYS[2], id) == ARGV[1] then
    local rec = redis.call('HGET', KEYS[1], id)
    if rec then
      redis.call('HSET', KEYS[2], id, ARGV[2])
      redis.call('SADD', dst, id)
      out[#out + 1] = id
      out[#out + 1] = rec
    else
      redis.call('HDEL', KEYS[2], id)
    end
  end
end
out[1] = redis.call('SCARD', src)
if out[1] == 0 then redis.call('HDEL', KEYS[5], ARGV[1]) end
return out
"""


def binding_field(aor: str, contact: str) -> str:
    return f"{aor}\x00{contact}"  # as storage/redis.py: NUL occurs in no URI


class ClusterStore:
    """`Storage` for one node of a cluster; also the atomic claims the node needs."""

    def __init__(self, url: str, prefix: str, node_id: str, *, max_connections: int = 32,
                 connect_timeout: float = 2.0, command_timeout: float = 5.0) -> None:
        self.url = url
        self.prefix = prefix
        self.node_id = node_id
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        p = prefix
        self.bindings_key, self.subs_key, self.pubs_key = f"{p}bindings", f"{p}subscriptions", f"{p}publications"
        self.bindexp_key, self.pubexp_key = f"{p}bindexp", f"{p}pubexp"
        self.owner_key, self.nodes_key, self.feed = f"{p}owner", f"{p}nodes", f"{p}feed"
        self.rules_key = f"{p}rules"
        self.node_prefix = f"{p}node:"
        self.my_subs = f"{p}node:{node_id}:subs"
        # Per node: each node's notifier lists (in winfo) the watchers of its own dialogs.
        self.my_ended = f"{p}node:{node_id}:ended"
        self.client: Any = None  # redis-py: loads, leases, adoption
        self.link: RedisLink | None = None  # the scripts of requests (cluster/link.py)
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._reply_error: type[BaseException] = BaseException  # hiredis.ReplyError
        self._scripts: dict[str, tuple[str, str]] = {}  # name -> (sha1, text)

    def feed_link(self) -> RedisFeed:
        """A new subscriber connection for the change feed (cluster/node.py reads it)."""
        return RedisFeed(self.url, connect_timeout=self._connect_timeout,
                         command_timeout=self._command_timeout)

    @property
    def batches(self) -> int:
        """Writes on the link: each carries the scripts of one turn of the event loop."""
        return self.link.writes if self.link is not None else 0

    @property
    def scripts_run(self) -> int:
        return self.link.commands if self.link is not None else 0

    def lease_key(self, node: str) -> str:
        return f"{self.prefix}lease:{node}"

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            aioredis = importlib.import_module("redis.asyncio")
            exceptions = importlib.import_module("redis.exceptions")
            self._reply_error = importlib.import_module("hiredis").ReplyError
        except ImportError as exc:
            raise ClusterUnavailable(f"a cluster needs the redis and hiredis packages ({exc}): "
                                     "install presenced[redis]") from exc
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=self._max_connections, timeout=self._command_timeout,
            socket_connect_timeout=self._connect_timeout, socket_timeout=self._command_timeout)
        self.client = aioredis.Redis(connection_pool=pool)
        self._errors = (exceptions.RedisError, OSError)
        try:
            await self.client.ping()
        except self._errors as exc:
            await self.client.aclose()
            self.client = None
            raise ClusterUnavailable(f"cannot connect to Redis for the cluster: {exc}") from exc
        link = RedisLink(self.url, connect_timeout=self._connect_timeout,
                         command_timeout=self._command_timeout)
        try:  # the scripts in Redis before the first EVALSHA (and again after a restart)
            for name, text in (("put_exp", _PUT_EXPIRING), ("del_exp", _DELETE_EXPIRING),
                               ("expire", _EXPIRE), ("put_pub", _PUT_PUBLICATION),
                               ("put_sub", _PUT_SUBSCRIPTION), ("del_sub", _DELETE_SUBSCRIPTION),
                               ("claim", _CLAIM), ("adopt", _ADOPT), ("put_ann", _PUT_ANNOUNCED)):
                self._scripts[name] = (hashlib.sha1(text.encode()).hexdigest(), text)
                reply = await link.call("SCRIPT", "LOAD", text)
                if isinstance(reply, self._reply_error):
                    raise LinkDown(str(reply))
        except LinkDown as exc:
            await link.close()
            await self.client.aclose()
            self.client = None
            raise ClusterUnavailable(f"cannot load the cluster's scripts into Redis: {exc}") from exc
        self.link = link

    async def close(self) -> None:
        client, self.client = self.client, None
        link, self.link = self.link, None
        if link is not None:
            await link.close()
        if client is not None:
            await client.aclose(close_connection_pool=True)

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What a failed Redis call raises (the node's loops catch these)."""
        return self._errors

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        link = self.link
        if link is None:
            raise ClusterUnavailable("the cluster store is closed")
        sha, text = self._scripts[name]
        try:
            reply = await link.call("EVALSHA", sha, len(keys), *keys, *args)
            if isinstance(reply, self._reply_error) and str(reply).startswith("NOSCRIPT"):
                await link.call("SCRIPT", "LOAD", text)  # Redis restarted: scripts are not kept
                reply = await link.call("EVALSHA", sha, len(keys), *keys, *args)
        except LinkDown as exc:
            raise ClusterUnavailable(f"redis {name} failed: {exc}") from exc
        if isinstance(reply, self._reply_error):
            raise ClusterUnavailable(f"redis {name} failed: {reply}")
        return reply

    def message(self, *fields: object) -> bytes:
        """A feed message: (kind, origin node, ...)."""
        return encode_msgpack((fields[0], self.node_id, *fields[1:]))

    # --- bindings -------------------------------------------------------------------------

    async def put_binding(self, binding: Binding) -> None:
        value = encode_msgpack(binding)
        await self._run("put_exp", [self.bindings_key, self.bindexp_key, self.feed],
                        [binding_field(binding.aor, binding.contact), value,
                         repr(binding.expires_at), self.message("b+", value)])

    async def delete_binding(self, aor: str, contact: str) -> None:
        await self._run("del_exp", [self.bindings_key, self.bindexp_key, self.feed],
                        [binding_field(aor, contact), self.message("b-", aor, contact, False)])

    async def expire_binding(self, aor: str, contact: str, now: float) -> Binding | None:
        """Delete a due binding once in the cluster; a refreshed one survives and comes back."""
        raw = await self._run("expire", [self.bindings_key, self.bindexp_key, self.feed],
                              [binding_field(aor, contact), repr(now),
                               self.message("b-", aor, contact, True)])
        return None if raw is None else decode_binding(raw)

    async def load_bindings(self) -> list[Binding]:
        return [decode_binding(v) for v in await self._hgetall(self.bindings_key)]

    # --- publications ---------------------------------------------------------------------

    async def put_publication(self, pub: Publication, replaces: str | None = None) -> None:
        value = encode_msgpack(pub)
        await self._run("put_pub", [self.pubs_key, self.pubexp_key, self.feed],
                        [pub.etag, value, repr(pub.expires_at), replaces or "",
                         self.message("p+", value, replaces)])

    async def delete_publication(self, etag: str) -> None:
        await self._run("del_exp", [self.pubs_key, self.pubexp_key, self.feed],
                        [etag, self.message("p-", etag, False)])

    async def expire_publication(self, etag: str, now: float) -> Publication | None:
        raw = await self._run("expire", [self.pubs_key, self.pubexp_key, self.feed],
                              [etag, repr(now), self.message("p-", etag, True)])
        return None if raw is None else decode_publication(raw)

    async def load_publications(self) -> list[Publication]:
        return [decode_publication(v) for v in await self._hgetall(self.pubs_key)]

    # --- presence rules (every node applies them to the dialogs it owns) -----------------

    async def put_rules(self, rules: RulesDocument) -> None:
        await self._run("put_ann", [self.rules_key, self.feed],
                        [rules.aor, encode_msgpack(rules), self.message("r", rules.aor)])

    async def delete_rules(self, aor: str) -> None:
        await self._run("put_ann", [self.rules_key, self.feed], [aor, "", self.message("r", aor)])

    async def load_rules(self) -> list[RulesDocument]:
        return [decode_rules(v) for v in await self._hgetall(self.rules_key)]

    # --- ended watchers not yet shown by presence.winfo (this node's) ----------------------

    async def put_ended_watchers(self, ended: EndedWatchers) -> None:
        client = self._live()
        try:
            await client.hset(self.my_ended, ended.presentity, encode_msgpack(ended))
        except self._errors as exc:
            raise ClusterUnavailable(f"redis put_ended_watchers failed: {exc}") from exc

    async def delete_ended_watchers(self, presentity: str) -> None:
        client = self._live()
        try:
            await client.hdel(self.my_ended, presentity)
        except self._errors as exc:
            raise ClusterUnavailable(f"redis delete_ended_watchers failed: {exc}") from exc

    async def load_ended_watchers(self) -> list[EndedWatchers]:
        return [decode_ended(v) for v in await self._hgetall(self.my_ended)]

    # --- subscriptions (fenced by ownership) ----------------------------------------------

    async def put_subscription(self, sub: Subscription) -> None:
        ok = await self._run("put_sub", [self.subs_key, self.owner_key, self.my_subs],
                             [sub.id, encode_msgpack(sub), self.node_id])
        if not ok:
            raise NotOwnerError(f"subscription {sub.id} is owned by another node")

    async def delete_subscription(self, sub_id: str) -> None:
        # Refused (0) when another node owns it now: its record is not ours to delete.
        await self._run("del_sub", [self.subs_key, self.owner_key, self.my_subs],
                        [sub_id, self.node_id])

    async def load_subscriptions(self) -> list[Subscription]:
        """Only the dialogs this node still owns (the others were adopted meanwhile)."""
        client = self._live()
        try:
            ids = list(await client.smembers(self.my_subs))
            records: list[Subscription] = []
            for i in range(0, len(ids), 1000):
                chunk = ids[i:i + 1000]
                owners = await client.hmget(self.owner_key, chunk)
                values = await client.hmget(self.subs_key, chunk)
                records.extend(decode_subscription(v) for o, v in zip(owners, values, strict=True)
                               if v is not None and o is not None and o.decode() == self.node_id)
            return records
        except self._errors as exc:
            raise ClusterUnavailable(f"redis load_subscriptions failed: {exc}") from exc

    async def claim(self, sub_id: str) -> Subscription | None:
        """Take over a dialog for an in-dialog request that reached this node."""
        raw = await self._run("claim", [self.subs_key, self.owner_key, self.feed, self.node_prefix],
                              [sub_id, self.node_id, self.message("claim", [sub_id])])
        return None if raw is None else decode_subscription(raw)

    async def adopt(self, dead: str, batch: int = 500) -> tuple[int, list[Subscription]] | None:
        """A batch of a dead node's dialogs: (how many remain, records), or None while its
        lease still lives."""
        out = await self._run("adopt", [self.subs_key, self.owner_key, self.node_prefix,
                                        self.lease_key(dead), self.nodes_key],
                              [dead, self.node_id, batch])
        if out[0] == -1:
            return None
        records = [decode_subscription(out[i]) for i in range(2, len(out), 2)]
        return int(out[0]), records

    async def owners(self, sub_ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(sub_ids)
        client = self._live()
        result: dict[str, str | None] = {}
        try:
            for i in range(0, len(ids), 1000):
                chunk = ids[i:i + 1000]
                for sid, o in zip(chunk, await client.hmget(self.owner_key, chunk), strict=True):
                    result[sid] = None if o is None else o.decode()
        except self._errors as exc:
            raise ClusterUnavailable(f"redis owners failed: {exc}") from exc
        return result

    # --- helpers --------------------------------------------------------------------------

    def _live(self) -> Any:
        if self.client is None:
            raise ClusterUnavailable("the cluster store is closed")
        return self.client

    async def _hgetall(self, key: str) -> list[bytes]:
        client = self._live()
        raw: dict[bytes, bytes] = {}
        cursor = 0
        try:
            while True:
                cursor, page = await client.hscan(key, cursor, count=1000)
                raw.update(page)
                if cursor == 0:
                    break
        except self._errors as exc:
            raise ClusterUnavailable(f"redis load of {key} failed: {exc}") from exc
        return list(raw.values())
