"""HEP mirroring: a copy of every SIP message received and sent, to a capture server.

The driver calls `received` for each message a transport hands it and `sent` for each one it
puts on a transport (`Driver.mirror`; None, one attribute test, when `[hep]` is off), so
every transport — UDP, TCP and whatever comes later — is mirrored alike, retransmissions
included. Each copy is one HEP3 datagram (transport/hep.py) sent at once on a non-blocking
UDP socket of its own: nothing is queued, so the mirror holds no memory beyond the kernel's
send buffer. A full buffer, a capture server that is down (its ICMP errors are not reported
on an unconnected socket, and any error there is) or a message too large for one datagram
costs that copy only, counted in `dropped`; the SIP path never waits for or hears of it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable

from presenced.sip.endpoint import Peer
from presenced.transport.hep import encode_hep3, overhead

log = logging.getLogger("presenced.hep")

# The largest UDP payload over IPv4 (65535 - 20 - 8): a larger copy is dropped, not split.
MAX_DATAGRAM = 65507
_V4_IN_V6 = b"\x00" * 10 + b"\xff\xff"
_UNKNOWN_V4 = b"\x00" * 4


class HepMirror:
    """Sends HEP3 copies to `address` (an IP, port pair resolved by the caller)."""

    def __init__(self, address: tuple[str, int], capture_id: int = 2001,
                 password: str | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.address = address
        self.capture_id = capture_id
        self.auth_key = password.encode() if password else b""
        # The largest message one datagram carries, per family of the packet.
        self._room = {False: MAX_DATAGRAM - overhead(False, self.auth_key),
                      True: MAX_DATAGRAM - overhead(True, self.auth_key)}
        self._clock_ns = clock_ns
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        # "host:port" of a listener -> (IPv6?, packed address, port): a handful of entries.
        self._locals: dict[str, tuple[bool, bytes, int]] = {}
        self.sent_packets = 0
        self.dropped = 0
        self._warned = False

    # --- from the driver ----------------------------------------------------------------------

    def received(self, data: bytes, peer: Peer) -> None:
        """`data` arrived from `peer` on the listener `peer.local`."""
        local = self._local(peer.local)
        self._copy(data, peer, local, inbound=True)

    def sent(self, data: bytes, peer: Peer, local: str) -> None:
        """`data` left for `peer` through the listener advertised as `local`."""
        self._copy(data, peer, self._local(local), inbound=False)

    # --- plumbing -----------------------------------------------------------------------------

    def _local(self, hostport: str | None) -> tuple[bool, bytes, int]:
        key = hostport or ""
        found = self._locals.get(key)
        if found is None:
            found = _parse_local(key)
            if len(self._locals) < 64:
                self._locals[key] = found
        return found

    def _copy(self, data: bytes, peer: Peer, local: tuple[bool, bytes, int], inbound: bool) -> None:
        try:
            host = peer.host.strip("[]")
            peer_v6 = ":" in host
            remote = socket.inet_pton(socket.AF_INET6 if peer_v6 else socket.AF_INET, host)
            local_v6, local_addr, local_port = local
            v6 = peer_v6 or local_v6
            if v6:  # one family per packet: an IPv4 side becomes IPv4-mapped
                if not peer_v6:
                    remote = _V4_IN_V6 + remote
                if not local_v6:
                    local_addr = _V4_IN_V6 + local_addr
            if len(data) > self._room[v6]:
                self.dropped += 1
                return
            sec, ns = divmod(self._clock_ns(), 1_000_000_000)
            if inbound:
                src, src_port, dst, dst_port = remote, peer.port, local_addr, local_port
            else:
                src, src_port, dst, dst_port = local_addr, local_port, remote, peer.port
            packet = encode_hep3(data, v6=v6, udp=peer.transport == "udp", src=src,
                                 src_port=src_port, dst=dst, dst_port=dst_port, sec=sec,
                                 usec=ns // 1000, capture_id=self.capture_id,
                                 auth_key=self.auth_key)
            self._sock.sendto(packet, self.address)
            self.sent_packets += 1
        except (OSError, ValueError) as exc:  # full buffer, unreachable, odd address: drop
            self.dropped += 1
            if not self._warned:  # once: a capture server that is down must not flood the log
                self._warned = True
                log.warning("hep: cannot mirror to %s:%d (%s); further failures are counted "
                            "silently", self.address[0], self.address[1], exc)

    def close(self) -> None:
        self._sock.close()


def _parse_local(hostport: str) -> tuple[bool, bytes, int]:
    """(IPv6?, packed address, port) of a listener's advertised "host:port"; a host name
    (an advertised name, not an address) mirrors as 0.0.0.0."""
    host, _, port_text = hostport.rpartition(":")
    port = int(port_text) if port_text.isdigit() else 0
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False, _UNKNOWN_V4, port
    return ip.version == 6, ip.packed, port
