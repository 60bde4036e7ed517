"""The sans-IO endpoint (RFC 3261 §8.2, §9.2, §11, §17, §18; RFC 3581) with a fake clock.

Bytes go in, `Transmit`s and events come out; time is a plain float and tokens come from a
counter, so every byte of every answer is predictable. No sockets anywhere.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from presenced.sip.endpoint import (
    ClientTimedOut,
    Endpoint,
    EndpointConfig,
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    Transmit,
)
from presenced.sip.headers import Headers
from presenced.sip.message import Request, Response, make_response, parse_message

CLIENT = Peer("udp", "192.0.2.10", 5070)
SERVER_VIA = "127.0.0.1:5060"


def make_endpoint(**config: object) -> Endpoint:
    counter = itertools.count(1)
    settings: dict[str, Any] = {
        "domains": frozenset({"example.com"}),
        "local_hosts": frozenset({"127.0.0.1"}),
        "via_hosts": {"udp": SERVER_VIA, "tcp": SERVER_VIA},
        # The per-source limits have their own tests (test_limits.py); here they would only
        # hide the behaviour under test (requests to peers never heard from, bursts).
        "rate_limits": None,
        "amplification": None,
    }
    settings.update(config)
    cfg = EndpointConfig(**settings)
    return Endpoint(cfg, make_token=lambda: f"tok{next(counter)}")


def raw(
    method: str = "OPTIONS",
    ruri: str = "sip:example.com",
    *,
    via: str = "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKc1;rport",
    cseq: str | None = None,
    to: str = "<sip:alice@example.com>",
    extra: tuple[str, ...] = (),
    body: bytes = b"",
    content_length: int | None = None,
) -> bytes:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: {via}",
        "From: <sip:bob@example.com>;tag=f1",
        f"To: {to}",
        "Call-ID: call-1@192.0.2.10",
        f"CSeq: {cseq or f'1 {method}'}",
        "Max-Forwards: 70",
        *extra,
        f"Content-Length: {len(body) if content_length is None else content_length}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def only_transmit(events: list[Event]) -> tuple[Response, Transmit]:
    assert len(events) == 1, events
    (ev,) = events
    assert isinstance(ev, Transmit)
    msg = parse_message(ev.data)
    assert isinstance(msg, Response)
    return msg, ev


def answer(ep: Endpoint, data: bytes, peer: Peer = CLIENT, now: float = 0.0) -> Response:
    resp, _ = only_transmit(ep.receive(data, peer, now))
    return resp


def received(events: list[Event]) -> RequestReceived:
    assert len(events) == 1, events
    (ev,) = events
    assert isinstance(ev, RequestReceived)
    return ev


# --- core answers (RFC 3261 §8.2) ------------------------------------------------------------


def test_options_answered_200_with_capabilities_and_to_tag() -> None:
    """§11.2: OPTIONS gets 200 with Allow, Accept, Allow-Events; §8.2.6.2: a To-tag."""
    ep = make_endpoint()
    resp, tx = only_transmit(ep.receive(raw("OPTIONS"), CLIENT, 0.0))
    assert resp.status == 200
    h = resp.headers
    assert h.get("Allow") == "OPTIONS, PUBLISH, REGISTER, SUBSCRIBE"
    assert h.get("Accept") == "application/pidf+xml"
    assert h.get("Allow-Events") == "presence"
    assert h.get("Server") == "presenced"
    assert resp.to.tag == "tok1"
    assert resp.call_id == "call-1@192.0.2.10"
    assert resp.cseq.seq == 1 and resp.cseq.method == "OPTIONS"
    assert resp.from_.tag == "f1"
    assert tx.peer == CLIENT


def test_options_lists_supported_extensions_when_configured() -> None:
    ep = make_endpoint(supported=("eventlist",))
    assert answer(ep, raw("OPTIONS")).headers.get("Supported") == "eventlist"


def test_unknown_method_gets_501_with_allow() -> None:
    """§8.2.1: a method the UAS does not recognise is 501 (Not Implemented)."""
    ep = make_endpoint()
    resp = answer(ep, raw("FROBNICATE"))
    assert resp.status == 501
    assert resp.headers.get("Allow") == "OPTIONS, PUBLISH, REGISTER, SUBSCRIBE"
    assert resp.to.tag is not None


@pytest.mark.parametrize("method", ["INVITE", "BYE", "MESSAGE", "NOTIFY", "INFO"])
def test_known_but_unserved_method_gets_405_with_allow(method: str) -> None:
    """§8.2.1: a known method we do not support gets 405 and an Allow header."""
    ep = make_endpoint()
    resp = answer(ep, raw(method, "sip:alice@example.com"))
    assert resp.status == 405
    assert resp.headers.get("Allow") == "OPTIONS, PUBLISH, REGISTER, SUBSCRIBE"
    assert resp.to.tag is not None  # §8.2.6.2


def test_invite_keeps_no_transaction_state_and_answers_retransmissions_alike() -> None:
    """We are no session UA: the 405 is stateless, with a To-tag that a stateless UAS derives
    from the request so a retransmission gets the same answer (§8.2.7)."""
    ep = make_endpoint()
    first = ep.receive(raw("INVITE", "sip:alice@example.com"), CLIENT, 0.0)
    assert ep.txns.servers == {}
    assert ep.get_timer() is None
    again = ep.receive(raw("INVITE", "sip:alice@example.com"), CLIENT, 0.5)
    assert first == again
    assert ep.txns.servers == {}


def test_cancel_without_matching_transaction_gets_481() -> None:
    """§9.2: no transaction matches the CANCEL."""
    ep = make_endpoint()
    assert answer(ep, raw("CANCEL", "sip:alice@example.com")).status == 481


def test_cancel_matching_a_pending_transaction_gets_200_and_leaves_it_alone() -> None:
    """§9.2: a CANCEL that matches a transaction is answered 200 whatever the method; it has no
    effect on a non-INVITE request, which the application still answers."""
    ep = make_endpoint()
    sub = raw("SUBSCRIBE", "sip:alice@example.com", extra=("Event: presence",))
    ev = received(ep.receive(sub, CLIENT, 0.0))
    cancel = raw("CANCEL", "sip:alice@example.com", cseq="1 CANCEL")
    assert answer(ep, cancel, now=0.1).status == 200
    events = ep.respond(ev.txn, make_response(ev.request, 200, to_tag="app"), ev.peer, 0.2)
    resp, _ = only_transmit(events)
    assert resp.status == 200 and resp.cseq.method == "SUBSCRIBE"


def test_ack_is_never_answered() -> None:
    """§17: an ACK is never answered, not even a broken one."""
    ep = make_endpoint()
    assert ep.receive(raw("ACK", "sip:alice@example.com"), CLIENT, 0.0) == []
    broken = raw("ACK", "sip:alice@example.com", via="SIP/2.0/UDP 192.0.2.10;branch=x")
    broken = broken.replace(b"From: <sip:bob@example.com>;tag=f1", b"From: <sip:bob@")
    assert ep.receive(broken, CLIENT, 0.0) == []
    assert ep.txns.servers == {}


def test_max_forwards_zero_gets_483() -> None:
    """§16.3 step 2 (we are the last hop): Max-Forwards 0 on anything but OPTIONS is 483."""
    ep = make_endpoint()
    data = raw("REGISTER").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert answer(ep, data).status == 483


def test_max_forwards_zero_options_is_still_answered() -> None:
    """§11: an OPTIONS with Max-Forwards 0 is answered by the UAS itself."""
    ep = make_endpoint()
    data = raw("OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert answer(ep, data).status == 200


def test_request_uri_of_another_domain_gets_404() -> None:
    ep = make_endpoint()
    resp = answer(ep, raw("REGISTER", "sip:example.org"))
    assert resp.status == 404
    assert resp.to.tag is not None


@pytest.mark.parametrize(
    "ruri", ["sip:example.com", "sip:EXAMPLE.COM.", "sips:alice@example.com", "sip:127.0.0.1"]
)
def test_served_domains_and_local_addresses_reach_the_application(ruri: str) -> None:
    ep = make_endpoint()
    ev = received(ep.receive(raw("REGISTER", ruri), CLIENT, 0.0))
    assert ev.request.method == "REGISTER"
    assert ev.peer == CLIENT


def test_ipv6_local_host_matches_its_bracketed_request_uri() -> None:
    """RFC 3261 §19.1.1: an IPv6 host in a URI is a reference in brackets."""
    ep = make_endpoint(local_hosts=frozenset({"2001:db8::1"}))
    received(ep.receive(raw("REGISTER", "sip:[2001:DB8::1]"), CLIENT, 0.0))


def test_tel_request_uri_gets_416() -> None:
    """§8.2.2.1: a Request-URI scheme we do not understand is 416."""
    ep = make_endpoint()
    assert answer(ep, raw("SUBSCRIBE", "tel:+15551234567")).status == 416


def test_unsupported_require_gets_420_listing_it() -> None:
    """§8.2.2.3: 420 (Bad Extension) with the unknown option tags in Unsupported."""
    ep = make_endpoint(supported=("eventlist",))
    resp = answer(ep, raw("SUBSCRIBE", "sip:alice@example.com", extra=("Require: foo, eventlist",)))
    assert resp.status == 420
    assert resp.headers.get("Unsupported") == "foo"


def test_supported_require_is_accepted_case_insensitively() -> None:
    """Option tags are tokens, compared case-insensitively (§7.3.1)."""
    ep = make_endpoint(supported=("EventList",))
    data = raw("SUBSCRIBE", "sip:alice@example.com", extra=("Require: eventlist",))
    received(ep.receive(data, CLIENT, 0.0))


def test_broken_max_forwards_with_intact_core_headers_gets_400() -> None:
    ep = make_endpoint()
    data = raw("REGISTER").replace(b"Max-Forwards: 70", b"Max-Forwards: lots")
    resp = answer(ep, data)
    assert resp.status == 400
    assert resp.reason.startswith("Bad Request (")
    assert ep.stats.bad_requests == 1


def test_broken_request_uri_gets_400() -> None:
    ep = make_endpoint()
    assert answer(ep, raw("REGISTER", "sip:[2001:db8::1")).status == 400


def test_content_length_beyond_the_datagram_gets_400_from_the_partial_message() -> None:
    """§18.3: a datagram shorter than Content-Length is an error; the headers a response
    copies survived, so it is answered (statelessly)."""
    ep = make_endpoint()
    data = raw("REGISTER", body=b"abc", content_length=10)
    resp, tx = only_transmit(ep.receive(data, CLIENT, 0.0))
    assert resp.status == 400
    assert resp.to.tag is not None
    assert resp.call_id == "call-1@192.0.2.10"
    assert tx.peer == CLIENT
    assert ep.txns.servers == {}


def test_non_ascii_digits_in_content_length_are_a_400_not_a_crash() -> None:
    ep = make_endpoint()
    data = raw("REGISTER").replace(b"Content-Length: 0", "Content-Length: ²".encode())
    assert answer(ep, data).status == 400


def test_unsupported_version_gets_505() -> None:
    ep = make_endpoint()
    data = raw("OPTIONS").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    assert answer(ep, data).status == 505


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\xff\xfe garbage",
        b"",
        b"\r\n\r\n",
        # No Via survives: nowhere to send an answer (RFC 3261 §18.2.2).
        b"REGISTER sip:example.com SIP/2.0\r\nFrom: <sip:a@h>;tag=1\r\nCall-ID: c\r\n\r\n",
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP ;;;\r\nCall-ID: c\r\n\r\n",
        # A response can never be answered, however broken.
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 9\r\n\r\n",
    ],
)
def test_unanswerable_garbage_is_dropped_and_counted(data: bytes) -> None:
    ep = make_endpoint()
    assert ep.receive(data, CLIENT, 0.0) == []
    assert ep.stats.received == 1
    assert ep.stats.dropped == 1


def lenient(events: list[Event]) -> tuple[str, list[str], Transmit]:
    """Status line and header names of the one Transmit (an answer missing mandatory
    headers is no message `parse_message` accepts)."""
    assert len(events) == 1, events
    (tx,) = events
    assert isinstance(tx, Transmit)
    head = tx.data.decode().split("\r\n\r\n", 1)[0].split("\r\n")
    return head[0], [line.split(":", 1)[0] for line in head[1:]], tx


@pytest.mark.parametrize("missing", ["Call-ID", "From", "To", "CSeq"])
def test_request_missing_a_mandatory_header_gets_400_echoing_what_exists(missing: str) -> None:
    """RFC 4475 §3.3.1 ("insuf"): a request without Call-ID, From, To or CSeq should get 400.
    The answer copies the headers that exist (RFC 3261 §8.2.6.2) and invents none."""
    ep = make_endpoint()
    lines = [ln for ln in raw("REGISTER").split(b"\r\n") if not ln.startswith(missing.encode() + b":")]
    status, names, tx = lenient(ep.receive(b"\r\n".join(lines), CLIENT, 0.0))
    assert status == f"SIP/2.0 400 Bad Request (missing {missing} header)"
    assert missing not in names
    for kept in {"Via", "From", "To", "Call-ID", "CSeq"} - {missing}:
        assert kept in names, kept
    # Where any response goes: the Via's received/rport (RFC 3261 §18.2.2, RFC 3581 §4).
    assert tx.peer == CLIENT
    assert ep.stats.bad_requests == 1 and ep.stats.dropped == 0


def test_request_with_only_a_via_gets_400() -> None:
    ep = make_endpoint()
    data = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"
    status, names, tx = lenient(ep.receive(data, CLIENT, 0.0))
    assert status.startswith("SIP/2.0 400 ")
    assert names == ["Via", "Server", "Content-Length"]
    # No rport, no port in the Via: received = the source, port 5060 (RFC 3261 §18.2.2).
    assert tx.peer == Peer("udp", CLIENT.host, 5060)


def test_incomplete_request_answer_passes_the_amplification_guard() -> None:
    """The 400 to an unproven UDP address counts against its budget like every answer."""
    from presenced.sip.limits import AmplificationLimits

    ep = make_endpoint(amplification=AmplificationLimits(factor=1))
    data = b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5070;rport;branch=z9hG4bK1\r\n\r\n"
    # The 400 is larger than the request: over a 1x budget it is dropped, never sent.
    assert ep.receive(data, CLIENT, 0.0) == []
    assert ep.stats.amplification_dropped == 1


def test_incomplete_request_echoing_a_control_character_is_dropped() -> None:
    """The encode-time check holds for the 400 too: nothing unsafe is echoed."""
    ep = make_endpoint()
    data = (b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"From: <sip:a@h>;tag=\x01\r\n\r\n")
    assert ep.receive(data, CLIENT, 0.0) == []


# --- server transactions (RFC 3261 §17.2.2) --------------------------------------------------


def test_retransmitted_register_before_the_answer_is_absorbed() -> None:
    ep = make_endpoint()
    received(ep.receive(raw("REGISTER"), CLIENT, 0.0))
    assert ep.receive(raw("REGISTER"), CLIENT, 0.5) == []
    assert ep.stats.retransmissions_absorbed == 1


def test_retransmitted_register_after_the_answer_gets_the_same_bytes() -> None:
    ep = make_endpoint()
    ev = received(ep.receive(raw("REGISTER"), CLIENT, 0.0))
    resp = make_response(ev.request, 200, to_tag="app1")
    resp.headers.add("Contact", "<sip:bob@192.0.2.10:5070>;expires=3600")
    (first,) = ep.respond(ev.txn, resp, ev.peer, 0.1)
    assert isinstance(first, Transmit)
    assert ep.receive(raw("REGISTER"), CLIENT, 0.5) == [first]
    assert ep.receive(raw("REGISTER"), CLIENT, 1.5) == [first]
    assert ep.stats.retransmissions_absorbed == 2


def test_core_answers_are_resent_to_retransmissions() -> None:
    """A core 404 goes through a server transaction too: the same bytes come back."""
    ep = make_endpoint()
    first = ep.receive(raw("REGISTER", "sip:example.org"), CLIENT, 0.0)
    assert ep.receive(raw("REGISTER", "sip:example.org"), CLIENT, 1.0) == first


def test_second_final_response_is_not_sent() -> None:
    """§17.2.2: a server transaction in Completed discards further final responses."""
    ep = make_endpoint()
    ev = received(ep.receive(raw("REGISTER"), CLIENT, 0.0))
    assert len(ep.respond(ev.txn, make_response(ev.request, 200, to_tag="a"), ev.peer, 0.1)) == 1
    assert ep.respond(ev.txn, make_response(ev.request, 500, to_tag="a"), ev.peer, 0.2) == []
    assert ep.stats.late_responses == 1


def test_unanswered_request_is_abandoned_after_the_guard_time() -> None:
    ep = make_endpoint()
    ev = received(ep.receive(raw("REGISTER"), CLIENT, 0.0))
    assert ep.get_timer() == 32.0
    assert ep.handle_timer(32.0) == []
    assert ep.stats.unanswered == 1
    assert ep.respond(ev.txn, make_response(ev.request, 200, to_tag="a"), ev.peer, 33.0) == []
    assert ep.stats.late_responses == 1


def test_respond_adds_server_header_only_when_missing() -> None:
    ep = make_endpoint()
    ev = received(ep.receive(raw("REGISTER"), CLIENT, 0.0))
    resp = make_response(ev.request, 200, to_tag="a")
    resp.headers.add("Server", "custom")
    out, _ = only_transmit(ep.respond(ev.txn, resp, ev.peer, 0.1))
    assert out.headers.get_all("Server") == ["custom"]


# --- response routing (RFC 3261 §18.2.2, RFC 3581 §4) ----------------------------------------


def test_rport_answer_goes_to_source_address_and_port() -> None:
    """RFC 3581 §4: with rport, the response goes to the packet's source IP and port, and the
    Via records both as received/rport."""
    ep = make_endpoint()
    nat = Peer("udp", "198.51.100.7", 40000)
    data = raw("OPTIONS", via="SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKn1;rport")
    resp, tx = only_transmit(ep.receive(data, nat, 0.0))
    assert tx.peer == nat
    via = resp.top_via
    assert via.received == "198.51.100.7"
    assert via.rport == 40000
    assert (via.host, via.port) == ("10.0.0.2", 5070)


def test_rport_is_stamped_even_when_the_host_matches() -> None:
    """RFC 3581 §4: rport present means received is added too, whatever the host."""
    ep = make_endpoint()
    peer = Peer("udp", "192.0.2.10", 6000)
    resp, tx = only_transmit(ep.receive(raw("OPTIONS"), peer, 0.0))
    assert resp.top_via.rport == 6000
    assert resp.top_via.received == "192.0.2.10"
    assert tx.peer == peer


def test_without_rport_answer_goes_to_source_address_and_via_port() -> None:
    """§18.2.2: received set, no rport: the address in received, the port from sent-by."""
    ep = make_endpoint()
    src = Peer("udp", "198.51.100.7", 40000)
    data = raw("OPTIONS", via="SIP/2.0/UDP client.example.net:5080;branch=z9hG4bKn2")
    resp, tx = only_transmit(ep.receive(data, src, 0.0))
    assert resp.top_via.received == "198.51.100.7"
    assert "rport" not in resp.top_via.params
    assert tx.peer == Peer("udp", "198.51.100.7", 5080)


def test_without_rport_or_via_port_answer_goes_to_5060() -> None:
    ep = make_endpoint()
    src = Peer("udp", "198.51.100.7", 40000)
    data = raw("OPTIONS", via="SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKn3")
    resp, tx = only_transmit(ep.receive(data, src, 0.0))
    assert resp.top_via.received is None  # same host: nothing to record (§18.2.1)
    assert tx.peer == Peer("udp", "198.51.100.7", 5060)


def test_resent_answer_takes_the_same_route_as_the_first() -> None:
    ep = make_endpoint()
    src = Peer("udp", "198.51.100.7", 40000)
    data = raw("REGISTER", via="SIP/2.0/UDP client.example.net:5080;branch=z9hG4bKn4")
    ev = received(ep.receive(data, src, 0.0))
    (first,) = ep.respond(ev.txn, make_response(ev.request, 200, to_tag="a"), ev.peer, 0.1)
    (again,) = ep.receive(data, src, 0.6)
    assert first == again
    assert isinstance(again, Transmit) and again.peer == Peer("udp", "198.51.100.7", 5080)


def test_stream_answers_go_back_on_the_same_connection() -> None:
    """§18.2.2: over a reliable transport the response uses the request's connection."""
    ep = make_endpoint()
    conn = Peer("tcp", "198.51.100.7", 40000, conn_id=7)
    data = raw("OPTIONS", via="SIP/2.0/TCP client.example.net:5080;branch=z9hG4bKn5")
    _, tx = only_transmit(ep.receive(data, conn, 0.0))
    assert tx.peer == conn


