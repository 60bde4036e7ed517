"""Parser micro-benchmark: parse / serialize a typical SUBSCRIBE and a NOTIFY with a PIDF body.

    .venv/bin/python bench/bench_parser.py [--repeat 7] [--number 20000]

Figures are microseconds per operation, the best of `--repeat` timeit runs of `--number`
operations each (best-of is the least noisy estimate of the code's own cost). "hot path" is
parse + the header accesses every SUBSCRIBE takes through the endpoint and the presence agent:
top_via.branch, from_.tag, to.tag, cseq, event, ruri. Target: parse a SUBSCRIBE under 15 us.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import header

from presenced.sip.message import parse_message

SUBSCRIBE = (
    b"SUBSCRIBE sip:alice@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Bob" <sip:bob@example.com>;tag=1928301774\r\n'
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    b"CSeq: 314159 SUBSCRIBE\r\n"
    b"Contact: <sip:bob@192.0.2.10:5060;transport=udp>\r\n"
    b"Event: presence\r\n"
    b"Accept: application/pidf+xml, application/cpim-pidf+xml\r\n"
    b"Expires: 3600\r\n"
    b"User-Agent: bench/1.0\r\n"
    b"Content-Length: 0\r\n\r\n"
)

PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@example.com">\n'
    b'<tuple id="t8c6f2a91b0d3e4f5"><status><basic>open</basic></status>'
    b"<contact>sip:alice@192.0.2.20:5060</contact>"
    b"<timestamp>2025-01-31T12:00:00.123Z</timestamp></tuple>\n</presence>\n"
)

NOTIFY = (
    "NOTIFY sip:bob@192.0.2.10:5060;transport=udp SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKd5e1c3a0f7b94c21;rport\r\n"
    "From: <sip:alice@example.com>;tag=a5383593bdfd74fb\r\n"
    "To: <sip:bob@example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    "CSeq: 2 NOTIFY\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:alice@192.0.2.1:5060;transport=udp>\r\n"
    "Event: presence\r\n"
    "Subscription-State: active;expires=3599\r\n"
    "Content-Type: application/pidf+xml\r\n"
    f"Content-Length: {len(PIDF)}\r\n\r\n"
).encode() + PIDF


def hot_path(data: bytes) -> None:
    m = parse_message(data)
    m.top_via.branch  # noqa: B018
    m.from_.tag  # noqa: B018
    m.to.tag  # noqa: B018
    m.cseq  # noqa: B018
    m.event  # noqa: B018
    m.ruri  # noqa: B018


def best_us(fn: object, number: int, repeat: int) -> float:
    times = timeit.repeat(fn, number=number, repeat=repeat)  # type: ignore[arg-type]
    return min(times) / number * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=20000)
    args = ap.parse_args()
    header("bench_parser: SIP parse / serialize")
    sub = parse_message(SUBSCRIBE)
    note = parse_message(NOTIFY)
    assert parse_message(sub.encode()) == sub and parse_message(note.encode()) == note
    n, r = args.number, args.repeat
    rows = [
        ("parse SUBSCRIBE", best_us(lambda: parse_message(SUBSCRIBE), n, r), 15.0),
        ("parse SUBSCRIBE + hot-path headers", best_us(lambda: hot_path(SUBSCRIBE), n, r), None),
        ("serialize SUBSCRIBE", best_us(sub.encode, n, r), None),
        ("parse NOTIFY (PIDF body)", best_us(lambda: parse_message(NOTIFY), n, r), None),
        ("parse NOTIFY + hot-path headers", best_us(lambda: hot_path(NOTIFY), n, r), None),
        ("serialize NOTIFY", best_us(note.encode, n, r), None),
    ]
    print(f"sizes: SUBSCRIBE {len(SUBSCRIBE)} B, NOTIFY {len(NOTIFY)} B (body {len(PIDF)} B)")
    print(f"{'operation':40} {'us/op':>8}  target")
    for name, us, target in rows:
        verdict = "" if target is None else f"< {target:g} us  {'ok' if us < target else 'MISSED'}"
        print(f"{name:40} {us:8.2f}  {verdict}")


if __name__ == "__main__":
    main()
