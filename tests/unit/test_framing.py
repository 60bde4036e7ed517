"""Stream framing over TCP (RFC 3261 §18.3) and RFC 5626 §3.5.1 keep-alives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presenced.sip.framing import FramingError, KeepAlivePing, StreamFramer


def message(body: bytes = b"", compact: bool = False, n: int = 1) -> bytes:
    length = f"l: {len(body)}" if compact else f"Content-Length: {len(body)}"
    return (
        f"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK{n}\r\n"
        f"CSeq: {n} OPTIONS\r\n{length}\r\n\r\n"
    ).encode() + body


def test_one_message_split_anywhere_is_framed_once() -> None:
    data = message(b"hello")
    for cut in range(1, len(data)):
        f = StreamFramer()
        assert f.feed(data[:cut]) == []
        assert f.feed(data[cut:]) == [data]
        assert f.buffered == 0


def test_two_messages_in_one_chunk_and_the_compact_content_length() -> None:
    a, b = message(b"abc", n=1), message(b"", compact=True, n=2)
    assert StreamFramer().feed(a + b) == [a, b]


def test_double_crlf_is_a_keepalive_ping_and_a_lone_crlf_is_ignored() -> None:
    f = StreamFramer()
    out = f.feed(b"\r\n\r\n" + message() + b"\r\n" + message(n=2))
    assert out == [KeepAlivePing(), message(), message(n=2)]


def test_a_partial_crlf_waits_for_more() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n\r") == []
    assert f.feed(b"\n") == [KeepAlivePing()]


def test_missing_content_length_on_a_stream_is_a_framing_error() -> None:
    """RFC 3261 §18.3: over a stream, Content-Length MUST be present."""
    with pytest.raises(FramingError):
        StreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n")


def test_oversized_message_is_refused_with_513_and_its_header_block() -> None:
    """RFC 3261 §21.5.14: the header block comes along so the transport can answer 513."""
    head = message().replace(b"Content-Length: 0", b"Content-Length: 100000")
    with pytest.raises(FramingError) as err:
        StreamFramer(max_message_size=65536).feed(head)
    assert err.value.status == 513
    assert err.value.partial == head


def test_header_block_without_end_beyond_the_limit_is_refused() -> None:
    with pytest.raises(FramingError) as err:
        StreamFramer(max_message_size=1024).feed(b"OPTIONS sip:a SIP/2.0\r\nX: " + b"y" * 2000)
    assert err.value.status == 513


def test_garbage_line_break_at_the_start_is_a_framing_error() -> None:
    with pytest.raises(FramingError):
        StreamFramer().feed(b"\n\nOPTIONS")


@given(st.lists(st.binary(max_size=50), max_size=6), st.lists(st.integers(1, 400), max_size=20))
def test_any_chunking_of_a_stream_yields_the_same_messages(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(message(b, n=i + 1) for i, b in enumerate(bodies))
    f = StreamFramer()
    out: list[bytes | KeepAlivePing] = []
    pos = 0
    for cut in cuts:
        out += f.feed(stream[pos : pos + cut])
        pos += cut
    out += f.feed(stream[pos:])
    assert out == [message(b, n=i + 1) for i, b in enumerate(bodies)]
    assert f.buffered == 0