def test_response_peer_strips_brackets_from_an_ipv6_received() -> None:
    h = Headers([("Via", "SIP/2.0/UDP [2001:db8::9];received=[2001:db8::7];rport=5099")])
    resp = Response(200, "OK", h)
    peer = Peer("udp", "2001:db8::7", 5099)
    assert Endpoint.response_peer(resp, peer) == peer


def test_retransmission_with_rfc2543_branch_is_matched() -> None:
    """§17.2.3: without the magic cookie, match on Call-ID, CSeq, From tag and Via."""
    ep = make_endpoint()
    data = raw("REGISTER", via="SIP/2.0/UDP 192.0.2.10:5070;branch=old1")
    received(ep.receive(data, CLIENT, 0.0))
    assert ep.receive(data, CLIENT, 0.5) == []
    other = data.replace(b"CSeq: 1 REGISTER", b"CSeq: 2 REGISTER")
    received(ep.receive(other, CLIENT, 0.6))


# --- client transactions (RFC 3261 §17.1.2) --------------------------------------------------

SUBSCRIBER = Peer("udp", "192.0.2.20", 5062)


def notify() -> Request:
    h = Headers(
        [
            ("From", "<sip:alice@example.com>;tag=srv1"),
            ("To", "<sip:bob@example.com>;tag=f1"),
            ("Call-ID", "sub-1@example.com"),
            ("CSeq", "5 NOTIFY"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=600"),
        ]
    )
    return Request("NOTIFY", "sip:bob@192.0.2.20:5062", h)


def run_until(ep: Endpoint, until: float) -> list[tuple[float, Event]]:
    """Fire timers as a driver would, remembering when each event came out."""
    out: list[tuple[float, Event]] = []
    while (deadline := ep.get_timer()) is not None and deadline <= until:
        out.extend((deadline, ev) for ev in ep.handle_timer(deadline))
    return out


def test_send_request_stamps_via_with_fresh_branch_and_rport() -> None:
    """§8.1.1.7 (magic cookie), RFC 3581 §3 (rport), §8.1.1.6 (Max-Forwards)."""
    ep = make_endpoint()
    (tx,) = ep.send_request(notify(), SUBSCRIBER, 0.0, "ctx")
    assert isinstance(tx, Transmit) and tx.peer == SUBSCRIBER
    sent = parse_message(tx.data)
    assert isinstance(sent, Request)
    via = sent.top_via
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert via.branch == "z9hG4bKtok1"
    assert "rport" in via.params and via.rport is None
    assert (via.transport, via.host, via.port) == ("UDP", "127.0.0.1", 5060)
    assert sent.max_forwards == 70
    assert len(sent.vias) == 1


def test_udp_request_retransmits_at_half_one_and_a_half_and_three_and_a_half_seconds() -> None:
    """§17.1.2.2: Timer E fires at T1, 3*T1, 7*T1 ... and Timer F gives up at 64*T1."""
    ep = make_endpoint()
    (first,) = ep.send_request(notify(), SUBSCRIBER, 0.0, "ctx")
    assert isinstance(first, Transmit)
    assert ep.get_timer() == 0.5
    fired = run_until(ep, 40.0)
    retransmits = [t for t, ev in fired if isinstance(ev, Transmit)]
    assert retransmits[:3] == [0.5, 1.5, 3.5]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(ev == first for _, ev in fired if isinstance(ev, Transmit))
    assert fired[-1] == (32.0, ClientTimedOut("ctx"))
    assert ep.get_timer() is None
    assert list(ep.pending()) == []


def test_tcp_request_is_not_retransmitted() -> None:
    """§17.1.2.2: Timer E only on unreliable transports; Timer F still applies."""
    ep = make_endpoint()
    ep.send_request(notify(), Peer("tcp", "192.0.2.20", 5062, conn_id=3), 0.0, "ctx")
    assert ep.get_timer() == 32.0
    assert run_until(ep, 40.0) == [(32.0, ClientTimedOut("ctx"))]


def response_to(tx: Transmit, status: int = 200) -> bytes:
    sent = parse_message(tx.data)
    assert isinstance(sent, Request)
    data: bytes = make_response(sent, status).encode()
    return data


def test_final_response_yields_response_received_and_stops_retransmissions() -> None:
    ep = make_endpoint()
    (tx,) = ep.send_request(notify(), SUBSCRIBER, 0.0, {"sub": 1})
    assert isinstance(tx, Transmit)
    events = ep.receive(response_to(tx, 200), SUBSCRIBER, 0.2)
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, ResponseReceived)
    assert ev.context == {"sub": 1}
    assert ev.response.status == 200
    # A retransmitted 200 is absorbed (Completed, §17.1.2.2); no retransmission, no timeout.
    assert ep.receive(response_to(tx, 200), SUBSCRIBER, 0.3) == []
    assert run_until(ep, 40.0) == []
    assert list(ep.pending()) == []


