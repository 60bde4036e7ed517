"""Issue 9, findings 1-3 and 6 in the agent's decisions: where NOTIFYs go (RFC 6665 §4.2,
RFC 3261 §12.2.1.1), how big they get, which values we refuse to write, whom limits count."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_notifier import (
    ALICE,
    PIDF,
    T0,
    Dialog,
    contact_for,
    counter,
    notify,
    of,
    reply,
    sub_state,
    subscribe_req,
)

from presenced.config import ConfigError, parse_config
from presenced.pa.documents.pidf import decode_pidf, encode_pidf
from presenced.pa.model import Note, Person, PresenceDoc, Tuple
from presenced.pa.subscription import (
    TOO_BIG_STATE,
    Forget,
    Notifier,
    PaPolicy,
    Persist,
    SendNotify,
)
from presenced.server import trusted_predicate
from presenced.sip.dialog import hop_of
from presenced.sip.endpoint import Peer
from presenced.sip.errors import ParseError, UnsafeHeaderError
from presenced.sip.headers import Headers
from presenced.sip.message import Request, Response, parse_message
from presenced.sip.uri import parse_uri

BASE = Path("/srv/presenced")
SRC = Peer("udp", "192.0.2.20", 5070)
PROXY = Peer("udp", "192.0.2.99", 5060)
VICTIM_CONTACT = "<sip:bob@198.51.100.7:9999>"
RR = ("<sip:198.51.100.8:7777;lr>",)


def agent_trusting(*hosts: str, **policy: int) -> Notifier:
    return Notifier(PaPolicy(**policy), counter("lt"), contact_for, lambda h: h in hosts)


# --- where NOTIFYs go ----------------------------------------------------------------------


def test_untrusted_source_gets_the_notify_whatever_route_and_contact_say() -> None:
    agent = agent_trusting()
    out = agent.subscribe(subscribe_req(contact=VICTIM_CONTACT, record_route=RR), ALICE, "registrar", SRC, T0)
    n = notify(out)
    assert n.dest == SRC
    # The route set still shapes the NOTIFY (RFC 3261 §12.2.1.1), and the 2xx copies it.
    assert n.request.headers.get_all("Route") == list(RR)
    assert reply(out).headers.get_all("Record-Route") == list(RR)


def test_untrusted_tcp_source_keeps_its_connection_id() -> None:
    flow = Peer("tcp", "192.0.2.20", 40001, conn_id=17)
    out = agent_trusting().subscribe(subscribe_req(contact="<sip:bob@198.51.100.7;transport=tcp>"),
                                     ALICE, "registrar", flow, T0)
    assert notify(out).dest == flow and notify(out).dest.conn_id == 17  # type: ignore[union-attr]


def test_trusted_proxy_loose_route_is_the_next_hop() -> None:
    agent = agent_trusting(PROXY.host)
    out = agent.subscribe(subscribe_req(contact=VICTIM_CONTACT, record_route=RR), ALICE, "registrar", PROXY, T0)
    assert notify(out).dest == Peer("udp", "198.51.100.8", 7777)


def test_trusted_proxy_strict_route_is_the_next_hop() -> None:
    agent = agent_trusting(PROXY.host)
    rr = ("<sip:198.51.100.8:7777>",)
    n = notify(agent.subscribe(subscribe_req(record_route=rr), ALICE, "registrar", PROXY, T0))
    assert n.request.uri == "sip:198.51.100.8:7777"
    assert n.dest == Peer("udp", "198.51.100.8", 7777)


def test_trusted_proxy_without_record_route_targets_the_contact() -> None:
    """RFC 3261 §12.2.1.1: no route set, the request goes to the remote target; a proxy that
    does not record-route answers 404 to a NOTIFY sent to it (seen with Kamailio)."""
    agent = agent_trusting(PROXY.host)
    n = notify(agent.subscribe(subscribe_req(contact=VICTIM_CONTACT), ALICE, "registrar", PROXY, T0))
    assert n.dest == Peer("udp", "198.51.100.7", 9999)
    assert n.request.uri == "sip:bob@198.51.100.7:9999"


def test_trusted_proxy_contact_without_ip_stays_on_the_flow() -> None:
    agent = agent_trusting(PROXY.host)
    n = notify(agent.subscribe(subscribe_req(contact="<sip:bob@host.example.net>"), ALICE, "registrar", PROXY, T0))
    assert n.dest == PROXY  # no DNS here


def test_refresh_moves_the_dialog_to_its_new_flow_and_decides_trust_again() -> None:
    agent = agent_trusting(PROXY.host)
    req = subscribe_req(contact=VICTIM_CONTACT)
    d = Dialog(req, agent.subscribe(req, ALICE, "registrar", PROXY, T0))
    agent.notify_result(d.sub_id, 200, T0)
    new = Peer("udp", "192.0.2.55", 6000)
    n = notify(agent.resubscribe(d.refresh(contact=VICTIM_CONTACT), T0 + 1, new))
    assert n.dest == new
    assert str(n.dest) == "udp:192.0.2.55:6000"


def test_restored_dialog_is_judged_by_its_stored_flow() -> None:
    first = agent_trusting()
    out = first.subscribe(subscribe_req(contact=VICTIM_CONTACT, record_route=RR), ALICE, "registrar", SRC, T0)
    record = of(out, Persist)[0].sub
    again = agent_trusting()
    again.load([record], T0 + 1)
    n = notify(again.renotify(ALICE, T0 + 2))
    assert n.dest == SRC


def test_hop_of_uses_transport_param_and_default_ports() -> None:
    flow = Peer("udp", "192.0.2.1", 5060)
    assert hop_of("sip:198.51.100.1;transport=tcp", flow) == Peer("tcp", "198.51.100.1", 5060)
    # A sips: hop is reached over TLS, never UDP (RFC 5630 §3.1.3).
    assert hop_of("sips:[2001:db8::1]", flow) == Peer("tls", "2001:db8::1", 5061)
    assert hop_of("sip:192.0.2.1:5060", flow) is flow


def test_trusted_predicate_matches_addresses_and_networks() -> None:
    trusted = trusted_predicate(["192.0.2.0/24", "2001:db8::1"])
    assert trusted("192.0.2.200") and trusted("2001:db8::1") and trusted("::ffff:192.0.2.3")
    assert not trusted("198.51.100.1") and not trusted("not-an-ip")
    assert not trusted_predicate([])("127.0.0.1")


def test_trusted_proxies_are_validated_naming_the_key() -> None:
    assert parse_config('[server]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n', BASE).server.trusted_proxies
    with pytest.raises(ConfigError) as info:
        parse_config('[server]\ntrusted_proxies = ["10.0.0.0/8", "proxy.example"]\n', BASE)
    assert "server.trusted_proxies[1]" in str(info.value)


# --- whom the per-watcher limit counts --------------------------------------------------------


def test_forged_from_from_one_host_does_not_lock_out_the_victim() -> None:
    agent = agent_trusting(max_subscriptions_per_watcher=3)
    attacker = Peer("udp", "192.0.2.66", 5060)
    for _ in range(3):
        assert reply(agent.subscribe(subscribe_req(watcher="victim"), ALICE, "registrar", attacker, T0)).status == 200
    assert reply(agent.subscribe(subscribe_req(watcher="victim"), ALICE, "registrar", attacker, T0)).status == 403
    assert reply(agent.subscribe(subscribe_req(watcher="victim"), ALICE, "registrar", SRC, T0)).status == 200


def test_identity_is_counted_when_given_and_from_behind_a_trusted_proxy() -> None:
    agent = agent_trusting(PROXY.host, max_subscriptions_per_watcher=1)
    assert reply(agent.subscribe(subscribe_req(), ALICE, "registrar", SRC, T0, identity="bob@example.com")).status == 200
    other = Peer("udp", "192.0.2.77", 5060)
    assert reply(agent.subscribe(subscribe_req(), ALICE, "registrar", other, T0, identity="bob@example.com")).status == 403
    # Behind a trusted proxy, the From is what the proxy vouches for.
    assert reply(agent.subscribe(subscribe_req(watcher="carol"), ALICE, "registrar", PROXY, T0)).status == 200
    assert reply(agent.subscribe(subscribe_req(watcher="carol"), ALICE, "registrar", PROXY, T0)).status == 403


def test_max_presentities_is_503_with_retry_after() -> None:
    agent = agent_trusting(max_presentities=1)
    assert reply(agent.subscribe(subscribe_req(), ALICE, "registrar", SRC, T0)).status == 200
    busy = reply(agent.subscribe(subscribe_req(to_user="carol"), "carol@example.com", "registrar", SRC, T0))
    assert busy.status == 503 and busy.headers.get("Retry-After")
    assert reply(agent.subscribe(subscribe_req(), ALICE, "registrar", SRC, T0)).status == 200


# --- size --------------------------------------------------------------------------------------


def _big_doc(note_bytes: int, tuples: int = 1) -> PresenceDoc:
    note = (Note("x" * note_bytes),)
    return PresenceDoc(
        f"pres:{ALICE}",
        tuple(Tuple(f"t{i}", "open", "sip:alice@192.0.2.5", notes=note) for i in range(tuples)),
        (Person("p1", notes=note),),
    )


def test_a_document_too_big_is_sent_as_its_summary() -> None:
    agent = agent_trusting(max_notify_size=4096)
    req = subscribe_req()
    d = Dialog(req, agent.subscribe(req, ALICE, "registrar", SRC, T0))
    agent.notify_result(d.sub_id, 200, T0)
    n = notify(agent.set_part(ALICE, "publish", _big_doc(8000), T0 + 1))
    assert len(n.request.encode()) + 200 <= 4096  # + our Via
    doc = decode_pidf(n.request.body)
    assert [(t.id, t.basic, t.contact, t.notes) for t in doc.tuples] == [("t0", "open", None, ())]
    assert doc.persons == ()
    assert sub_state(n).state == "active"


def test_summary_is_encoded_once_per_format_not_per_watcher() -> None:
    agent = agent_trusting(max_notify_size=4096)
    for i in range(3):
        req = subscribe_req(watcher=f"w{i}")
        d = Dialog(req, agent.subscribe(req, ALICE, "registrar", Peer("udp", f"192.0.2.{i + 1}", 5060), T0))
        agent.notify_result(d.sub_id, 200, T0)
    out = of(agent.set_part(ALICE, "publish", _big_doc(8000), T0 + 1), SendNotify)
    assert len(out) == 3
    assert len({id(n.request.body) for n in out}) == 1


def test_a_document_whose_summary_is_too_big_ends_the_subscription_with_probation() -> None:
    agent = agent_trusting(max_notify_size=2048)
    req = subscribe_req()
    d = Dialog(req, agent.subscribe(req, ALICE, "registrar", SRC, T0))
    agent.notify_result(d.sub_id, 200, T0)
    out = agent.set_part(ALICE, "publish", _big_doc(10, tuples=200), T0 + 1)
    n = notify(out)
    assert n.request.headers.get("Subscription-State") == TOO_BIG_STATE
    assert n.request.body == b"" and "Content-Type" not in n.request.headers
    assert [f.sub_id for f in of(out, Forget)] == [d.sub_id]
    agent.notify_result(d.sub_id, 200, T0 + 2)
    assert d.sub_id not in agent.dialogs


def test_udp_notify_never_exceeds_a_datagram() -> None:
    agent = agent_trusting(max_notify_size=1_000_000)
    req = subscribe_req()
    d = Dialog(req, agent.subscribe(req, ALICE, "registrar", SRC, T0))
    agent.notify_result(d.sub_id, 200, T0)
    n = notify(agent.set_part(ALICE, "publish", _big_doc(70_000), T0 + 1))
    assert len(n.request.encode()) < 65507 - 200


# --- values we refuse to write ---------------------------------------------------------------


@pytest.mark.parametrize("user", ["x%0d%0aX-Injected%3a%20yes", "a%00b", "%0A", "del%7f"])
def test_aor_refuses_users_that_decode_to_control_characters(user: str) -> None:
    uri = parse_uri(f"sip:{user}@example.com")
    with pytest.raises(ParseError) as info:
        uri.aor  # noqa: B018
    assert info.value.status == 400
    with pytest.raises(ParseError):
        uri.user_unescaped  # noqa: B018


def test_aor_keeps_ordinary_escapes() -> None:
    assert parse_uri("sip:I%20have%20spaces@example.net").aor == "I have spaces@example.net"
    assert parse_uri("sip:%C3%A9@example.net").aor == "é@example.net"


@pytest.mark.parametrize("value", ["a\r\nX-Injected: yes", "a\nb", "a\rb", "nul\x00", "bel\x07", "del\x7f"])
def test_encode_refuses_control_characters_in_header_values(value: str) -> None:
    req = Request("NOTIFY", "sip:bob@192.0.2.1", Headers([("Contact", value), ("Call-ID", "c")]))
    with pytest.raises(UnsafeHeaderError) as info:
        req.encode()
    assert info.value.status == 400 and "X-Injected" not in info.value.reason


def test_encode_refuses_control_characters_in_the_start_line() -> None:
    with pytest.raises(UnsafeHeaderError):
        Request("NOTIFY", "sip:a\r\nX: y@b", Headers([("Call-ID", "c")])).encode()
    with pytest.raises(UnsafeHeaderError):
        Response(200, "OK\r\nX: y", Headers([("Call-ID", "c")])).encode()


def test_encode_allows_htab_and_quoted_pairs() -> None:
    """RFC 3261 §25.1: LWS may hold HTAB; a quoted-pair may escape any control but CR, LF
    (RFC 4475 §3.1.1.2 sends BEL, NUL and DEL so), and an answer copies that To."""
    h = Headers([("Subject", "a\tb"), ("To", '"BEL:\\\x07 NUL:\\\x00" <sip:a@b>'), ("Call-ID", "c")])
    data = Request("NOTIFY", "sip:bob@192.0.2.1", h).encode()
    assert b"a\tb" in data


def test_pidf_note_line_breaks_are_character_references() -> None:
    doc = PresenceDoc(f"pres:{ALICE}", (Tuple("t", "open", notes=(Note("line1\nX-Injected: yes\r\nflush_all"),)),))
    body = encode_pidf(doc)
    text_start = body.index(b"<note>")
    assert b"\n" not in body[text_start:body.index(b"</note>")]
    assert b"&#10;" in body
    assert decode_pidf(body).tuples[0].notes[0].text == "line1\nX-Injected: yes\r\nflush_all"


def test_notify_to_escaped_presentity_encodes() -> None:
    """A presentity user with characters that need escaping gives a well-formed NOTIFY."""
    agent = Notifier(PaPolicy(), counter("lt"), lambda p, t: "sip:pa@192.0.2.1")
    req = subscribe_req(to_user="a%20b")
    out = agent.subscribe(req, "a b@example.com", "registrar", SRC, T0)
    n = notify(out).request
    n.headers.insert_first("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx")
    parsed = parse_message(n.encode())
    assert parsed.headers.get("Content-Type") == PIDF


# --- a watcher not yet proven (issue 9 finding 1: bytes out per byte in) ----------------------


def test_first_notify_to_an_unproven_udp_watcher_is_small_and_the_full_document_follows() -> None:
    agent = agent_trusting()
    agent.seed_part(ALICE, "publish", _big_doc(3000))
    req = subscribe_req()
    out = agent.subscribe(req, ALICE, "registrar", SRC, T0)
    first = notify(out)
    assert not first.validated
    assert len(first.request.encode()) + 200 <= 1300  # + our Via: RFC 3261 §18.1.1's size
    doc = decode_pidf(first.request.body)
    assert doc.persons == () and doc.tuples[0].notes == ()  # the summary
    d = Dialog(req, out)
    full = notify(agent.notify_result(d.sub_id, 200, T0 + 0.1))
    assert full.validated
    assert len(decode_pidf(full.request.body).persons) == 1  # now the whole document


def test_a_watcher_that_never_answers_never_gets_the_large_document() -> None:
    agent = agent_trusting()
    agent.seed_part(ALICE, "publish", _big_doc(3000))
    req = subscribe_req()
    out = agent.subscribe(req, ALICE, "registrar", SRC, T0)
    d = Dialog(req, out)
    assert len(notify(out).request.encode()) < 1300
    assert of(agent.notify_result(d.sub_id, 408, T0 + 32), SendNotify) == []  # Timer F
    assert d.sub_id not in agent.dialogs


def test_small_documents_go_whole_at_once_and_tcp_watchers_count_as_proven() -> None:
    agent = agent_trusting()
    out = agent.subscribe(subscribe_req(), ALICE, "registrar", SRC, T0)
    n = notify(out)
    assert b"<basic>closed</basic>" in n.request.body and not n.validated
    req = subscribe_req(watcher="tcpw")
    n = notify(agent.subscribe(req, ALICE, "registrar", Peer("tcp", "192.0.2.30", 40000, 7), T0))
    assert n.validated


def test_restored_dialogs_are_proven() -> None:
    agent = agent_trusting()
    req = subscribe_req()
    d = Dialog(req, agent.subscribe(req, ALICE, "registrar", SRC, T0))
    record = agent.dialogs[d.sub_id].record
    again = agent_trusting()
    again.load([record], T0 + 5)
    assert notify(again.renotify(ALICE, T0 + 6)).validated


# --- raw control characters from a peer (issue 9 finding 2) ------------------------------------


_RAW = (
    "SUBSCRIBE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bKc{via}\r\n"
    "From: <sip:bob@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\nCall-ID: c1\r\n"
    "CSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\nSubject: {subject}\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\n", "\r", "\x1b", "\x7f"])
def test_parser_refuses_raw_control_characters_in_headers(char: str) -> None:
    data = _RAW.format(via="1", subject=f"hi{char}there").encode()
    with pytest.raises(ParseError) as err:
        parse_message(data)
    assert err.value.status == 400


def test_endpoint_answers_400_when_it_can_and_drops_when_the_answer_would_echo_it() -> None:
    from presenced.sip.endpoint import Endpoint, EndpointConfig, Transmit

    ep = Endpoint(EndpointConfig(domains=frozenset({"example.com"})), counter("t"))
    src = Peer("udp", "192.0.2.20", 5070)
    (out,) = ep.receive(_RAW.format(via="1", subject="a\x00b").encode(), src, 0.0)
    assert isinstance(out, Transmit) and out.data.startswith(b"SIP/2.0 400 ")
    assert b"\x00" not in out.data
    # In the Via, which every answer copies: nothing can be answered, nothing is raised.
    assert ep.receive(_RAW.format(via="\x07", subject="ok").encode(), src, 0.0) == []


def test_an_empty_via_is_dropped_not_raised() -> None:
    """Found by the endpoint fuzzer: `Via: ,` made `top_via` raise IndexError."""
    from presenced.sip.endpoint import Endpoint, EndpointConfig

    ep = Endpoint(EndpointConfig(domains=frozenset({"example.com"})), counter("t"))
    raw = (b"OPTIONS sip:example.com SIP/2.0\r\nVia: ,\r\nFrom: <sip:a@b>;tag=1\r\n"
           b"To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    assert ep.receive(raw, SRC, 0.0) == []


def test_a_repeated_from_gets_a_400_our_own_parser_reads() -> None:
    """Found by the endpoint fuzzer: the 400 copied both From headers, so it was malformed."""
    from presenced.sip.endpoint import Endpoint, EndpointConfig, Transmit

    ep = Endpoint(EndpointConfig(domains=frozenset({"example.com"})), counter("t"))
    raw = (b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK1\r\n"
           b"From: <sip:a@b>;tag=1\r\nFrom: <sip:c@b>;tag=2\r\nTo: <sip:a@b>\r\nCall-ID: x\r\n"
           b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    (out,) = ep.receive(raw, SRC, 0.0)
    assert isinstance(out, Transmit)
    resp = parse_message(out.data)
    assert isinstance(resp, Response) and resp.status == 400
    assert resp.headers.get_all("From") == ["<sip:a@b>;tag=1"]
