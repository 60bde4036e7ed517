"""The notifier service: runs the notifier's effects against storage and the network, for
every event package.

Rule for every effect list: all storage writes commit before any SIP message of the list goes
out (a 200 is never sent for a subscription that would not survive a `kill -9`), then the
messages go out in order. Expiry of every subscription is driven by one timer, re-armed to the
notifier's next deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from presenced.pa.model import PresenceDoc
from presenced.pa.packages.winfo import Watcher
from presenced.pa.records import EndedWatchers, Subscription
from presenced.pa.subscription import (
    FLOW_FAILED,
    PRESENCE,
    Effect,
    Forget,
    Notifier,
    Persist,
    Reply,
    SaveEnded,
    SendNotify,
    SubscriptionInfo,
    WatchStarted,
    WatchStopped,
    dialog_id,
)
from presenced.services.alarm import Alarm, Background
from presenced.services.ports import Clock, ClusterClaims, Network, Storage, failure_response
from presenced.sip.endpoint import RequestReceived

log = logging.getLogger("presenced.pa")

NOTIFY_BURST = 200  # NOTIFYs sent before the fan-out yields to the loop

# Presence only: the XMPP gateway, the one source that fetches on demand, serves presence.
WatchListener = Callable[[str, str, bool], None]  # (presentity, source, started)
ChangeListener = Callable[[str, PresenceDoc], None]
RulesListener = Callable[[str], Awaitable[None]]  # (presentity)


# Stream transports we open connections on (to trusted proxies only); a WebSocket flow is
# always the client's own (RFC 7118 §5: the server never initiates one).
_DIALLABLE = frozenset({"tcp", "tls"})


def _never(host: str) -> bool:
    return False


RECENT_FAILURES = 100  # NOTIFY failures kept for operators (the dashboard's list)


@dataclass(frozen=True, slots=True)
class NotifyFailure:
    at: float  # wall-clock epoch seconds
    sub_id: str
    event: str
    presentity: str
    watcher: str
    status: int  # 408: timed out; 430: no flow to the watcher


# Optional observers (the admin adapter's histograms): seconds, and for a fan-out the NOTIFYs.
FanoutObserver = Callable[[float, int], None]
LatencyObserver = Callable[[float], None]


class NotifierService:
    def __init__(self, notifier: Notifier, network: Network, storage: Storage,
                 clock: Clock = time.time, may_connect: Callable[[str], bool] = _never) -> None:
        """`network`: the ports NOTIFYs and answers go through; `may_connect(ip)`: whether a
        stream connection may be opened to that IP (trusted proxies only), the same predicate
        the TCP transport enforces."""
        self.notifier = notifier
        self.network = network
        self.storage = storage
        self.clock = clock
        self.may_connect = may_connect
        self.background = Background("notifier")
        self._alarm = Alarm(self._expire, self.background, clock)
        self.watch_listeners: list[WatchListener] = []
        self.change_listeners: list[ChangeListener] = []
        # Called after a presentity's rules were applied to its dialogs (`reauthorize`).
        self.rules_listeners: list[RulesListener] = []
        self.notifies_sent = 0
        self.notify_failures = 0
        self.recent_failures: deque[NotifyFailure] = deque(maxlen=RECENT_FAILURES)
        # None unless metrics are served: then one attribute test is all a NOTIFY pays.
        self.fanout_observer: FanoutObserver | None = None
        self.latency_observer: LatencyObserver | None = None
        self._sent_at: dict[str, float] = {}
        # In a cluster (set by the composition root): in-dialog requests for dialogs another
        # node owns take them over (docs/design.md "Running a cluster").
        self.claims: ClusterClaims | None = None

    @property
    def driver(self) -> Network:
        """The network ports under their older name (the jabber gateway answers through it)."""
        return self.network

    async def load(self) -> None:
        records = await self.storage.load_subscriptions()
        effects = self.notifier.load(records, self.clock())
        log.info("loaded %d subscriptions", len(records))
        await self.run(effects)

    async def load_ended(self) -> None:
        """The ended watchers an earlier run kept for offline winfo (before the
        subscriptions load, so a restored winfo subscription's first document lists them)."""
        for ended in await self.storage.load_ended_watchers():
            self.notifier.load_ended(ended.presentity, (Watcher(*w) for w in ended.watchers))

    # --- entry points ----------------------------------------------------------------------

    async def subscribe(self, event: RequestReceived, presentity: str, source: str,
                        identity: str | None = None, authorized: bool = True) -> None:
        """`identity`: the authenticated "user@domain", None without authentication;
        `authorized` False: a new dialog starts pending (the jabber gateway, until the XMPP
        user approves this watcher)."""
        req = event.request
        now = self.clock()
        if req.to.tag:
            if self.claims is not None and not await self._claim(event):
                return
            effects = self.notifier.resubscribe(req, now, event.peer, identity)
        else:
            effects = self.notifier.subscribe(req, presentity, source, event.peer, now, identity,
                                              authorized)
        await self.run(effects, event)

    async def set_part(self, presentity: str, key: str, part: object | None,
                       event: str = PRESENCE, quiet: bool = False) -> None:
        """A source's part of a resource changed (see `Notifier.set_part`)."""
        observer = self.fanout_observer
        started = time.perf_counter() if observer is not None else 0.0
        effects = self.notifier.set_part(presentity, key, part, self.clock(), event, quiet)
        if self.change_listeners and event == PRESENCE:
            doc = self.notifier.document(presentity)
            assert isinstance(doc, PresenceDoc)
            for listener in self.change_listeners:
                listener(presentity, doc)
        await self.run(effects)
        if observer is not None and effects:
            n = sum(1 for e in effects if isinstance(e, SendNotify))
            if n:
                observer(time.perf_counter() - started, n)

    async def reauthorize(self, presentity: str) -> None:
        """The presentity's rules changed: apply them to its live subscriptions at once."""
        await self.run(self.notifier.reauthorize(presentity, self.clock()))
        for listener in self.rules_listeners:  # watchers without a SIP dialog (XMPP)
            try:
                await listener(presentity)
            except Exception:
                log.exception("rules listener failed for %s", presentity)

    async def authorize(self, sub_ids: Iterable[str], allow: bool) -> None:
        """A source's own authorization of dialogs (the XMPP user approved or refused this
        SIP watcher): pending -> active with the state, or terminated;reason=rejected."""
        now = self.clock()
        effects: list[Effect] = []
        for sub_id in sub_ids:
            effects.extend(self.notifier.authorize(sub_id, now) if allow
                           else self.notifier.deauthorize(sub_id, now))
        if effects:
            await self.run(effects)

    async def set_watcher(self, presentity: str, key: str, watcher: Watcher | None) -> None:
        """A watcher without a SIP dialog came, changed or went: its winfo entry."""
        self.notifier.set_watcher(presentity, key, watcher)
        if self.notifier.winfo_dirty:
            await self.run([])

    def watching(self, presentity: str, event: str) -> bool:
        return self.notifier.watching(presentity, event)

    async def terminate(self, sub_id: str, reason: str = "deactivated") -> SubscriptionInfo | None:
        """End one subscription (the operator's word): storage first, then its watcher's final
        NOTIFY. Returns what it was, or None when there is no such live subscription."""
        info = self.notifier.info(sub_id)
        if info is None or info.status == "terminated":
            return None
        await self.run(self.notifier.terminate(sub_id, self.clock(), reason))
        log.info("subscription %s of %s to %s terminated by the operator (reason=%s)",
                 sub_id, info.record.watcher, info.record.presentity, reason)
        return info
    # --- cluster ---------------------------------------------------------------------------

    async def _claim(self, event: RequestReceived) -> bool:
        """An in-dialog SUBSCRIBE for a dialog this node does not hold: take it over from its
        owner (an atomic claim; its CSeq continues from the persisted lease). False when the
        request was answered here (Redis unreachable)."""
        assert self.claims is not None
        req = event.request
        try:
            sub_id = dialog_id(req.call_id, req.to.tag or "", req.from_.tag or "")
        except Exception:
            return True  # the notifier answers the malformed request
        if sub_id in self.notifier.dialogs:
            return True
        try:
            record = await self.claims.claim(sub_id)
        except Exception as exc:
            log.warning("claim of dialog %s failed: %s", sub_id, exc)
            self.network.respond(event, failure_response(req, exc))
            return False
        if record is not None and sub_id not in self.notifier.dialogs:
            log.info("took over dialog %s", sub_id)
            await self.run(self.notifier.load([record], self.clock()))
        return True

    async def adopt(self, records: list[Subscription]) -> None:
        """Dialogs of a dead node, now ours: its watchers get later changes from here."""
        fresh = [r for r in records if r.id not in self.notifier.dialogs]
        now = self.clock()
        effects = self.notifier.load(fresh, now)
        effects += self.notifier.touch((r.id for r in fresh), now)
        await self.run(effects)

    async def release(self, sub_ids: list[str]) -> None:
        """Dialogs another node took over: dropped here without a NOTIFY."""
        effects: list[Effect] = []
        for sub_id in sub_ids:
            effects.extend(self.notifier.release(sub_id))
        if effects:
            await self.run(effects)

    async def renotify(self, presentity: str, event: str = PRESENCE) -> None:
        await self.run(self.notifier.renotify(presentity, self.clock(), event))

    def on_notify_result(self, sub_id: str, status: int) -> None:
        if self.latency_observer is not None:
            sent = self._sent_at.pop(sub_id, None)
            if sent is not None:
                self.latency_observer(time.perf_counter() - sent)
        if status >= 300:
            self.notify_failures += 1
            log.info("NOTIFY for %s answered %d", sub_id, status)
            info = self.notifier.info(sub_id)
            if info is not None:
                r = info.record
                self.recent_failures.append(
                    NotifyFailure(self.clock(), sub_id, r.event, r.presentity, r.watcher, status))
        effects = self.notifier.notify_result(sub_id, status, self.clock())
        if effects:
            self.background.spawn(self.run(effects))

    # --- execution -------------------------------------------------------------------------

    async def run(self, effects: Sequence[Effect], event: RequestReceived | None = None) -> None:
        if self.notifier.winfo_dirty:  # a watcher came, went or was decided (presence.winfo)
            effects = [*effects, *self.notifier.flush_winfo(self.clock())]
        # The last write per subscription wins; distinct subscriptions are written concurrently.
        latest: dict[str, Persist | Forget] = {}
        ended: dict[str, SaveEnded] | None = None
        for eff in effects:
            if isinstance(eff, Persist):
                latest[eff.sub.id] = eff
            elif isinstance(eff, Forget):
                latest[eff.sub_id] = eff
            elif isinstance(eff, SaveEnded):
                if ended is None:
                    ended = {}
                ended[eff.presentity] = eff
        writes = [
            self.storage.put_subscription(w.sub) if isinstance(w, Persist)
            else self.storage.delete_subscription(w.sub_id)
            for w in latest.values()
        ]
        if ended:
            writes.extend(self._ended_write(e) for e in ended.values())
        if writes:
            try:
                if len(writes) == 1:
                    await writes[0]
                else:
                    await asyncio.gather(*writes)
            except Exception as exc:
                log.exception("storage write failed")
                if event is not None:
                    # Nothing of this SUBSCRIBE happened: undo it in memory, answer 500 (503
                    # with Retry-After when the store says it is a passing outage).
                    self.notifier.rollback(effects, initial=not event.request.to.tag)
                    self.network.respond(event, failure_response(event.request, exc))
                    return
        sent = 0
        for eff in effects:
            if isinstance(eff, Reply):
                if event is not None:
                    self.network.respond(event, eff.response)
            elif isinstance(eff, SendNotify):
                self._send_notify(eff)
                sent += 1
                if sent % NOTIFY_BURST == 0:
                    # A fan-out to thousands of watchers: let the loop read their 200s now,
                    # before the socket's receive buffer overflows and they are retransmitted.
                    await asyncio.sleep(0)
            # (a tuple: `WatchStarted | WatchStopped` builds a UnionType at each evaluation)
            elif isinstance(eff, (WatchStarted, WatchStopped)) and eff.event == PRESENCE:
                started = isinstance(eff, WatchStarted)
                for listener in self.watch_listeners:
                    try:
                        listener(eff.presentity, eff.source, started)
                    except Exception:
                        log.exception("watch listener failed")
        self._arm()

    def _ended_write(self, eff: SaveEnded) -> Any:
        if not eff.watchers:
            return self.storage.delete_ended_watchers(eff.presentity)
        return self.storage.put_ended_watchers(EndedWatchers(
            eff.presentity, tuple((w.id, w.uri, w.status, w.event) for w in eff.watchers),
            self.clock()))

    def _send_notify(self, eff: SendNotify) -> None:
        # The notifier chose the destination (docs/presence.md "Where NOTIFYs go"); the typed
        # peer keeps the TCP connection id of the SUBSCRIBE's flow.
        peer = eff.dest
        if peer.reliable and not self.network.has_flow(peer) and (
                peer.transport not in _DIALLABLE or not self.may_connect(peer.host)):
            # The watcher's connection is gone and we dial nobody but trusted proxies (no
            # SSRF): the NOTIFY fails here and now, and its dialog ends like one whose NOTIFY
            # failed (the watcher's next refresh gets 481 and subscribes afresh).
            log.info("NOTIFY for %s: no connection to %s, not dialling out", eff.sub_id, peer)
            self.on_notify_result(eff.sub_id, FLOW_FAILED)
            return
        self.notifies_sent += 1
        if self.latency_observer is not None:
            self._sent_at[eff.sub_id] = time.perf_counter()
        self.network.send_request(eff.request, peer, ("notify", eff.sub_id), validated=eff.validated)

    def _arm(self) -> None:
        self._alarm.arm(self.notifier.next_deadline())

    async def _expire(self) -> None:
        await self.run(self.notifier.expire(self.clock()))

    def close(self) -> None:
        self._alarm.cancel()

