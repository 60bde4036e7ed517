"""WebSocket transport (RFC 7118): `ws:HOST:PORT` and `wss:HOST:PORT`, on aiohttp.

Each listener is its own aiohttp server (it shares no port with the admin or XCAP HTTP
servers): any GET path upgrades. The handshake must offer the `sip` subprotocol (RFC 7118
§4.1), otherwise it is refused with 400 before any WebSocket exists. Then one frame is one
SIP message (§5.1), text or binary alike; our messages go out as text frames (binary when not
UTF-8). A frame over `max_message_size` closes the connection (1009, aiohttp's check).

Flows: a connection is `Peer("ws" | "wss", ip, port, conn_id, local)`; a request to that
client (a NOTIFY) goes back over the same connection whatever its Contact says (browsers
write `xxx.invalid` hosts, §5.2). When the connection is gone the transport cannot reach the
client at all (we never dial a WebSocket): `has_flow` is false, so the NOTIFY fails at once.

Keep-alive: aiohttp pings every `ping_interval` seconds and closes a connection whose pong
does not come back in time. Limits, shared with TCP and TLS through `ConnectionTable`: the
process's stream-connection cap, connections per source IP; a connection that sends no whole
SIP message within `first_message_timeout`, or none for `idle_timeout`, is closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl

from aiohttp import WSMsgType, web

from presenced.sip.endpoint import Peer
from presenced.transport.tcp import ConnectionTable, Receiver

log = logging.getLogger("presenced.transport.ws")


class _WsConnection:
    __slots__ = ("host", "id", "out", "peer", "sender", "ws")

    def __init__(self, conn_id: int, ws: web.WebSocketResponse, peer: Peer) -> None:
        self.id = conn_id
        self.ws = ws
        self.peer = peer
        self.host = peer.host
        self.out: collections.deque[bytes] = collections.deque()
        self.sender: asyncio.Task[None] | None = None  # only while something is queued


class WsTransport:
    """One `ws:` or `wss:` listener; we never open a WebSocket ourselves."""

    def __init__(
        self,
        receiver: Receiver,
        host: str,
        port: int,
        *,
        secure: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        max_message_size: int = 65536,
        max_connections: int = 1024,
        max_connections_per_source: int = 32,
        idle_timeout: float = 300.0,
        first_message_timeout: float = 20.0,
        ping_interval: float = 30.0,
        advertised_host: str | None = None,
        table: ConnectionTable | None = None,
    ) -> None:
        if secure and ssl_context is None:
            raise ValueError("a wss listener needs an SSL context")
        self.name = "wss" if secure else "ws"
        self.receiver = receiver
        self.host = host
        self.port = port
        self.v6 = ":" in host
        self._advertised = advertised_host or (f"[{host}]" if self.v6 else host)
        self.local = f"{self._advertised}:{port}"
        self.ssl_context = ssl_context
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.max_connections_per_source = max_connections_per_source
        self.idle_timeout = idle_timeout
        self.first_message_timeout = first_message_timeout
        self.ping_interval = ping_interval
        self.table = table if table is not None else ConnectionTable()
        self.connections: dict[int, _WsConnection] = {}
        self.by_addr: dict[tuple[str, int], _WsConnection] = {}
        self._runner: web.AppRunner | None = None
        self.refused = 0
        self.refused_per_source = 0
        self.refused_handshakes = 0  # no `sip` subprotocol
        self.send_failures = 0  # messages to a flow that was gone
        self.reaped = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=4096)  # a handshake has no body
        app.router.add_get("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context,
                           backlog=1024, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.local = f"{self._advertised}:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        addr = transport.get_extra_info("peername") if transport is not None else None
        if not addr:
            return web.Response(status=400)
        host, port = addr[0], addr[1]
        ws = web.WebSocketResponse(protocols=("sip",), heartbeat=self.ping_interval,
                                   max_msg_size=self.max_message_size, compress=False)
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol != "sip":
            # RFC 7118 §4.1: without the "sip" subprotocol there is no SIP over this socket.
            self.refused_handshakes += 1
            log.info("ws handshake from %s:%s refused: no 'sip' subprotocol", host, port)
            return web.Response(status=400, text="WebSocket with subprotocol 'sip' required\n")
        table = self.table
        if len(table.connections) + table.others >= self.max_connections:
            self.refused += 1
            log.warning("too many stream connections: refusing ws %s:%s", host, port)
            return web.Response(status=503)
        held = table.per_source.get(host, 0)
        if held >= self.max_connections_per_source:
            self.refused_per_source += 1
            log.warning("%s holds %d stream connections: refusing another", host, held)
            return web.Response(status=503)
        table.per_source[host] = held + 1
        table.others += 1
        conn: _WsConnection | None = None
        try:
            await ws.prepare(request)
            conn_id = table.next_id()
            peer = Peer(self.name, host, port, conn_id, self.local)
            conn = _WsConnection(conn_id, ws, peer)
            self.connections[conn_id] = conn
            self.by_addr[(host, port)] = conn
            await self._serve(conn)
        finally:
            table.others -= 1
            left = table.per_source.get(host, 1) - 1
            if left > 0:
                table.per_source[host] = left
            else:
                table.per_source.pop(host, None)
            if conn is not None:
                self.connections.pop(conn.id, None)
                if self.by_addr.get((host, port)) is conn:
                    del self.by_addr[(host, port)]
                if conn.sender is not None:
                    conn.sender.cancel()
                conn.out.clear()
        return ws

    async def _serve(self, conn: _WsConnection) -> None:
        ws, peer = conn.ws, conn.peer
        timeout = float(self.first_message_timeout)
        while True:
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                self.reaped += 1
                why = "silent" if timeout == self.first_message_timeout else "idle"
                log.info("closing %s %s connection %s", why, self.name, peer)
                await ws.close(code=1000, message=b"idle")
                return
            if msg.type == WSMsgType.TEXT:
                data = msg.data.encode("utf-8", "surrogateescape")
            elif msg.type == WSMsgType.BINARY:
                data = msg.data
            else:  # CLOSE, CLOSING, CLOSED, ERROR (a frame over the size limit: 1009)
                return
            timeout = float(self.idle_timeout)
            try:
                self.receiver(data, peer)
            except Exception:
                log.exception("error handling a message from %s", peer)

    def _live(self, peer: Peer) -> _WsConnection | None:
        conn = self.connections.get(peer.conn_id) if peer.conn_id is not None else None
        if conn is None:
            conn = self.by_addr.get((peer.host, peer.port))
        if conn is not None and not conn.ws.closed:
            return conn
        return None

    def has_flow(self, peer: Peer) -> bool:
        return self._live(peer) is not None

    def send(self, data: bytes, peer: Peer) -> None:
        conn = self._live(peer)
        if conn is None:
            self.send_failures += 1
            log.info("no %s connection to %s: message dropped", self.name, peer)
            return
        conn.out.append(data)
        if conn.sender is None:
            conn.sender = asyncio.get_running_loop().create_task(self._drain(conn))

    async def _drain(self, conn: _WsConnection) -> None:
        """Send what is queued, in order, one frame per message (RFC 7118 §5.1)."""
        try:
            while conn.out:
                data = conn.out.popleft()
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    await conn.ws.send_bytes(data)
                else:
                    await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:  # closed under us
            log.info("%s send to %s failed: %s", self.name, conn.peer, exc)
            conn.out.clear()
        finally:
            conn.sender = None

    async def stop(self) -> None:
        for conn in list(self.connections.values()):
            await conn.ws.close(code=1001, message=b"server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
