"""Stream framing: cut a TCP byte stream into whole SIP messages (RFC 3261 §18.3).

Over a stream, Content-Length is mandatory and tells where the body ends. A double CRLF
between messages is an RFC 5626 §3.5.1 keep-alive ping, answered with a single CRLF (pong).
The framer holds at most one message's worth of bytes: a peer that sends a header block or
a Content-Length beyond the limit gets a `FramingError` and the connection is closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from presenced.sip.errors import ParseError

_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d{1,10})[ \t]*\r\n", re.I)


class FramingError(ParseError):
    """The stream cannot be framed any further: close the connection."""


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """The peer sent CRLFCRLF: answer with CRLF."""


class StreamFramer:
    __slots__ = ("_buf", "max_message_size")

    def __init__(self, max_message_size: int = 65536) -> None:
        self._buf = bytearray()
        self.max_message_size = max_message_size

    def feed(self, data: bytes) -> list[bytes | KeepAlivePing]:
        """Add bytes; return every whole message (and keep-alive ping) now available."""
        self._buf += data
        out: list[bytes | KeepAlivePing] = []
        buf = self._buf
        while buf:
            if buf[:1] == b"\r" or buf[:1] == b"\n":
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    out.append(KeepAlivePing())
                    continue
                if len(buf) < 4 and bytes(buf) in (b"\r", b"\r\n", b"\r\n\r"):
                    break  # wait: could still become a ping or a lone CRLF
                if buf.startswith(b"\r\n"):
                    del buf[:2]  # a lone CRLF between messages is ignored (RFC 3261 §7.5)
                    continue
                raise FramingError("stray line break in stream")
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_message_size:
                    raise FramingError("header block exceeds the message size limit", 513)
                break
            # Search the header block with a leading CRLF so the first line cannot match.
            m = _CONTENT_LENGTH.search(b"\r\n" + bytes(buf[: end + 2]))
            if m is None:
                raise FramingError("missing Content-Length on a stream transport")
            total = end + 4 + int(m.group(1))
            if total > self.max_message_size:
                # The headers are whole: hand them over so the peer can get a 513 (RFC 3261
                # §21.5.14) before the connection closes.
                raise FramingError("message exceeds the message size limit", 513, bytes(buf[: end + 4]))
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
