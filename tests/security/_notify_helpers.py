"""Shared pieces of the NOTIFY-safety attacks (issue 9 findings 1-3, 6): victim sockets that
count what they receive, SUBSCRIBE/PUBLISH builders. Not a test module."""

from __future__ import annotations

import socket
import threading

from harness import SipClient

from presenced.sip.message import Request, Response

PIDF = "application/pidf+xml"


class UdpVictim:
    """A UDP socket on another loopback address that counts every byte it receives."""

    def __init__(self, host: str = "127.0.0.2") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.host, self.port = self.sock.getsockname()
        self.received = bytearray()
        self.datagrams: list[bytes] = []
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(70000)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.received += data
                self.datagrams.append(data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(1.0)
        self.sock.close()


class TcpVictim:
    """A TCP listener on another loopback address that counts connections and bytes."""

    def __init__(self, host: str = "127.0.0.4") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.host, self.port = self.sock.getsockname()
        self.accepted = 0
        self.received = bytearray()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(0.5)
            try:
                while data := conn.recv(65536):
                    self.received += data
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(1.0)
        self.sock.close()


def subscribe(c: SipClient, uri: str, *, contact: str | None = None, record_route: tuple[str, ...] = (),
              expires: int = 600) -> Response:
    headers: list[tuple[str, str | None]] = [("Event", "presence"), ("Expires", str(expires))]
    headers += [("Record-Route", rr) for rr in record_route]
    req = c.build_request("SUBSCRIBE", uri, headers=headers)
    if contact is not None:
        req.headers.set("Contact", contact)
    c.send(req)
    return c.wait_response(req)


def publish(c: SipClient, uri: str, body: bytes, expires: int = 600) -> Response:
    req: Request = c.build_request(
        "PUBLISH", uri, headers={"Event": "presence", "Expires": str(expires), "Content-Type": PIDF}, body=body
    )
    c.send(req)
    return c.wait_response(req, timeout=10.0)


def pidf(entity: str, note: str, tuple_id: str = "pc1", basic: str = "open") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:{entity}">\n'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status>'
        f"<contact>sip:{entity}</contact><note>{note}</note></tuple>\n"
        "</presence>\n"
    ).encode()
