"""The driver: the only place where the sans-IO endpoint meets the event loop.

It feeds received bytes to the endpoint with the loop's monotonic clock, hands the events to
the application, puts `Transmit`s on the right transport and keeps exactly one timer armed
for the endpoint's next deadline (the aioquic shape).
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

log = logging.getLogger("presenced.driver")


class Transport(Protocol):
    name: str

    def send(self, data: bytes, peer: Peer) -> None: ...


class Application(Protocol):
    def on_request(self, event: RequestReceived) -> None: ...

    def on_response(self, event: ResponseReceived) -> None: ...

    def on_timeout(self, event: ClientTimedOut) -> None: ...


class Driver:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transports: dict[str, Transport] = {}
        self.app: Application | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._loop = asyncio.get_running_loop()
        self.now: Callable[[], float] = self._loop.time

    def add_transport(self, transport: Transport) -> None:
        self.transports[transport.name] = transport

    def attach(self, app: Application) -> None:
        """Name the application that gets the endpoint's events: once, before any transport
        starts (the one late binding of the composition root, services/ports.py)."""
        if self.app is not None:
            raise RuntimeError("the driver already has an application")
        self.app = app

    def has_flow(self, peer: Peer) -> bool:
        """Whether a message to `peer` leaves without a new connection (the FlowCheck port)."""
        transport = self.transports.get(peer.transport)
        if transport is None:
            return False
        if not peer.reliable:
            return True
        connections = getattr(transport, "connections", None)
        if peer.conn_id is not None and connections is not None and peer.conn_id in connections:
            return True
        by_addr = getattr(transport, "by_addr", None)
        return by_addr is not None and (peer.host, peer.port) in by_addr

    # --- from the transports ----------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer) -> None:
        self._process(self.endpoint.receive(data, peer, self._loop.time()))

    # --- from the application ---------------------------------------------------------------

    def respond(self, event: RequestReceived, response: Response) -> None:
        self._process(self.endpoint.respond(event.txn, response, event.peer, self._loop.time()))

    def send_request(self, request: Request, peer: Peer, context: object,
                     validated: bool = False) -> None:
        """`validated`: `peer` has proven it reads what we send (see Endpoint.send_request)."""
        self._process(self.endpoint.send_request(request, peer, self._loop.time(), context,
                                                 validated))

    # --- plumbing ---------------------------------------------------------------------------

    def _process(self, events: Iterable[Event]) -> None:
        app = self.app
        for ev in events:
            if isinstance(ev, Transmit):
                transport = self.transports.get(ev.peer.transport)
                if transport is None:
                    log.warning("no %s transport to reach %s", ev.peer.transport, ev.peer)
                    continue
                transport.send(ev.data, ev.peer)
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
