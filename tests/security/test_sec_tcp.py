"""Issue 9 finding 6, TCP: one IP held every connection slot, and idle connections lived for
10 minutes. Now `[server] max_connections_per_source` caps one source IP (another still
connects), `connection_idle_timeout` closes idle connections and
`connection_first_message_timeout` closes those that never deliver a SIP message.
"""

from __future__ import annotations

import socket

from harness import ServerProcess, connection_closed, token, wait_until

from presenced.sip.framing import StreamFramer
from presenced.sip.message import Response, parse_message

CAP = 4


def connect(server: ServerProcess, source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(5.0)
    s.connect(server.addr)
    return s


def options(sock: socket.socket) -> bytes:
    host, port = sock.getsockname()
    b = "z9hG4bK" + token()
    return (
        "OPTIONS sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {host}:{port};branch={b}\r\n"
        f"From: <sip:probe@example.com>;tag={token(4)}\r\nTo: <sip:example.com>\r\n"
        f"Call-ID: {b}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answered(sock: socket.socket) -> bool:
    """Send an OPTIONS and read its 200 on this connection."""
    sock.sendall(options(sock))
    framer = StreamFramer(1 << 16)
    while True:
        try:
            data = sock.recv(65535)
        except OSError:
            return False
        if not data:
            return False
        for item in framer.feed(data):
            if isinstance(item, bytes):
                msg = parse_message(item)
                return isinstance(msg, Response) and msg.status == 200


def test_one_ip_cannot_hold_more_than_the_per_source_cap(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(sections={"server": {"max_connections_per_source": CAP}})
    held = [connect(srv, "127.0.0.2") for _ in range(CAP)]
    try:
        for s in held:
            assert answered(s)
        extra = connect(srv, "127.0.0.2")  # the kernel accepts; the server closes it at once
        assert connection_closed(extra)
        extra.close()
        # Another address still connects and is served.
        other = connect(srv, "127.0.0.3")
        assert answered(other)
        other.close()
        # The held connections are untouched, and a freed slot can be used again.
        assert answered(held[0])
        held.pop().close()
        # The server sees the close a moment later; then the slot is free again.
        tries: list[socket.socket] = []

        def slot_free() -> bool:
            tries.append(connect(srv, "127.0.0.2"))
            return answered(tries[-1])

        assert wait_until(slot_free, timeout=5.0, interval=0.2)
        held.extend(tries)
    finally:
        for s in held:
            s.close()
    srv.assert_running()


def test_idle_connections_are_closed_after_the_timeout(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(sections={"server": {"connection_idle_timeout": 2}})
    idle = connect(srv, "127.0.0.2")
    try:
        assert answered(idle)  # one message, then nothing
        assert connection_closed(idle, timeout=10.0)
    finally:
        idle.close()
    srv.assert_running()


def test_a_connection_that_never_delivers_a_message_is_closed(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(sections={"server": {"connection_first_message_timeout": 2}})
    silent = connect(srv, "127.0.0.2")
    try:
        silent.sendall(b"\r\n\r\n")  # a keep-alive ping is no SIP message
        assert connection_closed(silent, timeout=10.0)
    finally:
        silent.close()
    srv.assert_running()
