"""The notifier (RFC 6665): SUBSCRIBE and source changes in, effects out, for every package.

Theory of operation
-------------------
The notifier holds every subscription dialog and the composed state of every watched resource
in memory. A resource is an (event package, AOR) pair: `presence` of alice and `dialog` of
alice are two resources with their own watchers. What a state is, how the sources' parts
compose into it and how it is written into a body belongs to the event package
(`pa/packages/`); the notifier knows dialogs, the NOTIFY discipline, expiry and restart. Each
entry point takes `now` (wall-clock epoch seconds) and returns a list of effects, which the
notifier service executes *in order*:

- `Persist(sub)` / `Forget(sub_id)`: write to storage; awaited before anything after it;
- `Reply(response)`: answer the SUBSCRIBE being handled;
- `SendNotify(sub_id, request, dest, route, target, validated)`: send a NOTIFY to `dest` in a
  client transaction and report its final response (or timeout) with `notify_result()`;
- `WatchStarted` / `WatchStopped`: the first watcher of a presentity arrived / the last one
  left, so a source that must fetch presence on demand (the XMPP gateway) can start or stop.

Subscription states (RFC 6665 §4.1.2, §4.2.2) move only as `TRANSITIONS` says: a table of
(state, input) -> (next state, reason), in the style of `sip/transaction.py`. Anything not in
the table is a programming error (`LocalError`). "terminated" is final: the dialog then sends at
most its final NOTIFY and is gone.

    state       input          next         reason (RFC 6665 §4.1.3)
    -           subscribe      active       (pending when not yet authorized)
    pending     authorize      active
    pending/active  refresh    (same)
    pending/active  unsubscribe   terminated   -
    pending/active  expire     terminated   timeout
    pending/active  deauthorize  terminated   rejected
    active      reconfirm      terminated   deactivated (the rules now say confirm)
    pending/active  too_big    terminated   probation   (no document fits a NOTIFY)
    pending/active  giveup     terminated   giveup      (the resource went away: terminate_all)
    pending/active  notify_failed  terminated   -       (481/408/timeout: no final NOTIFY)

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
encoded once per state (versioned packages: a template per state, the watcher's version
written in); when it does not fit a watcher's NOTIFY, the package's summary is sent instead
(presence: the tuples' basic status only), and when even that does not fit, the subscription
ends with `probation` (RFC 6665 §4.1.3: the state may shrink, so a retry later may succeed).

Versions (RFC 4235 §4.1, RFC 3680 §5.1): a versioned package's document carries the
watcher's own counter. It is the NOTIFY's CSeq minus one: 0 for the first document, +1 for each
next one, kept increasing across restarts by the CSeq lease below (a restart may skip numbers,
which full-state documents allow).

CSeq across restarts: a NOTIFY's CSeq must keep increasing even after a crash, but writing
every NOTIFY to storage would cost a write per watcher per change. So the persisted
`local_cseq` is a lease: an upper bound of the CSeqs used. When a dialog's counter reaches its
lease, the agent first persists a lease `CSEQ_LEASE` higher, then sends. After a restart the
counter resumes from the lease, which is never below a CSeq already sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec

from presenced.pa.documents.pidf import stable_id
from presenced.pa.packages import EventPackage, Registry, registry
from presenced.pa.packages.presence import NAME as PRESENCE
from presenced.pa.packages.winfo import NAME as WINFO
from presenced.pa.packages.winfo import PART as WINFO_PART
from presenced.pa.packages.winfo import Watcher, WatcherList, WinfoPackage, diff
from presenced.pa.policy.evaluate import Decision, Policy, View
from presenced.pa.policy.transform import apply_view
from presenced.pa.records import Subscription
from presenced.pa.timers import DeadlineHeap
from presenced.sip.dialog import hop_of, in_dialog_route
from presenced.sip.endpoint import Peer, parse_peer
from presenced.sip.errors import LocalError, ParseError
from presenced.sip.headers import Headers, NameAddr, parse_name_addr
from presenced.sip.message import Request, Response, make_response

CSEQ_LEASE = 64

# --- the subscription state machine (see the module docstring) -----------------------------

TRANSITIONS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("pending", "authorize"): ("active", None),
    ("pending", "refresh"): ("pending", None),
    ("active", "refresh"): ("active", None),
    **{(state, "unsubscribe"): ("terminated", None) for state in ("pending", "active")},
    **{(state, "expire"): ("terminated", "timeout") for state in ("pending", "active")},
    **{(state, "deauthorize"): ("terminated", "rejected") for state in ("pending", "active")},
    # An active watcher whose rules now say confirm: it subscribes again and waits (RFC 6665
    # §4.1.3: deactivated asks for an immediate retry).
    ("active", "reconfirm"): ("terminated", "deactivated"),
    **{(state, "too_big"): ("terminated", "probation") for state in ("pending", "active")},
    **{(state, "giveup"): ("terminated", "giveup") for state in ("pending", "active")},
    **{(state, "notify_failed"): ("terminated", None) for state in ("pending", "active")},
}


def transition(state: str, event: str) -> tuple[str, str | None]:
    """The next state and the reason for it; LocalError when the table has no such move."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalError(f"subscription in state {state!r} cannot take {event!r}") from None

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
    # presence.winfo: ended watchers kept per presentity (and persisted) until a winfo
    # document shows them; 0 keeps none ("offline winfo" of pending dialogs still works).
    max_ended_watchers: int = 20


# --- effects ---------------------------------------------------------------------------------


# Records made for every message write their __init__ out (init=False): mypyc compiles it,
# where the one @dataclass generates stays interpreted: 0.25-0.77 us a call against 0.1-0.17
# (docs/performance.md, "Sixth pass"). Frozen ones set fields as @dataclass does.
@dataclass(frozen=True, slots=True, init=False)
class Reply:
    response: Response

    def __init__(self, response: Response) -> None:
        object.__setattr__(self, "response", response)


@dataclass(frozen=True, slots=True, init=False)
class Persist:
    sub: Subscription

    def __init__(self, sub: Subscription) -> None:
        object.__setattr__(self, "sub", sub)


@dataclass(frozen=True, slots=True, init=False)
class Forget:
    sub_id: str

    def __init__(self, sub_id: str) -> None:
        object.__setattr__(self, "sub_id", sub_id)


@dataclass(frozen=True, slots=True, init=False)
class SendNotify:
    sub_id: str
    request: Request
    # Where the NOTIFY goes: the SUBSCRIBE's flow (a typed Peer: its TCP connection id and
    # listener kept), or, for a dialog set up through a trusted proxy, the first route / the
    # Contact. Only the persisted record holds the flow as text.
    dest: Peer
    route: str | None  # first Route URI when the dialog has a route set, else None
    target: str  # the remote target URI
    # The watcher has answered a NOTIFY of this dialog (or the dialog survived a restart, so it
    # had): its address is proven and the endpoint's anti-amplification budget does not apply.
    validated: bool = False

    def __init__(self, sub_id: str, request: Request, dest: Peer, route: str | None, target: str,
                 validated: bool = False) -> None:
        object.__setattr__(self, "sub_id", sub_id)
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "dest", dest)
        object.__setattr__(self, "route", route)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "validated", validated)


