"""SIP messages: parse from bytes, serialize to bytes (RFC 3261 §7, §18.3, §20).

Parsing decodes the start line and header block once and keeps header values as strings;
structured headers are parsed on first access and cached. Bodies stay bytes.

`parse_message` raises `ParseError` and nothing else, for any input. It checks what every
later layer relies on (start line, header syntax, Content-Length, the mandatory headers and
a consistent CSeq) and leaves the rest to lazy accessors, which raise `ParseError` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from presenced.sip.errors import ParseError, UnsafeHeaderError
from presenced.sip.headers import (
    CANONICAL,
    CSeq,
    EventHeader,
    Headers,
    NameAddr,
    Via,
    parse_cseq,
    parse_delta_seconds,
    parse_event,
    parse_name_addr,
    parse_via,
    split_list,
)
from presenced.sip.uri import SipUri, parse_uri

SIP_VERSION = "SIP/2.0"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a peer may send. An oversized message is an error, never a MemoryError."""

    max_message_size: int = 65535  # whole datagram / framed message (UDP's own limit)
    max_headers: int = 128  # header lines after unfolding
    max_body_size: int = 65535


DEFAULT_LIMITS = Limits()

_MISSING: Any = object()

# Control characters never written in a start line or header value (CR, LF checked by count).
# A backslash before one is a quoted-pair, which RFC 3261 §25.1 allows for every control but
# CR and LF (RFC 4475 §3.1.1.2 has BEL, NUL, DEL in a To display name; answers copy the To).
_UNSAFE_CHAR = re.compile(r"(?<!\\)[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Every control byte but HTAB: what `_only_line_breaks` deletes and counts.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])


def _only_line_breaks(block: bytes, crlfs: int) -> bool:
    """Whether the only control bytes (HTAB aside) of `block` are its `crlfs` CRLF pairs.

    The fast path of the header checks: one C-speed delete-and-measure (0.5 µs for a NOTIFY's
    header, against 5 µs for the look-behind regex). Each CRLF deletes two bytes, so any other
    control character, a lone CR or LF included, makes the count differ."""
    return len(block) - len(block.translate(None, _CONTROL_BYTES)) == 2 * crlfs


def _unsafe_text(head: str, crlfs: int) -> bool:
    """The precise check, for the rare header that fails the fast one: a control character
    that is not a quoted-pair (RFC 3261 §25.1), or a CR or LF beyond the `crlfs` separators."""
    return (_UNSAFE_CHAR.search(head) is not None
            or head.count("\r") != crlfs or head.count("\n") != crlfs)

REASONS = {
    100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 204: "No Notification",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    489: "Bad Event", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large",
}


class Message:
    """What requests and responses share: headers, body and cached parsed headers."""

    __slots__ = ("_cache", "body", "headers")

    def __init__(self, headers: Headers, body: bytes) -> None:
        self.headers = headers
        self.body = body
        self._cache: dict[str, Any] = {}

    def _cached(self, key: str) -> Any:
        return self._cache.get(key, _MISSING)

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError(f"missing {name} header")
        return value

    @property
    def vias(self) -> list[Via]:
        v = self._cache.get("vias", _MISSING)
        if v is _MISSING:
            values = self.headers.get_list("Via")
            if not values:
                raise ParseError("missing Via header")
            v = self._cache["vias"] = [parse_via(x) for x in values]
        return v  # type: ignore[no-any-return]

    @property
    def top_via(self) -> Via:
        v = self._cache.get("top_via", _MISSING)
        if v is _MISSING:
            v = self._cache.get("vias", _MISSING)
            if v is not _MISSING:
                v = v[0]
            else:
                first = self.headers.get("Via")
                if first is None:
                    raise ParseError("missing Via header")
                parts = split_list(first)
                if not parts:  # "Via: ," or an empty value
                    raise ParseError("empty Via header")
                v = parse_via(parts[0])
            self._cache["top_via"] = v
        return v  # type: ignore[no-any-return]

    @property
    def from_(self) -> NameAddr:
        v = self._cache.get("from", _MISSING)
        if v is _MISSING:
            v = self._cache["from"] = parse_name_addr(self._required("From"))
        return v  # type: ignore[no-any-return]

    @property
    def to(self) -> NameAddr:
        v = self._cache.get("to", _MISSING)
        if v is _MISSING:
            v = self._cache["to"] = parse_name_addr(self._required("To"))
        return v  # type: ignore[no-any-return]

    @property
    def call_id(self) -> str:
        return self._required("Call-ID")

    @property
    def cseq(self) -> CSeq:
        v = self._cache.get("cseq", _MISSING)
        if v is _MISSING:
            v = self._cache["cseq"] = parse_cseq(self._required("CSeq"))
        return v  # type: ignore[no-any-return]

    @property
    def contacts(self) -> list[NameAddr]:
        v = self._cache.get("contacts", _MISSING)
        if v is _MISSING:
            v = self._cache["contacts"] = [parse_name_addr(x) for x in self.headers.get_list("Contact")]
        return v  # type: ignore[no-any-return]

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > 255:
            raise ParseError(f"bad Max-Forwards {value!r}")
        return int(text)

    @property
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        return None if value is None else parse_delta_seconds(value)

    @property
    def event(self) -> EventHeader | None:
        v = self._cache.get("event", _MISSING)
        if v is _MISSING:
            value = self.headers.get("Event")
            v = self._cache["event"] = None if value is None else parse_event(value)
        return v  # type: ignore[no-any-return]

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()

    def _start_line(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        """Serialize; Content-Length always states the body's real length.

        Raises `UnsafeHeaderError` (a 400 ParseError) rather than write a control character in
        the start line or a header value: CR/LF there would let a peer's text add lines to our
        message (header injection). HTAB is allowed in values (RFC 3261 §25.1 LWS)."""
        # One join of the pieces: no string per header line, no copy to add the blank line.
        parts = [self._start_line()]
        for _, name, value in self.headers._items:
            if name != "Content-Length":
                parts.append("\r\n")
                parts.append(name)
                parts.append(": ")
                parts.append(value)
        parts.append(f"\r\nContent-Length: {len(self.body)}\r\n\r\n")
        head = "".join(parts)
        data = head.encode("utf-8", "surrogateescape")
        # CR and LF may appear only as the separators put there: one after each line (the
        # start line, each header) and the blank line.
        crlfs = (len(parts) - 2) // 4 + 3
        if not _only_line_breaks(data, crlfs) and _unsafe_text(head, crlfs):
            raise UnsafeHeaderError("control character in a header value")  # echo nothing of it
        return data + self.body


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: str, headers: Headers, body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    @property
    def ruri(self) -> SipUri:
        v = self._cache.get("ruri", _MISSING)
        if v is _MISSING:
            v = self._cache["ruri"] = parse_uri(self.uri)
        return v  # type: ignore[no-any-return]

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and self.uri == other.uri
            and self.headers == other.headers
            and self.body == other.body
        )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str, headers: Headers, body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.headers == other.headers
            and self.body == other.body
        )

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# Request-Line = Method SP Request-URI SP SIP-Version CRLF (exactly one SP each, §25.1)
_REQUEST_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) ([^ \t]+) SIP/(\d+\.\d+)\Z", re.A)
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
_STATUS_LINE = re.compile(r"SIP/(\d+\.\d+) (\d{3}) ([^\r\n]*)\Z", re.A)
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
# The headers parse_message counts, one bit each: the mandatory ones must be present, the
# single-valued ones at most once (RFC 3261 §8.1.1, §20; RFC 4475 §3.3.8).
_CHECKED = {"via": 1, "from": 2, "to": 4, "call-id": 8, "cseq": 16, "max-forwards": 32,
            "content-length": 64}
