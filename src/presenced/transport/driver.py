"""The driver: the only place where the sans-IO endpoint meets the event loop.

It feeds received bytes to the endpoint with the loop's monotonic clock, hands the events to
the application, puts `Transmit`s on the right transport and keeps exactly one timer armed
for the endpoint's next deadline (the aioquic shape).

Several listeners may serve one transport (IPv4 and IPv6, or two addresses of a multi-homed
host). Each names itself by the "host:port" it advertises (`Transport.local`), and every
received message's `Peer.local` says which one it came on. An answer, a retransmission or a
NOTIFY over a known flow leaves through that listener (RFC 3261 §18.2.2: the response goes
back from where the request arrived); a request to a peer without one (a flow restored from
storage, a trusted proxy's route) leaves through the first listener of the peer's transport
and address family, and `send_request` names that listener before the endpoint writes our Via.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from presenced.sip.endpoint import (
    ClientTimedOut,
    Endpoint,
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    Transmit,
)
from presenced.sip.message import Request, Response
from presenced.transport.mirror import HepMirror

log = logging.getLogger("presenced.driver")


class Transport(Protocol):
    name: str  # "udp" | "tcp"
    local: str  # the "host:port" we advertise for this listener (Via sent-by, Contact)
    v6: bool  # an IPv6 socket

    def send(self, data: bytes, peer: Peer) -> None: ...

    def has_flow(self, peer: Peer) -> bool:
        """Whether a message to `peer` can leave without opening anything (UDP: always; a
        stream: its connection, by id or by address, is live)."""
        ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Loop(Protocol):
    """What the driver asks of its event loop: the clock, and one timer."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class Application(Protocol):
    def on_request(self, event: RequestReceived) -> None: ...

    def on_response(self, event: ResponseReceived) -> None: ...

    def on_timeout(self, event: ClientTimedOut) -> None: ...


class Driver:
    def __init__(self, endpoint: Endpoint, loop: Loop | None = None) -> None:
        """`loop`: the running asyncio loop unless given (the fuzzer's fake clock)."""
        self.endpoint = endpoint
        # Every listener, by (transport name, advertised host:port).
        self.listeners: dict[tuple[str, str], Transport] = {}
        # The default listener per (transport name, IPv6?): the first one added.
        self._by_family: dict[tuple[str, bool], Transport] = {}
        # Transports with a single listener: every message of theirs leaves through it.
        self._only: dict[str, Transport] = {}
        # The first listener per transport name (what one-listener callers knew as "the" one).
        self.transports: dict[str, Transport] = {}
        self.app: Application | None = None
        # A copy of every message received and sent for a capture server ([hep]); None = off.
        self.mirror: HepMirror | None = None
        self._timer: TimerHandle | None = None
        self._deadline: float | None = None
        self._loop: Loop = asyncio.get_running_loop() if loop is None else loop
        self.now: Callable[[], float] = self._loop.time
        self._backlogged: set[str] = set()  # listeners whose receive queue is long
        self._backlog_logged = -1e9

    @property
    def loop(self) -> Loop:
        return self._loop

    def set_backlog(self, listener: str, backlogged: bool) -> None:
        """A UDP listener's receive queue went over its limit (True) or drained (False): the
        endpoint sheds new work while any is over (Endpoint.backlogged)."""
        if backlogged:
            self._backlogged.add(listener)
        else:
            self._backlogged.discard(listener)
        was = self.endpoint.backlogged
        self.endpoint.backlogged = bool(self._backlogged)
        now = self._loop.time()
        if self.endpoint.backlogged and not was and now - self._backlog_logged >= 10:
            self._backlog_logged = now  # at most one line per 10 s, however it flaps
            log.warning("overloaded: the receive queue of udp %s is over [limits] "
                        "overload_backlog; new REGISTER, SUBSCRIBE and PUBLISH get 503 until it "
                        "drains (%d shed so far)", listener, self.endpoint.stats.shed)

    def add_transport(self, transport: Transport) -> None:
        name = transport.name
        self.listeners[(name, transport.local)] = transport
        self._by_family.setdefault((name, transport.v6), transport)
        if name in self.transports:
            self._only.pop(name, None)
        else:
            self._only[name] = transport
        self.transports.setdefault(name, transport)

    def listener_for(self, peer: Peer) -> Transport | None:
        """The listener a message to `peer` leaves through: the one its flow came on, else the
        first of its transport and address family, else the first of its transport."""
        only = self._only.get(peer.transport)
        if only is not None:  # one listener of this transport (the common case): no choice
            return only
        if peer.local is not None:
            t = self.listeners.get((peer.transport, peer.local))
            if t is not None and t.v6 == (":" in peer.host):
                return t
        t = self._by_family.get((peer.transport, ":" in peer.host))
        return t if t is not None else self.transports.get(peer.transport)

    def bind(self, peer: Peer) -> Peer:
        """`peer` naming the listener a request to it leaves through (our Via names it)."""
        t = self.listener_for(peer)
        if t is None or t.local == peer.local:
            return peer
        return Peer(peer.transport, peer.host, peer.port, peer.conn_id, t.local)

    def has_flow(self, peer: Peer) -> bool:
        """Whether a message to `peer` leaves without a new connection (see Transport)."""
        if peer.local is not None:
            t = self.listeners.get((peer.transport, peer.local))
            if t is not None and t.has_flow(peer):
                return True
        # A stream connection is one listener's; a restored flow names none: ask them all
        # (a handful of listeners at most).
        return any(t.has_flow(peer) for (name, _), t in self.listeners.items()
                   if name == peer.transport)

    def attach(self, app: Application) -> None:
        """Name the application that gets the endpoint's events: once, before any transport
        starts (the one late binding of the composition root, services/ports.py)."""
        if self.app is not None:
            raise RuntimeError("the driver already has an application")
        self.app = app

    # --- from the transports ----------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer) -> None:
        if self.mirror is not None:
            self.mirror.received(data, peer)
        self._process(self.endpoint.receive(data, peer, self._loop.time()))

    # --- from the application ---------------------------------------------------------------

    def respond(self, event: RequestReceived, response: Response) -> None:
        self._process(self.endpoint.respond(event.txn, response, event.peer, self._loop.time()))

    def send_request(self, request: Request, peer: Peer, context: object,
                     validated: bool = False) -> None:
        """`validated`: `peer` has proven it reads what we send (see Endpoint.send_request)."""
        self._process(self.endpoint.send_request(request, self.bind(peer), self._loop.time(),
                                                 context, validated))

    # --- plumbing ---------------------------------------------------------------------------

    def _process(self, events: Iterable[Event]) -> None:
        app = self.app
        mirror = self.mirror
        for ev in events:
            if isinstance(ev, Transmit):
                transport = self.listener_for(ev.peer)
                if transport is None:
                    log.warning("no %s transport to reach %s", ev.peer.transport, ev.peer)
                    continue
                transport.send(ev.data, ev.peer)
                if mirror is not None:
                    mirror.sent(ev.data, ev.peer, transport.local)
            elif app is None:
                continue
            elif isinstance(ev, RequestReceived):
                app.on_request(ev)
            elif isinstance(ev, ResponseReceived):
                app.on_response(ev)
            elif isinstance(ev, ClientTimedOut):
                app.on_timeout(ev)
        self._arm()

    def _arm(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline == self._deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._deadline = None
        self._process(self.endpoint.handle_timer(self._loop.time()))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