def test_provisional_response_is_passed_up_and_timer_e_continues() -> None:
    ep = make_endpoint()
    (tx,) = ep.send_request(notify(), SUBSCRIBER, 0.0, "ctx")
    assert isinstance(tx, Transmit)
    (ev,) = ep.receive(response_to(tx, 100), SUBSCRIBER, 0.1)
    assert isinstance(ev, ResponseReceived) and ev.response.status == 100
    fired = run_until(ep, 10.0)
    # Proceeding: retransmit every T2 = 4 s from the next Timer E (§17.1.2.2).
    assert [t for t, e in fired if isinstance(e, Transmit)] == [0.5, 4.5, 8.5]


def test_stray_response_is_dropped() -> None:
    """§17.1.3 / §18.1.2: a response matching no client transaction is discarded."""
    ep = make_endpoint()
    (tx,) = ep.send_request(notify(), SUBSCRIBER, 0.0, "ctx")
    assert isinstance(tx, Transmit)
    stray = response_to(tx).replace(b"branch=z9hG4bKtok1", b"branch=z9hG4bKother")
    assert ep.receive(stray, SUBSCRIBER, 0.1) == []
    wrong_method = response_to(tx).replace(b"CSeq: 5 NOTIFY", b"CSeq: 5 SUBSCRIBE")
    assert ep.receive(wrong_method, SUBSCRIBER, 0.1) == []
    no_branch = response_to(tx).replace(b";branch=z9hG4bKtok1", b"")
    assert ep.receive(no_branch, SUBSCRIBER, 0.1) == []
    assert list(ep.pending()) == ["ctx"]