_MANDATORY = 1 | 2 | 4 | 8 | 16
_SINGLE = 2 | 4 | 8 | 16 | 32 | 64


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one whole message (a datagram, or a message framed off a stream)."""
    if len(data) > limits.max_message_size:
        raise ParseError("message too large", 513)
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise ParseError("no blank line after the headers")
    try:
        head = data[start:end].decode("utf-8", "surrogateescape")
    except UnicodeDecodeError:  # pragma: no cover - surrogateescape decodes any bytes
        raise ParseError("undecodable header block") from None
    lines = head.split("\r\n")
    # Raw control characters (NUL, a lone CR or LF, ...) have no place in a start line or a
    # header (RFC 3261 §25.1: only HTAB, as LWS; others only as quoted-pairs). Refused here,
    # they never reach a service, a record, or a message we would copy them into.
    crlfs = len(lines) - 1
    unsafe = not _only_line_breaks(data[start:end], crlfs) and _unsafe_text(head, crlfs)
    first = lines[0]
    msg: Request | Response
    m = _REQUEST_LINE.match(first)
    entries, seen, twice = _parse_header_lines(lines, limits)
    headers = Headers._from_parsed(entries)
    if m is not None:
        method, uri, version = m.groups()
        if version != "2.0":
            raise ParseError(f"unsupported SIP version {version}", 505, Request(method, uri, headers))
        msg = Request(method, uri, headers)
    else:
        m = _STATUS_LINE.match(first)
        if m is None:
            raise ParseError(f"bad start line {first[:80]!r}")
        version, status, reason = m.groups()
        if version != "2.0":
            raise ParseError(f"unsupported SIP version {version}")
        msg = Response(int(status), reason, headers)
        if msg.status < 100:
            raise ParseError(f"bad status code {status}")
    body = data[end + 4 :]
    length_text = headers.get("Content-Length")
    if length_text is not None:
        text = length_text.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 10:
            raise ParseError(f"bad Content-Length {length_text[:20]!r}", 400, msg)
        length = int(text)
        if length > len(body):
            raise ParseError("Content-Length larger than the body", 400, msg)
        # RFC 3261 §18.3: bytes past Content-Length in a datagram are discarded.
        body = body[:length]
    if unsafe:
        raise ParseError("control character in the header", 400, msg)
    if len(body) > limits.max_body_size:
        raise ParseError("body too large", 413, msg)
    msg.body = body
    if twice:
        # RFC 4475 §3.3.8/§3.3.9: two values of a single-valued header, answer 400.
        raise ParseError(f"more than one {CANONICAL[twice]} header", 400, msg)
    if seen & _MANDATORY != _MANDATORY:
        for key, bit in _CHECKED.items():
            if bit & _MANDATORY and not seen & bit:
                raise ParseError(f"missing {CANONICAL[key]} header", 400, msg)
    cseq = msg.cseq if isinstance(msg, Response) else _check_cseq(msg)
    del cseq
    return msg


def _check_cseq(req: Request) -> CSeq:
    try:
        cseq = req.cseq
    except ParseError as exc:
        raise ParseError(exc.reason, 400, req) from None
    if cseq.method != req.method:
        raise ParseError("CSeq method does not match the request method", 400, req)
    return cseq


# A header name as written -> (lookup key, canonical spelling, bit in _CHECKED or 0). Seeded
# with the lowercased and the canonical spellings (compact forms too); other spellings seen
# on the wire are added as they come, up to _SPELLINGS_MAX names of at most _SPELLING_LEN
# characters, so a name is lowercased, looked up and validated once rather than in every
# message, and hostile names cannot grow the memo past a bounded size.
_SPELLINGS: dict[str, tuple[str, str, int]] = {}
for _low, _full in CANONICAL.items():
    _entry = (_full.lower(), _full, _CHECKED.get(_full.lower(), 0))
    _SPELLINGS[_low] = _entry
    _SPELLINGS.setdefault(_full, _entry)
_SPELLINGS_MAX = 4096
_SPELLING_LEN = 64  # longer names are not remembered: the memo stays under ~1 MiB


def _spelling(name: str) -> tuple[str, str, int]:
    """The entry of a header name not in _SPELLINGS yet (`name` as written, before the
    colon). Raises `ParseError` for a name that is not a token."""
    bare = name.rstrip(" \t")
    low = bare.lower()
    hit = _SPELLINGS.get(low)
    if hit is None:
        if not _HEADER_NAME.match(bare):
            raise ParseError(f"bad header name {bare[:80]!r}")
        hit = (low, bare, 0)
    if len(name) <= _SPELLING_LEN and len(_SPELLINGS) < _SPELLINGS_MAX:
        _SPELLINGS[name] = hit
    return hit


def _parse_header_lines(
    lines: list[str], limits: Limits
) -> tuple[list[tuple[str, str, str]], int, str | None]:
    """The header entries of `lines` (the start line first, skipped), the _CHECKED bits of
    the headers seen, and the key of the first single-valued header seen twice, if any."""
    entries: list[tuple[str, str, str]] = []
    spellings = _SPELLINGS
    seen = 0
    twice: str | None = None
    # Fewer lines than the limit cannot make more entries: then no count per line.
    max_headers = limits.max_headers if len(lines) - 1 > limits.max_headers else -1
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            # Line folding (RFC 3261 §7.3.1): a continuation joins the previous value.
            if not entries:
                raise ParseError("continuation line before any header")
            key, name, value = entries[-1]
            entries[-1] = (key, name, f"{value} {line.strip()}".strip())
            continue
        written, colon, value = line.partition(":")
        if not colon:
            raise ParseError(f"header line without a colon: {line[:80]!r}")
        hit = spellings.get(written)
        if hit is None:
            hit = _spelling(written)
        key, name, bit = hit
        if bit:
            if seen & bit & _SINGLE and twice is None:
                twice = key
            seen |= bit
        entries.append((key, name, value.strip()))
        if max_headers >= 0 and len(entries) > max_headers:
            raise ParseError("too many headers")
    return entries, seen, twice


_COPIED_ONCE = frozenset({"from", "call-id", "cseq"})
# Cache key make_response sets when it knows whether the response's To carries a tag.
TO_TAGGED = "to_tagged"


def make_response(
    req: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    """A response to `req` with the headers RFC 3261 §8.2.6.2 copies, plus a To-tag if asked.

    Headers the request lacks are left out rather than invented: answering a request that
    misses From, To, Call-ID or CSeq (400, RFC 4475 §3.3.1) echoes what exists. Every Via, and
    only the first From, Call-ID and CSeq: a request that repeats one of those gets its 400
    without the repeat, which would make the answer itself malformed."""
    seen: set[str] = set()
    copied: list[tuple[str, str, str]] = []
    for e in req.headers._items:
        key = e[0]
        if key == "via" or (key in _COPIED_ONCE and key not in seen):
            seen.add(key)
            copied.append(e)
    h = Headers._from_parsed(copied)
    to = req.headers.get("To")
    tagged: bool | None = None  # whether the To we write has a tag, when known without a parse
    if to is not None:
        if to_tag is not None:
            if not _has_tag(req, to):
                to = f"{to};tag={to_tag}"
            tagged = True
        else:
            tagged = _known_tag(req)
        h.add("To", to)
    resp = Response(status, reason or REASONS.get(status, "Unknown"), h)
    if tagged is not None:  # Endpoint.respond need not parse the To again to learn it
        resp._cache[TO_TAGGED] = tagged
    top_via = req._cache.get("top_via")
    if top_via is not None:  # the same header: spare routing the response a second parse
        resp._cache["top_via"] = top_via
    return resp


def _known_tag(req: Request) -> bool | None:
    """Whether the request's To has a tag, if it was parsed already (an unparsed one may be
    broken: Endpoint.respond then decides, as it always did)."""
    parsed: NameAddr | None = req._cache.get("to")
    return None if parsed is None else "tag" in parsed.params


def _has_tag(req: Request, to: str) -> bool:
    """Whether To already carries a tag parameter (not ";tag=" inside a quoted display name)."""
    parsed = req._cache.get("to")
    if parsed is not None:
        return "tag" in parsed.params
    if "tag" not in to.lower():
        return False  # no parameter named tag can hide in a value without those letters
    try:
        return "tag" in req.to.params
    except ParseError:
        # An unparseable To (answering a broken request): a textual guess is all we have.
        return ";tag=" in to.replace(" ", "").replace("\t", "").lower()
