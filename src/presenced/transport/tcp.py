"""TCP transport: Content-Length framing, connection reuse, bounded resources.

Every connection has a `StreamFramer`; a peer that breaks framing (garbage, a lying or huge
Content-Length) is closed alone. Connections are limited in number, in total and per source IP
(the connections we open are not counted: they go where we chose); a connection that sits on
a partial message for too long is closed (slow-loris), so is one that never delivers a whole
message, and idle ones are reaped.
Responses go back on the connection the request came in on (RFC 3261 §18.2.2); requests we
originate reuse a live connection to the peer. A new connection is opened only to an address
`may_connect` allows (the trusted proxies, set by the composition root; by default none):
otherwise a Record-Route or Contact naming ";transport=tcp" would make us connect to and write
into any service (SSRF, issue 9 finding 3).

Several TCP listeners (IPv4 and IPv6, or two addresses) share one `ConnectionTable`, so the
caps hold for the process, not per listener, and a connection id names the flow whichever
listener accepted it. A connection we open to a trusted proxy leaves from the listener's own
address when it has one (not a wildcard).

TLS (transport/tls.py) is this machinery with an `ssl.SSLContext` on each side: `name` says
which transport a listener is ("tcp" or "tls"), and every stream listener of the process (TCP,
TLS, WebSocket) counts against one table's caps.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from typing import cast

from presenced.sip.endpoint import Peer
from presenced.sip.errors import ParseError
from presenced.sip.framing import KeepAlivePing, StreamFramer
from presenced.sip.message import Request, make_response, parse_message

log = logging.getLogger("presenced.transport.tcp")

Receiver = Callable[[bytes, Peer], None]
_ids = itertools.count(1)


class _Connection(asyncio.Protocol):
    def __init__(self, owner: TcpTransport, outbound_key: tuple[str, int] | None = None) -> None:
        self.owner = owner
        self.framer = StreamFramer(owner.max_message_size)
        self.id = next(_ids)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self.outbound_key = outbound_key
        self.opened = self.last_activity
        self.delivered = False  # a complete SIP message arrived
        self.counted_host: str | None = None  # counted against this source's cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport does not subclass asyncio.Transport: no isinstance here.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        addr = transport.get_extra_info("peername")
        self.peer = Peer(self.owner.name, addr[0], addr[1], self.id, self.owner.local)
        # The limits guard against peers; connections we open to deliver NOTIFYs are not refused.
        owner = self.owner
        if self.outbound_key is None:
            if len(owner.connections) + owner.table.others >= owner.max_connections:
                log.warning("too many stream connections: refusing %s:%s", addr[0], addr[1])
                owner.refused += 1
                transport.abort()
                return
            host = addr[0]
            held = owner.per_source.get(host, 0)
            if held >= owner.max_connections_per_source:
                log.warning("%s holds %d stream connections: refusing another", host, held)
                owner.refused_per_source += 1
                transport.abort()
                return
            owner.per_source[host] = held + 1
            self.counted_host = host
        owner.connections[self.id] = self
        self.owner.by_addr[(addr[0], addr[1])] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        self.last_activity = time.monotonic()
        try:
            items = self.framer.feed(data)
        except Exception as exc:  # a framing bug must cost this connection only
            if not isinstance(exc, ParseError):
                log.exception("framing failed on %s", self.peer)
                self.transport.abort()
                return
            log.info("closing %s connection from %s: %s", self.peer.transport, self.peer, exc.reason)
            self.owner.framing_errors += 1
            answer = _refusal(exc)
            if answer is not None:
                self.transport.write(answer)
                self.transport.close()  # after the answer is flushed
            else:
                self.transport.abort()
            return
        for item in items:
            if isinstance(item, KeepAlivePing):
                self.transport.write(b"\r\n")  # RFC 5626 §3.5.1 pong
                continue
            self.delivered = True
            try:
                self.owner.receiver(item, self.peer)
            except Exception:
                log.exception("error handling a message from %s", self.peer)
        self.partial_since = (self.partial_since or self.last_activity) if self.framer.buffered else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connections.pop(self.id, None)
        host = self.counted_host
        if host is not None:
            self.counted_host = None
            per_source = self.owner.per_source
            left = per_source.get(host, 1) - 1
            if left > 0:
                per_source[host] = left
            else:
                per_source.pop(host, None)
        if self.peer is not None:
            key = (self.peer.host, self.peer.port)
            if self.owner.by_addr.get(key) is self:
                del self.owner.by_addr[key]
        if self.outbound_key is not None and self.owner.by_addr.get(self.outbound_key) is self:
            del self.owner.by_addr[self.outbound_key]


def _refusal(exc: ParseError) -> bytes | None:
    """A 513 for an oversized request whose headers arrived whole, else nothing."""
    head = exc.partial
    if exc.status != 513 or not isinstance(head, bytes):
        return None
    try:
        parse_message(head)  # the body is missing, so this fails; its `partial` is the request
    except ParseError as inner:
        req = inner.partial
    else:
        return None
    if not isinstance(req, Request) or req.method == "ACK":
        return None
    try:
        resp = make_response(req, 513)
        resp.headers.add("Server", "presenced")
        return resp.encode()
    except ParseError:
        return None


def _never(host: str) -> bool:
    return False


class ConnectionTable:
    """What every stream listener of one process shares: live connections and per-IP counts.

    TCP and TLS connections are in `connections`; WebSocket ones (transport/ws.py) only count
    in `others` and `per_source`."""

    def __init__(self) -> None:
        self.connections: dict[int, _Connection] = {}
        self.per_source: dict[str, int] = {}  # source IP -> inbound connections held
        self.others = 0  # inbound WebSocket connections held

    def next_id(self) -> int:
        """A connection id unique among every stream transport's."""
        return next(_ids)