def test_each_request_gets_its_own_branch() -> None:
    ep = make_endpoint()
    (a,) = ep.send_request(notify(), SUBSCRIBER, 0.0, 1)
    (b,) = ep.send_request(notify(), SUBSCRIBER, 0.0, 2)
    assert isinstance(a, Transmit) and isinstance(b, Transmit)
    va = parse_message(a.data).top_via.branch
    vb = parse_message(b.data).top_via.branch
    assert va != vb
    assert sorted(ep.pending(), key=str) == [1, 2]


def test_overload_answers_503_without_state_when_transactions_are_capped() -> None:
    """RFC 3261 §21.5.4: a full transaction table yields a stateless 503, never more memory."""
    import itertools

    from presenced.sip.endpoint import Endpoint, EndpointConfig, Peer, Transmit
    from presenced.sip.message import parse_message

    counter = itertools.count()
    ep = Endpoint(
        EndpointConfig(domains=frozenset({"example.com"}), max_transactions=2),
        lambda: f"tok{next(counter)}",
    )
    peer = Peer("udp", "192.0.2.1", 5060)

    def register(branch: str) -> bytes:
        return (
            f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{branch}\r\n"
            "From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n"
            f"CSeq: {len(branch)} REGISTER\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    assert len(ep.receive(register("a"), peer, 0.0)) == 1  # RequestReceived
    assert len(ep.receive(register("bb"), peer, 0.0)) == 1
    out = ep.receive(register("ccc"), peer, 0.0)
    assert len(out) == 1 and isinstance(out[0], Transmit)
    resp = parse_message(out[0].data)
    assert resp.status == 503 and resp.headers.get("Retry-After") == "5"  # type: ignore[union-attr]
    assert len(ep.txns.servers) == 2 and ep.stats.overloaded == 1


def test_while_backlogged_new_work_gets_503_and_work_under_way_goes_on() -> None:
    """docs/performance.md "Overload": REGISTER, an initial SUBSCRIBE and an initial PUBLISH
    are shed without state; an in-dialog SUBSCRIBE, a PUBLISH refresh, OPTIONS and responses
    are served; once the queue drained, new work is served again."""
    ep = Endpoint(EndpointConfig(domains=frozenset({"example.com"})), lambda: "tok")
    peer = Peer("udp", "192.0.2.1", 5060)

    def request(method: str, branch: str, extra: str = "", to_tag: str = "") -> bytes:
        to = "<sip:a@example.com>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"{method} sip:a@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{branch}\r\n"
            f"From: <sip:b@example.com>;tag=1\r\nTo: {to}\r\nCall-ID: {branch}\r\n"
            f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode()

    ep.backlogged = True
    for data in (request("REGISTER", "r1"),
                 request("SUBSCRIBE", "s1", "Event: presence\r\n"),
                 request("PUBLISH", "p1", "Event: presence\r\n")):
        (out,) = ep.receive(data, peer, 0.0)
        assert isinstance(out, Transmit)
        resp = parse_message(out.data)
        assert isinstance(resp, Response)
        assert (resp.status, resp.reason, resp.headers.get("Retry-After")) == (503, "Overloaded", "2")
    assert ep.stats.shed == ep.stats.overloaded == 3 and not ep.txns.servers
    served = (request("SUBSCRIBE", "s2", "Event: presence\r\n", to_tag="x"),
              request("PUBLISH", "p2", "Event: presence\r\nSIP-If-Match: e1\r\n"))
    for data in served:
        (out,) = ep.receive(data, peer, 0.0)
        assert isinstance(out, RequestReceived)
    (out,) = ep.receive(request("OPTIONS", "o1"), peer, 0.0)
    assert isinstance(out, Transmit) and parse_message(out.data).status == 200  # type: ignore[union-attr]
    ep.backlogged = False
    (out,) = ep.receive(request("REGISTER", "r2"), peer, 0.0)
    assert isinstance(out, RequestReceived) and ep.stats.shed == 3


def test_a_received_parameter_written_by_the_peer_is_replaced_by_the_source_address() -> None:
    """RFC 3261 §18.2.1: received is the server's record of the source; a forged one would
    aim our answers at any address (reflection)."""
    import itertools

    from presenced.sip.endpoint import Endpoint, EndpointConfig, Peer, Transmit

    counter = itertools.count()
    ep = Endpoint(EndpointConfig(domains=frozenset({"example.com"})), lambda: f"t{next(counter)}")
    data = (
        b"OPTIONS sip:example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;received=198.51.100.7;rport\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: c\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    (out,) = ep.receive(data, Peer("udp", "192.0.2.1", 5070), 0.0)
    assert isinstance(out, Transmit)
    assert (out.peer.host, out.peer.port) == ("192.0.2.1", 5070)
    assert b"received=192.0.2.1" in out.data and b"198.51.100.7" not in out.data


def test_a_max_forwards_of_thousands_of_digits_is_a_400_not_an_exception() -> None:
    import itertools

    from presenced.sip.endpoint import Endpoint, EndpointConfig, Peer
    from presenced.sip.message import parse_message

    counter = itertools.count()
    ep = Endpoint(EndpointConfig(domains=frozenset({"example.com"})), lambda: f"t{next(counter)}")
    data = (
        "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKy\r\n"
        f"Max-Forwards: {'1' * 5000}\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: c\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    (out,) = ep.receive(data, Peer("udp", "192.0.2.1", 5060), 0.0)
    assert parse_message(out.data).status == 400  # type: ignore[union-attr,attr-defined]
