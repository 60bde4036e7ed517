"""Issue 9 findings 1 and 6: many large publications for one presentity must never produce a
NOTIFY over `[server] max_message_size` (TCP) or a UDP datagram's limit; the watcher gets the
summary document (basic status only) instead of a 3.5 MB message."""

from __future__ import annotations

from _notify_helpers import pidf, publish, subscribe
from harness import SipClient, wait_until

from presenced.sip.message import Request


def _biggest(c: SipClient) -> int:
    # The raw stream/datagrams hold every NOTIFY we got; re-encoding gives each one's size.
    return max(len(r.encode()) for r in c.requests_seen if r.method == "NOTIFY")


def test_large_publications_never_make_an_oversized_notify(server_factory, sip_client) -> None:
    # `[pa] max_presentity_bytes` (64 KiB) refuses such publications by default; raised here so
    # that the NOTIFY size bound, the last line of defence, is what the test sees.
    server = server_factory(sections={"pa": {"max_presentity_bytes": 1 << 20}})
    tcp: SipClient = sip_client("tcp", user="bob", server=server)
    udp: SipClient = sip_client("udp", user="carol", server=server)
    for w in (tcp, udp):
        assert subscribe(w, server.uri("alice")).status == 200
        w.expect_request("NOTIFY")
    p: SipClient = sip_client("tcp", user="alice", server=server)
    note = "n" * 20_000
    for i in range(6):  # six 20 KB notes compose a ~120 KB document
        assert publish(p, server.uri("alice"), pidf("alice@example.com", note, tuple_id=f"t{i}")).status == 200
    for w in (tcp, udp):
        assert wait_until(lambda w=w: any(
            r.method == "NOTIFY" and b"t5" in r.body for r in w.requests_seen), timeout=10.0)
    assert _biggest(tcp) <= 65536
    assert _biggest(udp) <= 65507
    last: Request = [r for r in tcp.requests_seen if r.method == "NOTIFY"][-1]
    assert b"<note" not in last.body and last.body.count(b"<basic>open</basic>") == 6  # the summary
