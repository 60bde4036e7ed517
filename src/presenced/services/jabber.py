"""The jabber gateway service: the XMPP component and the presence agent, bridged both ways.

SIP -> XMPP (a SIP user watches ``sip:juliet*jabber.test@<gateway_domain>``)
    The dispatcher routes the SUBSCRIBE to source "jabber". One XMPP subscription *per SIP
    watcher*, sent from that watcher's own component JID (``romeo*example.com@<component>``),
    so juliet's roster shows who asks and she approves each herself; her server keeps each
    approval (it survives our restarts) and enforces it (issue 13: one approval of the whole
    gateway let every SIP user see her). Per-watcher approval state inside presenced was the
    alternative: it would hide from juliet who sees her. The dialog starts *pending* (RFC 6665
    §4.2.2) unless she approved that JID already; ``subscribed`` makes that watcher's dialogs
    active with the state, ``unsubscribed`` ends them ``rejected`` (and a new SUBSCRIBE of the
    same watcher is refused 403 while she is watched). Only presence she sends to an approved
    watcher JID counts; the document composed from it (the part "xmpp") reaches only dialogs
    she approved, as the notifier sends nothing to pending ones. A fetch (Expires: 0) is no
    subscription: nothing is asked of XMPP. Only a subscribe is sent at first; the probe waits
    for ``subscribed``, because Prosody answers a probe from a JID the user has not approved
    with ``unsubscribed`` on her behalf, which also cancels the pending request. When the last
    SIP watcher leaves (`WatchStopped`) the gateway unsubscribes every watcher JID and forgets
    her (one watcher leaving while others stay keeps its XMPP subscription until then).

Admission (issue 9 #7: one SIP user made the gateway spray 1,200 XMPP subscription requests)
    The dispatcher hands an initial SUBSCRIBE for source "jabber" to `JabberGateway.subscribe`
    (not straight to `NotifierService.subscribe`), which refuses it before any 200 and before
    anything reaches XMPP when: the address has no faithful JID (`Addressing.presentity_to_jid`:
    400 malformed / control characters, 404 upper case or characters a JID cannot hold); the
    XMPP domain is not in ``allowed_domains`` (403); the watcher already watches
    ``max_contacts_per_user`` other XMPP users (403 "too many XMPP contacts"); the gateway
    watches ``max_contacts`` XMPP users in all (503, Retry-After); or the watcher used up its
    ``subscribe_rate`` new XMPP subscription requests per minute (503, Retry-After). Only a
    SUBSCRIBE that would make the gateway send a new subscription request costs a token. The
    watcher is the authenticated user (From, which the dispatcher checked) with [auth], the
    source address without. A user's contacts are the dialogs the gateway saw it create,
    re-read from the agent's dialogs at start-up.

XMPP -> SIP (an XMPP user watches ``alice*example.com@<component>``)
    A watcher like any other, named ``xmpp:juliet@jabber.test`` (RFC 5122 URI, the identity
    RFC 4745 §7.1 compares): alice's rules or [pa] default_policy decide. allow: ``subscribed``
    and her presence through the rule's transformations (RFC 5025 §3.3); confirm: no answer,
    listed pending in alice's presence.winfo until a rule decides; polite-block:
    ``subscribed`` and always unavailable; block: ``unsubscribed``. A rule change (the
    notifier service's `rules_listeners`) applies at once: pending -> ``subscribed`` and the
    presence, subscribed -> ``unsubscribed`` for block (confirm too: "deactivated"). Changes
    reach subscribers through `NotifierService.change_listeners` (every `set_part`), mapped
    once per distinct view. A probe is no subscription: answered as the rules say now
    (``unsubscribed`` under confirm or block, RFC 6121 §4.3.2.1); under allow or polite-block
    the prober is a subscriber again (her server probes only contacts that approved her, e.g.
    before a restart of ours: XMPP subscribers live in memory only).

Resilience
    On `Disconnected` every jabber presentity gets a closed part (SIP watchers see closed); on
    `Connected` the gateway re-announces only the XMPP users SIP users still watch, paced at
    ``resubscribe_rate`` stanzas per second: a probe for those who approved, a subscribe for
    those whose answer is pending, nothing for those who refused (asking again on every
    reconnection is the spam of issue 9 #7). It re-sends current presence to every XMPP
    subscriber, so presence flows again without any SIP client acting. XMPP events only update in-memory state and mark presentities dirty; one task
    flushes the dirty set into `set_part`, so a presence flood collapses into few updates and no
    XMPP input raises into the SIP side.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import msgspec

from presenced.config import JabberConfig
from presenced.jabber.addressing import Addressing, Unmappable
from presenced.jabber.component import (
    Connected,
    Disconnected,
    PresenceChanged,
    Probe,
    Subscribed,
    SubscribeRequest,
    Unsubscribe,
    Unsubscribed,
    XmppComponent,
    XmppEvent,
)
from presenced.jabber.mapping import XmppPresence, pidf_to_xmpp, xmpp_to_pidf
from presenced.pa.documents.pidf import stable_id
from presenced.pa.model import Note, PresenceDoc
from presenced.pa.packages.presence import closed_doc, entity_of
from presenced.pa.packages.winfo import Watcher
from presenced.pa.policy.evaluate import Decision, View
from presenced.pa.policy.transform import apply_view
from presenced.pa.records import Subscription
from presenced.pa.subscription import PRESENCE
from presenced.services.notifier import NotifierService
from presenced.sip.endpoint import RequestReceived, parse_peer
from presenced.sip.message import Request, make_response
from presenced.sip.uri import escape_user

__all__ = ["PART", "SOURCE", "JabberGateway", "Refusal"]

log = logging.getLogger("presenced.jabber")

SOURCE = "jabber"  # the routing source name (handle_subscription(req, "jabber"))
PART = "xmpp"  # the key of the gateway's part in a presentity's composition

_UNAVAILABLE = XmppPresence(available=False)


MAX_CONTACTS = 100_000  # SIP users with XMPP subscribers, in this process
MAX_BUCKETS = 10_000  # rate buckets kept before full ones are swept out
_FIND_DIALOG = 256  # newest agent dialogs searched for the one a SUBSCRIBE created


class ClusterLink(Protocol):
    """The cluster as the gateway sees it (cluster/leader.py `JabberLink`)."""

    node_id: str

    def publish(self, *fields: object) -> None: ...

    async def dialogs(self, source: str) -> list[tuple[Subscription, str | None]]: ...


_encode_doc = msgspec.msgpack.Encoder().encode
_decode_doc = msgspec.msgpack.Decoder(PresenceDoc | None).decode


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why `JabberGateway.check` refuses an initial SUBSCRIBE: the SIP answer to send."""

    status: int
    reason: str
    retry_after: int | None = None


