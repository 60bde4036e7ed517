"""The HEP3 encoder (transport/hep.py) against bytes written out by hand from the HEP3
specification's chunk table, and its limits."""

from __future__ import annotations

import pytest

from presenced.transport.hep import MAX_PACKET, encode_hep3, overhead


def chunk(ctype: int, value: bytes) -> bytes:
    return b"\x00\x00" + ctype.to_bytes(2, "big") + (6 + len(value)).to_bytes(2, "big") + value


def test_ipv4_udp_packet_is_the_documented_chunks_in_sngrep_order() -> None:
    payload = b"OPTIONS sip:a SIP/2.0\r\n\r\n"
    body = b"".join([
        chunk(0x01, b"\x02"),  # IPv4
        chunk(0x02, b"\x11"),  # UDP
        chunk(0x07, (5062).to_bytes(2, "big")),
        chunk(0x08, (5060).to_bytes(2, "big")),
        chunk(0x09, (1_700_000_000).to_bytes(4, "big")),
        chunk(0x0A, (123_456).to_bytes(4, "big")),
        chunk(0x0B, b"\x01"),  # SIP
        chunk(0x0C, (2001).to_bytes(4, "big")),
        chunk(0x03, bytes([127, 0, 0, 2])),
        chunk(0x04, bytes([127, 0, 0, 1])),
        chunk(0x0E, b"pw"),
        chunk(0x0F, payload),
    ])
    expected = b"HEP3" + (6 + len(body)).to_bytes(2, "big") + body
    got = encode_hep3(payload, v6=False, udp=True, src=bytes([127, 0, 0, 2]), src_port=5062,
                      dst=bytes([127, 0, 0, 1]), dst_port=5060, sec=1_700_000_000,
                      usec=123_456, capture_id=2001, auth_key=b"pw")
    assert got == expected
    assert len(got) == overhead(False, b"pw") + len(payload)


def test_ipv6_tcp_packet_uses_the_ipv6_address_chunks_and_no_key_without_password() -> None:
    src, dst = bytes(15) + b"\x01", bytes(15) + b"\x02"
    got = encode_hep3(b"x", v6=True, udp=False, src=src, src_port=1, dst=dst, dst_port=2,
                      sec=0, usec=0, capture_id=7)
    assert got[6:13] == chunk(0x01, b"\x0a")  # AF_INET6 as HEP numbers it
    assert got[13:20] == chunk(0x02, b"\x06")  # TCP
    assert chunk(0x05, src) + chunk(0x06, dst) + chunk(0x0F, b"x") == got[-(22 + 22 + 7):]
    assert len(got) == overhead(True) + 1


def test_a_packet_beyond_the_16_bit_length_or_with_a_wrong_address_is_refused() -> None:
    four = bytes(4)
    with pytest.raises(ValueError):
        encode_hep3(bytes(MAX_PACKET), v6=False, udp=True, src=four, src_port=1, dst=four,
                    dst_port=1, sec=0, usec=0, capture_id=1)
    with pytest.raises(ValueError):
        encode_hep3(b"x", v6=True, udp=True, src=four, src_port=1, dst=four, dst_port=1,
                    sec=0, usec=0, capture_id=1)
