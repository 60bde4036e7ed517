"""Issue 9 finding 1: a SUBSCRIBE's Record-Route or Contact must not aim NOTIFYs (and their
retransmissions) at a victim. NOTIFYs go where the SUBSCRIBE came from unless it came from a
`[server] trusted_proxies` entry (docs/presence.md "Where NOTIFYs go")."""

from __future__ import annotations

import time

from _notify_helpers import UdpVictim, subscribe
from harness import SipClient, wait_until

from presenced.sip.message import Request, parse_message


def test_record_route_and_contact_naming_a_victim_reach_only_the_source(server, sip_client) -> None:
    victim = UdpVictim("127.0.0.2")
    try:
        c: SipClient = sip_client("udp", user="mallory")
        aim = f"{victim.host}:{victim.port}"
        for expires in (600, 0):  # a dialog, and a one-shot fetch (RFC 6665 §4.4.3)
            r = subscribe(c, server.uri("alice"), contact=f"<sip:x@{aim}>",
                          record_route=(f"<sip:{aim};lr>",), expires=expires)
            assert r.status == 200
            n = c.expect_request("NOTIFY")
            assert n.headers.get_all("Route") == [f"<sip:{aim};lr>"]  # route set kept (§12.2.1.1)
        # Retransmissions would come within 32 s, but an answered NOTIFY has none; an
        # unanswered one goes to the same place as the first copy. Give stray packets a while.
        time.sleep(1.5)
        assert bytes(victim.received) == b""
    finally:
        victim.close()


def test_unanswered_notify_retransmissions_stay_on_the_source(server) -> None:
    victim = UdpVictim("127.0.0.2")
    c = SipClient(server.addr, "udp", user="mallory", auto_answer=())
    try:
        aim = f"{victim.host}:{victim.port}"
        r = subscribe(c, server.uri("alice"), contact=f"<sip:x@{aim}>", record_route=(f"<sip:{aim};lr>",))
        assert r.status == 200
        c.expect_request("NOTIFY")
        assert wait_until(lambda: c.raw_received.count(b"NOTIFY sip:") >= 3, timeout=6.0)  # Timer E
        assert bytes(victim.received) == b""
    finally:
        c.close()
        victim.close()


def test_trusted_proxy_route_set_and_contact_are_honoured(server_factory) -> None:
    """Behind a trusted proxy: with Record-Route the NOTIFY goes to the first route; without,
    to the Contact (RFC 3261 §12.2.1.1; a proxy that does not record-route answers 404)."""
    srv = server_factory(sections={"server": {"trusted_proxies": ["127.0.0.1/32"]}})
    watcher = UdpVictim("127.0.0.3")
    proxy_hop = UdpVictim("127.0.0.2")
    c = SipClient(srv.addr, "udp", user="bob")
    try:
        r = subscribe(c, srv.uri("alice"), contact=f"<sip:bob@{watcher.host}:{watcher.port}>")
        assert r.status == 200
        assert wait_until(lambda: bool(watcher.datagrams), timeout=5.0)
        n = parse_message(watcher.datagrams[0])
        assert isinstance(n, Request) and n.method == "NOTIFY"
        assert n.uri == f"sip:bob@{watcher.host}:{watcher.port}"

        hop = f"{proxy_hop.host}:{proxy_hop.port}"
        r = subscribe(c, srv.uri("alice"), contact=f"<sip:bob@{watcher.host}:{watcher.port}>",
                      record_route=(f"<sip:{hop};lr>",))
        assert r.status == 200
        assert wait_until(lambda: bool(proxy_hop.datagrams), timeout=5.0)
        n = parse_message(proxy_hop.datagrams[0])
        assert isinstance(n, Request) and n.method == "NOTIFY"
        assert n.headers.get_all("Route") == [f"<sip:{hop};lr>"]
        c.expect_no_request("NOTIFY", timeout=0.5)  # nothing came back to the proxy itself
    finally:
        c.close()
        watcher.close()
        proxy_hop.close()
