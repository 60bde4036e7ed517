"""Parser, serializer and header accessors (RFC 3261 §7, §8.2.6, §18.3, §19.1, §20; RFC 5118).

The RFC 4475 torture corpus lives in test_torture.py; these are the behaviours one at a time.
"""

from __future__ import annotations

import pytest

from presenced.sip.errors import ParseError
from presenced.sip.headers import (
    STAR_CONTACT,
    Headers,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from presenced.sip.message import Limits, Request, Response, make_response, parse_message
from presenced.sip.uri import parse_uri

CORE = (
    "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKm1",
    "From: <sip:bob@example.com>;tag=f1",
    "To: <sip:alice@example.com>",
    "Call-ID: m1@192.0.2.10",
)


def msg(*lines: str, start: str = "OPTIONS sip:example.com SIP/2.0", body: bytes = b"") -> bytes:
    """A message; `lines` replace nothing, they are appended after the start line."""
    return ("\r\n".join((start, *lines)) + "\r\n\r\n").encode() + body


def options(*extra: str, body: bytes = b"") -> bytes:
    return msg(*CORE, "CSeq: 1 OPTIONS", *extra, body=body)


def parse_request(data: bytes) -> Request:
    m = parse_message(data)
    assert isinstance(m, Request)
    return m


def headers_of(*extra: str) -> Request:
    return parse_request(options(*extra))


# --- header names and the multi-dict (§7.3) -------------------------------------------------


def test_compact_forms_expand_to_canonical_names() -> None:
    """§7.3.3: v, f, t, i, m, l, c, k, o, u, s are the compact forms."""
    data = msg(
        "v: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKc",
        "f: <sip:bob@example.com>;tag=1",
        "t: <sip:alice@example.com>",
        "i: compact@host",
        "CSeq: 1 SUBSCRIBE",
        "m: <sip:bob@192.0.2.10>",
        "o: presence",
        "u: presence",
        "k: eventlist",
        "s: hello",
        "c: application/pidf+xml",
        "l: 0",
        start="SUBSCRIBE sip:alice@example.com SIP/2.0",
    )
    req = parse_request(data)
    assert [n for n, _ in req.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Event", "Allow-Events",
        "Supported", "Subject", "Content-Type", "Content-Length",
    ]  # fmt: skip
    assert req.call_id == "compact@host"
    assert req.event is not None and req.event.package == "presence"
    assert req.content_type == "application/pidf+xml"
    assert req.headers.get("i") == req.headers.get("CALL-ID") == "compact@host"
    assert "m" in req.headers and "Contact" in req.headers


def test_header_names_are_case_insensitive_and_unknown_ones_keep_their_spelling() -> None:
    req = headers_of("X-Custom-Thing: 1", "x-custom-thing: 2", "max-forwards: 9")
    assert req.headers.get_all("X-CUSTOM-THING") == ["1", "2"]
    names = [n for n, _ in req.headers]
    assert "X-Custom-Thing" in names and "x-custom-thing" in names
    assert "Max-Forwards" in names  # known names take their canonical spelling
    assert req.max_forwards == 9


def test_a_spelling_seen_once_parses_the_same_every_time() -> None:
    """Names are looked up as written (a memo of spellings): odd case, space before the
    colon and a compact form give the same entries on the first message and the next."""
    for _ in range(2):
        req = parse_request(msg(
            "vIA : SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKs1",
            "f:<sip:bob@example.com>;tag=f1",
            "TO:   <sip:alice@example.com>  ",
            "call-ID: s1@192.0.2.10",
            "cseq: 1 OPTIONS",
            "X-Odd-Name : kept",
        ))
        assert req.headers._items == [
            ("via", "Via", "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKs1"),
            ("from", "From", "<sip:bob@example.com>;tag=f1"),
            ("to", "To", "<sip:alice@example.com>"),
            ("call-id", "Call-ID", "s1@192.0.2.10"),
            ("cseq", "CSeq", "1 OPTIONS"),
            ("x-odd-name", "X-Odd-Name", "kept"),
        ]
    with pytest.raises(ParseError, match="bad header name"):
        parse_message(options("Bad Name: x"))
    with pytest.raises(ParseError, match="bad header name"):  # not remembered as good
        parse_message(options("Bad Name: x"))


def test_the_spelling_memo_is_bounded_in_names_and_length() -> None:
    from presenced.sip import message

    long_name = "X-" + "a" * 100
    req = headers_of(f"{long_name}: 1")
    assert req.headers.get(long_name) == "1"
    assert long_name not in message._SPELLINGS  # parsed, but never remembered
    before = len(message._SPELLINGS)
    for i in range(message._SPELLINGS_MAX + 10):
        parse_message(options(f"X-Fill-{i}: 1"))
    assert before <= len(message._SPELLINGS) <= message._SPELLINGS_MAX
    assert headers_of("X-Fill-After-Full: 2").headers.get("x-fill-after-full") == "2"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (("f: <sip:carol@example.com>;tag=2",), "more than one From header"),
        (("l: 0", "Content-Length: 0"), "more than one Content-Length header"),
        (("Max-Forwards: 70", "max-forwards: 69"), "more than one Max-Forwards header"),
    ],
)
def test_a_single_valued_header_twice_is_a_400_compact_forms_included(
    extra: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_message(options(*extra))
    assert info.value.status == 400


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_each_mandatory_header_missing_is_named(missing: str) -> None:
    lines = [line for line in (*CORE, "CSeq: 1 OPTIONS") if not line.startswith(missing + ":")]
    with pytest.raises(ParseError, match=f"missing {missing} header"):
        parse_message(msg(*lines))


def test_cseq_fast_and_general_forms_agree() -> None:
    for text, seq, method in [("1 OPTIONS", 1, "OPTIONS"), ("  7\tOPTIONS ", 7, "OPTIONS"),
                              ("2147483647 NOTIFY", 2**31 - 1, "NOTIFY"), ("3 FOO", 3, "FOO")]:
        cseq = parse_cseq(text)
        assert (cseq.seq, cseq.method) == (seq, method)
    for bad in ["2147483648 NOTIFY", "12345678901 NOTIFY", "\u0661 NOTIFY", "1 ", "x NOTIFY"]:
        with pytest.raises(ParseError):
            parse_cseq(bad)


def test_headers_set_replaces_every_line_in_place_of_the_first() -> None:
    h = Headers([("Route", "<sip:a>"), ("To", "<sip:t>"), ("Route", "<sip:b>")])
    h.set("route", "<sip:c>")
    assert list(h) == [("Route", "<sip:c>"), ("To", "<sip:t>")]
    h.set("Expires", "60")
    assert list(h)[-1] == ("Expires", "60")
    h.remove("ROUTE")
    assert "Route" not in h
    assert len(h) == 2


def test_headers_insert_first_and_get_default() -> None:
    h = Headers([("Via", "SIP/2.0/UDP b")])
    h.insert_first("v", "SIP/2.0/UDP a")
    assert h.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert h.get("Expires", "none") == "none"
    assert 42 not in h


def test_line_folding_joins_continuations() -> None:
    """§7.3.1: a line starting with whitespace continues the previous header."""
    req = headers_of("Subject: I know you're there,", "  pick up the phone", "\tand talk to me!")
    assert req.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"


def test_header_without_colon_is_rejected() -> None:
    with pytest.raises(ParseError):
        parse_message(options("this is not a header"))


def test_continuation_before_any_header_is_rejected() -> None:
    with pytest.raises(ParseError):
        parse_message(msg(" folded", *CORE, "CSeq: 1 OPTIONS"))


# --- list headers (§7.3.1) ------------------------------------------------------------------


def test_multiline_via_is_merged_in_order() -> None:
    """§7.3.1: lines of one header are one comma-separated list, in order."""
    data = msg(
        "Via: SIP/2.0/UDP first.example.com;branch=z9hG4bK1, SIP/2.0/TCP second.example.com:5061"
        ";branch=z9hG4bK2",
        "From: <sip:bob@example.com>;tag=f1",
        "Via: SIP/2.0/UDP third.example.com;branch=z9hG4bK3",
        "To: <sip:alice@example.com>",
        "Call-ID: m1",
        "CSeq: 1 OPTIONS",
    )
    req = parse_request(data)
    assert [v.host for v in req.vias] == [
        "first.example.com",
        "second.example.com",
        "third.example.com",
    ]
    assert [v.branch for v in req.vias] == ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]
    assert req.vias[1].transport == "TCP" and req.vias[1].port == 5061
    assert req.top_via.host == "first.example.com"
    assert len(req.headers.get_all("Via")) == 2


