"""The XMPP component in a cluster: one node at a time holds it (issue 12).

A component domain takes one connection on most XMPP servers (XEP-0114), so the nodes elect a
leader through Redis, the arbiter (no consensus of our own):

    {p}jabber:leader   "<node>:<incarnation>", SET NX PX lease_time; renewed every lease/3 by
                       a compare-and-set script (only its holder may extend or delete it)
    {p}jabber:epoch    INCR at each acquisition: the fencing token, carried by the leader's
                       feed messages; nodes drop messages of an epoch older than one seen

Fencing: a holder that cannot renew (Redis unreachable, or the key is gone / someone else's)
stops its component before the key can expire: it gives up when its last successful renewal
is `lease_time * 2 / 3` old, which is earlier than any other node can take the key. The XMPP
server is the second fence: it refuses a second connection for the same component domain.

`JabberLink` is what the gateway sees of the cluster (services/jabber.py `ClusterLink`): it
publishes the gateway's messages on the feed (the node's feed loop hands others' messages to
`JabberGateway.on_feed`) and reads every node's jabber dialogs at a take-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from presenced.cluster.store import ClusterStore
from presenced.pa.records import Subscription, decode_subscription
from presenced.tasks import cancel_and_wait

log = logging.getLogger("presenced.cluster")


# KEYS: leader key; ARGV: token, px. 1 when renewed, 0 when the key is not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# KEYS: leader key; ARGV: token
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ComponentLease:
    """Runs the election loop; calls `on_acquired(epoch)` / `on_lost()` (both awaited)."""

    def __init__(self, store: ClusterStore, lease_time: float,
                 on_acquired: Callable[[int], Awaitable[None]],
                 on_lost: Callable[[], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.lease_time = lease_time
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.clock = clock
        self.key = f"{store.prefix}jabber:leader"
        self.epoch_key = f"{store.prefix}jabber:epoch"
        self.token = f"{store.node_id}:{secrets.token_hex(4)}"
        self.leader = False
        self.epoch = 0
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="jabber-lease")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True  # the loop ends at its next turn even if the cancel is lost
        if task is not None:
            await cancel_and_wait([task])
        if self.leader:
            await self._lose("stopping")
            with contextlib.suppress(Exception):
                await self.store.client.eval(_RELEASE, 1, self.key, self.token)

    async def _loop(self) -> None:
        interval = self.lease_time / 3
        while not self._stopping:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis errors and anything else: the loop goes on
                log.warning("jabber lease: %s", exc)
                if self.leader and self.clock() - self._renewed_at >= self.lease_time * 2 / 3:
                    await self._lose(f"cannot renew: {exc}")
            await asyncio.sleep(interval)

    async def _tick(self) -> None:
        client = self.store.client
        px = int(self.lease_time * 1000)
        if self.leader:
            if await client.eval(_RENEW, 1, self.key, self.token, px):
                self._renewed_at = self.clock()
            else:
                await self._lose("the lease is gone")
            return
        if await client.set(self.key, self.token, nx=True, px=px):
            self._renewed_at = self.clock()
            self.epoch = int(await client.incr(self.epoch_key))
            self.leader = True
            log.info("node %s holds the XMPP component (epoch %d)", self.store.node_id,
                     self.epoch)
            try:
                await self.on_acquired(self.epoch)
            except Exception:
                log.exception("jabber lease: taking the component failed")

    async def _lose(self, why: str) -> None:
        self.leader = False
        log.warning("node %s gives up the XMPP component (epoch %d): %s", self.store.node_id,
                    self.epoch, why)
        try:
            await self.on_lost()
        except Exception:
            log.exception("jabber lease: releasing the component failed")


class JabberLink:
    """The gateway's port to the cluster (services/jabber.py `ClusterLink`)."""

    def __init__(self, store: ClusterStore) -> None:
        self.store = store
        self.node_id = store.node_id

    def publish(self, *fields: object) -> None:
        """Fire and forget on the feed: pub/sub is at most once, and a lost message is
        repaired by the next take-over (which reads the dialogs from Redis)."""
        message = self.store.message(*fields)

        async def send() -> None:
            try:
                await self.store.client.publish(self.store.feed, message)
            except Exception as exc:
                log.warning("jabber: feed message %s lost: %s", fields[0], exc)

        asyncio.get_running_loop().create_task(send())

    async def dialogs(self, source: str) -> list[tuple[Subscription, str | None]]:
        """Every node's dialogs of `source` with their owners (a scan: at take-over only)."""
        client = self.store.client
        raw: dict[bytes, bytes] = {}
        cursor = 0
        while True:
            cursor, page = await client.hscan(self.store.subs_key, cursor, count=1000)
            raw.update(page)
            if cursor == 0:
                break
        records = [r for r in map(decode_subscription, raw.values()) if r.source == source]
        owners = await self.store.owners(r.id for r in records)
        return [(r, owners.get(r.id)) for r in records]