@dataclass(frozen=True, slots=True)
class SaveEnded:
    """Persist the ended watchers of a presentity not yet shown by a winfo document (offline
    winfo); empty `watchers`: delete them (they were shown)."""

    presentity: str
    watchers: tuple[Watcher, ...]


@dataclass(frozen=True, slots=True, init=False)
class WatchStarted:
    presentity: str
    source: str
    event: str = PRESENCE

    def __init__(self, presentity: str, source: str, event: str = PRESENCE) -> None:
        object.__setattr__(self, "presentity", presentity)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "event", event)


@dataclass(frozen=True, slots=True, init=False)
class WatchStopped:
    presentity: str
    source: str
    event: str = PRESENCE

    def __init__(self, presentity: str, source: str, event: str = PRESENCE) -> None:
        object.__setattr__(self, "presentity", presentity)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "event", event)


Effect = Reply | Persist | Forget | SendNotify | WatchStarted | WatchStopped | SaveEnded


# --- state -------------------------------------------------------------------------------------


# (record it was built from, Request-URI, first route, fixed header entries, destination,
#  encoded size of the fixed part)
_Template = tuple[Subscription, str, str | None, tuple[tuple[str, str, str], ...], Peer, int]


class _Dialog:
    """Runtime state of one subscription: the persisted record plus what is in flight."""

    __slots__ = (
        "answered",
        "approved",
        "cseq",
        "dirty",
        "final",
        "flow",
        "last_status",
        "lease",
        "limit_key",
        "outstanding",
        "record",
        "seen",
        "template",
        "trusted",
        "view",
        "withheld",
    )

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
        self.last_status: int | None = None  # final answer to its latest NOTIFY (operators ask)
        self.view: View | None = None  # what of the state this watcher sees (None: all of it)
        self.withheld = False  # no state at all (blocked: its final NOTIFY has no body)
        self.approved = False  # went pending -> active (winfo event "approved")
        # presence.winfo: serial of the watcher list its latest NOTIFY carried, -1 when the
        # watcher may have missed one (first NOTIFY, refresh, restart, a refused NOTIFY): the
        # next NOTIFY then carries full state (RFC 3858 §4).
        self.seen = -1


ResourceKey = tuple[str, str]  # (event package, AOR)


class _Resource:
    """One (package, AOR): its sources' parts, the composed state, its watchers."""

    __slots__ = ("bodies", "name", "package", "parts", "sources", "stale", "state",
                 "summaries", "views", "watchers")

    def __init__(self, package: EventPackage, name: str) -> None:
        self.package = package
        self.name = name
        self.parts: dict[str, object] = {}
        # The composed state, worked out when it is first needed (`current()`): while nobody
        # watches, a change of a part only marks it stale, so a presentity that publishes or
        # registers with no watchers pays no composition per change. `state` is valid when
        # not `stale`, and a resource with watchers is never stale (`watch` composes), so
        # `set_part` compares a new state with the one its watchers saw.
        self.state: object = None
        self.stale = True
        # content type -> body of the current state, or (prefix, suffix) of a versioned one
        self.bodies: dict[str, bytes | tuple[bytes, bytes]] = {}
        self.summaries: dict[str, bytes | tuple[bytes, bytes] | None] = {}
        # per watcher view (interned, so keyed by identity): content type -> body
        self.views: dict[View, dict[str, bytes | tuple[bytes, bytes]]] = {}
        self.watchers: set[str] = set()
        # source ("registrar", "jabber", ...) -> how many of the watchers came through it:
        # the first and last of each start and stop a watch (O(1), not a scan of `watchers`)
        self.sources: dict[str, int] = {}

    def current(self) -> object:
        """The composed state, composing it first when stale."""
        if self.stale:
            parts = self.parts
            self.state = (self.package.compose(self.name, parts) if parts
                          else self.package.empty(self.name))
            self.stale = False
        return self.state

    def recompose_later(self) -> None:
        """The parts changed while nobody watches: compose when the state is next needed."""
        self.stale = True
        self.reset_bodies()

    def watch(self, sub_id: str, source: str) -> bool:
        """Add a watcher; True when it is its source's first."""
        if self.stale:
            self.current()  # watchers are told changes against the state they saw
        self.watchers.add(sub_id)
        n = self.sources.get(source, 0)
        self.sources[source] = n + 1
        return n == 0

    def unwatch(self, sub_id: str, source: str) -> bool:
        """Remove a watcher; True when it was its source's last."""
        self.watchers.discard(sub_id)
        n = self.sources.get(source, 0) - 1
        if n > 0:
            self.sources[source] = n
            return False
        self.sources.pop(source, None)
        return True

    def reset_bodies(self) -> None:
        self.bodies = {}
        self.summaries = {}
        if self.views:
            self.views = {}


def dialog_id(call_id: str, local_tag: str, remote_tag: str) -> str:
    return f"{call_id};{local_tag};{remote_tag}"


def _as_peer(peer: Peer | str) -> Peer:
    return peer if isinstance(peer, Peer) else parse_peer(peer)


def _never(host: str) -> bool:
    return False


# What ended a presence subscription, as a winfo event (RFC 3857 §3.3).
_WINFO_EVENTS = {"unsubscribe": "timeout", "expire": "timeout", "deauthorize": "rejected",
                 "reconfirm": "deactivated", "too_big": "probation", "giveup": "giveup",
                 "notify_failed": "timeout"}
_PARTIAL = "partial"  # key of a resource's cached partial watcherinfo template


def _body(encoded: bytes | tuple[bytes, bytes], version: int) -> bytes:
    if isinstance(encoded, bytes):
        return encoded
    prefix, suffix = encoded
    return b"%s%d%s" % (prefix, version, suffix)