class _Remote:
    """An XMPP user some SIP users watch: the presentities that stand for it, its resources,
    and its answer per SIP watcher: watcher JID (``alice*example.com@<component>``) -> None
    pending, True approved, False refused. `farewell`: the status texts of the unavailable
    that took its last resource ("bye"), which SIP watchers see as notes of the closed tuple
    until it comes back."""

    __slots__ = ("farewell", "presentities", "resources", "watchers")

    def __init__(self) -> None:
        self.presentities: set[str] = set()
        self.resources: dict[str, XmppPresence] = {}
        self.watchers: dict[str, bool | None] = {}
        self.farewell: tuple[tuple[str, str | None], ...] = ()

    @property
    def approved(self) -> bool | None:
        """True when any SIP watcher is approved, False when all refused, else None."""
        answers = self.watchers.values()
        if any(a is True for a in answers):
            return True
        return False if answers and all(a is False for a in answers) else None


class _Contact:
    """A SIP user some XMPP users watch: its component JID; its approved subscribers, each
    with the `View` its rules grant (None: everything); those awaiting the rules (confirm);
    the last presence sent to each."""

    __slots__ = ("jid", "pending", "sent", "subscribers")

    def __init__(self, jid: str) -> None:
        self.jid = jid
        self.subscribers: dict[str, View | None] = {}
        self.pending: set[str] = set()
        self.sent: dict[str, XmppPresence] = {}