def test_top_via_without_vias_cached_comes_from_the_first_element() -> None:
    req = parse_request(
        options().replace(b"branch=z9hG4bKm1", b"branch=z9hG4bKm1, SIP/2.0/UDP other;branch=x")
    )
    assert req.top_via.branch == "z9hG4bKm1"
    assert len(req.vias) == 2


def test_comma_splitting_respects_quotes_and_angle_brackets() -> None:
    value = (
        '"Doe, John" <sip:j,d@example.com>;q=0.5, <sip:x@example.com>, "say \\"a, b\\"" <sip:y@h>'
    )
    assert split_list(value) == [
        '"Doe, John" <sip:j,d@example.com>;q=0.5',
        "<sip:x@example.com>",
        '"say \\"a, b\\"" <sip:y@h>',
    ]
    req = headers_of(f"Contact: {value}", "Contact: sip:z@example.com")
    contacts = req.contacts
    assert [c.display for c in contacts] == ["Doe, John", None, 'say "a, b"', None]
    assert contacts[0].uri.user == "j,d"
    assert contacts[0].params == {"q": "0.5"}
    assert str(contacts[3].uri) == "sip:z@example.com"


def test_split_list_skips_empty_elements_and_rejects_open_quotes() -> None:
    assert split_list(" a , ,b,") == ["a", "b"]
    with pytest.raises(ParseError):
        split_list('"open, <sip:x@y>')


