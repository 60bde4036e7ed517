"""Issue 9 finding 2: a percent-decoded Request-URI user must not inject header lines into
our 200 or NOTIFYs; a published note's line feeds must not reach a NOTIFY body raw."""

from __future__ import annotations

import time

from _notify_helpers import pidf, publish, subscribe
from harness import SipClient

INJECT = "sip:x%0d%0aX-Injected%3a%20yes%0d%0a@example.com"


def test_crlf_in_request_uri_user_is_400_and_never_written(server, sip_client) -> None:
    c: SipClient = sip_client("udp", user="mallory")
    for uri in (INJECT, "sip:a%00b@example.com"):
        r = subscribe(c, uri)
        assert r.status == 400
    r = c.request("PUBLISH", INJECT, headers={"Event": "presence", "Content-Type": "application/pidf+xml"},
                  body=pidf("x@example.com", "hi"))
    assert r.status == 400
    r = c.request("REGISTER", "sip:example.com", to=f"<{INJECT}>", headers={"Expires": "60"})
    assert r.status == 400
    time.sleep(0.5)
    raw = bytes(c.raw_received)
    # Only the escaped form may come back (in the copied To); never a line of its own.
    assert b"\nX-Injected" not in raw and b"X-Injected: yes" not in raw and b"\x00" not in raw
    assert c.requests_seen == []  # no NOTIFY was started for it


def test_crlf_via_the_jabber_route_is_400(server_factory) -> None:
    """With the gateway configured, the jabber route skips the known-user check (issue 9):
    the decoded user must be refused there too."""
    srv = server_factory(sections={"jabber": {"server": "127.0.0.1:1", "component": "sip.example.com",
                                              "secret": "s3cret", "gateway_domain": "xmpp.example.com"}})
    c = SipClient(srv.addr, "udp", user="mallory")
    try:
        r = subscribe(c, "sip:x%0d%0aX-Injected%3a%20yes@xmpp.example.com")
        assert r.status == 400
        time.sleep(0.3)
        raw = bytes(c.raw_received)
        assert b"\nX-Injected" not in raw and b"X-Injected: yes" not in raw
    finally:
        c.close()


def test_published_note_line_feeds_are_not_raw_in_notify_bodies(server, sip_client) -> None:
    w: SipClient = sip_client("tcp", user="bob")
    assert subscribe(w, server.uri("alice")).status == 200
    w.expect_request("NOTIFY")
    p: SipClient = sip_client("udp", user="alice")
    note = "line1\nflush_all\r\nset x 0 0 1\n"
    assert publish(p, server.uri("alice"), pidf("alice@example.com", note)).status == 200
    n = w.expect_request("NOTIFY")
    body = n.body
    inner = body[body.index(b"<note") : body.index(b"</note>")]
    assert b"\n" not in inner and b"\r" not in inner
    assert b"&#10;" in inner