class TcpTransport:
    name = "tcp"
    # TLS (transport/tls.py): the context handshakes run with, either way.
    ssl_server: ssl.SSLContext | None = None
    ssl_client: ssl.SSLContext | None = None
    may_connect: Callable[[str], bool] = staticmethod(_never)  # IPs we may open connections to
    refused_outbound = 0

    def __init__(
        self,
        receiver: Receiver,
        host: str,
        port: int,
        *,
        max_message_size: int = 65536,
        max_connections: int = 1024,
        max_connections_per_source: int = 32,
        idle_timeout: float = 300.0,
        partial_timeout: float = 30.0,
        first_message_timeout: float = 20.0,
        advertised_host: str | None = None,
        table: ConnectionTable | None = None,
        reuse_port: bool = False,
    ) -> None:
        """`advertised_host` as for `UdpTransport`; `table` shared by every TCP listener (the
        connection caps count them all)."""
        self.receiver = receiver
        self.host = host
        self.port = port
        self.v6 = ":" in host
        self._advertised = advertised_host or (f"[{host}]" if self.v6 else host)
        self.local = f"{self._advertised}:{port}"
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.partial_timeout = partial_timeout
        self.max_connections_per_source = max_connections_per_source
        self.first_message_timeout = first_message_timeout
        self.table = table if table is not None else ConnectionTable()
        self.per_source = self.table.per_source
        self.connections = self.table.connections
        self.by_addr: dict[tuple[str, int], _Connection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.framing_errors = 0
        self.refused = 0
        self.refused_per_source = 0
        self.reaped = 0
        self.reuse_port = reuse_port  # several worker processes share this address

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # A TLS handshake must end as soon as a first message must have come.
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True, backlog=1024,
            ssl=self.ssl_server,
            ssl_handshake_timeout=None if self.ssl_server is None else float(self.first_message_timeout),
            reuse_port=self.reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.local = f"{self._advertised}:{self.port}"
        self._reaper = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        shortest = min(self.partial_timeout, self.idle_timeout, self.first_message_timeout)
        while True:
            await asyncio.sleep(min(5.0, shortest / 2))
            now = time.monotonic()
            for conn in list(self.connections.values()):
                if conn.owner is not self:
                    continue  # another listener's (the table is shared)
                stalled = conn.partial_since is not None and now - conn.partial_since > self.partial_timeout
                idle = now - conn.last_activity > self.idle_timeout
                silent = (not conn.delivered and conn.outbound_key is None
                          and now - conn.opened > self.first_message_timeout)
                if (stalled or idle or silent) and conn.transport is not None:
                    why = "stalled" if stalled else "idle" if idle else "silent"
                    log.info("closing %s %s connection %s", why, self.name, conn.peer)
                    self.reaped += 1
                    conn.transport.abort()

    def _live(self, peer: Peer) -> _Connection | None:
        conn = self.connections.get(peer.conn_id) if peer.conn_id is not None else None
        if conn is None:
            conn = self.by_addr.get((peer.host, peer.port))
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return conn
        return None

    def has_flow(self, peer: Peer) -> bool:
        return self._live(peer) is not None

    def send(self, data: bytes, peer: Peer) -> None:
        conn = self._live(peer)
        if conn is not None:
            assert conn.transport is not None
            conn.transport.write(data)
            return
        if not self.may_connect(peer.host):
            self.refused_outbound += 1
            log.info("not connecting to %s: not a trusted proxy", peer)
            return
        # No live connection: open one to a trusted proxy.
        asyncio.get_running_loop().create_task(self._connect_and_send(data, peer))

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        key = (peer.host, peer.port)
        try:
            pending = self._connecting.get(key)
            if pending is None:
                pending = asyncio.create_task(self._connect(key))
                self._connecting[key] = pending
            await pending
        except OSError as exc:
            log.info("cannot connect to %s: %s", peer, exc)
            return
        finally:
            self._connecting.pop(key, None)
        conn = self.by_addr.get(key)
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)

    async def _connect(self, key: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        # From the listener's own address, so the proxy sees the address our Via names; a
        # wildcard listener leaves the choice to the kernel.
        wildcard = self.host in ("0.0.0.0", "::", "")
        local_addr = None if wildcard or self.v6 != (":" in key[0]) else (self.host, 0)
        # TLS: the certificate must name the address we dial (RFC 5922 §7.2: no DNS here, so
        # an IP literal, matched against the certificate's IP SANs).
        await asyncio.wait_for(
            loop.create_connection(lambda: _Connection(self, key), key[0], key[1],
                                   local_addr=local_addr, ssl=self.ssl_client,
                                   server_hostname=None if self.ssl_client is None else key[0]),
            timeout=5.0,
        )

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
