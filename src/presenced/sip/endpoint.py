"""The SIP endpoint: bytes in, events and bytes out (sans-IO).

`Endpoint.receive(data, peer, now)` parses a message, runs it through the transaction layer
and the core behaviours every request gets whatever its method (RFC 3261 §8.2: Request-URI
scheme and domain, Max-Forwards, Require, method support, OPTIONS), and returns events:

- `RequestReceived` for a new request the application must answer (REGISTER, SUBSCRIBE,
  PUBLISH, ...); it answers with `respond()`, whose `Transmit`s the driver sends;
- `ResponseReceived` / `ClientTimedOut` for requests the application sent with `send_request()`;
- `Transmit(data, peer)` for bytes to put on the wire (core answers, retransmissions).

Nothing here touches a socket or a clock: `now` comes in with every call and `get_timer()`
says when `handle_timer(now)` must be called next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from presenced.sip.errors import ParseError, UnsafeHeaderError
from presenced.sip.headers import KNOWN_METHODS, Via, split_list
from presenced.sip.limits import (
    AmplificationGuard,
    AmplificationLimits,
    RateLimits,
    SourceLimiter,
)
from presenced.sip.message import (
    DEFAULT_LIMITS,
    TO_TAGGED,
    Limits,
    Request,
    Response,
    make_response,
    parse_message,
)
from presenced.sip.transaction import (
    ClientTimeout,
    Context,
    Retransmit,
    ServerTimeout,
    ServerTransactionKey,
    TransactionError,
    TransactionLayer,
    key_method,
    server_key,
    with_method,
)

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7


# Records made for every message write their __init__ out (init=False): mypyc compiles it,
# where the one @dataclass generates stays interpreted: 0.25-0.77 us a call against 0.1-0.17
# (docs/performance.md, "Sixth pass"). Frozen ones set fields as @dataclass does.
@dataclass(frozen=True, slots=True, init=False)
class Peer:
    """Where a message came from or goes to. `conn_id` names a stream connection; `local` the
    listener it came on or leaves through, as the "host:port" we advertise for it (our Via
    sent-by and Contact). `str()` and the persisted form leave `local` out: a flow restored
    from storage leaves through a listener of its address family (the driver chooses)."""

    transport: str  # "udp" | "tcp" (later "tls", "ws")
    host: str
    port: int
    conn_id: int | None = None
    local: str | None = None

    def __init__(self, transport: str, host: str, port: int, conn_id: int | None = None,
                 local: str | None = None) -> None:
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "conn_id", conn_id)
        object.__setattr__(self, "local", local)

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """Inverse of `str(Peer)` (without the connection id and the listener)."""
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    return Peer(transport, host.strip("[]"), int(port))


@dataclass(frozen=True, slots=True, init=False)
class Transmit:
    data: bytes
    peer: Peer

    def __init__(self, data: bytes, peer: Peer) -> None:
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "peer", peer)


@dataclass(frozen=True, slots=True, init=False)
class RequestReceived:
    request: Request
    peer: Peer
    txn: ServerTransactionKey  # for respond()

    def __init__(self, request: Request, peer: Peer, txn: ServerTransactionKey) -> None:
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "txn", txn)


@dataclass(frozen=True, slots=True, init=False)
class ResponseReceived:
    response: Response
    context: Context

    def __init__(self, response: Response, context: Context) -> None:
        object.__setattr__(self, "response", response)
        object.__setattr__(self, "context", context)


@dataclass(frozen=True, slots=True)
class ClientTimedOut:
    context: Context


Event = Transmit | RequestReceived | ResponseReceived | ClientTimedOut


@dataclass(slots=True)
class EndpointStats:
    received: int = 0
    dropped: int = 0  # unparseable and unanswerable
    bad_requests: int = 0  # answered 4xx/5xx by the core
    retransmissions_absorbed: int = 0
    late_responses: int = 0  # the application answered after the transaction ended
    unanswered: int = 0  # the application never answered within the guard time
    overloaded: int = 0  # answered 503: max_transactions reached, or shed while backlogged
    shed: int = 0  # of those: new REGISTER/SUBSCRIBE/PUBLISH refused while backlogged
    rate_refused: int = 0  # answered 503 by the per-source limiter (once per block)
    rate_dropped: int = 0  # dropped unanswered: the source is blocked
    amplification_dropped: int = 0  # Transmits to an unproven UDP address over its budget
    amplification_dropped_bytes: int = 0
    retransmitted: int = 0  # our requests (NOTIFYs) sent again by Timer E
    # New requests by method, and every answer sent by (method, status class 1-6). Methods
    # outside KNOWN_METHODS count as "OTHER", so the tables stay bounded whatever peers send.
    requests: dict[str, int] = field(default_factory=dict)
    responses: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(slots=True)
class EndpointConfig:
    domains: frozenset[str]  # served domains (lowercase)
    local_hosts: frozenset[str] = frozenset()  # our own addresses: also valid Request-URI hosts
    app_methods: frozenset[str] = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH"})
    allow_events: tuple[str, ...] = ("presence",)
    accept: tuple[str, ...] = ("application/pidf+xml",)
    supported: tuple[str, ...] = ()
    user_agent: str = "presenced"
    limits: Limits = field(default_factory=lambda: DEFAULT_LIMITS)
    # Address we put in our own Via, per transport: {"udp": "127.0.0.1:5060"}
    via_hosts: dict[str, str] = field(default_factory=dict)
    # Live server transactions at most; beyond it new requests get a stateless 503.
    max_transactions: int = 200_000
    # Per-source request and dialog rates (None: no limit); see sip/limits.py.
    rate_limits: RateLimits | None = field(default_factory=RateLimits)
    # Bytes to unproven UDP addresses <= factor x bytes received (None: no bound).
    amplification: AmplificationLimits | None = field(default_factory=AmplificationLimits)


class Endpoint:
    def __init__(self, config: EndpointConfig, make_token: Callable[[], str],
                 transactions: TransactionLayer | None = None) -> None:
        self.config = config
        self.make_token = make_token
        self.txns = transactions or TransactionLayer()
        self.stats = EndpointStats()
        hosts = {h.lower() for h in config.domains | config.local_hosts}
        # A Request-URI writes an IPv6 host as a reference, in brackets (RFC 3261 §19.1.1).
        hosts |= {f"[{h}]" for h in hosts if ":" in h and not h.startswith("[")}
        self._hosts = frozenset(hosts)
        # Option tags are tokens, compared case-insensitively (RFC 3261 §7.3.1).
        self._supported = frozenset(s.lower() for s in config.supported)
        allow = sorted(config.app_methods | {"OPTIONS"})
        self._allow = ", ".join(allow)
        # Methods whose server transactions a CANCEL can match (§9.2).
        self._cancellable = tuple(
            (config.app_methods | KNOWN_METHODS) - {"INVITE", "ACK", "CANCEL"}
        )
        self.limiter = SourceLimiter(config.rate_limits) if config.rate_limits else None
        self.guard = AmplificationGuard(config.amplification) if config.amplification else None
        # Set by the driver while a listener's receive queue is long (docs/performance.md
        # "Overload"): requests that would start new work get a stateless 503, while the
        # work under way -- responses, in-dialog requests, refreshes of a publication --
        # goes on. Shedding early keeps the served rate at capacity instead of collapsing
        # when queued requests wait past their retransmission timers.
        self.backlogged = False

    def accept_hosts(self, hosts: Iterable[str]) -> None:
        """Treat more hosts as ours in Request-URIs (a cluster: every node's addresses, since
        an in-dialog request may arrive at any node)."""
        new = {h.lower() for h in hosts}
        new |= {f"[{h}]" for h in new if ":" in h and not h.startswith("[")}
        if not new <= self._hosts:
            self._hosts = self._hosts | new

    # --- input ------------------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Event]:
        self.stats.received += 1
        guard = self.guard
        try:
            msg = parse_message(data, self.config.limits)
        except ParseError as exc:
            if guard is not None and peer.transport == "udp":
                guard.received(peer.host, len(data), now)
            return self._reject_unparseable(exc, peer, now)
        if isinstance(msg, Response):
            # A response is never answered: it earns no credit (it may prove its address).
            return self._receive_response(msg, peer, now)
        if guard is not None and peer.transport == "udp":
            # What a request may draw back to its source (anti-amplification, RFC 9000 §8.1).
            guard.received(peer.host, len(data), now)
        return self._receive_request(msg, peer, now)

    def _reject_unparseable(self, exc: ParseError, peer: Peer, now: float) -> list[Event]:
        partial = exc.partial
        if isinstance(partial, Request) and partial.method != "ACK":
            try:
                # Answerable when a Via survives: it says where the answer goes (RFC 3261
                # §18.2.2). A missing Call-ID, From, To or CSeq still gets its 400, echoing
                # what exists (RFC 4475 §3.3.1 "insuf").
                partial.top_via  # noqa: B018
                # Those present must be readable: the answer copies them, and a malformed copy
                # would make the answer itself malformed.
                h = partial.headers
                for name, read in (("From", "from_"), ("To", "to"), ("Call-ID", "call_id"),
                                   ("CSeq", "cseq")):
                    if name in h:
                        getattr(partial, read)
            except ParseError:
                pass
            else:
                limited = self._rate_limit(partial, peer, False, now)
                if limited is not None:
                    return limited
                self.stats.bad_requests += 1
                resp = make_response(partial, exc.status, _reason(exc), _stateless_tag(partial))
                return self._stateless(partial, resp, peer, now)
        self.stats.dropped += 1
        return []

    def _receive_response(self, resp: Response, peer: Peer, now: float) -> list[Event]:
        try:
            branch = resp.top_via.branch
            method = resp.cseq.method
        except ParseError:
            self.stats.dropped += 1
            return []
        if branch is None:
            self.stats.dropped += 1
            return []
        result = self.txns.receive_response(branch, method, resp.status, now)
        if result is None:
            return []
        ctx: tuple[object, Peer, bool] = result.context  # type: ignore[assignment]
        dest = ctx[1]
        if self.guard is not None and dest.transport == "udp" and dest.host == peer.host:
            # It carries the branch we sent to `dest`: that address reads what we send
            # (address validation, RFC 9000 §8.1).
            self.guard.prove(dest.host, dest.port, now)
        return [ResponseReceived(resp, ctx[0])]

    def _receive_request(self, req: Request, peer: Peer, now: float) -> list[Event]:
        method = req.method
        if method == "ACK":
            # ACKs to our stateless INVITE answers: nothing to do, and an ACK is never answered,
            # not even a broken one (RFC 3261 §17.2.1, §8.2.6.1).
            return []
        try:
            via = req.top_via
        except ParseError:
            # No Via we can read: no address a response could go to (RFC 3261 §18.2.2).
            self.stats.dropped += 1
            return []
        try:
            self._stamp_via(req, peer)
            key = self._server_key(req, via.sent_by)
        except ParseError as exc:
            limited = self._rate_limit(req, peer, False, now)
            if limited is not None:
                return limited
            self.stats.bad_requests += 1
            bad = make_response(req, 400, _reason(exc), _stateless_tag(req))
            return self._stateless(req, bad, peer, now)
        txns = self.txns
        live = txns.has_server(key)
        if not live and self.limiter is not None:
            # Before any state exists; a retransmission of a live transaction is not counted
            # again.
            limited = self._rate_limit(req, peer, _creates_state(req), now)
            if limited is not None:
                return limited
        if method == "INVITE":
            # We are no user agent for sessions: answer without any INVITE state (§8.2.1).
            refusal = self._method_not_allowed(req, _stateless_tag(req))
            return self._stateless(req, refusal, peer, now)
        if not live and (txns.server_count >= self.config.max_transactions
                         or (self.backlogged and _creates_state(req))):
            # Overload: answer without state rather than let memory grow or the queue of
            # requests waiting to be read get longer (RFC 3261 §21.5.4).
            self.stats.overloaded += 1
            retry = "5"
            if txns.server_count < self.config.max_transactions:
                self.stats.shed += 1
                retry = "2"
            busy = make_response(req, 503, "Overloaded", to_tag=_stateless_tag(req))
            busy.headers.add("Retry-After", retry)
            return self._stateless(req, busy, peer, now)
        outcome = txns.receive_request(key, peer.reliable, now)
        if outcome.action == "absorbed":
            self.stats.retransmissions_absorbed += 1
            return []
        if outcome.action == "resend":
            self.stats.retransmissions_absorbed += 1
            # Same destination as the first copy: the stamped Via is the response's top Via.
            return self._guarded(Transmit(outcome.data, _route(via, peer)), now)
        counts = self.stats.requests
        counted = method if method in KNOWN_METHODS else "OTHER"
        counts[counted] = counts.get(counted, 0) + 1
        resp = self._core_checks(req, key)
        if resp is not None:
            return self.respond(key, resp, peer, now)
        return [RequestReceived(req, peer, key)]

    def _rate_limit(self, req: Request, peer: Peer, dialog: bool, now: float) -> list[Event] | None:
        """None to go on; otherwise what to send instead (one 503, or nothing)."""
        limiter = self.limiter
        if limiter is None:
            return None
        verdict = limiter.check(peer.host, dialog, now)
        if verdict == "allow":
            return None
        if verdict == "drop":
            self.stats.rate_dropped += 1
            return []
        self.stats.rate_refused += 1
        busy = make_response(req, 503, "Rate Limited", to_tag=_stateless_tag(req))
        # RFC 3261 §21.5.4: Retry-After says when the client may try again.
        busy.headers.add("Retry-After", str(max(1, round(limiter.limits.block_time))))
        try:
            return self._stateless(req, busy, peer, now)
        except ParseError:  # nothing sane to answer
            return []

    def _core_checks(self, req: Request, key: ServerTransactionKey) -> Response | None:
        """The checks every request gets before the application sees it (RFC 3261 §8.2).

        Every answer gets a To-tag: §8.2.6.2 requires one on all but 100 responses.
        """
        method = req.method
        try:
            ruri = req.ruri
            if not ruri.is_sip:
                return self._reply(req, 416)  # §8.2.2.1
            max_forwards = req.max_forwards
            if max_forwards == 0 and method != "OPTIONS":
                return self._reply(req, 483)  # §16.3 step 2, we answer as the last hop
            if ruri.host_key not in self._hosts:
                return self._reply(req, 404, "Domain Not Served")
            requires = req.headers.get_list("Require")
            unsupported = [r for r in requires if r.lower() not in self._supported]
            if unsupported and method != "CANCEL":
                r = self._reply(req, 420)  # §8.2.2.3
                r.headers.add("Unsupported", ", ".join(unsupported))
                return r
        except ParseError as exc:
            self.stats.bad_requests += 1
            return self._reply(req, exc.status, _reason(exc))
        if method == "OPTIONS":
            return self._options(req)
        if method in self.config.app_methods:
            return None
        if method == "CANCEL":
            # §9.2: 200 when the CANCEL matches a transaction (it has no effect on a non-INVITE
            # one), else 481. We keep no INVITE transactions, so nothing is ever cancelled.
            txns = self.txns
            if any(txns.has_server(with_method(key, m)) for m in self._cancellable):
                return self._reply(req, 200)
            return self._reply(req, 481)
        if method in KNOWN_METHODS:
            return self._method_not_allowed(req, self.make_token())
        r = self._reply(req, 501)  # §8.2.1
        r.headers.add("Allow", self._allow)
        return r

    def _reply(self, req: Request, status: int, reason: str | None = None) -> Response:
        return make_response(req, status, reason, self.make_token())

    def _options(self, req: Request) -> Response:
        """OPTIONS (RFC 3261 §11.2): what we allow, accept, support."""
        r = make_response(req, 200, to_tag=self.make_token())
        h = r.headers
        h.add("Allow", self._allow)
        h.add("Accept", ", ".join(self.config.accept))
        h.add("Allow-Events", ", ".join(self.config.allow_events))
        if self.config.supported:
            h.add("Supported", ", ".join(self.config.supported))
        h.add("Server", self.config.user_agent)
        return r

    def _method_not_allowed(self, req: Request, to_tag: str) -> Response:
        r = make_response(req, 405, to_tag=to_tag)
        r.headers.add("Allow", self._allow)
        return r

    @staticmethod
    def _server_key(req: Request, sent_by: str) -> ServerTransactionKey:
        branch = req.top_via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            # RFC 2543 peers (§17.2.3): no usable branch, match on the dialog-ish fields.
            branch = "|".join(
                (req.call_id, str(req.cseq.seq), req.from_.tag or "", req.headers.get("Via") or "")
            )
        return server_key(branch, sent_by, req.method)

    @staticmethod
    def _stamp_via(req: Request, peer: Peer) -> None:
        """RFC 3261 §18.2.1 received, RFC 3581 §4 rport: where the request really came from."""
        via = req.top_via
        params = via.params
        changed = False
        # A received the peer wrote itself is never trusted: it would aim our answers at any
        # address (reflection). The value is always the packet's source.
        if "received" in params or via.host.strip("[]").lower() != peer.host.lower():
            params["received"] = peer.host
            changed = True
        if "rport" in params:
            params["rport"] = str(peer.port)
            params["received"] = peer.host
            changed = True
        if changed:
            # Rewrite only the first via-parm of the first Via line, in place.
            items = req.headers._items
            for i, (key, name, value) in enumerate(items):
                if key == "via":
                    rest = split_list(value)[1:]
                    items[i] = (key, name, ", ".join([str(via), *rest]))
                    break

    # --- output -----------------------------------------------------------------------------

    def respond(self, txn: ServerTransactionKey, resp: Response, peer: Peer, now: float) -> list[Event]:
        """Send the application's (or the core's) answer through its server transaction.

        A response other than 100 gets a To-tag when the application gave none (RFC 3261
        §8.2.6.2), so no handler can forget it."""
        if resp.status != 100:
            tagged = resp._cache.get(TO_TAGGED)  # make_response knows, mostly
            if tagged is None:
                try:
                    tagged = resp.to.tag is not None
                except ParseError:
                    tagged = True  # nothing sane to add a tag to; answer as is
            if not tagged:
                to = resp.headers.get("To") or ""
                resp.headers.set("To", f"{to};tag={self.make_token()}")
        if "Server" not in resp.headers:
            resp.headers.add("Server", self.config.user_agent)
        data = resp.encode()
        try:
            self.txns.send_response(txn, resp.status, data, now)
        except TransactionError:
            self.stats.late_responses += 1
            return []
        method = key_method(txn)
        if method not in KNOWN_METHODS:
            method = "OTHER"
        counts = self.stats.responses
        key = (method, resp.status // 100)
        counts[key] = counts.get(key, 0) + 1
        return self._guarded(Transmit(data, self.response_peer(resp, peer)), now)

    def _stateless(self, req: Request, resp: Response, peer: Peer, now: float) -> list[Event]:
        if "Server" not in resp.headers:
            resp.headers.add("Server", self.config.user_agent)
        try:
            data = resp.encode()
        except UnsafeHeaderError:
            # A header the answer must copy (Via, From, To, Call-ID, CSeq) holds a control
            # character: no answer can be written without echoing it. Dropped, counted.
            self.stats.dropped += 1
            return []
        stats = self.stats
        method = req.method if req.method in KNOWN_METHODS else "OTHER"
        key = (method, resp.status // 100)
        stats.responses[key] = stats.responses.get(key, 0) + 1
        return self._guarded(Transmit(data, self.response_peer(resp, peer)), now)

    def _guarded(self, out: Transmit, now: float) -> list[Event]:
        """Every Transmit leaves through here: the anti-amplification budget (RFC 9000 §8.1)."""
        guard = self.guard
        peer = out.peer
        if guard is None or peer.transport != "udp" or guard.allow(peer.host, peer.port, len(out.data), now):
            return [out]
        self.stats.amplification_dropped += 1
        self.stats.amplification_dropped_bytes += len(out.data)
        return []

    def prove(self, peer: Peer, now: float) -> None:
        """Treat `peer` as a validated address (e.g. a watcher known from before a restart)."""
        if self.guard is not None and peer.transport == "udp":
            self.guard.prove(peer.host, peer.port, now)

    @staticmethod
    def response_peer(resp: Response, peer: Peer) -> Peer:
        """Where a response goes (RFC 3261 §18.2.2, RFC 3581 §4).

        Over a stream: back on the same connection. Over UDP: to `received` and `rport` when
        present, else to the source address and the Via port.
        """
        if peer.reliable:
            return peer
        try:
            via = resp.top_via
        except ParseError:
            return peer
        return _route(via, peer)

    def send_request(self, req: Request, peer: Peer, now: float, context: object,
                     validated: bool = False) -> list[Event]:
        """Start a client transaction: stamp our Via with a fresh branch and transmit.

        `validated` says the application knows `peer` reads what we send (it answered an
        earlier request of the same dialog): the request and its retransmissions then bypass
        the anti-amplification budget, which only guards addresses nobody has proven."""
        branch = MAGIC_COOKIE + self.make_token()
        # The listener it leaves through names itself (the driver set `local`), so an answer
        # comes back to the address the request left from.
        sent_by = peer.local or self.config.via_hosts.get(peer.transport, "127.0.0.1")
        req.headers.insert_first("Via", f"SIP/2.0/{peer.transport.upper()} {sent_by};branch={branch};rport")
        if "Max-Forwards" not in req.headers:
            req.headers.add("Max-Forwards", "70")
        data = req.encode()
        self.txns.start_client(branch, data, peer.reliable, now, (context, peer, validated))
        if validated:
            return [Transmit(data, peer)]
        # Over the budget the request is not sent: its transaction times out as for a loss.
        return self._guarded(Transmit(data, peer), now)

    # --- time -------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self.txns.get_timer()

    def handle_timer(self, now: float) -> list[Event]:
        out: list[Event] = []
        for ev in self.txns.handle_timer(now):
            if isinstance(ev, Retransmit):
                self.stats.retransmitted += 1
                ctx: tuple[object, Peer, bool] = ev.context  # type: ignore[assignment]
                if ctx[2]:
                    out.append(Transmit(ev.data, ctx[1]))
                else:
                    out.extend(self._guarded(Transmit(ev.data, ctx[1]), now))
            elif isinstance(ev, ClientTimeout):
                tctx: tuple[object, Peer, bool] = ev.context  # type: ignore[assignment]
                out.append(ClientTimedOut(tctx[0]))
            elif isinstance(ev, ServerTimeout):
                self.stats.unanswered += 1
        return out

    def pending(self) -> Iterable[object]:
        """The contexts of the requests still waiting for a final response."""
        # Client transactions carry (context, peer); the peer is ours, not the caller's.
        return (t.context[0] for t in self.txns.clients.values())  # type: ignore[index]


def _route(via: Via, peer: Peer) -> Peer:
    """Where a response to a request with this (stamped) top Via goes (RFC 3261 §18.2.2)."""
    if peer.reliable:
        return peer
    received = via.received
    host = received.strip("[]") if received else peer.host
    # With rport (RFC 3581 §4): the source port. Without: the sent-by port even when `received`
    # is present (RFC 3261 §18.2.2), 5060 when the Via names none.
    port = via.rport or (peer.port if "rport" in via.params else via.port or 5060)
    if host == peer.host and port == peer.port:
        return peer
    return Peer(peer.transport, host, port, None, peer.local)  # same listener out


def _creates_state(req: Request) -> bool:
    """Requests that open a dialog or store something: REGISTER, an initial SUBSCRIBE (no
    To-tag, RFC 6665 §4.1.2.1), an initial PUBLISH (no SIP-If-Match, RFC 3903 §4)."""
    method = req.method
    if method == "REGISTER":
        return True
    if method == "SUBSCRIBE":
        try:
            return req.to.tag is None
        except ParseError:
            return True
    if method == "PUBLISH":
        return "SIP-If-Match" not in req.headers
    return False


def _stateless_tag(req: Request) -> str:
    """A To-tag that comes out the same for every retransmission of `req`: a stateless answer
    has nowhere to remember a random one (RFC 3261 §8.2.7)."""
    h = req.headers
    seed = "\n".join([h.get("Via") or "", h.get("From") or "", h.get("Call-ID") or "",
                      h.get("CSeq") or ""])
    return hashlib.blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _reason(exc: ParseError) -> str:
    base = {400: "Bad Request", 413: "Request Entity Too Large", 505: "Version Not Supported",
            513: "Message Too Large", 416: "Unsupported URI Scheme"}.get(exc.status, "Bad Request")
    # Keep the phrase printable and short: it is copied from untrusted input.
    detail = "".join(c if c.isprintable() else "?" for c in exc.reason)[:100]
    return f"{base} ({detail})"
