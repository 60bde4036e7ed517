"""Issue 9 finding 6: one source flooding SUBSCRIBEs (10,000 from one socket were all stored).

The per-source limiter ([limits], sip/limits.py) answers the first request over the rate with
ONE 503 and Retry-After, then stays silent; other sources are served meanwhile.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable

from harness import ServerProcess, token

from presenced.sip.message import Response, parse_message


def subscribe(src: tuple[str, int], user: str = "alice", domain: str = "example.com") -> bytes:
    b = "z9hG4bK" + token()
    host, port = src
    return (
        f"SUBSCRIBE sip:{user}@{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch={b};rport\r\n"
        f"From: <sip:flood@{domain}>;tag={token(4)}\r\n"
        f"To: <sip:{user}@{domain}>\r\n"
        f"Call-ID: {b}\r\n"
        "CSeq: 1 SUBSCRIBE\r\n"
        f"Contact: <sip:flood@{host}:{port}>\r\n"
        "Event: presence\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def udp_socket(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    s.bind((host, 0))
    return s


def drain(sock: socket.socket, quiet: float = 1.0) -> list[bytes]:
    """Everything that arrives until the socket has been quiet for `quiet` seconds."""
    out: list[bytes] = []
    sock.settimeout(quiet)
    while True:
        try:
            out.append(sock.recv(65535))
        except TimeoutError:
            return out


def responses(datagrams: list[bytes]) -> list[Response]:
    out = []
    for d in datagrams:
        msg = parse_message(d)
        if isinstance(msg, Response):
            out.append(msg)
    return out


def test_flooding_source_gets_one_503_then_silence_while_another_is_served(
    server: ServerProcess,
) -> None:
    flood = udp_socket("127.0.0.1")
    other = udp_socket("127.0.0.2")
    try:
        src = flood.getsockname()
        for _ in range(300):  # far beyond dialog_burst (50) at dialogs_per_second 10
            flood.sendto(subscribe(src), server.addr)
        # While the flooder is blocked, a second address is answered within a second.
        other.sendto(subscribe(other.getsockname(), user="bob"), server.addr)
        other.settimeout(1.0)
        answer = parse_message(other.recv(65535))
        assert isinstance(answer, Response) and answer.status == 200
        # The flooder is still blocked: more requests get nothing at all.
        for _ in range(50):
            flood.sendto(subscribe(src), server.addr)
        got = responses(drain(flood))
        statuses = [r.status for r in got]
        assert statuses.count(503) == 1, statuses
        (busy,) = [r for r in got if r.status == 503]
        assert busy.headers.get("Retry-After") == "10"
        assert 0 < statuses.count(200) <= 60, statuses  # the burst, not the flood
        assert len(got) == statuses.count(200) + 1  # nothing but the burst's answers and one 503
    finally:
        flood.close()
        other.close()


def test_ten_thousand_subscribes_from_one_socket_do_not_all_create_dialogs(
    server: ServerProcess,
) -> None:
    sock = udp_socket("127.0.0.3")
    try:
        src = sock.getsockname()
        start = time.monotonic()
        for i in range(10_000):
            sock.sendto(subscribe(src, user=f"u{i}"), server.addr)
        elapsed = time.monotonic() - start
        got = responses(drain(sock))
        created = sum(1 for r in got if r.status == 200)
        print(f"10,000 SUBSCRIBEs in {elapsed:.2f} s: {created} dialogs, {len(got)} answers")
        # dialog_burst plus what dialogs_per_second refills while the burst is sent; the block
        # (extended while the flood lasts) keeps the rest out.
        assert created <= 50 + 10 * 2
        # One "Rate Limited"; a queue that grew past [limits] overload_backlog while the
        # 10,000 were sent may also have shed some of the burst (503 Overloaded).
        refusals = [r.reason for r in got if r.status == 503]
        assert refusals.count("Rate Limited") == 1, refusals
        assert set(refusals) <= {"Rate Limited", "Overloaded"}
    finally:
        sock.close()
    server.assert_running()


def test_a_long_receive_queue_sheds_new_work_with_503_and_serves_dialogs_under_way(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """[limits] overload_backlog (docs/performance.md "Overload"): many sources together send
    more than the server reads (here: the process is stopped while 400 SUBSCRIBEs queue up).
    While the queue is over the limit, new SUBSCRIBEs get a stateless 503 Overloaded at once;
    a refresh of a dialog under way is served; every request gets an answer; once the queue
    drained, new ones are served again."""
    srv = server_factory(sections={"limits": {"exempt": ["127.0.0.0/8"],
                                              "overload_backlog": 65536}})
    watcher = udp_socket("127.0.0.4")
    flood = udp_socket("127.0.0.5")
    try:
        first = subscribe(watcher.getsockname(), user="bob")
        watcher.sendto(first, srv.addr)
        ok = next(r for r in responses(drain(watcher, 0.5)) if r.cseq.method == "SUBSCRIBE")
        assert ok.status == 200 and ok.to.tag
        refresh = (first.replace(b"CSeq: 1 SUBSCRIBE", b"CSeq: 2 SUBSCRIBE")
                   .replace(b"To: <sip:bob@example.com>",
                            f"To: <sip:bob@example.com>;tag={ok.to.tag}".encode())
                   .replace(b"branch=z9hG4bK", b"branch=z9hG4bKrefresh"))
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGSTOP)
        try:
            src = flood.getsockname()
            for i in range(200):
                flood.sendto(subscribe(src, user=f"u{i}"), srv.addr)
            watcher.sendto(refresh, srv.addr)
            for i in range(200, 400):
                flood.sendto(subscribe(src, user=f"u{i}"), srv.addr)
        finally:
            srv.proc.send_signal(signal.SIGCONT)
        answers = responses(drain(flood))
        statuses = [(r.status, r.reason) for r in answers if r.cseq.method == "SUBSCRIBE"]
        assert len(statuses) == 400, statuses  # nobody left without an answer
        shed = statuses.count((503, "Overloaded"))
        assert shed >= 100, statuses
        assert set(statuses) <= {(200, "OK"), (503, "Overloaded")}
        assert all(r.headers.get("Retry-After") == "2" for r in answers if r.status == 503)
        renewed = [r for r in responses(drain(watcher, 0.5))
                   if r.cseq.method == "SUBSCRIBE" and r.cseq.seq == 2]
        assert [r.status for r in renewed] == [200]
        flood.sendto(subscribe(flood.getsockname(), user="later"), srv.addr)
        (later,) = [r for r in responses(drain(flood, 0.5)) if r.cseq.method == "SUBSCRIBE"]
        assert later.status == 200
        assert "overloaded: the receive queue of udp" in srv.log_text()
    finally:
        watcher.close()
        flood.close()
    srv.assert_running()
