"""The presence agent: SUBSCRIBE and source changes in, effects out (RFC 6665, RFC 3856).

Theory of operation
-------------------
The agent holds every subscription dialog and the composed presence of every watched
presentity in memory. Each entry point takes `now` (wall-clock epoch seconds) and returns a
list of effects, which the presence service executes *in order*:

- `Persist(sub)` / `Forget(sub_id)`: write to storage; awaited before anything after it;
- `Reply(response)`: answer the SUBSCRIBE being handled;
- `SendNotify(sub_id, request, peer, route, target, dest)`: send a NOTIFY to `dest` in a
  client transaction and report its final response (or timeout) with `notify_result()`;
- `WatchStarted` / `WatchStopped`: the first watcher of a presentity arrived / the last one
  left, so a source that must fetch presence on demand (the XMPP gateway) can start or stop.

NOTIFY discipline (RFC 6665 §4.2.2): at most one NOTIFY is outstanding per dialog. A change
while one is outstanding only marks the dialog dirty; when the answer arrives the agent sends
one NOTIFY with the state of *that* moment, so changes coalesce and a watcher never sees an
older state after a newer one. A NOTIFY answered 481/404/408/410, or timing out, ends the
subscription (RFC 6665 §4.2.2, §4.1.3) without affecting other watchers.

Where NOTIFYs go (docs/presence.md "Where NOTIFYs go"): to the flow the SUBSCRIBE, or its
latest refresh, came on: its UDP source address, or its TCP connection. The route set
(Record-Route) always shapes the NOTIFY's Route headers, but the first Route or the Contact
choose the destination only for a dialog whose SUBSCRIBE came from a trusted proxy
(`trusted(host)`): anything else would let one datagram aim our NOTIFYs, and their
retransmissions, at any address (reflection, SSRF). Trust is re-derived from the stored flow
when subscriptions load, so removing a proxy from the list takes effect at the next start.

Size: no NOTIFY exceeds `max_notify_size` (and a UDP datagram's limit). Each body format is
encoded once per document; when it does not fit a watcher's NOTIFY, a summary (the tuples'
basic status only) is sent instead, and when even that does not fit, the subscription ends
with `probation` (RFC 6665 §4.1.3: the state may shrink, so a retry later may succeed).

CSeq across restarts: a NOTIFY's CSeq must keep increasing even after a crash, but writing
every NOTIFY to storage would cost a write per watcher per change. So the persisted
`local_cseq` is a lease: an upper bound of the CSeqs used. When a dialog's counter reaches its
lease, the agent first persists a lease `CSEQ_LEASE` higher, then sends. After a restart the
counter resumes from the lease, which is never below a CSeq already sent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec

from presenced.pa.compose import compose
from presenced.pa.documents.negotiate import choose_format, encode
from presenced.pa.documents.pidf import stable_id
from presenced.pa.model import PresenceDoc, Tuple
from presenced.pa.records import Subscription
from presenced.pa.timers import DeadlineHeap
from presenced.sip.endpoint import Peer, parse_peer
from presenced.sip.errors import ParseError
from presenced.sip.headers import Headers, NameAddr, parse_name_addr
from presenced.sip.message import Request, Response, make_response
from presenced.sip.uri import parse_uri

CSEQ_LEASE = 64
EVENT_PACKAGES = ("presence",)
# NOTIFY failures that do NOT end the subscription: the watcher may accept a later NOTIFY
# (authentication, glare, overload). Every other final failure ends it (RFC 6665 §4.2.2).
TRANSIENT_NOTIFY_STATUSES = frozenset({401, 407, 491, 500, 503})
# The local failure the service reports when a NOTIFY has nowhere to go (a TCP watcher's
# connection is gone and we do not dial out): RFC 5626 §5.3's "Flow Failed". Fatal.
FLOW_FAILED = 430
# The largest UDP payload over IPv4 (65535 - 8 - 20): a bigger NOTIFY cannot be sent at all.
UDP_MAX_PAYLOAD = 65507
# Bytes of a NOTIFY's header not in its template: start line, Via (added by the endpoint),
# CSeq, Subscription-State, Content-Length, blank line. Generous on purpose.
_HEAD_RESERVE = 400
# The final state of a subscription whose document cannot fit any NOTIFY (RFC 6665 §4.1.3:
# "probation" says retry later; the document may have shrunk by then).
TOO_BIG_STATE = "terminated;reason=probation;retry-after=3600"
# Largest NOTIFY toward a UDP watcher that has not yet answered one of its dialog's NOTIFYs
# (RFC 3261 §18.1.1's 1300 bytes): a forged SUBSCRIBE must not draw a large document to its
# "source". Anything larger waits for the first answer; meanwhile the summary (or no body)
# goes, and the full document follows the 2xx (docs/security.md "Bytes out per byte in").
UNVALIDATED_NOTIFY_SIZE = 1300


def _fatal(status: int) -> bool:
    return status >= 300 and status not in TRANSIENT_NOTIFY_STATUSES


@dataclass(frozen=True, slots=True)
class PaPolicy:
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 86400
    max_subscriptions_per_watcher: int = 1000
    max_subscriptions: int = 500_000  # in this process; one more gets 503 with Retry-After
    max_presentities: int = 100_000  # held in memory (watched or with parts); beyond: 503
    max_notify_size: int = 65536  # bytes of a whole NOTIFY ([server] max_message_size)


# --- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    response: Response


@dataclass(frozen=True, slots=True)
class Persist:
    sub: Subscription


@dataclass(frozen=True, slots=True)
class Forget:
    sub_id: str


@dataclass(frozen=True, slots=True)
class SendNotify:
    sub_id: str
    request: Request
    peer: str  # the flow the SUBSCRIBE came on, "udp:127.0.0.1:5070"
    route: str | None  # first Route URI when the dialog has a route set, else None
    target: str  # the remote target URI
    # Where the NOTIFY goes: the SUBSCRIBE's flow (with its TCP connection id), or, for a
    # dialog set up through a trusted proxy, the first route / the Contact.
    dest: Peer | None = None
    # The watcher has answered a NOTIFY of this dialog (or the dialog survived a restart, so it
    # had): its address is proven and the endpoint's anti-amplification budget does not apply.
    validated: bool = False


@dataclass(frozen=True, slots=True)
class WatchStarted:
    presentity: str
    source: str


@dataclass(frozen=True, slots=True)
class WatchStopped:
    presentity: str
    source: str


Effect = Reply | Persist | Forget | SendNotify | WatchStarted | WatchStopped


# --- state -------------------------------------------------------------------------------------


# (record it was built from, Request-URI, first route, fixed header entries, destination,
#  encoded size of the fixed part)
_Template = tuple[Subscription, str, str | None, tuple[tuple[str, str, str], ...], Peer, int]


class _Dialog:
    """Runtime state of one subscription: the persisted record plus what is in flight."""

    __slots__ = ("answered", "cseq", "dirty", "final", "flow", "lease", "limit_key", "outstanding",
                 "record", "template", "trusted")

    def __init__(self, record: Subscription, flow: Peer, trusted: bool, limit_key: str) -> None:
        self.record = record
        self.flow = flow  # where the SUBSCRIBE (or its latest refresh) came from, conn_id kept
        self.trusted = trusted  # it came from a trusted proxy: its routes choose the address
        self.limit_key = limit_key  # what the per-watcher limit counts for this dialog
        self.cseq = record.local_cseq  # last CSeq used
        self.lease = record.local_cseq  # highest CSeq the persisted record allows
        self.outstanding = False
        self.dirty = False
        self.answered = False  # the watcher answered one of this dialog's NOTIFYs with a 2xx
        self.final: str | None = None  # Subscription-State to end with, once sent
        self.template: _Template | None = None  # NOTIFY parts fixed for this record


class _Presentity:
    __slots__ = ("bodies", "doc", "parts", "summaries", "watchers")

    def __init__(self, presentity: str) -> None:
        self.parts: dict[str, PresenceDoc] = {}
        self.doc = closed_doc(presentity)
        self.bodies: dict[str, bytes] = {}  # content type -> body of the current doc
        self.summaries: dict[str, bytes] = {}  # content type -> basic-status-only body
        self.watchers: set[str] = set()


def dialog_id(call_id: str, local_tag: str, remote_tag: str) -> str:
    return f"{call_id};{local_tag};{remote_tag}"


def entity_of(presentity: str) -> str:
    return f"pres:{presentity}"


def presentity_tuple_id(presentity: str) -> str:
    """The id of a presentity's main tuple: the registrar's tuple and the closed default share
    it, so a watcher sees one service going open and closed (RFC 3863 §4.1.2)."""
    return stable_id(presentity)


def closed_doc(presentity: str) -> PresenceDoc:
    """What a user with no registration and no publication is: one closed tuple."""
    return PresenceDoc(entity_of(presentity), (Tuple(presentity_tuple_id(presentity), "closed"),))


def summary_doc(doc: PresenceDoc) -> PresenceDoc:
    """The smaller document sent when the whole one does not fit a NOTIFY: each tuple's id and
    basic status, no contacts, notes, activities or person elements."""
    return PresenceDoc(doc.entity, tuple(Tuple(t.id, t.basic) for t in doc.tuples))


def hop_of(uri_text: str, flow: Peer) -> Peer:
    """The address a URI names (RFC 3263 without DNS: an IP literal, port 5060 by default, the
    transport parameter or the flow's); `flow` itself when it names the same address (its TCP
    connection is reused), or when it names no IP address (no DNS lookups here)."""
    try:
        uri = parse_uri(uri_text)
    except ParseError:
        return flow
    host = uri.host.strip("[]")
    if not host or not _is_ip(host):
        return flow
    transport = (uri.params.get("transport") or flow.transport).lower()
    port = uri.port or (5061 if uri.scheme == "sips" else 5060)
    if transport == flow.transport and host == flow.host and port == flow.port:
        return flow
    return Peer(transport, host, port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _as_peer(peer: Peer | str) -> Peer:
    return peer if isinstance(peer, Peer) else parse_peer(peer)


def _never(host: str) -> bool:
    return False


class PresenceAgent:
    def __init__(
        self,
        policy: PaPolicy,
        make_token: Callable[[], str],
        contact_for: Callable[[str, str], str],
        trusted: Callable[[str], bool] = _never,
    ) -> None:
        """`contact_for(presentity, transport)` gives our Contact URI for a dialog;
        `trusted(ip)` says whether a SUBSCRIBE from that address came through a trusted proxy
        (`[server] trusted_proxies`), whose Record-Route and Contact may choose addresses."""
        self.policy = policy
        self.make_token = make_token
        self.contact_for = contact_for
        self.trusted = trusted
        self.dialogs: dict[str, _Dialog] = {}
        self.presentities: dict[str, _Presentity] = {}
        self.per_watcher: dict[str, int] = {}
        self.expiry: DeadlineHeap[str] = DeadlineHeap()

    # --- presence state ----------------------------------------------------------------------

    def _presentity(self, presentity: str) -> _Presentity:
        p = self.presentities.get(presentity)
        if p is None:
            p = self.presentities[presentity] = _Presentity(presentity)
        return p

    def document(self, presentity: str) -> PresenceDoc:
        p = self.presentities.get(presentity)
        return p.doc if p is not None else closed_doc(presentity)

    def set_part(self, presentity: str, key: str, part: PresenceDoc | None, now: float) -> list[Effect]:
        """A source's contribution to `presentity` changed (None removes it). Notifies watchers."""
        p = self._presentity(presentity)
        if part is None:
            if p.parts.pop(key, None) is None:
                return []
        else:
            if p.parts.get(key) == part:
                return []
            p.parts[key] = part
        doc = self._compose(presentity, p)
        if not p.parts and not p.watchers:
            del self.presentities[presentity]
            return []
        if doc == p.doc:
            return []
        p.doc = doc
        p.bodies = {}
        p.summaries = {}
        effects: list[Effect] = []
        for sub_id in list(p.watchers):  # a NOTIFY too big ends its dialog: copy the set
            self._notify(self.dialogs[sub_id], now, effects)
        return effects

    def seed_part(self, presentity: str, key: str, part: PresenceDoc | None) -> None:
        """Set a source's part without notifying anyone (restoring state at start-up)."""
        if part is None:
            return
        p = self._presentity(presentity)
        p.parts[key] = part
        p.doc = self._compose(presentity, p)
        p.bodies = {}
        p.summaries = {}

    @staticmethod
    def _compose(presentity: str, p: _Presentity) -> PresenceDoc:
        """Merge the sources' parts (policy: docs/presence.md).

        Publications are authoritative: while a presentity has a live publication with a
        tuple, the registrar's coarse open/closed tuple is left out, so a user who publishes
        "closed" while registered shows closed. Without any tuple, the presentity is closed
        (person elements and notes are kept).
        """
        parts = p.parts
        published = parts.get("publish")
        if "registrar" in parts and published is not None and published.tuples:
            docs = [d for k, d in parts.items() if k != "registrar"]
        else:
            docs = list(parts.values())
        doc = compose(entity_of(presentity), docs)
        if doc.tuples:
            return doc
        return PresenceDoc(doc.entity, closed_doc(presentity).tuples, doc.persons, doc.notes)

    def body(self, presentity: str, content_type: str, now: float) -> bytes:
        p = self.presentities.get(presentity)
        if p is None:
            # A fetch or a final NOTIFY after the last watcher left: encode without creating an
            # entry, which nothing would ever delete again.
            return encode(closed_doc(presentity), content_type, now)
        b = p.bodies.get(content_type)
        if b is None:
            try:
                b = encode(p.doc, content_type, now)
            except ValueError:
                # A document we accepted but cannot write must not take the presentity (or a
                # restart) down with it: say closed rather than nothing.
                b = encode(closed_doc(presentity), content_type, now)
            p.bodies[content_type] = b
        return b

    def fitting_body(self, presentity: str, content_type: str, budget: int, now: float) -> bytes | None:
        """The current body, or its summary when the body exceeds `budget` bytes; None when
        neither fits. Each is encoded once per document and format, whatever the watchers."""
        b = self.body(presentity, content_type, now)
        if len(b) <= budget:
            return b
        p = self.presentities.get(presentity)
        if p is None:
            return None
        small = p.summaries.get(content_type)
        if small is None:
            try:
                small = encode(summary_doc(p.doc), content_type, now)
            except ValueError:
                small = encode(closed_doc(presentity), content_type, now)
            p.summaries[content_type] = small
        return small if len(small) <= budget else None

    # --- SUBSCRIBE -----------------------------------------------------------------------------

    def subscribe(self, req: Request, presentity: str, source: str, peer: Peer | str, now: float,
                  identity: str | None = None) -> list[Effect]:
        """An initial SUBSCRIBE (no To-tag): create a dialog, or answer a one-shot fetch.

        `peer` is the flow it came on; `identity` the authenticated "user@domain" (None
        without authentication), which the per-watcher limit counts when given."""
        flow = _as_peer(peer)
        # Every answer to a request without To-tag carries one, errors too (RFC 3261 §8.2.6.2).
        local_tag = self.make_token()
        try:
            checked = self._check(req, local_tag)
        except ParseError as exc:
            return [Reply(make_response(req, 400, f"Bad Request ({exc.reason})", local_tag))]
        if isinstance(checked, Response):
            return [Reply(checked)]
        expires, content_type = checked
        try:
            remote = req.from_
            remote_tag = remote.tag
            contacts = req.contacts
            call_id = req.call_id
            cseq = req.cseq.seq
            route_set = tuple(req.headers.get_list("Record-Route"))
            for r in route_set:
                parse_name_addr(r)
        except ParseError as exc:
            return [Reply(make_response(req, 400, f"Bad Request ({exc.reason})", local_tag))]
        if not remote_tag:
            return [Reply(make_response(req, 400, "Bad Request (From without tag)", local_tag))]
        if len(contacts) != 1 or contacts[0].star:
            # RFC 6665 §4.1.2.1 / RFC 3261 §12.1.1: exactly one Contact to target NOTIFYs at.
            reason = "Bad Request (SUBSCRIBE needs one Contact)"
            return [Reply(make_response(req, 400, reason, local_tag))]
        transport = flow.transport
        event = req.event
        assert event is not None
        trusted = self.trusted(flow.host)
        record = Subscription(
            id=dialog_id(call_id, local_tag, remote_tag),
            presentity=presentity,
            event=event.package,
            source=source,
            call_id=call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=str(req.to.uri),
            remote_uri=str(remote.uri),
            watcher=remote.uri.aor,
            remote_target=str(contacts[0].uri),
            route_set=route_set,
            local_cseq=CSEQ_LEASE,
            remote_cseq=cseq,
            expires_at=now + expires,
            content_type=content_type,
            peer=str(flow),
            event_id=event.id,
        )
        ok = self._ok(req, local_tag, expires, presentity, transport)
        for rr in req.headers.get_all("Record-Route"):
            ok.headers.add("Record-Route", rr)  # RFC 3261 §12.1.1: the dialog's 2xx copies them
        # Who the per-watcher limit counts: the authenticated user; else the From, but only
        # when a trusted proxy vouches for it; else the source address (a forged From must
        # not lock its owner out).
        limit_key = identity or (record.watcher if trusted else f"ip:{flow.host}")
        dlg = _Dialog(record, flow, trusted, limit_key)
        dlg.cseq = 0
        effects: list[Effect] = []
        if expires == 0:
            # A fetch (RFC 6665 §4.4.3): 200, one NOTIFY with the state, no dialog kept.
            effects.append(Reply(ok))
            dlg.final = "terminated;reason=timeout"
            self._send(dlg, now, effects, register=False)
            return effects
        if len(self.dialogs) >= self.policy.max_subscriptions:
            busy = make_response(req, 503, "Too Many Subscriptions", to_tag=local_tag)
            busy.headers.add("Retry-After", "60")
            return [Reply(busy)]
        if presentity not in self.presentities and len(self.presentities) >= self.policy.max_presentities:
            busy = make_response(req, 503, "Too Many Presentities", to_tag=local_tag)
            busy.headers.add("Retry-After", "60")
            return [Reply(busy)]
        if self.per_watcher.get(limit_key, 0) >= self.policy.max_subscriptions_per_watcher:
            return [Reply(make_response(req, 403, "Forbidden (too many subscriptions)", local_tag))]
        self.dialogs[record.id] = dlg
        self.per_watcher[limit_key] = self.per_watcher.get(limit_key, 0) + 1
        p = self._presentity(presentity)
        if not any(self.dialogs[s].record.source == source for s in p.watchers):
            effects.append(WatchStarted(presentity, source))
        p.watchers.add(record.id)
        self.expiry.set(record.id, record.expires_at)
        effects.insert(0, Persist(record))
        effects.insert(1, Reply(ok))
        self._notify(dlg, now, effects)
        return effects

    def resubscribe(self, req: Request, now: float, peer: Peer | str | None = None) -> list[Effect]:
        """A SUBSCRIBE inside a dialog: refresh, or end it with Expires: 0 (RFC 6665 §4.1.2.2).

        `peer` is the flow the refresh came on: NOTIFYs follow it (a client behind NAT or on a
        new TCP connection refreshes from a new address)."""
        try:
            sub_id = dialog_id(req.call_id, req.to.tag or "", req.from_.tag or "")
            cseq = req.cseq.seq
        except ParseError as exc:
            return [Reply(make_response(req, 400, f"Bad Request ({exc.reason})"))]
        dlg = self.dialogs.get(sub_id)
        if dlg is None or dlg.final is not None or req.from_.uri.aor != dlg.record.watcher:
            # The tags alone do not make the dialog: its remote URI must match too (RFC 3261
            # §12.2.2), or anyone who learnt them could end someone else's subscription.
            return [Reply(make_response(req, 481, "Subscription Does Not Exist"))]
        record = dlg.record
        if cseq <= record.remote_cseq:
            return [Reply(make_response(req, 500, "Out of Order"))]  # RFC 3261 §12.2.2
        event = req.event
        if (event is not None and event.package in EVENT_PACKAGES
                and (event.package != record.event or event.id != record.event_id)):
            # Another event package or id names another subscription (RFC 6665 §4.1.2, §8.2.1).
            return [Reply(make_response(req, 481, "Subscription Does Not Exist"))]
        try:
            checked = self._check(req)
        except ParseError as exc:
            return [Reply(make_response(req, 400, f"Bad Request ({exc.reason})"))]
        if isinstance(checked, Response):
            return [Reply(checked)]
        expires, content_type = checked
        flow = dlg.flow if peer is None else _as_peer(peer)
        ok = self._ok(req, record.local_tag, expires, record.presentity, flow.transport)
        if expires == 0:
            effects: list[Effect] = []
            self._end(dlg, "terminated", effects)
            effects.insert(1, Reply(ok))
            self._notify(dlg, now, effects)
            return effects
        # A refresh may change the target (RFC 6665 §4.1.2.2 lets Contact update it).
        target = record.remote_target
        try:
            contacts = req.contacts
            if len(contacts) == 1 and not contacts[0].star:
                target = str(contacts[0].uri)
        except ParseError:
            pass
        record = _replace(record, expires_at=now + expires, remote_cseq=cseq,
                          content_type=content_type, remote_target=target, local_cseq=dlg.lease,
                          peer=str(flow))
        dlg.record = record
        if flow != dlg.flow:
            # The dialog moves to the refresh's flow (a new TCP connection, a new NAT binding);
            # whether its routes choose addresses is decided again for the new source.
            dlg.flow = flow
            dlg.trusted = self.trusted(flow.host)
        self.expiry.set(record.id, record.expires_at)
        effects = [Persist(record), Reply(ok)]
        self._notify(dlg, now, effects)
        return effects

    def _check(self, req: Request, to_tag: str | None = None) -> tuple[int, str] | Response:
        """Event, Accept and Expires checks shared by initial and refreshing SUBSCRIBEs."""
        event = req.event
        if event is None or event.package not in EVENT_PACKAGES:
            # RFC 6665 §4.1.2.1 (and §8.2.1 for a missing Event)
            r = make_response(req, 489, to_tag=to_tag)
            r.headers.add("Allow-Events", ", ".join(EVENT_PACKAGES))
            return r
        accept = req.headers.get_list("Accept") if "Accept" in req.headers else None
        content_type = choose_format(accept)
        if content_type is None:
            r = make_response(req, 406, to_tag=to_tag)
            r.headers.add("Accept", "application/pidf+xml, application/cpim-pidf+xml, "
                          "application/xpidf+xml, text/lpidf")
            return r
        expires = req.expires
        if expires is None:
            expires = self.policy.default_expires
        elif 0 < expires < self.policy.min_expires:
            r = make_response(req, 423, to_tag=to_tag)  # RFC 6665 §4.2.1.1
            r.headers.add("Min-Expires", str(self.policy.min_expires))
            return r
        return min(expires, self.policy.max_expires), content_type

    def _ok(self, req: Request, local_tag: str, expires: int, presentity: str, transport: str) -> Response:
        ok = make_response(req, 200, to_tag=local_tag)
        ok.headers.add("Expires", str(expires))
        ok.headers.add("Contact", f"<{self.contact_for(presentity, transport)}>")
        return ok

    # --- NOTIFY --------------------------------------------------------------------------------

    def _notify(self, dlg: _Dialog, now: float, effects: list[Effect]) -> None:
        if dlg.outstanding:
            dlg.dirty = True
            return
        self._send(dlg, now, effects, register=True)

    def _send(self, dlg: _Dialog, now: float, effects: list[Effect], register: bool) -> None:
        record = dlg.record
        dlg.cseq += 1
        if register and dlg.final is None and dlg.cseq > dlg.lease:
            dlg.lease = dlg.cseq + CSEQ_LEASE
            record = dlg.record = _replace(record, local_cseq=dlg.lease)
            effects.append(Persist(record))
        if dlg.final is not None:
            state = dlg.final
        else:
            remaining = max(0, int(record.expires_at - now))
            state = f"{record.state};expires={remaining}"
        template = dlg.template
        if template is None or template[0] is not record:
            template = self._notify_template(record, dlg)
            if dlg.cseq > 1:  # kept only for dialogs notified more than once: memory per idle sub
                dlg.template = template
        _, uri, route, static, dest, head_size = template
        limit = self.policy.max_notify_size
        # Proven: the watcher answered before, or a trusted proxy vouches for the address, or
        # a stream connection's handshake did.
        validated = dlg.answered or dlg.trusted or dest.reliable
        if dest.transport == "udp":
            limit = min(limit, UDP_MAX_PAYLOAD if validated else UNVALIDATED_NOTIFY_SIZE)
        body = self.fitting_body(record.presentity, record.content_type, limit - head_size, now)
        # A shortened document to a watcher not yet proven: the full one follows its answer.
        held_back = not validated and dlg.final is None and register and (
            body is None or len(body) != len(self.body(record.presentity, record.content_type, now)))
        if body is None and held_back:
            body = b""
            static = tuple(e for e in static if e[0] != "content-type")
        elif body is None:
            if dlg.final is None:
                # Not even the summary fits (RFC 6665 §4.1.3): end the dialog, say so without
                # a body. Its Forget goes after any Persist of this list: the last write wins.
                ended: list[Effect] = []
                self._end(dlg, TOO_BIG_STATE, ended)
                effects.extend(ended)
            state = dlg.final or TOO_BIG_STATE
            body = b""
            static = tuple(e for e in static if e[0] != "content-type")
        h = Headers._from_parsed(
            [*static, ("cseq", "CSeq", f"{dlg.cseq} NOTIFY"), ("subscription-state", "Subscription-State", state)]
        )
        target = record.remote_target
        req = Request("NOTIFY", uri, h, body)
        dlg.outstanding = register
        dlg.dirty = held_back
        effects.append(SendNotify(record.id, req, record.peer, route, target, dest, validated))

    def _notify_template(self, record: Subscription, dlg: _Dialog) -> _Template:
        """What every NOTIFY of a dialog shares, built once per version of its record."""
        h = Headers()
        route = None
        target = record.remote_target
        uri = target
        if record.route_set:
            first = parse_name_addr(record.route_set[0])
            route = str(first.uri)
            if "lr" in first.uri.params:
                for r in record.route_set:
                    h.add("Route", r)
            else:  # strict router (RFC 3261 §12.2.1.1): it goes in the Request-URI
                uri = route
                for r in record.route_set[1:]:
                    h.add("Route", r)
                h.add("Route", f"<{target}>")
        h.add("From", f"<{record.local_uri}>;tag={record.local_tag}")
        h.add("To", f"<{record.remote_uri}>;tag={record.remote_tag}")
        h.add("Call-ID", record.call_id)
        h.add("Max-Forwards", "70")
        h.add("Contact", f"<{self.contact_for(record.presentity, record.peer.split(':', 1)[0])}>")
        h.add("Event", record.event if record.event_id is None else f"{record.event};id={record.event_id}")
        h.add("Content-Type", record.content_type)
        # Where it goes. Untrusted source: its own flow, whatever the first Route or the
        # Contact say (RFC 6665 §4.2 lets a notifier send only where the subscriber is; the
        # route set still goes in Route headers, so a record-routing proxy keeps working).
        # Trusted proxy: the next hop RFC 3261 §12.2.1.1 names, the first route (strict
        # routing: the Request-URI) or, without a route set, the remote target.
        if dlg.trusted:
            dest = hop_of(route if route is not None else target, dlg.flow)
        else:
            dest = dlg.flow
        size = len(uri) + _HEAD_RESERVE
        for _, name, value in h._items:
            size += len(name) + 4 + (len(value) if value.isascii() else len(value.encode("utf-8", "replace")))
        return (record, uri, route, tuple(h._items), dest, size)

    def notify_result(self, sub_id: str, status: int, now: float) -> list[Effect]:
        """The final answer to a NOTIFY (408 for a transaction timeout)."""
        dlg = self.dialogs.get(sub_id)
        if dlg is None:
            return []
        dlg.outstanding = False
        if status < 300:
            dlg.answered = True  # our random branch came back: the address reads what we send
        effects: list[Effect] = []
        if dlg.final is not None:
            # The final NOTIFY itself was answered, or the watcher said the dialog is gone (or
            # timed out) while a final NOTIFY waited: nothing more to send (RFC 6665 §4.2.2).
            if not dlg.dirty or _fatal(status):
                del self.dialogs[sub_id]
                return effects
            self._send(dlg, now, effects, register=True)  # a final NOTIFY was waiting
            return effects
        if _fatal(status):
            self._end(dlg, None, effects)
            del self.dialogs[sub_id]
            return effects
        if dlg.dirty:
            self._send(dlg, now, effects, register=True)
        return effects

    # --- ending ----------------------------------------------------------------------------

    def _end(self, dlg: _Dialog, final_state: str | None, effects: list[Effect]) -> None:
        """Take a dialog out of service: storage, watcher sets, expiry. The final NOTIFY (if
        any) is sent by the caller; `final_state` marks what it says."""
        record = dlg.record
        effects.insert(0, Forget(record.id))
        self.expiry.discard(record.id)
        key = dlg.limit_key
        n = self.per_watcher.get(key, 0) - 1
        if n > 0:
            self.per_watcher[key] = n
        else:
            self.per_watcher.pop(key, None)
        p = self.presentities.get(record.presentity)
        if p is not None and record.id in p.watchers:
            p.watchers.discard(record.id)
            if not any(self.dialogs[s].record.source == record.source for s in p.watchers):
                effects.append(WatchStopped(record.presentity, record.source))
            if not p.watchers and not p.parts:
                del self.presentities[record.presentity]
        if final_state is not None:
            dlg.final = final_state
        else:
            dlg.final = "terminated"

    def rollback(self, effects: Sequence[Effect], initial: bool) -> None:
        """Undo a SUBSCRIBE whose storage write failed, so it leaves nothing behind.

        An initial SUBSCRIBE's dialog disappears (its WatchStarted was never delivered); for a
        refresh, the NOTIFY that was never sent stops counting as outstanding."""
        for eff in effects:
            if isinstance(eff, Persist) and initial:
                self._discard(eff.sub.id)
            elif isinstance(eff, SendNotify):
                dlg = self.dialogs.get(eff.sub_id)
                if dlg is not None:
                    dlg.outstanding = False

    def _discard(self, sub_id: str) -> None:
        dlg = self.dialogs.pop(sub_id, None)
        if dlg is None:
            return
        record = dlg.record
        self.expiry.discard(sub_id)
        key = dlg.limit_key
        n = self.per_watcher.get(key, 0) - 1
        if n > 0:
            self.per_watcher[key] = n
        else:
            self.per_watcher.pop(key, None)
        p = self.presentities.get(record.presentity)
        if p is not None:
            p.watchers.discard(sub_id)
            if not p.watchers and not p.parts:
                del self.presentities[record.presentity]

    def next_deadline(self) -> float | None:
        return self.expiry.next_deadline()

    def expire(self, now: float) -> list[Effect]:
        """Subscriptions that ran out get a final NOTIFY (RFC 6665 §4.2.2: reason=timeout)."""
        effects: list[Effect] = []
        for sub_id in self.expiry.pop_due(now):
            dlg = self.dialogs.get(sub_id)
            if dlg is None:
                continue
            self._end(dlg, "terminated;reason=timeout", effects)
            self._notify(dlg, now, effects)
        return effects

    def terminate_all(self, presentity: str, reason: str, now: float) -> list[Effect]:
        """End every subscription to `presentity` (e.g. the user was deleted)."""
        effects: list[Effect] = []
        p = self.presentities.get(presentity)
        if p is None:
            return effects
        for sub_id in list(p.watchers):
            dlg = self.dialogs[sub_id]
            self._end(dlg, f"terminated;reason={reason}", effects)
            self._notify(dlg, now, effects)
        return effects

    # --- restart -------------------------------------------------------------------------------

    def load(self, records: Iterable[Subscription], now: float) -> list[Effect]:
        """Take back persisted subscriptions; those that expired while we were down get their
        final NOTIFY now."""
        effects: list[Effect] = []
        expired: list[_Dialog] = []
        for record in records:
            try:
                flow = parse_peer(record.peer)
            except ValueError:
                continue  # a record no version wrote; nothing to notify it over
            trusted = self.trusted(flow.host)
            # The authenticated identity is not stored: a restored dialog counts for its From
            # (trusted proxy) or its source address.
            key = record.watcher if trusted else f"ip:{flow.host}"
            dlg = _Dialog(record, flow, trusted, key)
            # A stored dialog outlived its first NOTIFY: one that was never answered ended with
            # its transaction's timeout. So its watcher had answered (saved a moment before a
            # crash is the exception, bounded by the NOTIFY's own retransmissions).
            dlg.answered = True
            self.dialogs[record.id] = dlg
            self.per_watcher[key] = self.per_watcher.get(key, 0) + 1
            p = self._presentity(record.presentity)
            if not any(self.dialogs[s].record.source == record.source for s in p.watchers):
                effects.append(WatchStarted(record.presentity, record.source))
            p.watchers.add(record.id)
            if record.expires_at <= now:
                expired.append(dlg)
            else:
                self.expiry.set(record.id, record.expires_at)
        for dlg in expired:
            self._end(dlg, "terminated;reason=timeout", effects)
            self._notify(dlg, now, effects)
        return effects

    def renotify(self, presentity: str, now: float) -> list[Effect]:
        """NOTIFY every watcher of `presentity` with the current state (after a restart)."""
        effects: list[Effect] = []
        p = self.presentities.get(presentity)
        if p is not None:
            for sub_id in list(p.watchers):
                self._notify(self.dialogs[sub_id], now, effects)
        return effects

    def watched(self, source: str | None = None) -> list[str]:
        """Presentities with at least one watcher (of `source`, when given)."""
        return [
            name for name, p in self.presentities.items()
            if p.watchers and (source is None or any(self.dialogs[s].record.source == source for s in p.watchers))
        ]


def _replace(record: Subscription, **changes: object) -> Subscription:
    return msgspec.structs.replace(record, **changes)


__all__ = [
    "Effect", "Forget", "NameAddr", "PaPolicy", "Persist", "PresenceAgent", "Reply", "SendNotify",
    "WatchStarted", "WatchStopped",
]
