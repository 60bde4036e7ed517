"""Errors of the SIP core, split by whose fault they are (as h11 does).

`ParseError` and friends are the *peer's* fault: they carry the status code we should answer
with when the message is answerable at all. `LocalError` is *our* misuse of the API: a bug.
"""

from __future__ import annotations

from typing import Any


class SipError(Exception):
    """Base of every error the SIP core raises on purpose."""


class ParseError(SipError):
    """The peer sent something we cannot accept.

    `status` is the response a server should send when enough of the message survived to answer
    (RFC 3261 §8.2: 400 by default; 413, 513 and 416 for the cases that have their own code).
    `partial` holds the message when its start line and headers parsed but a later check failed,
    so the endpoint can still build a response from its Via/From/To/Call-ID/CSeq.
    """

    def __init__(self, reason: str, status: int = 400, partial: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class LocalError(SipError):
    """We used the SIP core wrongly (a programming error, never the peer's fault)."""


class UnsafeHeaderError(ParseError):
    """A message we were about to write holds CR, LF, NUL or another control character in its
    start line or a header value: written out, it would inject lines into our own message.

    A ParseError with status 400: the value came from a peer's request (a decoded URI user, a
    copied From or Contact), so that request is answered 400 and the message is never sent."""
