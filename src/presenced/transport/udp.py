"""UDP transport: one datagram is one message (RFC 3261 §18.1)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable

from presenced.sip.endpoint import Peer

log = logging.getLogger("presenced.transport.udp")

Receiver = Callable[[bytes, Peer], None]
# (listener, backlogged): the receive queue went over its limit, or back under half of it.
BacklogListener = Callable[[str, bool], None]
BUFFER_SIZE = 8 * 1024 * 1024
_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux >= 4.6: u32[0] = bytes queued to read
_BACKLOG_EVERY = 32  # datagrams between two looks at the queue while it is short
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux values
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


class UdpTransport(asyncio.DatagramProtocol):
    name = "udp"

    def __init__(self, receiver: Receiver, host: str, port: int,
                 advertised_host: str | None = None, reuse_port: bool = False,
                 backlog_limit: int = 0, on_backlog: BacklogListener | None = None) -> None:
        """`advertised_host`: the address our Via and Contact name for this listener (a
        wildcard host is no address); `local` becomes "advertised_host:port" once bound.

        `backlog_limit`: bytes waiting in the socket's receive queue (kernel accounting, ~1.3 KB
        for a 500-byte datagram, ~2.3 KB for a 700-byte one) above which `on_backlog(local,
        True)` says the server is behind; `on_backlog(local, False)` once it is under half of
        it. 0: never."""
        self._receiver = receiver
        self._sock: socket.socket | None = None
        self.backlog_limit = backlog_limit if on_backlog is not None else 0
        self._on_backlog = on_backlog
        self.backlogged = False
        self._seen = 0
        self.host = host
        self.port = port
        self.v6 = ":" in host
        self._advertised = advertised_host or (f"[{host}]" if self.v6 else host)
        self.local = f"{self._advertised}:{port}"
        self._transport: asyncio.DatagramTransport | None = None
        self.sent = 0
        self.errors = 0
        self.reuse_port = reuse_port  # several worker processes share this address

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if self.v6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            # The kernel hashes each flow's 4-tuple to one worker's socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Large buffers absorb bursts (a fan-out of thousands of NOTIFYs, a sipp load run).
        # The *FORCE variants pass net.core.rmem_max/wmem_max when we may (root/CAP_NET_ADMIN).
        for attempts in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            for opt in attempts:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_SIZE)
                    break
                except OSError:
                    continue
        log.info("udp %s:%d buffers: receive %d, send %d bytes",
                 f"[{self.host}]" if self.v6 else self.host, self.port,
                 sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                 sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
        sock.bind((self.host, self.port))
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.local = f"{self._advertised}:{self.port}"
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport: no isinstance.
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        if not data or data in (b"\r\n", b"\r\n\r\n"):
            return  # keep-alive noise (RFC 5626 §3.5.1 uses STUN on UDP; bare CRLFs happen)
        if self.backlog_limit:
            seen = self._seen
            self._seen = seen + 1
            if self.backlogged or seen % _BACKLOG_EVERY == 0:
                self._look_at_backlog()
        try:
            self._receiver(data, Peer("udp", addr[0], addr[1], None, self.local))
        except Exception:  # one bad datagram must never stop the server
            self.errors += 1
            log.exception("error handling a datagram from %s:%s", addr[0], addr[1])

    def _look_at_backlog(self) -> None:
        """Compare the bytes still queued behind this datagram with the limit (hysteresis:
        over the limit to enter, under half of it to leave). Each look is one getsockopt."""
        sock = self._sock
        if sock is None:
            return
        try:
            queued = struct.unpack_from("=I", sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 4))[0]
        except OSError as exc:  # not Linux, or a kernel before 4.6: no overload signal
            log.warning("udp %s: cannot read the receive queue (%s); [limits] "
                        "overload_backlog is off for this listener", self.local, exc)
            self.backlog_limit = 0
            return
        if self.backlogged:
            if queued < self.backlog_limit // 2:
                self.backlogged = False
                assert self._on_backlog is not None
                self._on_backlog(self.local, False)
        elif queued > self.backlog_limit:
            self.backlogged = True
            assert self._on_backlog is not None
            self._on_backlog(self.local, True)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a watcher that went away: the transaction times out.
        self.errors += 1
        log.debug("udp error: %s", exc)

    def send(self, data: bytes, peer: Peer) -> None:
        if self._transport is None:
            return
        host = peer.host
        if self.v6 != (":" in host):
            if not self.v6:
                # No IPv4 listener reaches an IPv6 address; the driver found no IPv6 one.
                self.errors += 1
                log.warning("no IPv6 udp listener to reach %s", peer)
                return
            host = f"::ffff:{host}"  # a dual-stack IPv6 socket reaches IPv4 mapped
        self.sent += 1
        try:
            self._transport.sendto(data, (host, peer.port))
        except (OSError, ValueError) as exc:  # one unreachable address must not stop a fan-out
            self.errors += 1
            log.info("udp send to %s failed: %s", peer, exc)

    def has_flow(self, peer: Peer) -> bool:
        return True  # datagrams need no connection

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._sock = None
