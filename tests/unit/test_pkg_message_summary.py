"""simple-message-summary codec (RFC 3842 §5.2): grammar, normalisation, hostile input."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presenced.pa.documents.xml import DocumentError
from presenced.pa.packages.message_summary import (
    CONTENT_TYPE,
    MessageSummary,
    encode_message_summary,
    parse_message_summary,
)

VECTORS = pathlib.Path(__file__).parents[1] / "vectors" / "rfc3842"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_content_type() -> None:
    assert CONTENT_TYPE == "application/simple-message-summary"


def test_rfc3842_basic_example_is_kept_as_published() -> None:
    body = vector("rfc3842-s5.2-basic.txt")
    s = parse_message_summary(body)
    assert s == MessageSummary(True, "sip:alice@vmail.example.com", body)


def test_rfc3842_example_with_message_headers_keeps_every_block_verbatim() -> None:
    body = vector("rfc3842-s5.2-headers.txt")
    s = parse_message_summary(body)
    assert s.waiting and s.body == body
    assert s.body.count(b"\r\n\r\n") == 2 and b"Subject: carpool tomorrow?\r\n" in s.body


def test_lf_line_ends_are_accepted_and_crlf_emitted() -> None:
    s = parse_message_summary(vector("asterisk-lf.txt"))
    assert s.account == "sip:*97@pbx.example.com"
    assert s.body == (
        b"Messages-Waiting: yes\r\nMessage-Account: sip:*97@pbx.example.com\r\n"
        b"Voice-Message: 1/0 (0/0)\r\n"
    )


def test_several_classes_and_counts_without_urgent_part() -> None:
    s = parse_message_summary(vector("multi-class-none-waiting.txt"))
    assert not s.waiting and s.body.endswith(b"Fax-Message: 0/1\r\n")


def test_status_and_account_lines_are_normalised_summary_lines_kept_verbatim() -> None:
    s = parse_message_summary(
        b"messages-waiting :YES\r\nmessage-account:  <sip:a@b>\r\nvoice-message: 2 / 8 ( 0 / 2 )\r\n"
    )
    assert s.body == (
        b"Messages-Waiting: yes\r\nMessage-Account: sip:a@b\r\nvoice-message: 2 / 8 ( 0 / 2 )\r\n"
    )


def test_nothing_published_says_no_messages_for_the_account() -> None:
    assert encode_message_summary(None, "sip:alice@example.com") == (
        b"Messages-Waiting: no\r\nMessage-Account: sip:alice@example.com\r\n"
    )


def test_account_is_inserted_only_when_the_publication_has_none() -> None:
    bare = parse_message_summary(b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n")
    assert encode_message_summary(bare, "sip:alice@example.com") == (
        b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@example.com\r\n"
        b"Voice-Message: 1/0\r\n"
    )
    own = parse_message_summary(vector("rfc3842-s5.2-basic.txt"))
    assert encode_message_summary(own, "sip:alice@example.com") == own.body


def test_account_argument_cannot_inject_lines() -> None:
    out = encode_message_summary(None, "sip:a@b\r\nVoice-Message: 9/9")
    assert out.count(b"\r\n") == 2 and b"\r\nVoice" not in out


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "required"),
        (b"\r\n\r\n", "required"),
        (b"Voice-Message: 1/0\r\nMessages-Waiting: yes\r\n", "first line"),
        (b"Messages-Waiting: maybe\r\n", "first line"),
        (b"Messages-Waiting yes\r\n", "first line"),
        (b"Messages-Waiting: yes\r\nMessage-Account: not a uri\r\n", "URI"),
        (b"Messages-Waiting: yes\r\nMessage-Account: <sip:a@b\r\n", "URI"),
        (b"Messages-Waiting: yes\r\nMessages-Waiting: no\r\n", "out of place"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\nMessage-Account: sip:a@b\r\n", "out of place"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1\r\n", "not a message-summary"),
        (b"Messages-Waiting: yes\r\nVoice-Message: -1/0\r\n", "not a message-summary"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1/0 (1)\r\n", "not a message-summary"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 4294967296/0\r\n", r"over 2\^32-1"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 99999999999999999999/0\r\n", r"over 2\^32-1"),
        (b"Messages-Waiting: yes\r\nSmell-Message: 1/0\r\n", "unknown message-context-class"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\nvoice-message: 2/0\r\n", "twice"),
        (b"Messages-Waiting: yes\r\n\r\nnot a header\r\n", "not a message header"),
        (b"Messages-Waiting: yes\r\n\r\n folded first\r\n", "continuation"),
        (b"Messages-Waiting: yes\rVoice-Message: 1/0\r\n", "CR"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1/0\x00\r\n", "control"),
        (b"Messages-Waiting: yes\r\n\r\nSubject: a\x1b[2Jb\r\n", "control"),
        (b"Messages-Waiting: yes\r\n\r\nSubject: \xc2\x85\r\n", "control"),
        (b"Messages-Waiting: yes\r\n\r\nSubject: \xff\r\n", "UTF-8"),
        (b"Messages-Waiting: yes\r\n" + b"X" * 9000, "limit"),
    ],
)
def test_invalid_or_hostile_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse_message_summary(body)


def test_max_size_is_a_parameter() -> None:
    body = vector("rfc3842-s5.2-headers.txt")
    with pytest.raises(DocumentError, match="limit"):
        parse_message_summary(body, max_size=len(body) - 1)
    assert parse_message_summary(body, max_size=len(body)).waiting


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_summary_or_document_error(data: bytes) -> None:
    try:
        s = parse_message_summary(b"Messages-Waiting: yes\r\n" + data)
    except DocumentError:
        return
    assert s.body.endswith(b"\r\n") and b"\r\n\r\n\r\n" not in s.body
    assert parse_message_summary(s.body) == s  # normalisation is a fixed point
    assert all(b >= 0x20 or b in (0x09, 0x0D, 0x0A) for b in s.body)
    assert s.body.count(b"\r") == s.body.count(b"\r\n") == s.body.count(b"\n")


@settings(max_examples=200, deadline=None)
@given(
    waiting=st.booleans(),
    counts=st.lists(
        st.tuples(
            st.sampled_from(["Voice-Message", "Fax-Message", "Pager-Message", "Multimedia-Message",
                             "Text-Message", "None"]),
            st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
            st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
        ),
        max_size=6, unique_by=lambda t: t[0],
    ),
    lf=st.booleans(),
)  # fmt: skip
def test_every_grammatical_summary_parses_and_keeps_its_lines(
    waiting: bool, counts: list[tuple[str, int, int, tuple[int, int] | None]], lf: bool
) -> None:
    lines = ["Messages-Waiting: " + ("yes" if waiting else "no")]
    for cls, new, old, urgent in counts:
        lines.append(f"{cls}: {new}/{old}" + (f" ({urgent[0]}/{urgent[1]})" if urgent else ""))
    body = ("\n" if lf else "\r\n").join(lines).encode()
    s = parse_message_summary(body)
    assert s.waiting is waiting and s.account is None
    assert s.body == ("\r\n".join(lines) + "\r\n").encode()
