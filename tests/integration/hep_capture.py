"""A HEP3 capture server for the tests: a UDP socket and a decoder written from the HEP3
specification (sipcapture/HEP), independent of presenced's encoder (transport/hep.py).

    with HepCollector() as hep:                    # binds 127.0.0.1:<free port>
        ... run traffic against a server configured with [hep] address = hep.address ...
        pkt = hep.wait_for(lambda p: p.payload.startswith(b"REGISTER"))

A packet that is not valid HEP3 (bad magic, a length that disagrees, a chunk overrunning the
packet) fails the test: `decode_hep3` raises `HepError`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class HepError(AssertionError):
    pass


@dataclass
class HepPacket:
    family: int  # 2 = IPv4, 10 = IPv6
    protocol: int  # 17 = UDP, 6 = TCP
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    sec: int
    usec: int
    proto_type: int  # 1 = SIP
    capture_id: int
    auth_key: bytes | None
    payload: bytes
    order: list[int] = field(default_factory=list)  # chunk types as they came

    @property
    def first_line(self) -> str:
        return self.payload.split(b"\r\n", 1)[0].decode()


_UINT = {1: "!B", 2: "!H", 4: "!I"}


def decode_hep3(data: bytes) -> HepPacket:
    if len(data) < 6 or data[:4] != b"HEP3":
        raise HepError(f"not HEP3: {data[:8]!r}")
    (total,) = struct.unpack_from("!H", data, 4)
    if total != len(data):
        raise HepError(f"HEP3 length {total} but {len(data)} bytes arrived")
    chunks: dict[int, bytes] = {}
    order: list[int] = []
    pos = 6
    while pos < total:
        if pos + 6 > total:
            raise HepError("truncated chunk header")
        vendor, ctype, clen = struct.unpack_from("!HHH", data, pos)
        if clen < 6 or pos + clen > total:
            raise HepError(f"chunk {ctype:#x} of length {clen} overruns the packet")
        if vendor == 0:
            chunks[ctype] = data[pos + 6 : pos + clen]
            order.append(ctype)
        pos += clen

    def uint(ctype: int, size: int) -> int:
        raw = chunks.get(ctype)
        if raw is None or len(raw) != size:
            raise HepError(f"chunk {ctype:#x} missing or not {size} bytes: {raw!r}")
        return int(struct.unpack(_UINT[size], raw)[0])

    family = uint(0x01, 1)
    if family == 2:
        src, dst = chunks.get(0x03), chunks.get(0x04)
    elif family == 10:
        src, dst = chunks.get(0x05), chunks.get(0x06)
    else:
        raise HepError(f"unknown family {family}")
    if src is None or dst is None:
        raise HepError("address chunks missing")
    if 0x0F not in chunks:
        raise HepError("no payload chunk")
    return HepPacket(
        family=family, protocol=uint(0x02, 1),
        src_ip=str(ipaddress.ip_address(src)), dst_ip=str(ipaddress.ip_address(dst)),
        src_port=uint(0x07, 2), dst_port=uint(0x08, 2),
        sec=uint(0x09, 4), usec=uint(0x0A, 4), proto_type=uint(0x0B, 1),
        capture_id=uint(0x0C, 4), auth_key=chunks.get(0x0E), payload=chunks[0x0F], order=order,
    )


class HepCollector:
    """Receives HEP3 datagrams on 127.0.0.1 in a thread; `packets` holds them decoded."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.host = host
        self.packets: list[HepPacket] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="hep-collector", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, OSError):
                continue
            with self._cond:
                try:
                    self.packets.append(decode_hep3(data))
                except HepError as exc:
                    self.errors.append(str(exc))
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[HepPacket], bool], timeout: float = 5.0) -> HepPacket:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for p in self.packets:
                    if predicate(p):
                        return p
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [p.first_line for p in self.packets]
                    raise AssertionError(f"no matching HEP packet within {timeout}s; saw {seen}")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> HepCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