def test_contact_star() -> None:
    req = headers_of("Contact: *")
    assert req.contacts == [STAR_CONTACT]
    assert req.contacts[0].star
    assert str(req.contacts[0]) == "*"


# --- name-addr and addr-spec (§20.10) --------------------------------------------------------


def test_name_addr_parameters_inside_brackets_belong_to_the_uri() -> None:
    """§20.10: in name-addr form, ';' parameters inside <> are URI parameters."""
    na = parse_name_addr("<sip:bob@example.com;transport=tcp>;tag=abc;expires=60")
    assert na.uri.params == {"transport": "tcp"}
    assert na.params == {"tag": "abc", "expires": "60"}
    assert na.tag == "abc"


def test_addr_spec_parameters_all_belong_to_the_header() -> None:
    """§20.10: without <>, parameters after the URI are header parameters, not URI ones."""
    na = parse_name_addr("sip:bob@example.com;transport=tcp;tag=abc")
    assert na.uri.params == {}
    assert na.params == {"transport": "tcp", "tag": "abc"}
    assert str(na) == "<sip:bob@example.com>;transport=tcp;tag=abc"


@pytest.mark.parametrize("value", ["sip:bob@example.com?subject=x", "sip:a,b@example.com"])
def test_addr_spec_with_reserved_characters_must_use_brackets(value: str) -> None:
    """§20.10: a URI with a comma, question mark or semicolon must be in name-addr form."""
    with pytest.raises(ParseError):
        parse_name_addr(value)
    assert parse_name_addr(f"<{value}>").uri.host == "example.com"


