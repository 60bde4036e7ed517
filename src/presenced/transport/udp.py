"""UDP transport: one datagram is one message (RFC 3261 §18.1)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from presenced.sip.endpoint import Peer

log = logging.getLogger("presenced.transport.udp")

Receiver = Callable[[bytes, Peer], None]
BUFFER_SIZE = 8 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux values
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


class UdpTransport(asyncio.DatagramProtocol):
    name = "udp"

    def __init__(self, receiver: Receiver, host: str, port: int,
                 advertised_host: str | None = None, reuse_port: bool = False) -> None:
        """`advertised_host`: the address our Via and Contact name for this listener (a
        wildcard host is no address); `local` becomes "advertised_host:port" once bound."""
        self._receiver = receiver
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
        self.port = sock.getsockname()[1]
        self.local = f"{self._advertised}:{self.port}"
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport: no isinstance.
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        if not data or data in (b"\r\n", b"\r\n\r\n"):
            return  # keep-alive noise (RFC 5626 §3.5.1 uses STUN on UDP; bare CRLFs happen)
        try:
            self._receiver(data, Peer("udp", addr[0], addr[1], None, self.local))
        except Exception:  # one bad datagram must never stop the server
            self.errors += 1
            log.exception("error handling a datagram from %s:%s", addr[0], addr[1])

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
