"""Issue 9 finding 3: `;transport=tcp` in a Record-Route or Contact must not make presenced
connect anywhere (SSRF, cross-protocol writes); nor may a TCP watcher whose connection closed
(docs/presence.md "Where NOTIFYs go": we dial only trusted proxies)."""

from __future__ import annotations

import time

from _notify_helpers import TcpVictim, pidf, publish, subscribe
from harness import SipClient


def test_tcp_record_route_and_contact_open_no_connection(server, sip_client) -> None:
    listener = TcpVictim("127.0.0.4")
    try:
        c: SipClient = sip_client("udp", user="mallory")
        aim = f"{listener.host}:{listener.port};transport=tcp"
        r = subscribe(c, server.uri("alice"), contact=f"<sip:x@{aim}>", record_route=(f"<sip:{aim};lr>",))
        assert r.status == 200
        c.expect_request("NOTIFY")  # over UDP, to where the SUBSCRIBE came from
        time.sleep(1.0)
        assert listener.accepted == 0 and bytes(listener.received) == b""
    finally:
        listener.close()


def test_closed_tcp_watcher_does_not_make_us_dial_its_contact(server, sip_client) -> None:
    listener = TcpVictim("127.0.0.4")
    try:
        w: SipClient = sip_client("tcp", user="mallory")
        contact = f"<sip:x@{listener.host}:{listener.port};transport=tcp>"
        r = subscribe(w, server.uri("alice"), contact=contact)
        assert r.status == 200
        w.expect_request("NOTIFY")
        time.sleep(0.3)  # let the harness's automatic 200 go out first
        w.close()
        time.sleep(0.3)
        # A change the watcher would be told about: a publication with a memcached command in
        # its note (what the audit wrote into a listener).
        p: SipClient = sip_client("udp", user="alice")
        assert publish(p, server.uri("alice"), pidf("alice@example.com", "flush_all")).status == 200
        time.sleep(1.5)
        assert listener.accepted == 0 and bytes(listener.received) == b""
        # The dialog ended at once; a later change sends nothing anywhere either.
        assert publish(p, server.uri("alice"), pidf("alice@example.com", "set k 0 0 1", basic="closed")).status == 200
        time.sleep(0.5)
        assert listener.accepted == 0
        assert "not dialling out" in server.log_text()
    finally:
        listener.close()