def test_display_names_token_and_quoted_with_escapes() -> None:
    assert parse_name_addr("Bob  Smith <sip:b@h>").display == "Bob  Smith"
    na = parse_name_addr('"Dr. \\"Who\\" \\\\ co" <sip:who@h>;tag=9')
    assert na.display == 'Dr. "Who" \\ co'
    assert na.tag == "9"
    again = parse_name_addr(str(na))
    assert again.display == na.display
    assert str(again) == str(na)
    assert str(parse_name_addr('"" <sip:a@h>')) == "<sip:a@h>"


@pytest.mark.parametrize(
    "value",
    ['"unterminated <sip:a@h>', '"name" sip:a@h', "<sip:a@h", "<sip:a@h> junk", "<sip:a@h>;=x"],
)
def test_broken_name_addr_raises_parse_error(value: str) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(value)


def test_from_and_to_accessors_parse_lazily_and_raise_parse_error() -> None:
    req = parse_request(options().replace(b"To: <sip:alice@example.com>", b"To: <sip:alice@"))
    assert req.from_.tag == "f1"
    with pytest.raises(ParseError):
        req.to  # noqa: B018


# --- Via (§20.42, RFC 3581, RFC 5118) ---------------------------------------------------------


def test_ipv6_via_host_and_port() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111")
    assert (via.transport, via.host, via.port) == ("UDP", "[2001:db8::9:1]", 6050)
    assert via.sent_by == "[2001:db8::9:1]:6050"
    assert str(via) == "SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111"


@pytest.mark.parametrize("received", ["2001:db8::9:255", "[2001:db8::9:255]"])
def test_ipv6_received_parameter_with_or_without_brackets(received: str) -> None:
    """RFC 3261 §25.1 via-received is a bare IPv6address; RFC 5118 §4.5 says parsers must
    also take the bracketed form."""
    via = parse_via(f"SIP/2.0/UDP [2001:db8::9:1];received={received};branch=z9hG4bKas3")
    assert via.received == received
    assert via.branch == "z9hG4bKas3"


def test_via_lws_around_separators_and_default_port() -> None:
    via = parse_via("SIP / 2.0 / tcp host.example.com : 5062 ; branch = z9hG4bKx ; rport")
    assert (via.transport, via.host, via.port) == ("TCP", "host.example.com", 5062)
    assert via.params == {"branch": "z9hG4bKx", "rport": None}
    assert parse_via("SIP/2.0/UDP Host.Example.COM").sent_by == "host.example.com:5060"


@pytest.mark.parametrize(
    "value",
    [
        "SIP/3.0/UDP h",
        "SIP/2.0/UDP h:99999",
        "SIP/2.0/UDP h junk",
        "SIP/2.0/UDP [2001:db8::1",
        "SIP/2.0/UDP h:١٢",  # Unicode digits are not DIGIT (§25.1)
        "SIP/2.0/UDP h;received=not:an:address!",
        "SIP/2.0/UDP h;branch=a:b",  # a bare IPv6-ish value only for received
    ],
)
def test_bad_via_raises_parse_error(value: str) -> None:
    with pytest.raises(ParseError):
        parse_via(value)


def test_via_rport_value() -> None:
    assert parse_via("SIP/2.0/UDP h;rport=5090").rport == 5090
    assert parse_via("SIP/2.0/UDP h;rport").rport is None


# --- URIs (§19.1, RFC 5118) -----------------------------------------------------------------


def test_ipv6_uris() -> None:
    """RFC 5118 §4.3/§4.4: the port is outside the brackets."""
    u = parse_uri("sip:[2001:db8::10]:5070")
    assert (u.host, u.port) == ("[2001:db8::10]", 5070)
    u = parse_uri("sip:[2001:db8::10:5070]")
    assert (u.host, u.port) == ("[2001:db8::10:5070]", None)
    u = parse_uri("sip:user@[2001:DB8::1];transport=tcp")
    assert u.host_key == "[2001:db8::1]"
    assert u.aor == "user@[2001:db8::1]"
    assert str(u) == "sip:user@[2001:DB8::1];transport=tcp"