class Notifier:
    def __init__(
        self,
        policy: PaPolicy,
        make_token: Callable[[], str],
        contact_for: Callable[[str, Peer], str],
        trusted: Callable[[str], bool] = _never,
        packages: Registry | None = None,
    ) -> None:
        """`contact_for(presentity, flow)` gives our Contact URI for a dialog over `flow`
        (the listener it came on);
        `trusted(ip)` says whether a SUBSCRIBE from that address came through a trusted proxy
        (`[server] trusted_proxies`), whose Record-Route and Contact may choose addresses;
        `packages` are the event packages served (`pa.packages.registry()` by default)."""
        self.policy = policy
        self.make_token = make_token
        self.contact_for = contact_for
        self.trusted = trusted
        self.packages = packages if packages is not None else registry()
        self.allow_events = ", ".join(self.packages)
        self.dialogs: dict[str, _Dialog] = {}
        self.resources: dict[ResourceKey, _Resource] = {}
        self.per_watcher: dict[str, int] = {}
        self.expiry: DeadlineHeap[str] = DeadlineHeap()
        # Presentities whose rules change their decisions at a validity boundary (RFC 4745
        # §7.3): due at the next boundary, when their watchers are decided again.
        self.validity: DeadlineHeap[str] = DeadlineHeap()
        # event -> the parts a source holds for an AOR right now, asked when a resource of
        # that event comes into being (see `provide`).
        self._providers: dict[str, Callable[[str], dict[str, object]]] = {}
        self.coalesced = 0  # changes folded into a NOTIFY still to be sent (one in flight)
        # The authorization policy for presence watchers (None: everyone sees everything).
        self.authz: Policy | None = None
        # presence.winfo (RFC 3857): presentities whose watcher list changed since the last
        # flush_winfo(), and the ended watchers not yet shown ("offline winfo").
        self.winfo_dirty: set[str] = set()
        self._ended: dict[str, list[Watcher]] = {}
        # Watchers that hold no SIP dialog here (the XMPP gateway's subscribers): presentity
        # -> key -> its winfo entry, listed beside the dialogs (`set_watcher`).
        self._foreign: dict[str, dict[str, Watcher]] = {}
        self._ended_stored: set[str] = set()  # presentities whose ended watchers are persisted
        if WINFO in self.packages:
            self._providers[WINFO] = self._watcher_parts

    def provide(self, event: str, parts_of: Callable[[str], dict[str, object]]) -> None:
        """A source that keeps its parts of `event` only while someone watches (the registrar
        for reg: no RFC 3680 bookkeeping for AORs nobody watches) gives them here: they seed
        every new resource of that event, so its first watcher gets the current state."""
        self._providers[event] = parts_of

    def watching(self, presentity: str, event: str) -> bool:
        res = self.resources.get((event, presentity))
        return res is not None and bool(res.watchers)

    # --- resource state --------------------------------------------------------------------

    def _resource(self, event: str, name: str) -> _Resource:
        key = (event, name)
        res = self.resources.get(key)
        if res is None:
            res = self.resources[key] = _Resource(self.packages[event], name)
            provider = self._providers.get(event)
            if provider is not None:
                res.parts.update(provider(name))
        return res

    def document(self, presentity: str, event: str = PRESENCE) -> object:
        """The composed state of a resource (presence: a `PresenceDoc`)."""
        res = self.resources.get((event, presentity))
        return res.current() if res is not None else self.packages[event].empty(presentity)

    def set_part(self, presentity: str, key: str, part: object | None, now: float,
                 event: str = PRESENCE, quiet: bool = False) -> list[Effect]:
        """A source's contribution to a resource changed (None removes it); its watchers are
        notified when the composed state changes. `quiet` drops a part without composing again
        or notifying: the state watchers saw stays until the next change (the registrar uses
        it after reporting a registration's end)."""
        res = self._resource(event, presentity)
        if quiet and res.stale:
            # The state stays as of the last change that was not quiet: compose it now,
            # before the part goes, as an eager composition would have.
            res.current()
        if part is None:
            if res.parts.pop(key, None) is None:
                self._forget_if_idle(event, presentity, res)
                return []
        else:
            if res.parts.get(key) == part:
                return []
            res.parts[key] = part
        if quiet:
            self._forget_if_idle(event, presentity, res)
            return []
        if not res.watchers:
            if not self._forget_if_idle(event, presentity, res):
                res.recompose_later()
            return []
        state = res.package.compose(presentity, res.parts)
        if state == res.state:
            return []
        res.state = state
        res.reset_bodies()
        effects: list[Effect] = []
        for sub_id in list(res.watchers):  # a NOTIFY too big ends its dialog: copy the set
            dlg = self.dialogs[sub_id]
            if dlg.record.state == "pending" or dlg.withheld or (
                    dlg.view is not None and dlg.view.offline):
                # Nothing of the state reaches these watchers, so no NOTIFY either: its
                # timing alone would tell a pending or politely blocked watcher when the
                # presentity's state changes (RFC 5025 §3.2.1: indistinguishable from offline).
                continue
            self._notify(dlg, now, effects)
        return effects

    def _forget_if_idle(self, event: str, name: str, res: _Resource) -> bool:
        if res.parts or res.watchers:
            return False
        del self.resources[(event, name)]
        return True

    def seed_part(self, presentity: str, key: str, part: object | None,
                  event: str = PRESENCE) -> None:
        """Set a source's part without notifying anyone (restoring state at start-up)."""
        if part is None:
            return
        res = self._resource(event, presentity)
        res.parts[key] = part
        if res.watchers:
            res.state = res.package.compose(presentity, res.parts)
            res.reset_bodies()
        else:
            res.recompose_later()

    def body(self, presentity: str, content_type: str, now: float, event: str = PRESENCE,
             version: int = 0, view: View | None = None) -> bytes:
        """The body of a resource's current state for one watcher (as `view` shows it)."""
        res = self.resources.get((event, presentity))
        if res is None:
            # A fetch or a final NOTIFY after the last watcher left: encode without creating an
            # entry, which nothing would ever delete again.
            pkg = self.packages[event]
            provider = self._providers.get(event)
            parts = provider(presentity) if provider is not None else {}
            state = pkg.compose(presentity, parts) if parts else pkg.empty(presentity)
            if view is not None:
                state = apply_view(state, view, presentity)  # type: ignore[arg-type]
            return _body(self._encode(pkg, presentity, state, content_type, now), version)
        if view is not None:
            # Encoded once per distinct transformation and state, not per watcher.
            cache = res.views.get(view)
            if cache is None:
                cache = res.views[view] = {}
            encoded = cache.get(content_type)
            if encoded is None:
                viewed = apply_view(res.current(), view, presentity)  # type: ignore[arg-type]
                encoded = cache[content_type] = self._encode(
                    res.package, presentity, viewed, content_type, now)
            return _body(encoded, version)
        encoded = res.bodies.get(content_type)
        if encoded is None:
            encoded = res.bodies[content_type] = self._encode(
                res.package, presentity, res.current(), content_type, now)
        return _body(encoded, version)

    @staticmethod
    def _encode(pkg: EventPackage, name: str, state: object, content_type: str,
                now: float) -> bytes | tuple[bytes, bytes]:
        if pkg.versioned:
            return pkg.template(name, state, content_type, now)
        return pkg.encode(name, state, content_type, now)

    def fitting_body(self, presentity: str, content_type: str, budget: int, now: float,
                     event: str = PRESENCE, version: int = 0,
                     view: View | None = None) -> bytes | None:
        """The current body, or the package's summary when the body exceeds `budget` bytes;
        None when neither fits. Each is encoded once per state and format."""
        b = self.body(presentity, content_type, now, event, version, view)
        if len(b) <= budget:
            return b
        res = self.resources.get((event, presentity))
        if res is None:
            return None
        if view is not None:  # the rare case twice over: not cached
            viewed_summary = res.package.summary(
                presentity, apply_view(res.current(), view, presentity))  # type: ignore[arg-type]
            if viewed_summary is None:
                return None
            body = _body(self._encode(res.package, presentity, viewed_summary, content_type,
                                      now), version)
            return body if len(body) <= budget else None
        if content_type in res.summaries:
            small = res.summaries[content_type]
        else:
            summary = res.package.summary(presentity, res.current())
            small = res.summaries[content_type] = (
                None if summary is None
                else self._encode(res.package, presentity, summary, content_type, now))
        if small is None:
            return None
        body = _body(small, version)
        return body if len(body) <= budget else None

    # --- SUBSCRIBE -----------------------------------------------------------------------------

    def subscribe(self, req: Request, presentity: str, source: str, peer: Peer | str, now: float,
                  identity: str | None = None, authorized: bool = True) -> list[Effect]:
        """An initial SUBSCRIBE (no To-tag): create a dialog, or answer a one-shot fetch.

        `peer` is the flow it came on; `identity` the authenticated "user@domain" (None
        without authentication), which the per-watcher limit counts when given. A subscription
        not `authorized` starts pending (RFC 6665 §4.2.2: NOTIFYs without state) until
        `authorize()` or `deauthorize()`."""
        flow = _as_peer(peer)
        # Every answer to a request without To-tag carries one, errors too (RFC 3261 §8.2.6.2).
        local_tag = self.make_token()
        try:
            checked = self._check(req, local_tag)
        except ParseError as exc:
            return [Reply(make_response(req, 400, f"Bad Request ({exc.reason})", local_tag))]
        if isinstance(checked, Response):
            return [Reply(checked)]
        expires, content_type, package = checked
        if package.owner_only and not self._owner(req, presentity, flow, identity):
            # e.g. reg (RFC 3680 §6): a registration lists the user's devices.
            return [Reply(make_response(req, 403, "Forbidden (only the owner may watch this)",
                                        local_tag))]
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
        event = req.event
        assert event is not None
        decision = None
        if self.authz is not None and package.name == PRESENCE and source == "registrar":
            # The watcher is the authenticated user, else the From (spoofable without [auth]).
            decision = self.authz.decide(presentity, identity or remote.uri.aor, now)
            if decision.handling == "block":
                return [Reply(make_response(req, 403, "Forbidden", local_tag))]
            if decision.handling == "confirm":
                authorized = False
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
            state="active" if authorized else "pending",
            event_id=event.id,
            identity=identity,
        )
        ok = self._ok(req, local_tag, expires, presentity, flow)
        for rr in req.headers.get_all("Record-Route"):
            ok.headers.add("Record-Route", rr)  # RFC 3261 §12.1.1: the dialog's 2xx copies them
        # Who the per-watcher limit counts: the authenticated user; else the From, but only
        # when a trusted proxy vouches for it; else the source address (a forged From must
        # not lock its owner out).
        limit_key = identity or (record.watcher if trusted else f"ip:{flow.host}")
        dlg = _Dialog(record, flow, trusted, limit_key)
        dlg.cseq = 0
        if decision is not None:
            dlg.view = decision.view
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
        key = (package.name, presentity)
        if key not in self.resources and len(self.resources) >= self.policy.max_presentities:
            busy = make_response(req, 503, "Too Many Presentities", to_tag=local_tag)
            busy.headers.add("Retry-After", "60")
            return [Reply(busy)]
        if self.per_watcher.get(limit_key, 0) >= self.policy.max_subscriptions_per_watcher:
            return [Reply(make_response(req, 403, "Forbidden (too many subscriptions)", local_tag))]
        self.dialogs[record.id] = dlg
        self.per_watcher[limit_key] = self.per_watcher.get(limit_key, 0) + 1
        res = self._resource(package.name, presentity)
        if res.watch(record.id, source):
            effects.append(WatchStarted(presentity, source, package.name))
        if package.name == PRESENCE:
            self._winfo_mark(presentity)
        elif package.name == WINFO and presentity in self._ended:
            self.winfo_dirty.add(presentity)  # its first document shows them: then forgotten
        self.expiry.set(record.id, record.expires_at)
        effects.insert(0, Persist(record))
        effects.insert(1, Reply(ok))
        self._notify(dlg, now, effects)
        return effects

    def _owner(self, req: Request, presentity: str, flow: Peer, identity: str | None) -> bool:
        """Whether the watcher is the resource's own user, by the identity rules every
        decision uses: the authenticated user; without [auth], the From AOR when a trusted
        proxy vouches for it. An unvouched From proves nothing, so without [auth] anyone else
        passes (documented: [auth] is what makes winfo and reg private)."""
        if identity is not None:
            return identity == presentity
        if self.trusted(flow.host):
            try:
                return req.from_.uri.aor == presentity
            except ParseError:
                return False
        return True

    def resubscribe(self, req: Request, now: float, peer: Peer | str | None = None,
                    identity: str | None = None) -> list[Effect]:
        """A SUBSCRIBE inside a dialog: refresh, or end it with Expires: 0 (RFC 6665 §4.1.2.2).

        `peer` is the flow the refresh came on: NOTIFYs follow it (a client behind NAT or on a
        new TCP connection refreshes from a new address). `identity`: the authenticated user
        of the refresh; a dialog an authenticated user opened answers only to that user."""
        try:
            sub_id = dialog_id(req.call_id, req.to.tag or "", req.from_.tag or "")
            cseq = req.cseq.seq
        except ParseError as exc:
            return [Reply(make_response(req, 400, f"Bad Request ({exc.reason})"))]
        dlg = self.dialogs.get(sub_id)
        if (dlg is None or dlg.final is not None or req.from_.uri.aor != dlg.record.watcher
                or (dlg.record.identity is not None and identity != dlg.record.identity)):
            # The tags alone do not make the dialog: its remote URI must match too (RFC 3261
            # §12.2.2), and its authenticated user, or anyone who learnt them could end
            # someone else's subscription.
            return [Reply(make_response(req, 481, "Subscription Does Not Exist"))]
        record = dlg.record
        if cseq <= record.remote_cseq:
            return [Reply(make_response(req, 500, "Out of Order"))]  # RFC 3261 §12.2.2
        event = req.event
        if (event is not None and event.package in self.packages
                and (event.package != record.event or event.id != record.event_id)):
            # Another event package or id names another subscription (RFC 6665 §4.1.2, §8.2.1).
            return [Reply(make_response(req, 481, "Subscription Does Not Exist"))]
        try:
            checked = self._check(req)
        except ParseError as exc:
            return [Reply(make_response(req, 400, f"Bad Request ({exc.reason})"))]
        if isinstance(checked, Response):
            return [Reply(checked)]
        expires, content_type, _ = checked
        flow = dlg.flow if peer is None else _as_peer(peer)
        ok = self._ok(req, record.local_tag, expires, record.presentity, flow)
        if expires == 0:
            effects: list[Effect] = []
            self._end(dlg, "unsubscribe", effects)
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
        transition(record.state, "refresh")
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
        dlg.seen = -1  # a refresh resynchronises a winfo subscriber: full state (RFC 3858 §4)
        effects = [Persist(record), Reply(ok)]
        if self._governed(record):
            # Rules with validity periods may say otherwise by now (RFC 4745 §7.3).
            assert self.authz is not None
            self._apply(dlg, self.authz.decide(record.presentity, _judged(record), now), now,
                        effects, refresh=True)
            return effects
        self._notify(dlg, now, effects)
        return effects

    def _check(self, req: Request,
               to_tag: str | None = None) -> tuple[int, str, EventPackage] | Response:
        """Event, Accept and Expires checks shared by initial and refreshing SUBSCRIBEs."""
        event = req.event
        package = self.packages.get(event.package) if event is not None else None
        if package is None:
            # RFC 6665 §4.1.2.1 (and §8.2.1 for a missing Event)
            r = make_response(req, 489, to_tag=to_tag)
            r.headers.add("Allow-Events", self.allow_events)
            return r
        accept = req.headers.get_list("Accept") if "Accept" in req.headers else None
        content_type = package.choose_format(accept)
        if content_type is None:
            r = make_response(req, 406, to_tag=to_tag)
            r.headers.add("Accept", ", ".join(package.formats))
            return r
        expires = req.expires
        if expires is None:
            expires = package.default_expires or self.policy.default_expires
        elif 0 < expires < self.policy.min_expires:
            r = make_response(req, 423, to_tag=to_tag)  # RFC 6665 §4.2.1.1
            r.headers.add("Min-Expires", str(self.policy.min_expires))
            return r
        return min(expires, self.policy.max_expires), content_type, package

    def _ok(self, req: Request, local_tag: str, expires: int, presentity: str, flow: Peer) -> Response:
        ok = make_response(req, 200, to_tag=local_tag)
        ok.headers.add("Expires", str(expires))
        ok.headers.add("Contact", f"<{self.contact_for(presentity, flow)}>")
        return ok

    # --- NOTIFY --------------------------------------------------------------------------------

    def _notify(self, dlg: _Dialog, now: float, effects: list[Effect]) -> None:
        if dlg.outstanding:
            dlg.dirty = True
            self.coalesced += 1
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
        event, presentity, ctype = record.event, record.presentity, record.content_type
        version = dlg.cseq - 1  # the watcher's own document counter (module docstring)
        if record.state == "pending" or dlg.withheld:
            # No state until the subscription is authorized (RFC 6665 §4.2.2), not even in
            # the final NOTIFY of one that ends pending or rejected.
            body: bytes | None = b""
            held_back = False
            static = tuple(e for e in static if e[0] != "content-type")
        else:
            budget = limit - head_size
            if event == WINFO:
                body = self._winfo_body(dlg, presentity, ctype, now, version)
            else:
                body = self.body(presentity, ctype, now, event, version, dlg.view)
            held_back = False
            if len(body) > budget:  # the rare case: a summary, or nothing fits
                body = self.fitting_body(presentity, ctype, budget, now, event, version, dlg.view)
                # A shortened document to a watcher not yet proven: the whole one follows its
                # answer.
                held_back = not validated and dlg.final is None and register
        if body is None and held_back:
            body = b""
            static = tuple(e for e in static if e[0] != "content-type")
        elif body is None:
            if dlg.final is None:
                # Not even the summary fits (RFC 6665 §4.1.3): end the dialog, say so without
                # a body. Its Forget goes after any Persist of this list: the last write wins.
                ended: list[Effect] = []
                self._end(dlg, "too_big", ended)
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
        effects.append(SendNotify(record.id, req, dest, route, target, validated))

    def _notify_template(self, record: Subscription, dlg: _Dialog) -> _Template:
        """What every NOTIFY of a dialog shares, built once per version of its record."""
        h = Headers()
        target = record.remote_target
        hops = in_dialog_route(record.route_set, target)  # RFC 3261 §12.2.1.1
        uri = hops.request_uri
        route = hops.next_hop if record.route_set else None
        for r in hops.routes:
            h.add("Route", r)
        h.add("From", f"<{record.local_uri}>;tag={record.local_tag}")
        h.add("To", f"<{record.remote_uri}>;tag={record.remote_tag}")
        h.add("Call-ID", record.call_id)
        h.add("Max-Forwards", "70")
        h.add("Contact", f"<{self.contact_for(record.presentity, dlg.flow)}>")
        h.add("Event", record.event if record.event_id is None else f"{record.event};id={record.event_id}")
        h.add("Content-Type", record.content_type)
        # Where it goes. Untrusted source: its own flow, whatever the first Route or the
        # Contact say (RFC 6665 §4.2 lets a notifier send only where the subscriber is; the
        # route set still goes in Route headers, so a record-routing proxy keeps working).
        # Trusted proxy: the next hop RFC 3261 §12.2.1.1 names, the first route (strict
        # routing: the Request-URI) or, without a route set, the remote target.
        dest = hop_of(hops.next_hop, dlg.flow) if dlg.trusted else dlg.flow
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
        dlg.last_status = status
        if status < 300:
            dlg.answered = True  # our random branch came back: the address reads what we send
        else:
            dlg.seen = -1  # it did not take that document: the next one is full state
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
            self._end(dlg, "notify_failed", effects)
            del self.dialogs[sub_id]
            return effects
        if dlg.dirty:
            self._send(dlg, now, effects, register=True)
        return effects

    # --- ending ----------------------------------------------------------------------------

    def _end(self, dlg: _Dialog, cause: str, effects: list[Effect],
             reason: str | None = None) -> None:
        """Take a dialog out of service: storage, watcher sets, expiry. `cause` is the input of
        `TRANSITIONS` that ends it; its reason (or `reason`) goes in the final NOTIFY, which the
        caller sends (if any)."""
        record = dlg.record
        _, table_reason = transition(record.state, cause)
        reason = reason or table_reason
        if cause == "too_big":
            dlg.final = TOO_BIG_STATE
        else:
            dlg.final = f"terminated;reason={reason}" if reason else "terminated"
        effects.insert(0, Forget(record.id))
        if record.event == PRESENCE:
            self._winfo_ended(dlg, cause, effects)
        self.expiry.discard(record.id)
        key = dlg.limit_key
        n = self.per_watcher.get(key, 0) - 1
        if n > 0:
            self.per_watcher[key] = n
        else:
            self.per_watcher.pop(key, None)
        self._unwatch(record, effects)

    def _unwatch(self, record: Subscription, effects: list[Effect] | None) -> None:
        key = (record.event, record.presentity)
        res = self.resources.get(key)
        if res is None or record.id not in res.watchers:
            return
        if res.unwatch(record.id, record.source) and effects is not None:
            effects.append(WatchStopped(record.presentity, record.source, record.event))
        if not res.watchers and (not res.parts or record.event == WINFO):
            # A winfo resource nobody watches is dropped: its state is rebuilt (from the
            # presence dialogs) when the next winfo subscriber comes.
            del self.resources[key]

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

    def _discard(self, sub_id: str, effects: list[Effect] | None = None) -> None:
        """Forget a dialog: its expiry, its count against the per-watcher cap, its watch
        (`effects` gets the WatchStopped that may cause)."""
        dlg = self.dialogs.pop(sub_id, None)
        if dlg is None:
            return
        self.expiry.discard(sub_id)
        key = dlg.limit_key
        n = self.per_watcher.get(key, 0) - 1
        if n > 0:
            self.per_watcher[key] = n
        else:
            self.per_watcher.pop(key, None)
        self._unwatch(dlg.record, effects)

    def release(self, sub_id: str) -> list[Effect]:
        """Another node of a cluster took this dialog over: forget it here without a NOTIFY
        or a storage write (the new owner holds the record and its CSeq lease). Returns the
        WatchStopped the dialog's departure causes, if any."""
        effects: list[Effect] = []
        self._discard(sub_id, effects)
        return effects

    def touch(self, sub_ids: Iterable[str], now: float) -> list[Effect]:
        """NOTIFY these dialogs with their resource's current state (a cluster node that
        adopted them: changes made while nobody owned them reach their watchers, and the
        NOTIFY's Contact refreshes their target to the adopter, RFC 6665 §4.1.2.2)."""
        effects: list[Effect] = []
        for sub_id in sub_ids:
            dlg = self.dialogs.get(sub_id)
            if dlg is not None and dlg.final is None:
                self._notify(dlg, now, effects)
        return effects

    def next_deadline(self) -> float | None:
        expiry = self.expiry.next_deadline()
        if not self.validity:
            return expiry
        boundary = self.validity.next_deadline()
        return boundary if expiry is None or (boundary is not None and boundary < expiry) \
            else expiry

    def expire(self, now: float) -> list[Effect]:
        """Subscriptions that ran out get a final NOTIFY (RFC 6665 §4.2.2: reason=timeout);
        presentities whose rules reached a validity boundary have their watchers decided
        again (a window that opens lets them in, one that closes ends or blocks them)."""
        effects: list[Effect] = []
        if self.validity:
            for presentity in self.validity.pop_due(now):
                effects.extend(self.reauthorize(presentity, now))
        for sub_id in self.expiry.pop_due(now):
            dlg = self.dialogs.get(sub_id)
            if dlg is None:
                continue
            self._end(dlg, "expire", effects)
            self._notify(dlg, now, effects)
        return effects

    # --- authorization (RFC 6665 §4.2.2 pending; the privacy policy decides) ------------------

    def authorize(self, sub_id: str, now: float) -> list[Effect]:
        """A pending subscription becomes active: its watcher gets the state at once."""
        dlg = self.dialogs.get(sub_id)
        if dlg is None or dlg.final is not None or dlg.record.state != "pending":
            return []
        state, _ = transition(dlg.record.state, "authorize")
        dlg.record = _replace(dlg.record, state=state, local_cseq=dlg.lease)
        dlg.approved = True
        self._winfo_mark(dlg.record.presentity)
        effects: list[Effect] = [Persist(dlg.record)]
        self._notify(dlg, now, effects)
        return effects

    def deauthorize(self, sub_id: str, now: float) -> list[Effect]:
        """The watcher may no longer see the resource: terminated, reason=rejected."""
        dlg = self.dialogs.get(sub_id)
        if dlg is None or dlg.final is not None:
            return []
        effects: list[Effect] = []
        self._end(dlg, "deauthorize", effects)
        self._notify(dlg, now, effects)
        return effects

    # --- presence.winfo: the watcher list of each presentity ----------------------------------

    def _watcher_list(self, presentity: str) -> tuple[Watcher, ...]:
        watchers: list[Watcher] = []
        res = self.resources.get((PRESENCE, presentity))
        if res is not None:
            for sub_id in sorted(res.watchers):
                dlg = self.dialogs[sub_id]
                r = dlg.record
                watchers.append(Watcher(stable_id(r.id), r.remote_uri, r.state,
                                        "approved" if dlg.approved else "subscribe"))
        foreign = self._foreign.get(presentity)
        if foreign:
            watchers.extend(foreign.values())
        watchers.extend(self._ended.get(presentity, ()))
        return tuple(watchers)

    def _watcher_parts(self, presentity: str) -> dict[str, object]:
        return {WINFO_PART: WatcherList(self._watcher_list(presentity))}

    def set_watcher(self, presentity: str, key: str, watcher: Watcher | None) -> None:
        """A watcher of `presentity`'s presence that is no SIP dialog of ours (an XMPP user
        subscribed through the gateway) came, changed or went: its winfo entry (RFC 3858), or
        None to drop it. A terminated entry is shown once, like an ended dialog's."""
        foreign = self._foreign.setdefault(presentity, {})
        if watcher is None or watcher.status == "terminated":
            gone = foreign.pop(key, None)
            keep = self.policy.max_ended_watchers
            if watcher is not None and gone is not None and keep > 0:
                # Shown once like an ended dialog; not persisted (the gateway relearns its
                # XMPP subscribers from probes after a restart, docs/jabber.md).
                ended = self._ended.setdefault(presentity, [])
                ended.append(watcher)
                del ended[:-keep]
        else:
            if foreign.get(key) == watcher:
                return
            foreign[key] = watcher
        if not foreign:
            del self._foreign[presentity]
        self._winfo_mark(presentity)

    def _winfo_mark(self, presentity: str) -> None:
        if (WINFO, presentity) in self.resources:
            self.winfo_dirty.add(presentity)

    def _winfo_ended(self, dlg: _Dialog, cause: str, effects: list[Effect]) -> None:
        keep = self.policy.max_ended_watchers
        record = dlg.record
        if keep <= 0 or (record.event == PRESENCE and not self.watching(record.presentity, WINFO)
                         and not self._decides(record.presentity)):
            # Offline winfo is for presentities that decide who watches them (rules, or a
            # default other than allow): under allow-all nobody is ever pending, and a watcher
            # that left is reported only to a live winfo subscriber (no bookkeeping per
            # unsubscribe on the default path).
            self._winfo_mark(record.presentity)
            return
        status = "terminated"
        event = _WINFO_EVENTS.get(cause, "timeout")
        if record.state == "pending" and cause == "expire":
            status = "waiting"  # RFC 3857 §3.3: it asked, nobody decided before it expired
        presentity = record.presentity
        ended = self._ended.setdefault(presentity, [])
        ended.append(Watcher(stable_id(record.id), record.remote_uri, status, event))
        del ended[:-keep]
        if len(self._ended) > self.policy.max_presentities:
            dropped = next(iter(self._ended))
            self._ended.pop(dropped)
            if dropped in self._ended_stored:
                self._ended_stored.discard(dropped)
                effects.append(SaveEnded(dropped, ()))
        if self.watching(presentity, WINFO):
            self.winfo_dirty.add(presentity)  # shown at the next flush, then forgotten
        elif presentity in self._ended and self._decides(presentity):
            # Nobody reads them now: kept for the presentity's next winfo subscription, across
            # a restart too (offline winfo). Only for presentities whose watchers are decided
            # (a default other than allow, or rules): the plain allow-all path, where nobody
            # has anything to decide, pays no storage write per unsubscribe.
            self._ended_stored.add(presentity)
            effects.append(SaveEnded(presentity, tuple(ended)))

    def _decides(self, presentity: str) -> bool:
        authz = self.authz
        return authz is not None and (authz.default != "allow" or authz.has_rules(presentity))

    def load_ended(self, presentity: str, watchers: Iterable[Watcher]) -> None:
        """Ended watchers persisted by an earlier run (`SaveEnded`), not yet shown."""
        keep = self.policy.max_ended_watchers
        entries = list(watchers)[-keep:] if keep > 0 else []
        if entries and len(self._ended) < self.policy.max_presentities:
            self._ended[presentity] = entries
            self._ended_stored.add(presentity)

    def flush_winfo(self, now: float) -> list[Effect]:
        """NOTIFY the winfo watchers of every presentity whose watcher list changed: a partial
        document to those that saw the previous list, full state to the others."""
        effects: list[Effect] = []
        dirty, self.winfo_dirty = self.winfo_dirty, set()
        for presentity in dirty:
            res = self.resources.get((WINFO, presentity))
            if res is None or not res.watchers:
                continue
            old = res.current()
            assert isinstance(old, WatcherList)
            watchers = self._watcher_list(presentity)
            if watchers != old.watchers:
                effects.extend(self.set_part(presentity, WINFO_PART, diff(old, watchers), now,
                                             WINFO))
            if self._ended.pop(presentity, None) is not None:  # shown once
                if presentity in self._ended_stored:
                    self._ended_stored.discard(presentity)
                    effects.append(SaveEnded(presentity, ()))
                # Terminated ones leave the list without a NOTIFY (every subscriber drops them
                # on reading, RFC 3858 §4), so a later full document does not show them again;
                # same serial: the subscribers' tables did not change. A waiting one stays
                # until the next change reports it terminated.
                state = res.current()
                assert isinstance(state, WatcherList)
                kept = tuple(w for w in state.watchers if w.status != "terminated")
                if kept != state.watchers:
                    res.state = res.parts[WINFO_PART] = WatcherList(kept, state.changes,
                                                                    state.serial)
                    res.reset_bodies()
        return effects

    def _winfo_body(self, dlg: _Dialog, presentity: str, content_type: str, now: float,
                    version: int) -> bytes:
        """Full or partial watcherinfo for one winfo subscriber (RFC 3858 §4): partial only
        when it accepted the list just before this one. Both encoded once per state."""
        res = self.resources.get((WINFO, presentity))
        if res is None:
            dlg.seen = -1
            return self.body(presentity, content_type, now, WINFO, version)
        state = res.current()
        assert isinstance(state, WatcherList)
        seen, dlg.seen = dlg.seen, state.serial
        if seen < 0 or seen != state.serial - 1 or state.changes is None:
            return self.body(presentity, content_type, now, WINFO, version)
        encoded = res.bodies.get(_PARTIAL)
        if encoded is None:
            pkg = res.package
            assert isinstance(pkg, WinfoPackage)
            encoded = res.bodies[_PARTIAL] = pkg.partial_template(presentity, state)
        return _body(encoded, version)

    def _governed(self, record: Subscription) -> bool:
        # Presence of our own users only: an XMPP user authorizes SIP watchers itself.
        return self.authz is not None and record.event == PRESENCE and record.source == "registrar"

    def reauthorize(self, presentity: str, now: float) -> list[Effect]:
        """The presentity's rules changed: decide every watcher of its presence again and
        apply the outcome at once (pending -> active gets the state; active -> block ends
        with rejected; a narrower view sends the narrower document)."""
        effects: list[Effect] = []
        if self.authz is None:
            return effects
        boundary = self.authz.next_boundary(presentity, now)
        if boundary is None:
            self.validity.discard(presentity)
        else:
            self.validity.set(presentity, boundary)
        res = self.resources.get((PRESENCE, presentity))
        if res is None:
            return effects
        for sub_id in list(res.watchers):
            dlg = self.dialogs[sub_id]
            if dlg.final is None and self._governed(dlg.record):
                self._apply(dlg, self.authz.decide(presentity, _judged(dlg.record), now), now,
                            effects)
        return effects

    def reauthorize_all(self, now: float) -> list[Effect]:
        """Every presence watcher decided again (after a restart: the rules may have changed
        while the server was down)."""
        effects: list[Effect] = []
        done: set[str] = set()
        for ev, name in list(self.resources):
            if ev == PRESENCE:
                done.add(name)
                effects.extend(self.reauthorize(name, now))
        if self.authz is not None:
            for name in self.authz.with_validity():  # watched later: their boundaries count
                if name not in done:
                    effects.extend(self.reauthorize(name, now))
        return effects

    def _apply(self, dlg: _Dialog, decision: Decision, now: float, effects: list[Effect],
               refresh: bool = False) -> None:
        """Move one dialog to what `decision` says. `refresh`: the caller owes the watcher a
        NOTIFY anyway (RFC 6665 §4.2.2: every SUBSCRIBE gets one)."""
        handling = decision.handling
        state = dlg.record.state
        if handling == "block" or (state == "active" and handling == "confirm"):
            dlg.withheld = True
            self._end(dlg, "deauthorize" if handling == "block" else "reconfirm", effects)
            # A refresh's own Persist must not outlive the Forget (the last write wins).
            sub_id = dlg.record.id
            effects[:] = [e for e in effects if not (isinstance(e, Persist) and e.sub.id == sub_id)]
        elif state == "pending" and handling == "confirm":
            if not refresh:
                return
        else:
            changed = decision.view is not dlg.view or dlg.withheld
            dlg.view = decision.view
            dlg.withheld = False
            if state == "pending":
                new_state, _ = transition(state, "authorize")
                dlg.record = _replace(dlg.record, state=new_state, local_cseq=dlg.lease)
                dlg.approved = True
                self._winfo_mark(dlg.record.presentity)
                effects.append(Persist(dlg.record))
            elif not changed and not refresh:
                return  # nothing this watcher sees changed
        self._notify(dlg, now, effects)

    def terminate_all(self, presentity: str, reason: str, now: float,
                      event: str | None = None) -> list[Effect]:
        """End every subscription to `presentity` (of `event`, or of every package), e.g. the
        user was deleted; `reason` goes in the final NOTIFYs (RFC 6665 §4.1.3)."""
        effects: list[Effect] = []
        for (ev, name), res in list(self.resources.items()):
            if name != presentity or (event is not None and ev != event):
                continue
            for sub_id in list(res.watchers):
                dlg = self.dialogs[sub_id]
                self._end(dlg, "giveup", effects, reason=reason)
                self._notify(dlg, now, effects)
        return effects

    def terminate(self, sub_id: str, now: float, reason: str = "deactivated") -> list[Effect]:
        """End one subscription on the operator's word: its watcher gets a final NOTIFY with
        `reason` (RFC 6665 §4.1.3: "deactivated" invites an immediate new SUBSCRIBE, "noresource"
        or "rejected" do not). Empty when there is no such live subscription."""
        dlg = self.dialogs.get(sub_id)
        if dlg is None or dlg.final is not None:
            return []
        effects: list[Effect] = []
        self._end(dlg, "giveup", effects, reason=reason)
        self._notify(dlg, now, effects)
        return effects

    # --- queries (operators: the admin API; read-only) -----------------------------------------

    def info(self, sub_id: str) -> SubscriptionInfo | None:
        dlg = self.dialogs.get(sub_id)
        return None if dlg is None else _info(dlg)

    def watchers_of(self, presentity: str, event: str | None = None) -> list[SubscriptionInfo]:
        """The subscriptions to a presentity (of `event`, or of every package)."""
        out: list[SubscriptionInfo] = []
        for ev in self.packages if event is None else (event,):
            res = self.resources.get((ev, presentity))
            if res is not None:
                out.extend(_info(self.dialogs[s]) for s in res.watchers if s in self.dialogs)
        return out

    def subscriptions_of(self, watcher: str) -> list[SubscriptionInfo]:
        """The subscriptions a watcher AOR holds (a scan: for operators, not for SIP)."""
        return [_info(d) for d in self.dialogs.values() if d.record.watcher == watcher]

    def counts(self) -> dict[tuple[str, str], int]:
        """Live subscriptions by (event package, state); a terminated one awaits its last
        NOTIFY's answer."""
        out: dict[tuple[str, str], int] = {}
        for d in self.dialogs.values():
            key = (d.record.event, "terminated" if d.final is not None else d.record.state)
            out[key] = out.get(key, 0) + 1
        return out

    def resource_keys(self) -> list[ResourceKey]:
        """Every (event package, AOR) held: watched, or with a source's part."""
        return list(self.resources)

    def watcher_count(self, presentity: str, event: str) -> int:
        res = self.resources.get((event, presentity))
        return 0 if res is None else len(res.watchers)

    def sources_of(self, presentity: str, event: str = PRESENCE) -> list[str]:
        """The keys of the parts composing a resource ("registrar", "publish", "jabber" ...)."""
        res = self.resources.get((event, presentity))
        return [] if res is None else sorted(res.parts)

    # --- restart -------------------------------------------------------------------------------

    def load(self, records: Iterable[Subscription], now: float) -> list[Effect]:
        """Take back persisted subscriptions; those that expired while we were down get their
        final NOTIFY now. Records of a package this version does not serve are skipped."""
        effects: list[Effect] = []
        expired: list[_Dialog] = []
        # Dialogs that share a flow (behind one proxy) or a limit key share one object of it.
        flows: dict[str, Peer] = {}
        keys: dict[str, str] = {}
        for record in records:
            if record.event not in self.packages:
                continue
            flow = flows.get(record.peer)
            if flow is None:
                try:
                    flow = flows[record.peer] = parse_peer(record.peer)
                except ValueError:
                    continue  # a record no version wrote; nothing to notify it over
            trusted = self.trusted(flow.host)
            # As in subscribe(): the authenticated user, else the From a trusted proxy vouches
            # for, else the source address.
            key = record.identity or (record.watcher if trusted else f"ip:{flow.host}")
            key = keys.setdefault(key, key)
            dlg = _Dialog(record, flow, trusted, key)
            # A stored dialog outlived its first NOTIFY: one that was never answered ended with
            # its transaction's timeout. So its watcher had answered (saved a moment before a
            # crash is the exception, bounded by the NOTIFY's own retransmissions).
            dlg.answered = True
            if self._governed(record):
                # Until reauthorize_all applies the rules: what they show now, and nothing at
                # all to a watcher they would not let in (no final NOTIFY may leak the state).
                assert self.authz is not None
                decision = self.authz.decide(record.presentity, _judged(record), now)
                dlg.view = decision.view
                dlg.withheld = decision.handling in ("block", "confirm")
            self.dialogs[record.id] = dlg
            self.per_watcher[key] = self.per_watcher.get(key, 0) + 1
            res = self._resource(record.event, record.presentity)
            if res.watch(record.id, record.source):
                effects.append(WatchStarted(record.presentity, record.source, record.event))
            if record.expires_at <= now:
                expired.append(dlg)
            else:
                self.expiry.set(record.id, record.expires_at)
        for dlg in expired:
            self._end(dlg, "expire", effects)
            self._notify(dlg, now, effects)
        return effects

    def renotify(self, presentity: str, now: float, event: str = PRESENCE) -> list[Effect]:
        """NOTIFY every watcher of a resource with its current state (after a restart)."""
        effects: list[Effect] = []
        res = self.resources.get((event, presentity))
        if res is not None:
            for sub_id in list(res.watchers):
                self._notify(self.dialogs[sub_id], now, effects)
        return effects

    def watched(self, source: str | None = None, event: str = PRESENCE) -> list[str]:
        """AORs with at least one watcher of `event` (and of `source`, when given)."""
        return [
            name for (ev, name), res in self.resources.items()
            if ev == event and res.watchers and (
                source is None or any(self.dialogs[s].record.source == source for s in res.watchers))
        ]


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """What an operator sees of one subscription: its record and what is in flight."""

    record: Subscription
    flow: str  # where its NOTIFYs go: the flow of the SUBSCRIBE or of its latest refresh
    status: str  # "active" | "pending" | "terminated" (its final NOTIFY not yet answered)
    outstanding: bool  # a NOTIFY awaits its answer
    last_notify_status: int | None  # the final answer to its latest NOTIFY (408: timed out)
    cseq: int  # CSeq of its latest NOTIFY


def _info(dlg: _Dialog) -> SubscriptionInfo:
    return SubscriptionInfo(
        dlg.record, str(dlg.flow), "terminated" if dlg.final is not None else dlg.record.state,
        dlg.outstanding, dlg.last_status, dlg.cseq)


def _judged(record: Subscription) -> str:
    """Whom the presence rules judge for a dialog: its authenticated user; without [auth],
    the From AOR (a claim, documented in docs/presence.md)."""
    return record.identity or record.watcher


def _replace(record: Subscription, **changes: object) -> Subscription:
    return msgspec.structs.replace(record, **changes)


__all__ = [
    "PRESENCE", "TRANSITIONS", "Effect", "Forget", "NameAddr", "Notifier", "PaPolicy", "Persist", "Reply",
    "SaveEnded", "SendNotify", "SubscriptionInfo", "WatchStarted", "WatchStopped", "transition",
]
