"""Shortcuts taken on the per-message hot path (issue 11) give the answers the slow way gives.

make_response knows whether the To it wrote carries a tag (it added one, or the request's To
was parsed already), so Endpoint.respond does not parse it again (RFC 3261 §8.2.6.2: every answer but 100 has a To-tag); `_has_tag` decides without a
parse when the To cannot hold a tag parameter; the dispatcher's UTF-8 check reads the header
lines once and still names the first identity header in its fixed order.
"""

from __future__ import annotations

import pytest

from presenced.services.dispatch import _not_utf8
from presenced.sip.endpoint import Endpoint, EndpointConfig, Peer, RequestReceived, Transmit
from presenced.sip.message import TO_TAGGED, Request, Response, make_response, parse_message

CLIENT = Peer("udp", "192.0.2.10", 5070)


def request(to: str = "<sip:alice@example.com>", *extra: str, method: str = "OPTIONS") -> Request:
    lines = [
        f"{method} sip:alice@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKh1",
        "From: <sip:bob@example.com>;tag=f1",
        f"To: {to}",
        "Call-ID: h1@192.0.2.10",
        f"CSeq: 1 {method}",
        *extra,
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode("utf-8", "surrogateescape"))
    assert isinstance(msg, Request)
    return msg


def test_make_response_with_a_to_tag_marks_the_response_tagged() -> None:
    resp = make_response(request(), 200, to_tag="t1")
    assert resp._cache.get(TO_TAGGED) is True
    assert resp.to.tag == "t1"
    assert TO_TAGGED not in make_response(request(), 200)._cache  # no tag asked: not marked


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("<sip:alice@example.com>", "<sip:alice@example.com>;tag=new"),
        ("<sip:alice@example.com>;TAG=x", "<sip:alice@example.com>;TAG=x"),
        ('"tag" <sip:alice@example.com>', '"tag" <sip:alice@example.com>;tag=new'),
        ('"a;tag=b" <sip:alice@example.com>', '"a;tag=b" <sip:alice@example.com>;tag=new'),
        ("<sip:tag@example.com>;Tag=x", "<sip:tag@example.com>;Tag=x"),
    ],
)
def test_to_tag_decision_with_and_without_a_parse(to: str, expected: str) -> None:
    """Unparsed (the textual pre-check, then the parse) and already parsed To give one answer."""
    fresh = request(to)
    assert make_response(fresh, 200, to_tag="new").headers.get("To") == expected
    parsed = request(to)
    parsed.to  # noqa: B018 - the request's To already parsed, as the services leave it
    assert make_response(parsed, 200, to_tag="new").headers.get("To") == expected


def test_make_response_without_a_tag_knows_a_parsed_requests_to() -> None:
    untagged, tagged = request(), request("<sip:alice@example.com>;tag=t9")
    untagged.to  # noqa: B018
    tagged.to  # noqa: B018
    assert make_response(untagged, 200)._cache[TO_TAGGED] is False
    assert make_response(tagged, 200)._cache[TO_TAGGED] is True


@pytest.mark.parametrize(
    ("method", "to", "parse_first"),
    [("SUBSCRIBE", "<sip:alice@example.com>", False),  # the endpoint parses an initial SUBSCRIBE's To
     ("REGISTER", "<sip:alice@example.com>", False),  # ... not a REGISTER's: unknown, parsed late
     ("REGISTER", "<sip:alice@example.com>", True),  # known untagged
     ("REGISTER", "<sip:alice@example.com>;tag=t9", True)],  # known tagged: left alone
)
def test_endpoint_tags_every_application_answer_once(method: str, to: str,
                                                     parse_first: bool) -> None:
    config = EndpointConfig(domains=frozenset({"example.com"}), rate_limits=None,
                            amplification=None, via_hosts={"udp": "127.0.0.1:5060"})
    ep = Endpoint(config, make_token=lambda: "tok")
    data = request(to, method=method).encode()
    (ev,) = ep.receive(data, CLIENT, 0.0)
    assert isinstance(ev, RequestReceived)
    if parse_first:
        ev.request.to  # noqa: B018 - as a service reading the AOR leaves it
    (out,) = ep.respond(ev.txn, make_response(ev.request, 202), CLIENT, 0.0)
    assert isinstance(out, Transmit)
    resp = parse_message(out.data)
    assert isinstance(resp, Response)
    assert resp.to.tag == ("t9" if "tag=" in to else "tok")
    assert (resp.headers.get("To") or "").count("tag=") == 1


def test_not_utf8_names_the_first_identity_header_in_its_order() -> None:
    bad = "caf\udce9"  # a byte that is not UTF-8, kept as a surrogate by the parser
    req = request("<sip:alice@example.com>", f"Event: presence;x={bad}", f"Contact: <sip:{bad}@h>",
                  method="SUBSCRIBE")
    assert _not_utf8(req) == "Contact"  # Contact comes before Event in the checked order
    assert _not_utf8(request(f"<sip:{bad}@example.com>")) == "To"
    assert _not_utf8(request("<sip:alice@example.com>", f"Subject: {bad}")) is None  # not identity
    assert _not_utf8(request("<sip:alice@example.com>", "Subject: café")) is None  # UTF-8 is fine