@pytest.mark.parametrize(
    "text",
    [
        "sip:user@[2001:db8::1",
        "sip:[2001:db8::1]x",
        "sip:host:²",  # str.isdigit() is true for "²"; int() is not
        "sip:host:١٢",
        "sip:host:65536",
        "sip:bad host",
        "sip:h;=x",
        "nocolon",
        "tel:",
    ],
)
def test_bad_uris_raise_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


def test_non_sip_uri_is_opaque() -> None:
    u = parse_uri("tel:+1-555-1234;phone-context=example.com")
    assert not u.is_sip
    assert u.scheme == "tel"
    assert str(u) == "tel:+1-555-1234;phone-context=example.com"


def test_uri_aor_unescapes_user_and_lowercases_host() -> None:
    u = parse_uri("SIP:Al%69ce:pw@Example.COM.:5060;Transport=TCP?Subject=x")
    assert u.scheme == "sip"
    assert u.user == "Al%69ce" and u.password == "pw"
    assert u.aor == "Alice@example.com"
    assert u.params == {"transport": "TCP"}
    assert u.headers == {"Subject": "x"}


# --- numeric headers ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "²", "١٢", "0x10"])
def test_bad_expires_raises_parse_error(value: str) -> None:
    with pytest.raises(ParseError):
        headers_of(f"Expires: {value}").expires  # noqa: B018


def test_expires_values() -> None:
    assert headers_of("Expires: 0").expires == 0
    assert headers_of("Expires:  3600 ").expires == 3600
    assert headers_of("Expires: 99999999999").expires == 2**32 - 1
    assert headers_of().expires is None


@pytest.mark.parametrize("value", ["256", "-1", "x", "²", "7 7"])
def test_bad_max_forwards_raises_parse_error(value: str) -> None:
    with pytest.raises(ParseError):
        headers_of(f"Max-Forwards: {value}").max_forwards  # noqa: B018


def test_max_forwards_values() -> None:
    assert headers_of("Max-Forwards: 0").max_forwards == 0
    assert headers_of("Max-Forwards: 255").max_forwards == 255
    assert headers_of().max_forwards is None


