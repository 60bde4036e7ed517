"""One node of a cluster: its lease, the change feed, the adoption of dead nodes' dialogs.

Redis is the arbiter (cluster/store.py holds the atomic steps); this module runs the loops:

- lease: every `lease_time / 3` the node renews `{p}lease:{id}` (TTL `lease_time`). If it finds
  its own lease had lapsed (cut off from Redis longer than that), survivors may have adopted
  its dialogs: it asks who owns each of its dialogs and drops those it lost.
- death: on the same tick it checks every other node's lease; a node whose lease is missing
  on two ticks in a row (so a Redis restart, which expires every lease at once, does not make
  everyone adopt everyone) is dead: its dialogs are adopted, a batch per atomic script.
- feed: one pub/sub subscription to `{p}feed`. Every committed change of a binding,
  publication or dialog owner arrives here in Redis's order; the node applies the others'
  changes to its replica (`Replica`), whose notifier notifies only the dialogs this node owns.
  Pub/sub delivers at most once: after a reconnection the node compares its replica with the
  store (`Replica.resync`), so nothing committed meanwhile is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from presenced.cluster.store import ClusterStore, ClusterUnavailable
from presenced.pa.records import (
    Binding,
    Publication,
    Subscription,
    decode_binding,
    decode_publication,
    encode_msgpack,
)
from presenced.tasks import cancel_and_wait

log = logging.getLogger("presenced.cluster")

_decode = msgspec.msgpack.Decoder().decode


class Replica(Protocol):
    """What the node drives on its side (services/cluster.py)."""

    async def binding(self, aor: str, contact: str, binding: Binding | None, expired: bool) -> None: ...

    async def publication(self, etag: str, pub: Publication | None, replaces: str | None) -> None: ...

    async def release(self, sub_ids: list[str]) -> None: ...

    async def adopt(self, records: list[Subscription]) -> None: ...

    def local_dialogs(self) -> list[str]: ...

    def accept_hosts(self, hosts: Iterable[str]) -> None: ...

    async def resync(self, bindings: list[Binding], pubs: list[Publication]) -> None: ...

    async def rules_changed(self) -> None:
        """A user's presence rules changed (on another node, or while the feed was lost)."""

    async def jabber(self, kind: str, origin: str, rest: list[Any]) -> None:
        """A message of another node's XMPP gateway (leader or not)."""


