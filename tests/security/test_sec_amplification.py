"""Issue 9 finding 1 (the byte bound): a forged UDP source turned presenced into an amplifier
(22x for a small fetch with the NOTIFY's retransmissions, ~2,000x after a 60 KB PUBLISH).

Until an address has proven it receives what we send (it answered one of our requests), the
bytes sent to it are at most `[limits] amplification_factor` (10) x the bytes received from it
(QUIC's address validation, RFC 9000 §8.1).

A forged source is emulated without raw sockets: the "attacker" sends its requests through the
victim's own socket, which never answers anything, exactly what the server sees when the
source address is forged. The victim counts every byte it receives.
"""

from __future__ import annotations

import socket
import time

from harness import ServerProcess, SipClient, token

from presenced.sip.message import Request

FACTOR = 10
BIG_NOTE = "n" * 30_000


def pidf(entity: str, note: str = "", basic: str = "open") -> bytes:
    note_el = f"<note>{note}</note>" if note else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:{entity}">\n'
        f'<tuple id="t1"><status><basic>{basic}</basic></status>{note_el}</tuple>\n'
        "</presence>\n"
    ).encode()


def publish(c: SipClient, user: str, body: bytes, etag: str | None = None) -> str:
    headers = {"Event": "presence", "Expires": "600", "Content-Type": "application/pidf+xml"}
    if etag is not None:
        headers["SIP-If-Match"] = etag
    r = c.request("PUBLISH", f"sip:{user}@example.com", headers=headers, body=body)
    assert r.status == 200, r
    tag = r.headers.get("SIP-ETag")
    assert tag
    return tag


def forged_subscribe(victim: tuple[str, int], user: str) -> bytes:
    b = "z9hG4bK" + token()
    host, port = victim
    return (
        f"SUBSCRIBE sip:{user}@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch={b};rport\r\n"
        f"From: <sip:mallory@example.com>;tag={token(4)}\r\n"
        f"To: <sip:{user}@example.com>\r\n"
        f"Call-ID: {b}\r\nCSeq: 1 SUBSCRIBE\r\n"
        f"Contact: <sip:victim@{host}:{port}>\r\n"
        "Event: presence\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def count_bytes(sock: socket.socket, seconds: float) -> int:
    """Bytes arriving at `sock` during `seconds` (the victim never answers)."""
    total = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            total += len(sock.recv(65535))
        except TimeoutError:
            break
    return total


def test_forged_source_receives_at_most_10x_including_a_large_publication(
    server: ServerProcess,
) -> None:
    with SipClient(server.addr, "tcp", user="mallory") as attacker:
        publish(attacker, "alice", pidf("alice@example.com", BIG_NOTE))
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    victim.bind(("127.0.0.4", 0))
    try:
        addr = victim.getsockname()
        sent = 0
        # A large fetch (alice: a 30 KB document) and small ones (nobody published: small
        # NOTIFYs and their retransmissions, every 0.5, 1, 2, 4, 4... s).
        for user in ("alice", "alice", "bob", "carol", "dave"):
            data = forged_subscribe(addr, user)
            victim.sendto(data, server.addr)
            sent += len(data)
        # Long enough for the unbounded server's small fetches alone to pass 10x (the 200 and
        # seven copies of each NOTIFY by 16 s), and for the 30 KB NOTIFY many times over.
        received = count_bytes(victim, 16.0)
        print(f"victim: {received} bytes received for {sent} sent ({received / sent:.1f}x)")
        assert received <= FACTOR * sent
        assert received > 0  # the answers within the budget still go out
    finally:
        victim.close()
    server.assert_running()


def test_a_watcher_that_answers_its_notifys_still_gets_everything(server: ServerProcess) -> None:
    with SipClient(server.addr, "udp", user="watcher") as watcher, \
            SipClient(server.addr, "tcp", user="bob") as bob:
        r = watcher.request("SUBSCRIBE", "sip:bob@example.com",
                            headers={"Event": "presence", "Expires": "600"})
        assert r.status == 200
        first = watcher.expect_request("NOTIFY")  # answered 200: the address is proven
        assert isinstance(first, Request)
        etag = publish(bob, "bob", pidf("bob@example.com", "small"))
        watcher.expect_request("NOTIFY", where=lambda n: b"small" in n.body)
        # Far more than 10x what the watcher ever sent: it reads what we send, so it gets it.
        for i in range(3):
            note = f"big{i}" + BIG_NOTE
            etag = publish(bob, "bob", pidf("bob@example.com", note), etag=etag)
            n = watcher.expect_request("NOTIFY", where=lambda n, note=note: note.encode() in n.body)
            assert len(n.body) > 30_000
        assert not watcher.errors
