"""Accept negotiation for presence NOTIFY bodies (RFC 3261 §20.1, RFC 3856) and the dispatcher."""

from __future__ import annotations

import pytest

from presenced.pa.documents.negotiate import SUPPORTED, choose_format, encode
from presenced.pa.documents.pidf import decode_pidf
from presenced.pa.model import PresenceDoc, Tuple

PIDF, CPIM, XPIDF, LPIDF = (
    "application/pidf+xml",
    "application/cpim-pidf+xml",
    "application/xpidf+xml",
    "text/lpidf",
)


def test_absent_accept_means_pidf() -> None:
    assert choose_format(None) == PIDF


def test_empty_accept_means_nothing_is_acceptable() -> None:
    # RFC 3261 §20.1: an empty Accept header field means no formats are acceptable.
    assert choose_format([]) is None
    assert choose_format(["", "  "]) is None


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ([PIDF], PIDF),
        ([XPIDF], XPIDF),
        (["Application/XPIDF+XML"], XPIDF),
        ([LPIDF], LPIDF),
        ([CPIM], CPIM),
        (["application/sdp"], None),
        (["application/pidf+xml;q=0.5", XPIDF], XPIDF),
        ([f"{XPIDF};q=0.5", f"{PIDF};q=0.6"], PIDF),
        ([f"{XPIDF};q=1", PIDF], PIDF),  # a tie goes to PIDF, the server's first choice
        ([f"{PIDF};q=0", XPIDF], XPIDF),
        ([f"{PIDF};q=0"], None),
        (["*/*"], PIDF),
        (["application/*"], PIDF),
        (["text/*"], LPIDF),
        (["*/*;q=0.1", f"{LPIDF};q=0.2"], LPIDF),
        (["application/*;q=0.3", f"{XPIDF};q=0.9"], XPIDF),
        (["*/*", f"{PIDF};q=0"], CPIM),  # the specific q=0 beats the wildcard
        (["application/*;q=0", "*/*"], LPIDF),
        ([f"{PIDF};charset=UTF-8;q=0.4", f"{XPIDF};q=0.3"], PIDF),
        ([f" {XPIDF} ; q = 0.7 "], XPIDF),
        ([f"{PIDF};q=abc", XPIDF], XPIDF),  # malformed element skipped
        ([f"{PIDF};q=2", XPIDF], XPIDF),
        (["*/pidf+xml", XPIDF], XPIDF),
        (["application/multipart-related", "multipart/related"], None),
    ],
)
def test_choose_format(accept: list[str], expected: str | None) -> None:
    assert choose_format(accept) == expected


def test_encode_dispatches_on_content_type_and_ignores_parameters() -> None:
    doc = PresenceDoc("pres:a@example.com", (Tuple("t1", "open", "sip:a@192.0.2.1"),))
    assert decode_pidf(encode(doc, PIDF)) == doc
    assert decode_pidf(encode(doc, 'Application/PIDF+XML;charset="UTF-8"')) == doc
    assert b"urn:ietf:params:xml:ns:cpim-pidf" in encode(doc, CPIM)
    assert b"<msnsubstatus" in encode(doc, XPIDF)
    assert encode(doc, LPIDF).startswith(b"To: <sip:a@example.com>")


def test_encode_passes_now_to_the_pidf_encoders() -> None:
    doc = PresenceDoc("pres:a@example.com", (Tuple("t1", "open"),))
    assert b"<timestamp>2001-10-27T16:49:29Z</timestamp>" in encode(doc, PIDF, now=1004201369.0)


def test_every_supported_type_encodes() -> None:
    doc = PresenceDoc("pres:a@example.com")
    assert all(encode(doc, t) for t in SUPPORTED)


def test_encode_refuses_an_unsupported_type() -> None:
    with pytest.raises(ValueError):
        encode(PresenceDoc("pres:a@example.com"), "application/sdp")
