"""HEP version 3 (Homer Encapsulation Protocol, "EEP") encoding, sans-IO.

A HEP3 packet is the 4 bytes "HEP3", a 16-bit total length, then chunks: each a 16-bit
vendor id (0 = generic), a 16-bit chunk type, a 16-bit length that counts the 6-byte chunk
header itself, and the value. All integers are network byte order (HEP3 specification,
sipcapture/HEP, "generic chunk types").

The chunks go out in one fixed order: family, protocol, ports, timestamp, protocol type,
capture id, then the addresses, the authentication key and last the payload. Homer parses by
type, but sngrep 1.x reads the first eight chunks at fixed offsets and expects the addresses
right after them, the key next and the payload last; this order suits both.

No socket, clock or logging here: `transport/mirror.py` owns the socket and the time.
"""

from __future__ import annotations

import struct

__all__ = [
    "AF_INET",
    "AF_INET6",
    "PROTO_SIP",
    "encode_hep3",
    "overhead",
]

# Chunk types (vendor 0).
IP_FAMILY = 0x0001  # uint8
IP_PROTOCOL = 0x0002  # uint8: 17 UDP, 6 TCP (TLS and WebSocket ride TCP)
IPV4_SRC = 0x0003
IPV4_DST = 0x0004
IPV6_SRC = 0x0005
IPV6_DST = 0x0006
SRC_PORT = 0x0007  # uint16
DST_PORT = 0x0008  # uint16
TIME_SEC = 0x0009  # uint32, Unix epoch seconds
TIME_USEC = 0x000A  # uint32, microseconds within that second
PROTO_TYPE = 0x000B  # uint8: 1 = SIP
CAPTURE_ID = 0x000C  # uint32, the capture agent's id
AUTH_KEY = 0x000E  # octets: the capture server's password
PAYLOAD = 0x000F  # the captured message, unchanged

AF_INET = 2  # HEP uses the Linux address family numbers
AF_INET6 = 10
PROTO_SIP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

MAX_PACKET = 0xFFFF  # the 16-bit total length

# "HEP3", total length, the eight fixed-size chunks, then the two address chunks.
_FIXED = "!4sH" "HHHB" "HHHB" "HHHH" "HHHH" "HHHI" "HHHI" "HHHB" "HHHI"
_HEAD4 = struct.Struct(_FIXED + "HHH4s" "HHH4s")
_HEAD6 = struct.Struct(_FIXED + "HHH16s" "HHH16s")
_CHUNK = struct.Struct("!HHH")


def overhead(v6: bool, auth_key: bytes = b"") -> int:
    """The bytes a packet adds to its payload (to check a size before encoding)."""
    key = _CHUNK.size + len(auth_key) if auth_key else 0
    return (_HEAD6 if v6 else _HEAD4).size + key + _CHUNK.size


def encode_hep3(payload: bytes, *, v6: bool, udp: bool, src: bytes, src_port: int, dst: bytes,
                dst_port: int, sec: int, usec: int, capture_id: int,
                auth_key: bytes = b"") -> bytes:
    """One HEP3 packet carrying `payload` (a SIP message) seen from `src` to `dst`.

    `src`/`dst` are packed addresses (4 bytes, or 16 with `v6`); raises ValueError when the
    packet would not fit HEP3's 16-bit length or an address has the wrong size."""
    size = 16 if v6 else 4
    if len(src) != size or len(dst) != size:
        raise ValueError(f"addresses must be {size} bytes")
    head = _HEAD6 if v6 else _HEAD4
    key_len = _CHUNK.size + len(auth_key) if auth_key else 0
    total = head.size + key_len + _CHUNK.size + len(payload)
    if total > MAX_PACKET:
        raise ValueError(f"a HEP3 packet holds at most {MAX_PACKET} bytes, this one {total}")
    src_type, dst_type = (IPV6_SRC, IPV6_DST) if v6 else (IPV4_SRC, IPV4_DST)
    addr_len = _CHUNK.size + size
    packed = head.pack(
        b"HEP3", total,
        0, IP_FAMILY, 7, AF_INET6 if v6 else AF_INET,
        0, IP_PROTOCOL, 7, IPPROTO_UDP if udp else IPPROTO_TCP,
        0, SRC_PORT, 8, src_port,
        0, DST_PORT, 8, dst_port,
        0, TIME_SEC, 10, sec,
        0, TIME_USEC, 10, usec,
        0, PROTO_TYPE, 7, PROTO_SIP,
        0, CAPTURE_ID, 10, capture_id,
        0, src_type, addr_len, src,
        0, dst_type, addr_len, dst,
    )
    payload_head = _CHUNK.pack(0, PAYLOAD, _CHUNK.size + len(payload))
    if auth_key:
        return b"".join((packed, _CHUNK.pack(0, AUTH_KEY, key_len), auth_key, payload_head,
                         payload))
    return b"".join((packed, payload_head, payload))