class ClusterNode:
    def __init__(self, store: ClusterStore, replica: Replica, hosts: Iterable[str],
                 lease_time: float = 5.0) -> None:
        self.store = store
        self.replica = replica
        self.node_id = store.node_id
        self.hosts = sorted(set(hosts))
        self.lease_time = lease_time
        self.incarnation = secrets.token_hex(4)
        self._renewed = False
        self._suspects: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._leaving = False
        self._subscribed = asyncio.Event()
        self._ready = asyncio.Event()
        self.adopted = 0  # dialogs taken from dead nodes (counters for the logs and tests)
        self.feed_errors = 0
        self.peers: dict[str, bool] = {}  # other nodes at the last tick -> lease alive

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def _failures(self) -> tuple[type[BaseException], ...]:
        return (*self.store.errors, ClusterUnavailable)

    async def join(self) -> None:
        """Take the lease, announce our hosts and subscribe to the feed, before state loads
        (so no change committed after the load is missed). Changes wait until `ready()`."""
        await self._renew()
        client = self.store.client
        await client.hset(self.store.nodes_key, self.node_id, encode_msgpack(self.hosts))
        await self._learn_hosts()
        self._tasks.append(asyncio.create_task(self._feed_loop(), name="cluster-feed"))
        self._tasks.append(asyncio.create_task(self._lease_loop(), name="cluster-lease"))
        await asyncio.wait_for(self._subscribed.wait(), 10)
        log.info("node %s joined the cluster (lease %.1f s)", self.node_id, self.lease_time)

    def ready(self) -> None:
        self._ready.set()

    def status(self) -> dict[str, object]:
        """What the admin API's /status shows of the cluster (docs/admin.md)."""
        return {
            "node": self.node_id, "lease_time": self.lease_time, "hosts": self.hosts,
            "lease_held": self._renewed,
            "nodes": [{"node": n, "alive": a} for n, a in sorted(self.peers.items())],
            "suspects": sorted(self._suspects), "adopted": self.adopted,
            "feed_errors": self.feed_errors,
            "redis_pipelines": self.store.batches, "redis_scripts": self.store.scripts_run,
        }

    async def leave(self) -> None:
        """Stop the loops and drop the lease: survivors adopt our dialogs at their next ticks."""
        self._leaving = True  # the loops end at their next turn even if a cancel is lost
        tasks, self._tasks = self._tasks, []
        if await cancel_and_wait(tasks):
            log.warning("node %s: a cluster loop did not stop in time", self.node_id)
        # Bounded: with Redis unreachable the lease lapses by itself within `lease_time`.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(self.lease_time, 2.0)):
                await self.store.client.delete(self.store.lease_key(self.node_id))

    # --- lease and death ------------------------------------------------------------------

    async def _renew(self) -> None:
        old = await self.store.client.set(self.store.lease_key(self.node_id), self.incarnation,
                                          px=int(self.lease_time * 1000), get=True)
        if old is None and self._renewed:
            log.warning("node %s: our lease had lapsed; checking which dialogs we still own",
                        self.node_id)
            await self._reconcile()
        self._renewed = True

    async def _reconcile(self) -> None:
        owners = await self.store.owners(self.replica.local_dialogs())
        lost = [sid for sid, owner in owners.items() if owner != self.node_id]
        if lost:
            log.warning("node %s: %d dialogs were adopted by others; dropping them",
                        self.node_id, len(lost))
            await self.replica.release(lost)

    async def _learn_hosts(self) -> list[str]:
        nodes: dict[bytes, bytes] = await self.store.client.hgetall(self.store.nodes_key)
        hosts: list[str] = []
        for value in nodes.values():
            try:
                hosts.extend(str(h) for h in _decode(value))
            except (msgspec.DecodeError, TypeError):
                continue
        self.replica.accept_hosts(hosts)
        return [n.decode() for n in nodes]

    async def _lease_loop(self) -> None:
        interval = self.lease_time / 3
        while not self._leaving:
            await asyncio.sleep(interval)
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except self._failures as exc:
                log.warning("node %s: lease renewal failed: %s", self.node_id, exc)
            except Exception:
                log.exception("node %s: lease tick failed", self.node_id)

    async def _tick(self) -> None:
        await self._renew()
        client = self.store.client
        nodes = await self._learn_hosts()
        if self.node_id not in nodes:  # an adopter removed us while we were cut off
            await client.hset(self.store.nodes_key, self.node_id, encode_msgpack(self.hosts))
        others = [n for n in nodes if n != self.node_id]
        if not others:
            self._suspects = set()
            self.peers = {}
            return
        async with client.pipeline(transaction=False) as pipe:
            for n in others:
                pipe.exists(self.store.lease_key(n))
            alive = await pipe.execute()
        dead = {n for n, a in zip(others, alive, strict=True) if not a}
        self.peers = {n: bool(a) for n, a in zip(others, alive, strict=True)}
        for n in dead & self._suspects:
            await self._adopt(n)
        self._suspects = dead

    async def _adopt(self, dead: str) -> None:
        total = 0
        while True:
            got = await self.store.adopt(dead)
            if got is None:
                return  # it came back
            remaining, records = got
            if records:
                await self.replica.adopt(records)
                # A node that was only cut off hears of it and drops them (no duplicates).
                await self.store.client.publish(
                    self.store.feed, self.store.message("adopt", [r.id for r in records]))
                total += len(records)
            if remaining == 0:
                break
        self.adopted += total
        log.info("node %s: node %s is dead; adopted %d of its dialogs", self.node_id, dead, total)

    # --- the feed -------------------------------------------------------------------------

    async def _feed_loop(self) -> None:
        first = True
        backoff = 0.2
        while not self._leaving:
            feed = self.store.feed_link()
            try:
                await feed.subscribe(self.store.feed)
                self._subscribed.set()
                await self._ready.wait()
                if not first:
                    log.info("node %s: feed reconnected; comparing state with Redis", self.node_id)
                    await self.replica.resync(await self.store.load_bindings(),
                                              await self.store.load_publications())
                    await self.replica.rules_changed()
                    await self._reconcile()
                first = False
                backoff = 0.2
                while not self._leaving:
                    await self._apply(await feed.next())
            except asyncio.CancelledError:
                raise
            except self._failures as exc:
                self.feed_errors += 1
                log.warning("node %s: feed lost (%s); reconnecting in %.1f s", self.node_id, exc,
                            backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                await feed.close()

    async def _apply(self, data: bytes) -> None:
        try:
            kind, origin, *rest = _decode(data)
        except (msgspec.DecodeError, ValueError, TypeError):
            log.warning("node %s: undecodable feed message dropped", self.node_id)
            return
        if origin == self.node_id:
            return
        log.debug("feed: %s from %s", kind, origin)
        try:
            await self._dispatch(kind, origin, rest)
        except self._failures:
            raise
        except Exception:
            log.exception("node %s: applying a %s change from %s failed", self.node_id, kind, origin)

    async def _dispatch(self, kind: str, origin: str, rest: list[Any]) -> None:
        r = self.replica
        if kind == "b+":
            b = decode_binding(rest[0])
            await r.binding(b.aor, b.contact, b, False)
        elif kind == "b-":
            await r.binding(rest[0], rest[1], None, bool(rest[2]))
        elif kind == "p+":
            pub = decode_publication(rest[0])
            await r.publication(pub.etag, pub, rest[1])
        elif kind == "p-":
            await r.publication(rest[0], None, None)
        elif kind in ("claim", "adopt"):
            await r.release([str(i) for i in rest[0]])
        elif kind == "r":
            await r.rules_changed()
        elif kind.startswith("j"):  # the XMPP gateway's messages (cluster/leader.py)
            await r.jabber(kind, origin, rest)
