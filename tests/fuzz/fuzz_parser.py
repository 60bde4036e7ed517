"""Fuzz harness for the SIP parser: any input gives a message or ParseError, never another exception.

With atheris (coverage-guided; `pip install atheris`):

    python tests/fuzz/fuzz_parser.py -max_len=4096 tests/vectors/rfc4475 tests/vectors/rfc5118

Without it, the same check runs as a plain random-mutation loop over the torture corpus:

    python tests/fuzz/fuzz_parser.py --iterations 200000 [--seed N]

Not part of pytest (the Hypothesis properties in tests/unit/test_parser_properties.py cover the
same ground in CI); run it by hand for long sessions.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

try:
    import atheris  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - optional tool
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():
        from presenced.sip.errors import ParseError
        from presenced.sip.message import Request, parse_message
else:
    from presenced.sip.errors import ParseError
    from presenced.sip.message import Request, parse_message

_ACCESSORS = (
    "vias",
    "top_via",
    "from_",
    "to",
    "call_id",
    "cseq",
    "contacts",
    "max_forwards",
    "expires",
    "event",
    "content_type",
)


def test_one_input(data: bytes) -> None:
    """The property: parse, use every accessor, re-encode; only ParseError may escape."""
    try:
        msg: Any = parse_message(data)
    except ParseError:
        return
    names = (*_ACCESSORS, "ruri") if isinstance(msg, Request) else _ACCESSORS
    for name in names:
        try:
            getattr(msg, name)
        except ParseError:
            pass
    encoded = msg.encode()
    # What we serialize we must be able to read back.
    try:
        parse_message(encoded)
    except ParseError:
        pass


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    buf = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        i = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a byte
            buf[min(i, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:  # truncate
            del buf[i:]
        elif op == 2:  # insert random bytes
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:  # damage a line ending
            j = buf.find(b"\r\n", i)
            if j >= 0:
                buf[j : j + 2] = rng.choice([b"", b"\n", b"\r", b"\r\n ", b"\r\n\r\n"])
        elif op == 4:  # repeat a header line many times
            start = buf.find(b"\r\n", i)
            end = buf.find(b"\r\n", start + 2) if start >= 0 else -1
            if 0 <= start < end:
                buf[end:end] = bytes(buf[start:end]) * rng.randint(1, 300)
        else:  # splice in a piece of syntax
            buf[i:i] = rng.choice(
                [b";", b",", b"<", b">", b'"', b"\\", b"[", b"]", b":", b"%", b"\x00", b" "]
            )
    return bytes(buf)


def _corpus() -> list[bytes]:
    return [p.read_bytes() for p in sorted(VECTORS.glob("rfc*/*.sip"))]


def _plain_loop(iterations: int, seed: int) -> None:
    rng = random.Random(seed)
    corpus = _corpus()
    for n in range(iterations):
        data = _mutate(rng, rng.choice(corpus))
        try:
            test_one_input(data)
        except Exception:
            sys.stderr.write(f"iteration {n}: input {data!r}\n")
            raise
    print(f"{iterations} inputs, no exception but ParseError")


def main() -> None:
    if atheris is not None and "--iterations" not in sys.argv:
        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _plain_loop(args.iterations, args.seed)


if __name__ == "__main__":
    main()
