"""Issue 9 finding 6: bindings, publications and published bytes had no global caps, and a
presentity's 32 publications of 64 KiB composed a 3.5 MB document.

Now `[registrar] max_bindings`, `[pa] max_publications` and `[pa] max_publication_bytes` answer
503 with Retry-After when full, `[pa] max_presentity_bytes` answers 413, and the per-source
dialog rate keeps one source from filling a global cap. Cap values are small here so the tests
run quickly; the defaults are in docs/configuration.md.
"""

from __future__ import annotations

import socket

from harness import ServerProcess, SipClient, SipTimeout, register, token

from presenced.sip.message import Response, parse_message

LOOPBACK_EXEMPT = {"exempt": ["127.0.0.0/8"]}  # these tests are about the caps, not the rate


def pidf(user: str, size: int) -> bytes:
    """A valid PIDF document of exactly `size` bytes (padded in a note)."""
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:{user}@example.com">'
        '<tuple id="t1"><status><basic>open</basic></status><note>'
    )
    tail = "</note></tuple></presence>\n"
    pad = size - len(head) - len(tail)
    assert pad >= 0
    return (head + "n" * pad + tail).encode()


def publish(c: SipClient, user: str, size: int) -> Response:
    return c.request(
        "PUBLISH", f"sip:{user}@example.com",
        headers={"Event": "presence", "Expires": "600", "Content-Type": "application/pidf+xml"},
        body=pidf(user, size),
    )


def test_registrar_max_bindings_answers_503_with_retry_after(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = server_factory(
        sections={"registrar": {"max_bindings": 5}, "limits": LOOPBACK_EXEMPT})
    with SipClient(srv.addr) as c:
        for i in range(5):
            assert register(c, user=f"u{i}").status == 200
        full = register(c, user="u5")
        assert full.status == 503
        assert full.headers.get("Retry-After")
        assert register(c, user="u0").status == 200  # a refresh adds nothing: still served
        assert register(c, user="u1", expires=0).status == 200  # a removal frees a slot
        assert register(c, user="u5").status == 200
    srv.assert_running()


def test_publication_count_and_byte_caps(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = server_factory(sections={
        "pa": {"max_publications": 3, "max_presentity_bytes": 3000, "max_publication_bytes": 5500},
        "limits": LOOPBACK_EXEMPT,
    })
    with SipClient(srv.addr, "tcp") as c:
        assert publish(c, "alice", 2500).status == 200
        # One presentity's live bodies would pass 3000 bytes: the body is too large (413).
        assert publish(c, "alice", 1000).status == 413
        assert publish(c, "bob", 2400).status == 200  # 4900 bytes live in all
        over = publish(c, "carol", 700)  # 5600 > max_publication_bytes
        assert over.status == 503 and over.headers.get("Retry-After")
        assert publish(c, "carol", 300).status == 200  # 5200: fits
        full = publish(c, "dave", 250)  # 5450 bytes fit, but it would be the fourth
        assert full.status == 503 and full.headers.get("Retry-After")
    srv.assert_running()


def raw_register(sock: socket.socket, server: tuple[str, int], user: str) -> Response:
    host, port = sock.getsockname()
    b = "z9hG4bK" + token()
    sock.sendto((
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch={b};rport\r\n"
        f"From: <sip:{user}@example.com>;tag={token(4)}\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: {b}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{host}:{port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode(), server)
    sock.settimeout(2.0)
    msg = parse_message(sock.recv(65535))
    assert isinstance(msg, Response)
    return msg


def test_one_source_cannot_fill_the_binding_cap(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: ServerProcess = server_factory(sections={
        "registrar": {"max_bindings": 40},
        "limits": {"dialog_burst": 10, "dialogs_per_second": 1, "block_time": 5},
    })
    created = 0
    statuses: list[int] = []
    with SipClient(srv.addr, retransmit=False) as c:
        for i in range(40):
            try:
                r = register(c, user=f"flood{i}")
            except SipTimeout:  # blocked: no answer at all
                statuses.append(0)
                break
            statuses.append(r.status)
            created += r.status == 200
    assert created <= 12, statuses  # the burst and what one second refills, not 40
    assert 503 in statuses, statuses
    # The cap is far from full: another source registers at once.
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))
    try:
        assert raw_register(other, srv.addr, "bystander").status == 200
    finally:
        other.close()
    srv.assert_running()