class JabberGateway:
    """Bridges one `XmppComponent` and the `NotifierService` (policies in the module docstring).

    Registers itself as the component's ``on_event`` and as a watch and change listener of the
    presence service at construction, so no `WatchStarted` emitted before `start` is missed.
    """

    def __init__(
        self,
        presence: NotifierService,
        addressing: Addressing,
        component: XmppComponent,
        served_domains: Iterable[str],
        *,
        max_resources: int = 32,
        max_subscribers: int = 1000,
        max_contacts_per_user: int = 100,
        max_contacts: int = 10_000,
        allowed_domains: Iterable[str] = (),
        subscribe_rate: int = 20,
        resubscribe_rate: int = 20,
        authenticated: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.presence = presence
        self.addressing = addressing
        self.component = component
        self.served = frozenset(d.lower().rstrip(".") for d in served_domains)
        self.max_resources = max_resources
        self.max_subscribers = max_subscribers
        self.max_contacts_per_user = max_contacts_per_user
        self.max_contacts = max_contacts
        self.allowed_domains = frozenset(d.lower().rstrip(".") for d in allowed_domains)
        self.subscribe_rate = subscribe_rate
        self.resubscribe_rate = resubscribe_rate
        self.authenticated = authenticated
        self.clock = clock
        # Watcher key (authenticated AOR, or source host) -> JID -> dialog ids behind it.
        self._owned: dict[str, dict[str, set[str]]] = {}
        self._reserved: dict[str, int] = {}  # JIDs admitted but not yet watched -> count
        self._buckets: dict[str, tuple[float, float]] = {}  # watcher key -> (tokens, at)
        # (XMPP user, SIP watcher JID) to re-announce after a reconnection
        self._announce: deque[tuple[str, str]] = deque()
        self._announce_task: asyncio.Task[None] | None = None
        self.refusals = 0
        # The JID that subscribes to XMPP users on behalf of every SIP watcher.
        self.gateway_jid = addressing.component
        self._watched: dict[str, str | None] = {}  # presentity -> XMPP bare JID (None: unmappable)
        self._remotes: dict[str, _Remote] = {}  # XMPP bare JID -> state
        self._contacts: dict[str, _Contact] = {}  # SIP AOR -> its XMPP subscribers
        self._dirty: dict[str, None] = {}  # ordered set of presentities to flush
        self._flush_task: asyncio.Task[None] | None = None
        self._stopping = False
        # In a cluster (docs/jabber.md "In a cluster"): set by the composition root. Only the
        # leader holds the component; the others hand it their watches on the feed.
        self.cluster: ClusterLink | None = None
        self.leader = True
        self._epoch = 0  # the leader's fencing epoch (the newest seen, on other nodes)
        self._nodes_watching: dict[str, set[str]] = {}  # presentity -> nodes with watchers
        component.on_event = self.handle_event
        presence.watch_listeners.append(self._on_watch)
        presence.change_listeners.append(self._on_change)
        presence.rules_listeners.append(self._on_rules)

    @classmethod
    def from_config(
        cls,
        cfg: JabberConfig,
        presence: NotifierService,
        served_domains: Iterable[str],
        *,
        authenticated: bool = False,
    ) -> JabberGateway:
        addressing = Addressing(cfg.gateway_domain, cfg.component, cfg.separator, cfg.domains)
        host, port = cfg.server_address
        component = XmppComponent(addressing.component, cfg.secret, host, port, _no_event)
        return cls(
            presence,
            addressing,
            component,
            served_domains,
            max_contacts_per_user=cfg.max_contacts_per_user,
            max_contacts=cfg.max_contacts,
            allowed_domains=cfg.allowed_domains,
            subscribe_rate=cfg.subscribe_rate,
            resubscribe_rate=cfg.resubscribe_rate,
            authenticated=authenticated,
        )

    # --- admission of SIP watchers -------------------------------------------------------------

    async def subscribe(self, event: RequestReceived, presentity: str, source: str,
                        identity: str | None = None) -> None:
        """The dispatcher's handler for source "jabber": `check`, then the presence service.

        Same signature as `NotifierService.subscribe`; only initial SUBSCRIBEs come here (the
        dispatcher sends in-dialog ones to the dialog's own service). `identity` is the
        authenticated user@domain (None without [auth]): the watcher the caps count.
        """
        req = event.request
        key = identity or self._owner_of_request(req, event.peer.host)
        refusal = self.check(req, presentity, key)
        jid = self._jid_of(presentity)
        # Each SIP watcher is its own JID, which the XMPP user approves herself.
        wjid = self._watcher_jid(identity or req.from_.uri.aor)
        if refusal is None and wjid is None:
            refusal = Refusal(403, "Forbidden (the watcher has no XMPP address)")
        remote = self._remotes.get(jid) if jid is not None else None
        answer = remote.watchers.get(wjid) if remote is not None and wjid is not None else None
        if refusal is None and answer is False:
            # She refused this watcher (RFC 6121 §3.1.4) while others still watch her: not
            # asked again until the gateway forgets her (the spam of issue 9 #7).
            refusal = Refusal(403, "Forbidden (the XMPP user refused)")
        if refusal is not None:
            self.refusals += 1
            log.info("jabber: SUBSCRIBE %s from %s refused: %d %s (Call-ID %s)",
                     presentity, key, refusal.status, refusal.reason, req.headers.get("Call-ID"))
            resp = make_response(req, refusal.status, refusal.reason, to_tag=secrets.token_hex(8))
            if refusal.retry_after is not None:
                resp.headers.add("Retry-After", str(refusal.retry_after))
            self.presence.driver.respond(event, resp)
            return
        assert wjid is not None
        if jid is None or req.expires == 0:
            # A fetch is no subscription: it sees her presence only when she approved this
            # watcher already, and nothing is asked of XMPP.
            await self.presence.subscribe(event, presentity, source, identity,
                                          authorized=answer is True)
            return
        # Reserve before the storage write yields, so concurrent SUBSCRIBEs see the count.
        mine = self._owned.setdefault(key, {})
        subs = mine.setdefault(jid, set())
        self._reserved[jid] = self._reserved.get(jid, 0) + 1
        sub_id = None
        try:
            # Pending (RFC 6665 §4.2.2) until she approves this watcher's JID.
            await self.presence.subscribe(event, presentity, source, identity,
                                          authorized=answer is True)
        finally:
            n = self._reserved.pop(jid) - 1
            if n:
                self._reserved[jid] = n
            sub_id = self._dialog_of(req)
            if sub_id is not None:
                subs.add(sub_id)
            elif not subs:
                mine.pop(jid, None)
                if not mine:
                    self._owned.pop(key, None)
        remote = self._remotes.get(jid)
        if sub_id is not None and not self.leader and self.cluster is not None:
            # The leader holds the component: it asks her (or tells us she said yes already).
            self.cluster.publish("jw", self._epoch, presentity, wjid)
        elif sub_id is not None and remote is not None and wjid not in remote.watchers:
            remote.watchers[wjid] = None
            if self.component.connected:
                self.component.subscribe(wjid, jid)

    def check(self, req: Request, presentity: str, key: str) -> Refusal | None:
        """Whether the initial SUBSCRIBE `req` of watcher `key` for `presentity` may proceed.

        None: go ahead. Costs a rate token when it would make the gateway send a new XMPP
        subscription request. O(1) unless the watcher is at its cap (then its own entries are
        re-checked against the agent's dialogs, at most ``max_contacts_per_user`` of them).
        """
        # Every presentity here was routed to the gateway (the default route or the
        # operator's script): its JID comes from the user part or [jabber.domains], whatever
        # served domain its host is.
        found = self.addressing.presentity_to_jid(presentity, routed=True)
        if isinstance(found, Unmappable):
            word = "Bad Request" if found.status == 400 else "Not Found"
            return Refusal(found.status, f"{word} ({found.reason})")
        jid = found
        if self.allowed_domains and jid.rpartition("@")[2] not in self.allowed_domains:
            return Refusal(403, "Forbidden (XMPP domain not allowed)")
        if req.expires == 0:
            return None  # a fetch (RFC 6665 §4.4.3) keeps nothing and sends nothing to XMPP
        mine = self._owned.get(key)
        if mine is not None and jid in mine:
            return None
        if mine is not None and len(mine) >= self.max_contacts_per_user:
            self._prune(key, mine)
            if len(mine) >= self.max_contacts_per_user:
                return Refusal(403, "Forbidden (too many XMPP contacts)")
        if jid in self._remotes or jid in self._reserved:
            return None  # watched already: no new subscription request goes out
        if len(self._remotes) + len(self._reserved) >= self.max_contacts:
            return Refusal(503, "Service Unavailable (too many XMPP contacts)", 60)
        wait = self._take_token(key)
        if wait > 0:
            return Refusal(503, "Service Unavailable (XMPP subscription rate)", math.ceil(wait))
        return None

    def contacts_of(self, key: str) -> frozenset[str]:
        """The XMPP users (bare JIDs) watcher `key` watches through the gateway."""
        return frozenset(self._owned.get(key, ()))

    def _owner_of_request(self, req: Request, host: str) -> str:
        # With [auth] the dispatcher checked that From is the authenticated user; without it
        # From is whatever the peer claims, so the source address is the watcher.
        return req.from_.uri.aor if self.authenticated else host

    def _owner_of_record(self, record: Subscription) -> str:
        if self.authenticated:
            return record.watcher
        try:
            return parse_peer(record.peer).host
        except ValueError:
            return record.peer

    def _jid_of(self, presentity: str) -> str | None:
        found = self.addressing.presentity_to_jid(presentity, routed=True)
        return found if isinstance(found, str) else None

    def _dialog_of(self, req: Request) -> str | None:
        """The dialog id the agent created for initial SUBSCRIBE `req`, if it created one."""
        call_id, tag = req.call_id, req.from_.tag
        dialogs = self.presence.notifier.dialogs
        for n, sub_id in enumerate(reversed(dialogs)):
            if n >= _FIND_DIALOG:
                break
            record = dialogs[sub_id].record
            if record.call_id == call_id and record.remote_tag == tag:
                return sub_id
        return None

    def _prune(self, key: str, mine: dict[str, set[str]]) -> None:
        dialogs = self.presence.notifier.dialogs
        for jid in list(mine):
            subs = mine[jid]
            subs.intersection_update(s for s in list(subs) if s in dialogs)
            if not subs and jid not in self._reserved:
                del mine[jid]

    def _take_token(self, key: str) -> float:
        """Token bucket of ``subscribe_rate`` per minute: 0 when a token was taken, else the
        seconds until one is available."""
        now = self.clock()
        rate = self.subscribe_rate / 60.0
        tokens, at = self._buckets.get(key, (float(self.subscribe_rate), now))
        tokens = min(float(self.subscribe_rate), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        if key not in self._buckets and len(self._buckets) >= MAX_BUCKETS:
            self._sweep_buckets(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _sweep_buckets(self, now: float) -> None:
        rate = self.subscribe_rate / 60.0
        full = float(self.subscribe_rate)
        for k, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * rate >= full:
                del self._buckets[k]

    def _rebuild_owners(self) -> None:
        """Who watches which XMPP user, from the dialogs loaded at start-up."""
        for sub_id, dlg in self.presence.notifier.dialogs.items():
            record = dlg.record
            if record.source != SOURCE:
                continue
            jid = self._jid_of(record.presentity)
            if jid is not None:
                key = self._owner_of_record(record)
                self._owned.setdefault(key, {}).setdefault(jid, set()).add(sub_id)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background); state is announced on each `Connected`."""
        self._stopping = False
        self._rebuild_owners()
        if self.cluster is None:
            await self.component.start()
        else:
            self.leader = False  # until the lease says otherwise (`become_leader`)

    async def stop(self) -> None:
        self._stopping = True
        await self.component.stop()
        self._stop_announcing()
        task, self._flush_task = self._flush_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._dirty.clear()

    # --- cluster (docs/jabber.md "In a cluster") ---------------------------------------------

    async def become_leader(self, epoch: int) -> None:
        """This node took the component lease: learn every node's watches from Redis (the
        dialogs and their owners), then connect; `Connected` re-announces them."""
        assert self.cluster is not None
        self._epoch = epoch
        self.leader = True
        for record, owner in await self.cluster.dialogs(SOURCE):
            if record.event != PRESENCE or record.state not in ("active", "pending"):
                continue
            jid = self._jid_of(record.presentity)
            wjid = self._watcher_jid(record.watcher)
            if jid is None or wjid is None:
                continue
            self._watched[record.presentity] = jid
            remote = self._remotes.setdefault(jid, _Remote())
            remote.presentities.add(record.presentity)
            if record.state == "active":
                remote.watchers[wjid] = True
            else:
                remote.watchers.setdefault(wjid, None)
            self._nodes_watching.setdefault(record.presentity, set()).add(
                owner or self.cluster.node_id)
        log.info("jabber: leader (epoch %d) for %d XMPP users watched in the cluster", epoch,
                 len(self._remotes))
        await self.component.start()

    async def lose_leadership(self) -> None:
        """The lease is gone (or we stop): no stanza from here any more."""
        self.leader = False
        self._stop_announcing()
        await self.component.stop()
        self._contacts.clear()  # XMPP subscribers: the next leader re-learns them (probes)

    async def on_feed(self, kind: str, origin: str, rest: list[Any]) -> None:
        """Another node's gateway message (cluster/node.py hands every "j..." kind here)."""
        epoch = int(rest[0])
        if kind in ("jp", "ja"):  # from a leader: an older one's are stale (fencing)
            if epoch < self._epoch:
                log.info("jabber: dropping %s of stale leader epoch %d", kind, epoch)
                return
            self._epoch = max(self._epoch, epoch)
        if kind == "jp" and not self.leader:
            presentity, doc = str(rest[1]), _decode_doc(rest[2])
            if presentity in self._watched or doc is None:
                await self.presence.set_part(presentity, PART, doc)
        elif kind == "ja" and not self.leader:
            jid, wjid, allow = str(rest[1]), str(rest[2]), bool(rest[3])
            remote = self._remotes.get(jid)
            if remote is not None:
                remote.watchers[wjid] = allow
                await self.presence.authorize(self._dialogs(remote, wjid), allow)
        elif kind == "jw" and self.leader:
            presentity, wjid = str(rest[1]), str(rest[2])
            self._nodes_watching.setdefault(presentity, set()).add(origin)
            self._watch(presentity)  # marks it: its current part goes out to every node
            target = self._watched.get(presentity)
            remote = self._remotes.get(target) if target is not None else None
            if remote is None or target is None:
                return
            if wjid not in remote.watchers:
                remote.watchers[wjid] = None
                if self.component.connected:
                    self.component.subscribe(wjid, target)
            elif remote.watchers[wjid] is not None and self.cluster is not None:
                self.cluster.publish("ja", self._epoch, target, wjid, remote.watchers[wjid])
        elif kind == "ju" and self.leader:
            presentity = str(rest[1])
            nodes = self._nodes_watching.get(presentity)
            if nodes is not None:
                nodes.discard(origin)
                if not nodes:
                    del self._nodes_watching[presentity]
                    self._unwatch(presentity)

    # --- introspection (tests, admin) ------------------------------------------------------

    def resources(self, presentity: str) -> dict[str, XmppPresence]:
        jid = self._watched.get(presentity)
        remote = self._remotes.get(jid) if jid else None
        return dict(remote.resources) if remote is not None else {}

    def subscribers(self, aor: str) -> frozenset[str]:
        contact = self._contacts.get(aor)
        return frozenset(contact.subscribers) if contact is not None else frozenset()

    # --- presence service listeners ------------------------------------------------------------

    def _on_watch(self, presentity: str, source: str, started: bool) -> None:
        if source != SOURCE:
            return
        if self.cluster is None:
            if started:
                self._watch(presentity)
            else:
                self._unwatch(presentity)
            return
        me = self.cluster.node_id
        if started:
            self._nodes_watching.setdefault(presentity, set()).add(me)
            self._watch(presentity)
            return
        nodes = self._nodes_watching.get(presentity, set())
        nodes.discard(me)
        if not self.leader:
            self.cluster.publish("ju", self._epoch, presentity)
            self._forget(presentity)
        elif not nodes:
            self._nodes_watching.pop(presentity, None)
            self._unwatch(presentity)

    def _watch(self, presentity: str, announce: bool = True) -> None:
        if presentity in self._watched:
            return
        jid = self._jid_of(presentity)
        self._watched[presentity] = jid
        if jid is None:
            log.info("jabber: %s is no XMPP address; its watchers see closed", presentity)
        else:
            remote = self._remotes.get(jid)
            if remote is None:
                remote = self._remotes[jid] = _Remote()
            remote.presentities.add(presentity)
            # The XMPP subscription per SIP watcher goes out from `subscribe` (new dialogs)
            # or `_on_connected` (dialogs loaded from storage).
        self._mark(presentity)

    def _forget(self, presentity: str) -> None:
        """A non-leader's mirror of a presentity nobody here watches any more."""
        jid = self._watched.pop(presentity, None)
        remote = self._remotes.get(jid) if jid else None
        if jid is not None and remote is not None:
            remote.presentities.discard(presentity)
            if not remote.presentities:
                del self._remotes[jid]

    def _unwatch(self, presentity: str) -> None:
        if presentity not in self._watched:
            return
        jid = self._watched.pop(presentity)
        remote = self._remotes.get(jid) if jid else None
        if jid is not None and remote is not None:
            remote.presentities.discard(presentity)
            if not remote.presentities:
                del self._remotes[jid]
                for wjid, answer in remote.watchers.items():
                    if answer is not False:
                        self.component.unsubscribe(wjid, jid)
        self._mark(presentity)  # flushes part None: the presentity is forgotten

    def _on_change(self, presentity: str, doc: PresenceDoc) -> None:
        # Runs inside NotifierService.set_part for every source change: must never raise.
        contact = self._contacts.get(presentity)
        if contact is None or not contact.subscribers:
            return
        try:
            mapped: dict[int, XmppPresence] = {}  # once per distinct view, not per subscriber
            for subscriber, view in contact.subscribers.items():
                pres = mapped.get(id(view))
                if pres is None:
                    pres = mapped[id(view)] = _presence_for(presentity, doc, view)
                if contact.sent.get(subscriber) != pres:
                    # A politely blocked one got unavailable once and never hears more
                    # (RFC 5025 §3.2.1: its timing would tell).
                    contact.sent[subscriber] = pres
                    self.component.send_presence(contact.jid, subscriber, pres)
        except Exception:
            log.exception("jabber: cannot send presence of %s", presentity)

    async def _on_rules(self, presentity: str) -> None:
        """Rules of a SIP user changed (XCAP, admin API, `presenced rules` + SIGUSR1, another
        node): decide its XMPP watchers again, at once, as the notifier does its dialogs."""
        contact = self._contacts.get(presentity)
        if contact is None:
            return
        for subscriber in sorted(contact.pending):
            self._admit(presentity, contact, subscriber, self._decide(presentity, subscriber))
        for subscriber, view in list(contact.subscribers.items()):
            decision = self._decide(presentity, subscriber)
            if decision.handling in ("block", "confirm"):
                # Revoked (RFC 6121 §3.2.1): unavailable first, then unsubscribed. An
                # active watcher whose rules now say confirm ends too ("deactivated"), as a
                # SIP one does; subscribing again it waits for the rules.
                self.component.send_presence(contact.jid, subscriber, _UNAVAILABLE)
                self.component.refuse(contact.jid, subscriber)
                del contact.subscribers[subscriber]
                contact.sent.pop(subscriber, None)
                event = "rejected" if decision.handling == "block" else "deactivated"
                self._winfo(presentity, subscriber, "terminated", event)
            elif decision.view is not view:
                contact.subscribers[subscriber] = decision.view
                self._send_current(presentity, contact, subscriber)
        if not contact.subscribers and not contact.pending:
            del self._contacts[presentity]

    # --- XMPP events -------------------------------------------------------------------------

    def handle_event(self, event: XmppEvent) -> None:
        """The component's callback. Garbage is logged and dropped; nothing raises."""
        try:
            if isinstance(event, PresenceChanged):
                self._on_presence(event)
            elif isinstance(event, SubscribeRequest):
                self._on_subscribe_request(event.from_bare, event.to_bare)
            elif isinstance(event, Probe):
                self._on_probe(event.from_jid, event.to_bare)
            elif isinstance(event, Unsubscribe):
                self._on_unsubscribe(event.from_bare, event.to_bare)
            elif isinstance(event, Subscribed):
                self._on_subscribed(event.from_bare, event.to_bare)
            elif isinstance(event, Unsubscribed):
                self._on_unsubscribed(event.from_bare, event.to_bare)
            elif isinstance(event, Connected):
                self._on_connected()
            elif isinstance(event, Disconnected):
                self._on_disconnected()
        except Exception:
            log.exception("jabber: failed to handle %r", event)

    def _on_presence(self, event: PresenceChanged) -> None:
        bare, _, resource = event.from_jid.partition("/")
        remote = self._remotes.get(bare)
        if remote is None:
            log.debug("jabber: presence from unwatched %s dropped", event.from_jid)
            return
        if remote.watchers.get(event.to_jid.partition("/")[0]) is not True:
            # Only presence she sends to a SIP watcher she approved (its dialogs alone see
            # it): directed presence elsewhere, or answers to a probe, are no subscription.
            log.debug("jabber: ignoring presence %s -> %s", event.from_jid, event.to_jid)
            return
        pres = event.presence
        if pres.available:
            if resource not in remote.resources and len(remote.resources) >= self.max_resources:
                log.warning(
                    "jabber: %s has more than %d resources, %r dropped",
                    bare,
                    self.max_resources,
                    resource,
                )
                return
            if remote.resources.get(resource) == pres:
                return
            remote.resources[resource] = pres
            remote.farewell = ()
        else:
            farewell = remote.farewell
            if resource:
                if remote.resources.pop(resource, None) is None and pres.statuses == farewell:
                    return
            else:
                # Unavailable from the bare JID (e.g. the answer to a probe): no resource is
                # online. A probe answered late, after her own "unavailable" with a status,
                # often carries no text (RFC 6121 §4.3.2): it must not erase her farewell.
                if not remote.resources and (pres.statuses == farewell or not pres.statuses):
                    return
                remote.resources.clear()
            if not remote.resources:
                # Its status text ("bye") stays on the closed tuple (docs/jabber.md).
                remote.farewell = pres.statuses
        for presentity in remote.presentities:
            self._mark(presentity)

    def _on_subscribed(self, from_bare: str, to_bare: str) -> None:
        remote = self._remotes.get(from_bare)
        if remote is None or to_bare not in remote.watchers or remote.watchers[to_bare]:
            return
        remote.watchers[to_bare] = True
        log.info("jabber: %s approved %s", from_bare, to_bare)
        if self.cluster is not None:
            self.cluster.publish("ja", self._epoch, from_bare, to_bare, True)
        self.presence.background.spawn(self.presence.authorize(self._dialogs(remote, to_bare), True))
        # The server pushes current presence itself (RFC 6121 §3.1.5); a probe covers
        # servers that do not.
        self.component.probe(to_bare, from_bare)

    def _on_unsubscribed(self, from_bare: str, to_bare: str) -> None:
        remote = self._remotes.get(from_bare)
        if remote is None or to_bare not in remote.watchers:
            return
        # Refused or revoked (RFC 6121 §3.1.4, §3.2): that watcher's dialogs end rejected,
        # as a block rule ends a SIP watcher's; others she approved keep seeing her.
        log.info("jabber: %s refused or revoked %s", from_bare, to_bare)
        remote.watchers[to_bare] = False  # not asked again while she is watched
        if self.cluster is not None:
            self.cluster.publish("ja", self._epoch, from_bare, to_bare, False)
        self.presence.background.spawn(
            self.presence.authorize(self._dialogs(remote, to_bare), False))
        if not any(remote.watchers.values()):
            remote.resources.clear()
            remote.farewell = ()
            for presentity in remote.presentities:
                self._mark(presentity)

    def _on_subscribe_request(self, from_bare: str, to_bare: str) -> None:
        aor = self._sip_user(to_bare)
        if aor is None:
            log.info(
                "jabber: refusing %s's subscription to %s (not a served SIP user)",
                from_bare,
                to_bare,
            )
            self.component.refuse(to_bare, from_bare)
            return
        contact = self._contact(aor, to_bare, from_bare)
        if contact is None:
            self.component.refuse(to_bare, from_bare)
            return
        if from_bare in contact.subscribers:
            # Asked again (a re-sent request, or her server after a restart of ours):
            # approved already, RFC 6121 §3.1.3 says answer "subscribed" again.
            self.component.approve(to_bare, from_bare)
            self._send_current(aor, contact, from_bare)
            return
        self._admit(aor, contact, from_bare, self._decide(aor, from_bare))
        if not contact.subscribers and not contact.pending:
            del self._contacts[aor]

    def _on_probe(self, from_jid: str, to_bare: str) -> None:
        aor = self._sip_user(to_bare)
        if aor is None:
            if to_bare != self.gateway_jid:
                # Not someone we can speak for: no presence revealed (RFC 6121 §4.3.2).
                self.component.refuse(to_bare, from_jid.partition("/")[0])
            return
        # A probe is no subscription: it is answered as the rules say now. Her server probes
        # only a contact that approved her (RFC 6121 §4.3.1), perhaps before a restart of
        # ours: when the rules would approve her anyway she is a subscriber again.
        bare = from_jid.partition("/")[0]
        decision = self._decide(aor, bare)
        if decision.handling in ("block", "confirm"):
            # Not authorized: no presence revealed, "unsubscribed" (RFC 6121 §4.3.2.1).
            self.component.refuse(to_bare, bare)
            return
        contact = self._contact(aor, to_bare, bare)
        if contact is None:
            return
        if bare not in contact.subscribers:
            contact.pending.discard(bare)
            contact.subscribers[bare] = decision.view
            self._winfo(aor, bare, "active", "subscribe")
        self._send_current(aor, contact, from_jid)

    def _on_unsubscribe(self, from_bare: str, to_bare: str) -> None:
        aor = self._sip_user(to_bare)
        if aor is None:
            return
        contact = self._contacts.get(aor)
        if contact is None:
            return
        if from_bare in contact.pending:  # she withdrew the request before alice decided
            contact.pending.discard(from_bare)
            self._winfo(aor, from_bare, "terminated", "timeout")
        elif from_bare in contact.subscribers:
            del contact.subscribers[from_bare]
            contact.sent.pop(from_bare, None)
            self._winfo(aor, from_bare, "terminated", "timeout")
            # RFC 6121 §3.3.3: the contact's side sends unavailable to the former subscriber.
            self.component.send_presence(to_bare, from_bare, _UNAVAILABLE)
        else:
            return
        if not contact.subscribers and not contact.pending:
            del self._contacts[aor]

    def _on_connected(self) -> None:
        # Presentities loaded from storage at start-up may predate our listener; take them in.
        for presentity in self.presence.notifier.watched(SOURCE):
            self._watch(presentity, announce=False)
        self._stop_announcing()
        # Only SIP watchers still subscribed, not those she refused; paced, not all at once.
        for jid, remote in self._remotes.items():
            self._learn_watchers(remote)
            self._announce.extend((jid, w) for w, a in remote.watchers.items() if a is not False)
        if self._announce:
            self._announce_task = asyncio.get_running_loop().create_task(self._announcing())
        for aor, contact in self._contacts.items():
            contact.sent.clear()
            for subscriber in list(contact.subscribers):
                self._send_current(aor, contact, subscriber)

    def _on_disconnected(self) -> None:
        self._stop_announcing()
        if self._stopping:
            return
        log.info("jabber: XMPP server lost; %d watched XMPP users now closed", len(self._remotes))
        for remote in self._remotes.values():
            remote.resources.clear()
            remote.farewell = ()
        for presentity in self._watched:
            self._mark(presentity)

    # --- helpers -----------------------------------------------------------------------------

    async def _announcing(self) -> None:
        interval = 1.0 / self.resubscribe_rate
        try:
            while self._announce and self.component.connected:
                jid, wjid = self._announce.popleft()
                remote = self._remotes.get(jid)
                answer = remote.watchers.get(wjid, False) if remote is not None else False
                if answer is False:
                    continue  # nobody watches her any more, or she said no
                if answer:
                    # Approved before: the roster on her server holds it (RFC 6121 §3.1.5);
                    # a probe brings her presence back.
                    self.component.probe(wjid, jid)
                else:
                    # Re-sending subscribe when already approved is harmless: the server
                    # answers "subscribed" for the contact (RFC 6121 §3.1.3). No probe for a
                    # pending one: Prosody answers an unapproved probe with "unsubscribed",
                    # which also cancels the pending request (found by the tests).
                    self.component.subscribe(wjid, jid)
                await asyncio.sleep(interval)
        finally:
            if self._announce_task is asyncio.current_task():
                self._announce_task = None

    def _stop_announcing(self) -> None:
        self._announce.clear()
        task, self._announce_task = self._announce_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _watcher_jid(self, aor: str) -> str | None:
        """The component JID of a SIP watcher of a served domain (``alice@example.com`` ->
        ``alice*example.com@<component>``), None for others: the gateway speaks only for
        its own users."""
        user, at, host = aor.rpartition("@")
        if not at or host.lower() not in self.served:
            return None
        return self.addressing.sip_user_as_jid(f"sip:{escape_user(user)}@{host}")

    def _dialogs(self, remote: _Remote, wjid: str) -> list[str]:
        """The live dialogs of one SIP watcher (by its JID) to one XMPP user."""
        out = []
        for presentity in remote.presentities:
            for info in self.presence.notifier.watchers_of(presentity, PRESENCE):
                r = info.record
                if r.source == SOURCE and info.status != "terminated" and \
                        self._watcher_jid(r.watcher) == wjid:
                    out.append(r.id)
        return out

    def _learn_watchers(self, remote: _Remote) -> None:
        """The SIP watchers of an XMPP user from the dialogs (loaded from storage at
        start-up): an active dialog was approved, a pending one is still asked."""
        for presentity in remote.presentities:
            for info in self.presence.notifier.watchers_of(presentity, PRESENCE):
                r = info.record
                wjid = self._watcher_jid(r.watcher) if r.source == SOURCE else None
                if wjid is None or info.status == "terminated":
                    continue
                if r.state == "active":
                    remote.watchers[wjid] = True
                else:
                    remote.watchers.setdefault(wjid, None)

    def _sip_user(self, component_jid: str) -> str | None:
        """The presentity key ("user@host") of a served SIP user behind a component JID."""
        sip = self.addressing.jid_as_sip_user(component_jid)
        if sip is None:
            return None
        user, _, host = sip[4:].rpartition("@")  # "sip:" prefix, then the last "@"
        if host not in self.served:
            return None
        return f"{unquote(user)}@{host}"

    def _contact(self, aor: str, jid: str, subscriber: str) -> _Contact | None:
        contact = self._contacts.get(aor)
        if contact is None:
            if len(self._contacts) >= MAX_CONTACTS:
                # Remote XMPP peers choose these addresses: bound what they can make us keep.
                log.warning("jabber: %d SIP users watched from XMPP; refusing %s", len(self._contacts), aor)
                return None
            contact = self._contacts[aor] = _Contact(jid)
        known = subscriber in contact.subscribers or subscriber in contact.pending
        if not known and len(contact.subscribers) + len(contact.pending) >= self.max_subscribers:
            log.warning("jabber: %s has %d XMPP watchers; refusing %s", aor,
                        len(contact.subscribers) + len(contact.pending), subscriber)
            if not contact.subscribers and not contact.pending:
                del self._contacts[aor]
            return None
        return contact

    def _decide(self, aor: str, jid: str) -> Decision:
        """Alice's rules ([pa] default_policy, RFC 4745/5025) for the XMPP watcher `jid`,
        named by its xmpp: URI (RFC 5122), so ``<one id="xmpp:juliet@jabber.test"/>`` and
        ``<many domain="jabber.test"/>`` match it."""
        policy = self.presence.notifier.authz
        if policy is None:
            return _ALLOW
        return policy.decide(aor, f"xmpp:{jid.casefold()}", self.presence.clock())

    def _admit(self, aor: str, contact: _Contact, subscriber: str, decision: Decision) -> None:
        """Apply a decision to a subscriber not yet approved (a request, or a pending one
        whose rules changed): allow and polite-block approve, confirm waits, block refuses."""
        handling = decision.handling
        was_pending = subscriber in contact.pending
        if handling == "confirm":
            if not was_pending:
                contact.pending.add(subscriber)
                log.info("jabber: %s asks to see %s; pending until the rules allow it",
                         subscriber, aor)
                self._winfo(aor, subscriber, "pending", "subscribe")
            return
        contact.pending.discard(subscriber)
        if handling == "block":
            self.component.refuse(contact.jid, subscriber)
            if was_pending:
                self._winfo(aor, subscriber, "terminated", "rejected")
            return
        contact.subscribers[subscriber] = decision.view
        self.component.approve(contact.jid, subscriber)
        self._winfo(aor, subscriber, "active", "approved" if was_pending else "subscribe")
        self._send_current(aor, contact, subscriber)

    def _winfo(self, aor: str, jid: str, status: str, event: str) -> None:
        """The XMPP watcher's entry in alice's presence.winfo (RFC 3858)."""
        uri = f"xmpp:{jid}"
        watcher = Watcher(stable_id(f"{aor} {uri}"), uri, status, event)
        self.presence.background.spawn(self.presence.set_watcher(aor, uri, watcher))

    def _send_current(self, aor: str, contact: _Contact, to: str) -> None:
        doc = self.presence.notifier.document(aor)
        assert isinstance(doc, PresenceDoc)
        bare = to.partition("/")[0]
        if bare not in contact.subscribers:
            return
        pres = _presence_for(aor, doc, contact.subscribers[bare])
        if self.component.send_presence(contact.jid, to, pres):
            contact.sent[bare] = pres

    def _part(self, presentity: str) -> PresenceDoc | None:
        if presentity not in self._watched:
            return None
        jid = self._watched[presentity]
        remote = self._remotes.get(jid) if jid is not None else None
        if remote is None or not remote.resources:
            # The agent's own closed document: watchers see the same tuple as with no source,
            # with the status text of the unavailable that closed it, if any.
            doc = closed_doc(presentity)
            if remote is None or not remote.farewell:
                return doc
            notes = tuple(Note(text, lang) for text, lang in remote.farewell)
            return msgspec.structs.replace(
                doc, tuples=tuple(msgspec.structs.replace(t, notes=notes) for t in doc.tuples))
        return xmpp_to_pidf(entity_of(presentity), remote.resources)

    def _mark(self, presentity: str) -> None:
        if not self.leader:
            return  # the leader computes the part and hands it to every node
        self._dirty[presentity] = None
        if self._flush_task is None and not self._stopping:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._dirty:
                presentity = next(iter(self._dirty))
                del self._dirty[presentity]
                try:
                    part = self._part(presentity)
                    await self.presence.set_part(presentity, PART, part)
                    if self.cluster is not None and self.leader:
                        self.cluster.publish("jp", self._epoch, presentity, _encode_doc(part))
                except Exception:
                    log.exception("jabber: updating %s failed", presentity)
        finally:
            self._flush_task = None


_ALLOW = Decision("allow", None)


def _presence_for(presentity: str, doc: PresenceDoc, view: View | None) -> XmppPresence:
    """What one XMPP subscriber sees of a SIP user: the document its rules' view keeps
    (RFC 5025 §3.3), mapped (RFC 8048); polite-block: always unavailable."""
    if view is None:
        return pidf_to_xmpp(doc)
    if view.offline:
        return _UNAVAILABLE
    return pidf_to_xmpp(apply_view(doc, view, presentity))


def _no_event(_event: XmppEvent) -> None:
    """Placeholder callback until the gateway installs its own."""