@pytest.mark.parametrize("value", ["x OPTIONS", "1", "2147483648 OPTIONS", "١ OPTIONS"])
def test_bad_cseq_rejects_the_message(value: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(msg(*CORE, f"CSeq: {value}"))
    assert info.value.status == 400
    assert isinstance(info.value.partial, Request)


def test_cseq_method_must_match_the_request_method() -> None:
    """§8.1.1.5: the CSeq method matches the request method."""
    with pytest.raises(ParseError):
        parse_message(msg(*CORE, "CSeq: 1 REGISTER"))


# --- make_response (§8.2.6.2) -------------------------------------------------------------


def request_with_everything() -> Request:
    return parse_request(
        msg(
            "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=2",
            "Record-Route: <sip:proxy.example.com;lr>",
            'From: "Bob" <sip:bob@example.com>;tag=f1',
            "To: <sip:alice@example.com>",
            "Via: SIP/2.0/TCP c.example.com;branch=z9hG4bK3",
            "Call-ID: everything@host",
            "CSeq: 7 SUBSCRIBE",
            "Contact: <sip:bob@192.0.2.10>",
            "Max-Forwards: 69",
            "Expires: 600",
            "Event: presence",
            "Content-Type: text/plain",
            start="SUBSCRIBE sip:alice@example.com SIP/2.0",
            body=b"hello",
        )
    )


def test_make_response_copies_exactly_via_from_to_call_id_cseq() -> None:
    req = request_with_everything()
    resp = make_response(req, 202)
    assert (resp.status, resp.reason, resp.body) == (202, "Accepted", b"")
    assert {n for n, _ in resp.headers} == {"Via", "From", "To", "Call-ID", "CSeq"}
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert [v.host for v in resp.vias] == ["a.example.com", "b.example.com", "c.example.com"]
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.headers.get("To") == "<sip:alice@example.com>"
    assert (resp.call_id, resp.cseq) == (req.call_id, req.cseq)


def test_make_response_adds_the_to_tag_once() -> None:
    req = request_with_everything()
    resp = make_response(req, 200, to_tag="t1")
    assert resp.to.tag == "t1"
    assert req.headers.get("To") == "<sip:alice@example.com>"  # the request is untouched
    # A request whose To already carries our tag (in-dialog) keeps it; no second tag.
    tagged = req.headers.copy()
    tagged.set("To", resp.headers.get("To") or "")
    in_dialog = parse_request(Request(req.method, req.uri, tagged, req.body).encode())
    again = make_response(in_dialog, 200, to_tag="t2")
    assert again.headers.get("To") == "<sip:alice@example.com>;tag=t1"


@pytest.mark.parametrize(
    "to", ["<sip:alice@example.com>;TAG=x", "<sip:alice@example.com> ; tag = x", "sip:a@h;tag=x"]
)
def test_make_response_keeps_an_existing_to_tag(to: str) -> None:
    req = parse_request(options().replace(b"To: <sip:alice@example.com>", f"To: {to}".encode()))
    assert make_response(req, 200, to_tag="new").headers.get("To") == to


def test_make_response_tags_a_to_whose_display_name_quotes_tag() -> None:
    """A quoted ";tag=" in the display name is not a tag parameter."""
    to = '"x;tag=y" <sip:alice@example.com>'
    req = parse_request(options().replace(b"To: <sip:alice@example.com>", f"To: {to}".encode()))
    resp = make_response(req, 200, to_tag="real")
    assert resp.to.tag == "real"
    assert resp.to.display == "x;tag=y"


def test_make_response_reason_phrases() -> None:
    req = request_with_everything()
    assert make_response(req, 423).reason == "Interval Too Brief"
    assert make_response(req, 599).reason == "Unknown"
    assert make_response(req, 400, "Bad Request (why)").reason == "Bad Request (why)"


# --- encoding -------------------------------------------------------------------------------


def test_encode_sets_content_length_to_the_body_length() -> None:
    h = Headers([("Content-Length", "99"), ("Call-ID", "x"), ("l", "7")])
    req = Request("MESSAGE", "sip:a@h", h, b"abc")
    data = req.encode()
    assert data.count(b"Content-Length") == 1
    assert data.endswith(b"Content-Length: 3\r\n\r\nabc")
    assert data.startswith(b"MESSAGE sip:a@h SIP/2.0\r\nCall-ID: x\r\n")
    empty = Response(200, "OK", Headers()).encode()
    assert empty == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_encode_round_trips() -> None:
    req = request_with_everything()
    again = parse_request(req.encode())
    assert again.encode() == req.encode()
    assert again.body == b"hello"
    assert again.headers.get("Content-Length") == "5"  # added by encode()
    assert parse_request(again.encode()) == again
    resp = make_response(req, 200, to_tag="t")
    back = parse_message(resp.encode())
    assert isinstance(back, Response)
    assert (back.status, back.reason, back.encode()) == (200, "OK", resp.encode())
    assert back != req


def test_non_utf8_header_bytes_survive_a_round_trip() -> None:
    data = options("Subject: cafX").replace(b"cafX", b"caf\xe9")  # Latin-1, not UTF-8
    req = parse_request(data)
    assert b"Subject: caf\xe9\r\n" in req.encode()


# --- framing a datagram (§18.3, §7.5) -------------------------------------------------------


def test_bytes_past_content_length_are_discarded() -> None:
    """§18.3: in a datagram, octets beyond Content-Length are discarded."""
    req = parse_request(options("Content-Length: 3", body=b"abcdef"))
    assert req.body == b"abc"


def test_without_content_length_the_datagram_body_is_the_rest() -> None:
    assert parse_request(options(body=b"xyz")).body == b"xyz"


def test_content_length_larger_than_the_body_is_an_error_with_the_partial_message() -> None:
    """§18.3: a short datagram is discarded, but we can still answer 400 from its headers."""
    with pytest.raises(ParseError) as info:
        parse_message(options("Content-Length: 10", body=b"abc"))
    assert info.value.status == 400
    partial = info.value.partial
    assert isinstance(partial, Request)
    assert partial.call_id == "m1@192.0.2.10"


@pytest.mark.parametrize("value", ["x", "-1", "²", "١"])
def test_bad_content_length_is_an_error_with_the_partial_message(value: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(options(f"Content-Length: {value}"))
    assert info.value.status == 400
    assert isinstance(info.value.partial, Request)


def test_leading_crlfs_are_ignored() -> None:
    """§7.5: CRLFs before the start line are ignored."""
    req = parse_request(b"\r\n\r\n\r\n" + options())
    assert req.method == "OPTIONS"


def test_missing_blank_line_is_an_error() -> None:
    with pytest.raises(ParseError):
        parse_message(options()[:-4])


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_is_an_error(missing: str) -> None:
    """§8.1.1: Via, From, To, Call-ID and CSeq are mandatory."""
    lines = [line for line in (*CORE, "CSeq: 1 OPTIONS") if not line.startswith(missing + ":")]
    with pytest.raises(ParseError) as info:
        parse_message(msg(*lines))
    assert info.value.status == 400


# --- limits ---------------------------------------------------------------------------------


def test_oversized_message_is_513() -> None:
    data = options("X-Padding: " + "a" * 200)
    with pytest.raises(ParseError) as info:
        parse_message(data, Limits(max_message_size=len(data) - 1))
    assert info.value.status == 513
    parse_message(data, Limits(max_message_size=len(data)))


def test_too_many_headers_is_400() -> None:
    data = options(*(f"X-H{i}: {i}" for i in range(10)))
    n = 5 + 10  # CORE + CSeq + the padding headers
    parse_message(data, Limits(max_headers=n))
    with pytest.raises(ParseError) as info:
        parse_message(data, Limits(max_headers=n - 1))
    assert info.value.status == 400


def test_oversized_body_is_413_with_the_partial_message() -> None:
    data = options(body=b"x" * 11)
    parse_message(data, Limits(max_body_size=11))
    with pytest.raises(ParseError) as info:
        parse_message(data, Limits(max_body_size=10))
    assert info.value.status == 413
    assert isinstance(info.value.partial, Request)


# --- start lines (§7.1, §7.2) ---------------------------------------------------------------


def test_status_line() -> None:
    data = msg(*CORE, "CSeq: 1 OPTIONS", start="SIP/2.0 486 Busy Here")
    resp = parse_message(data)
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason) == (486, "Busy Here")
    empty = parse_message(msg(*CORE, "CSeq: 1 OPTIONS", start="SIP/2.0 200 "))
    assert isinstance(empty, Response) and empty.reason == ""


@pytest.mark.parametrize(
    "start",
    [
        "SIP/2.0 099 Low",
        "SIP/2.0 2000 OK",
        "SIP/2.0 ٢٠٠ OK",
        "OPTIONS  sip:example.com SIP/2.0",
        "OPTIONS sip:example.com SIP/2.0 ",
        "OPTIONS sip:example.com",
        "SIP/1.0 200 OK",
    ],
)
def test_bad_start_lines(start: str) -> None:
    with pytest.raises(ParseError):
        parse_message(msg(*CORE, "CSeq: 1 OPTIONS", start=start))


def test_unsupported_request_version_is_505_with_the_partial_message() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(msg(*CORE, "CSeq: 1 OPTIONS", start="OPTIONS sip:example.com SIP/7.0"))
    assert info.value.status == 505
    assert isinstance(info.value.partial, Request)


def test_request_uri_is_parsed_lazily() -> None:
    req = parse_request(msg(*CORE, "CSeq: 1 OPTIONS", start="OPTIONS sip:[::1 SIP/2.0"))
    assert req.uri == "sip:[::1"
    with pytest.raises(ParseError):
        req.ruri  # noqa: B018
