"""presenced behind a real Kamailio edge proxy (Debian's kamailio package).

Where NOTIFYs go when a proxy sits in front (docs/presence.md, "Where NOTIFYs go"):
- the proxy Record-Routes SUBSCRIBE: NOTIFYs follow the route set back through it;
- the proxy does not Record-Route but is in `[server] trusted_proxies`: in-dialog NOTIFYs go
  to the watcher's Contact (RFC 3261 §12.2.1.1);
- the proxy does neither: NOTIFYs go back to where the SUBSCRIBE came from (the proxy), never to
  the Contact the request named — a Kamailio with the default script answers them 404.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
from harness import LOCALHOST, SipClient, register, token
from kamailio import KAMAILIO_HOST, KamailioProxy, kamailio_path

from presenced.sip.message import Request, Response, make_response, parse_message

_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def kamailio_bin() -> str:
    path = kamailio_path()
    if path is None:
        if _IN_CI:
            pytest.fail("kamailio is not installed (apt-get install kamailio); CI must run these")
        pytest.skip("kamailio is not installed")
    return path


class Watcher:
    """A UDP user agent that takes datagrams from anyone and notes who sent each."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.notifies: list[tuple[tuple[str, int], Request]] = []

    def subscribe(self, proxy: tuple[str, int], presentity: str) -> Response:
        branch = "z9hG4bK" + token()
        msg = (
            f"SUBSCRIBE sip:{presentity} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCALHOST}:{self.port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:bob@example.com>;tag={token(4)}\r\n"
            f"To: <sip:{presentity}>\r\n"
            f"Call-ID: {token()}@{LOCALHOST}\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:bob@{LOCALHOST}:{self.port}>\r\n"
            "Event: presence\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.sock.sendto(msg, proxy)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = self._read()
            if isinstance(got, Response) and got.status >= 200 and got.top_via.branch == branch:
                return got
        raise AssertionError("no final response to the SUBSCRIBE")

    def _read(self) -> Request | Response | None:
        try:
            data, addr = self.sock.recvfrom(65535)
        except OSError:
            return None
        msg = parse_message(data)
        if isinstance(msg, Request):
            if msg.method == "NOTIFY":
                self.notifies.append((addr, msg))
            self.sock.sendto(make_response(msg, 200).encode(), addr)
        return msg

    def wait_notifies(self, n: int, timeout: float = 5.0) -> list[tuple[tuple[str, int], Request]]:
        deadline = time.monotonic() + timeout
        while len(self.notifies) < n and time.monotonic() < deadline:
            self._read()
        return list(self.notifies)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def watcher() -> Iterator[Watcher]:
    w = Watcher()
    yield w
    w.close()


def _register_alice(srv) -> int:
    with SipClient(srv.addr, "udp", user="alice") as c:
        return register(c, expires=600).status


def _proxy(tmp_path, srv, record_route: bool) -> KamailioProxy:
    return KamailioProxy(tmp_path / "kamailio", target=srv.addr, record_route=record_route).start()


def test_notifies_follow_a_record_routing_kamailio(tmp_path, server_factory, kamailio_bin, watcher):
    srv = server_factory("srv")
    proxy = _proxy(tmp_path, srv, record_route=True)
    try:
        ok = watcher.subscribe(proxy.addr, "alice@example.com")
        assert ok.status == 200
        assert ok.headers.get_list("Record-Route"), "the 2xx copies the proxy's Record-Route"
        first = watcher.wait_notifies(1)
        assert first and first[0][0] == proxy.addr, "the NOTIFY came back through the proxy"
        assert b"closed" in first[0][1].body
        assert _register_alice(srv) == 200
        got = watcher.wait_notifies(2)
        assert len(got) >= 2 and got[1][0] == proxy.addr
        assert b"open" in got[1][1].body
    finally:
        proxy.stop()


def test_notifies_go_to_the_contact_behind_a_trusted_proxy_without_record_route(
    tmp_path, server_factory, kamailio_bin, watcher
):
    srv = server_factory("srv", sections={"server": {"trusted_proxies": [KAMAILIO_HOST]}})
    proxy = _proxy(tmp_path, srv, record_route=False)
    try:
        ok = watcher.subscribe(proxy.addr, "alice@example.com")
        assert ok.status == 200
        first = watcher.wait_notifies(1)
        # RFC 3261 §12.2.1.1: no route set, so the NOTIFY goes to the remote target itself.
        assert first and first[0][0] == srv.addr, first
        assert _register_alice(srv) == 200
        got = watcher.wait_notifies(2)
        assert len(got) >= 2 and got[1][0] == srv.addr and b"open" in got[1][1].body
        assert "without a Route to me" not in proxy.log_text()
    finally:
        proxy.stop()


def test_an_untrusted_proxy_that_does_not_record_route_keeps_the_notifies(
    tmp_path, server_factory, kamailio_bin, watcher
):
    """Nobody but a trusted proxy picks where a NOTIFY goes: the Contact is not dialled."""
    srv = server_factory("srv")
    proxy = _proxy(tmp_path, srv, record_route=False)
    try:
        ok = watcher.subscribe(proxy.addr, "alice@example.com")
        assert ok.status == 200
        deadline = time.monotonic() + 5
        while "without a Route to me" not in proxy.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "without a Route to me" in proxy.log_text(), "the NOTIFY went to the proxy"
        assert watcher.wait_notifies(1, timeout=1.0) == [], "nothing reached the Contact directly"
    finally:
        proxy.stop()
