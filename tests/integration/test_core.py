"""Core SIP behaviour of the real server process, over real UDP and TCP sockets.

What every request gets whatever the presence logic does (RFC 3261 §8.2, §11), and the
robustness a network-facing server owes: garbage, oversized and lying input from one peer
never stops it answering the others, and SIGTERM is a clean stop (exit code 0).
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    LOOPBACK_UNLIMITED,
    ServerProcess,
    SipClient,
    connection_closed,
    raw_tcp,
    run_sipp,
    token,
)

from presenced.sip.message import Response, parse_message

Client = Callable[..., SipClient]


def _list(resp: Response, name: str) -> set[str]:
    return {v.strip().upper() for v in resp.headers.get_list(name)}


def _options_raw(
    port: int,
    transport: str = "UDP",
    extra: str = "",
    body: bytes = b"",
    length: int | None = None,
    cseq: str = "1 OPTIONS",
) -> bytes:
    """A hand-written OPTIONS, for the tests that need to break it on purpose."""
    branch = "z9hG4bK" + token()
    head = (
        f"OPTIONS sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:tester@example.com>;tag=t1\r\n"
        "To: <sip:example.com>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\n"
        f"CSeq: {cseq}\r\n"
        f"{extra}"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def _assert_answers_options(c: SipClient, timeout: float = 5.0) -> None:
    r = c.request("OPTIONS", "sip:example.com", timeout=timeout)
    assert r.status == 200, r


# --- OPTIONS (RFC 3261 §11) -------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_answers_200_with_allow_accept_and_allow_events(
    sip_client: Client, transport: str
) -> None:
    c = sip_client(transport)
    req = c.build_request("OPTIONS", "sip:example.com", headers={"Accept": "application/sdp"})
    c.send(req)
    r = c.wait_response(req)
    assert r.status == 200
    # §11.2: the answer describes what we would do with a real request.
    assert {"OPTIONS", "SUBSCRIBE", "PUBLISH", "REGISTER"} <= _list(r, "Allow")
    assert "INVITE" not in _list(r, "Allow")
    assert "APPLICATION/PIDF+XML" in _list(r, "Accept")
    assert "PRESENCE" in _list(r, "Allow-Events")  # RFC 6665 §8.2.2
    # §8.2.6.2: the transaction's headers come back unchanged, plus a To-tag.
    assert r.call_id == req.call_id
    assert r.cseq.seq == req.cseq.seq and r.cseq.method == "OPTIONS"
    assert r.top_via.branch == req.top_via.branch
    assert r.from_.tag == req.from_.tag
    assert r.to.tag
    assert not c.errors


def test_options_with_max_forwards_zero_is_answered_not_483(sip_client: Client) -> None:
    # RFC 3261 §16.3 step 2: an OPTIONS with Max-Forwards 0 may be answered by its recipient.
    r = sip_client().request("OPTIONS", "sip:example.com", headers={"Max-Forwards": "0"})
    assert r.status == 200


def test_sipp_options_500_calls_all_succeed(
    server_factory: Callable[..., ServerProcess], sipp: str, tmp_path: Path
) -> None:
    server = server_factory(sections=LOOPBACK_UNLIMITED)
    result = run_sipp(sipp, "options.xml", server.addr, tmp_path / "sipp", calls=500, rate=250)
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (500, 0), result.describe()
    server.assert_running()


# --- core request checks (RFC 3261 §8.2) ------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_unknown_method_gets_501_with_allow(sip_client: Client, transport: str) -> None:
    r = sip_client(transport).request("FROBNICATE", "sip:alice@example.com")
    assert r.status == 501  # §8.2.1
    assert "SUBSCRIBE" in _list(r, "Allow")


def test_invite_gets_405_with_allow(sip_client: Client) -> None:
    c = sip_client()
    sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    req = c.build_request(
        "INVITE", "sip:alice@example.com", headers={"Content-Type": "application/sdp"}, body=sdp
    )
    c.send(req)
    r = c.wait_response(req)
    assert r.status == 405  # §8.2.1: a method we know but do not serve
    allow = _list(r, "Allow")
    assert "SUBSCRIBE" in allow and "INVITE" not in allow
    # The ACK for a non-2xx final response (§17.1.1.3) is absorbed; the server keeps answering.
    ack = c.build_request(
        "ACK",
        "sip:alice@example.com",
        call_id=req.call_id,
        cseq=req.cseq.seq,
        from_=req.headers.get("From"),
        to=r.headers.get("To"),
    )
    ack.headers.set("Via", req.headers.get("Via") or "")
    c.send(ack)
    _assert_answers_options(c)


@pytest.mark.parametrize("method", ["SUBSCRIBE", "REGISTER"])
def test_domain_not_served_gets_404(sip_client: Client, method: str) -> None:
    c = sip_client()
    uri = (
        "sip:bob@not-served.example.org" if method == "SUBSCRIBE" else "sip:not-served.example.org"
    )
    r = c.request(
        method,
        uri,
        headers={"Event": "presence"} if method == "SUBSCRIBE" else None,
        to="<sip:bob@not-served.example.org>",
    )
    assert r.status == 404


def test_max_forwards_zero_gets_483(sip_client: Client) -> None:
    r = sip_client().request(
        "SUBSCRIBE",
        "sip:alice@example.com",
        headers={"Max-Forwards": "0", "Event": "presence", "Expires": "600"},
    )
    assert r.status == 483  # §16.3 step 2 / §8.2: we are the last hop and refuse to go further


# --- malformed input --------------------------------------------------------------------------


def test_1000_garbage_datagrams_then_options_still_answered(
    server: ServerProcess, sip_client: Client
) -> None:
    rng = random.Random(0x5EED)
    prefixes = [b"", b"SIP/2.0 ", b"OPTIONS sip:example.com SIP/2.0\r\n", b"\r\n", b"INVITE "]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(1000):
            junk = rng.randbytes(rng.randint(1, 1400))
            s.sendto(prefixes[i % len(prefixes)] + junk, server.addr)
            if i % 100 == 99:
                time.sleep(0.01)  # do not just overflow the socket buffer: make it parse them
    _assert_answers_options(sip_client())
    _assert_answers_options(sip_client("tcp"))
    server.assert_running()


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param({"length": "twelve"}, id="non-numeric-content-length"),
        pytest.param({"cseq": "1 REGISTER"}, id="cseq-method-mismatch"),
        pytest.param({"extra": "Max-Forwards: many\r\n"}, id="bad-max-forwards"),
    ],
)
def test_broken_request_with_intact_transaction_headers_gets_400(
    server: ServerProcess, breakage: dict[str, str]
) -> None:
    # §8.2.6 / §21.4.1: when Via, From, To, Call-ID and CSeq survive, the sender hears why.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        port = s.getsockname()[1]
        extra = breakage.get("extra", "")
        if extra:
            # replace the good Max-Forwards with the broken one
            data = _options_raw(port, extra=extra).replace(b"Max-Forwards: 70\r\n", b"")
        elif "length" in breakage:
            data = _options_raw(port).replace(b"Content-Length: 0", b"Content-Length: twelve")
        else:
            data = _options_raw(port, cseq=breakage["cseq"])
        s.sendto(data, server.addr)
        resp = parse_message(s.recv(65535))
    assert isinstance(resp, Response)
    assert resp.status == 400
    head = data.decode()
    assert f"Call-ID: {resp.call_id}\r\n" in head
    assert f";branch={resp.top_via.branch};" in head
    assert resp.cseq.seq == 1


@pytest.mark.parametrize("shape", ["many-headers", "one-huge-header"])
def test_oversized_udp_datagram_does_not_stop_the_server(
    server: ServerProcess, sip_client: Client, shape: str
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        port = s.getsockname()[1]
        if shape == "many-headers":
            pad = "".join(f"X-Pad-{i}: {'p' * 50}\r\n" for i in range(1000))
        else:
            pad = f"X-Pad: {'p' * 60000}\r\n"
        data = _options_raw(port, extra=pad)
        assert 60_000 <= len(data) < 65_507
        s.sendto(data, server.addr)
        try:
            answer = s.recv(65535)
        except TimeoutError:
            answer = b""  # dropping it is fine too
        if answer:
            resp = parse_message(answer)
            assert isinstance(resp, Response) and resp.status in (200, 400, 413, 513)
    server.assert_running()
    _assert_answers_options(sip_client())


# --- TCP robustness (RFC 3261 §18.3) -------------------------------------------------------------


def test_tcp_garbage_closes_only_that_connection(server: ServerProcess, sip_client: Client) -> None:
    good = sip_client("tcp")
    _assert_answers_options(good)
    bad = raw_tcp(server.addr)
    try:
        bad.sendall(b"\x16\x03\x01\x02\x00 this is not SIP at all\r\n\r\n" + bytes(range(256)))
        assert connection_closed(bad, timeout=5), "server kept a connection that broke framing"
    finally:
        bad.close()
    _assert_answers_options(good)
    assert not good.closed.is_set()
    _assert_answers_options(sip_client("tcp"))


def test_lying_content_length_does_not_block_other_connections(
    server: ServerProcess, sip_client: Client
) -> None:
    liar = raw_tcp(server.addr)
    try:
        port = liar.getsockname()[1]
        # Promise 500 body bytes, send 10: the framer must wait on this connection alone.
        liar.sendall(_options_raw(port, "TCP", body=b"x" * 10, length=500))
        time.sleep(0.2)
        started = time.monotonic()
        _assert_answers_options(sip_client("tcp"), timeout=2)
        _assert_answers_options(sip_client("udp"), timeout=2)
        assert time.monotonic() - started < 2
        # Nothing came back on the liar's connection, and finishing the body completes it.
        liar.settimeout(0.3)
        with pytest.raises(TimeoutError):
            liar.recv(65535)
        liar.settimeout(5)
        liar.sendall(b"x" * 490)
        head = liar.recv(65535)
        assert head.startswith(b"SIP/2.0 200 "), head[:200]
    finally:
        liar.close()


def test_oversized_tcp_request_gets_513_then_the_connection_closes(
    server: ServerProcess, sip_client: Client
) -> None:
    """RFC 3261 §21.5.14: a request larger than we take gets 513 Message Too Large, then the
    stream (which cannot be framed past it) is closed; other connections are unaffected."""
    big = raw_tcp(server.addr)
    try:
        port = big.getsockname()[1]
        # Announce a 200 KB body (past the 64 KiB default) and send only the headers.
        big.sendall(_options_raw(port, "TCP", body=b"", length=200_000))
        big.settimeout(5)
        head = big.recv(65535)
        assert head.startswith(b"SIP/2.0 513 "), head[:200]
        assert connection_closed(big, timeout=5)
    finally:
        big.close()
    _assert_answers_options(sip_client("tcp"))


def test_subscribe_whose_call_id_is_not_utf8_gets_400_and_nothing_is_stored(
    sqlite_server: ServerProcess, sip_client: Client
) -> None:
    """Identity headers become stored dialog keys: bytes that are not UTF-8 are refused with a
    clear 400 instead of a storage failure (and a leaked dialog)."""
    c = sip_client("tcp", server=sqlite_server)
    port = c.sock.getsockname()[1]
    raw = (
        "SUBSCRIBE sip:alice@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK{token()}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1\r\nTo: <sip:alice@example.com>\r\n"
    ).encode() + b"Call-ID: abc\xff\xfe@host\r\n" + (
        b"CSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContact: <sip:bob@127.0.0.1:5999>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    c.send_raw(raw)
    got = c.wait_raw(lambda data: data.startswith(b"SIP/2.0 "), timeout=5)
    assert got.startswith(b"SIP/2.0 400 "), got[:120]
    assert b"Call-ID is not UTF-8" in got
    _assert_answers_options(c)


def test_crlf_keepalive_ping_gets_crlf_pong(sip_client: Client) -> None:
    c = sip_client("tcp")
    c.send_raw(b"\r\n\r\n")  # RFC 5626 §3.5.1: double-CRLF ping, single-CRLF pong
    c.wait_raw(lambda data: data == b"\r\n", timeout=5)
    assert c.pongs == 1
    _assert_answers_options(c)  # the connection stays usable
    assert c.pongs == 1


def test_200_half_open_tcp_connections_then_a_request_is_still_answered(
    server_factory: Callable[..., ServerProcess], sip_client: Client
) -> None:
    # From one address: past the per-source cap (tested in tests/security/test_sec_tcp.py).
    server = server_factory(sections={"server": {"max_connections_per_source": 1024}})
    conns: list[socket.socket] = []
    try:
        for i in range(200):
            s = raw_tcp(server.addr)
            conns.append(s)
            if i % 2:
                # Half of them stall inside a header block, the others never send a byte.
                s.sendall(b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1")
        _assert_answers_options(sip_client("tcp", server=server), timeout=5)
        _assert_answers_options(sip_client("udp", server=server), timeout=5)
        server.assert_running()
    finally:
        for s in conns:
            s.close()
    _assert_answers_options(sip_client("tcp", server=server))


# --- lifecycle ----------------------------------------------------------------------------------


def test_sigterm_stops_cleanly_with_exit_code_0(server: ServerProcess, sip_client: Client) -> None:
    c = sip_client("tcp")
    _assert_answers_options(c)
    half = raw_tcp(server.addr)  # an open connection with a partial message must not block exit
    try:
        half.sendall(b"OPTIONS sip:example.com SIP/2.0\r\n")
        started = time.monotonic()
        assert server.stop(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        half.close()
    assert c.wait_closed(5), "server exited but the TCP connection stayed open"
    assert "Traceback" not in server.log_text()


# --- sipp scenarios for the registrar and the presence agent -----------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_register_and_unregister(
    server_factory: Callable[..., ServerProcess], sipp: str, tmp_path: Path, transport: str
) -> None:
    server = server_factory(sections=LOOPBACK_UNLIMITED)
    result = run_sipp(
        sipp, "register.xml", server.addr, tmp_path / "sipp", calls=50, rate=50, transport=transport
    )
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (50, 0), result.describe()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_subscribe_refresh_unsubscribe(
    server_factory: Callable[..., ServerProcess], sipp: str, tmp_path: Path, transport: str
) -> None:
    server = server_factory(sections=LOOPBACK_UNLIMITED)
    result = run_sipp(
        sipp,
        "subscribe.xml",
        server.addr,
        tmp_path / "sipp",
        calls=50,
        rate=50,
        transport=transport,
    )
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (50, 0), result.describe()


def test_restart_and_kill9_serve_again_on_the_same_port(
    sqlite_server: ServerProcess, sip_client: Client
) -> None:
    c = sip_client("udp", server=sqlite_server)
    _assert_answers_options(c)
    port = sqlite_server.port
    sqlite_server.restart()  # clean stop (exit code 0 asserted) and start on the same data
    assert sqlite_server.port == port
    _assert_answers_options(c)
    sqlite_server.kill9()  # no shutdown code runs; the SQLite file must still open
    sqlite_server.start_again()
    assert sqlite_server.port == port
    _assert_answers_options(c)
    _assert_answers_options(sip_client("tcp", server=sqlite_server))
