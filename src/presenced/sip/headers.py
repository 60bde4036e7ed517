"""Header fields: the multi-dict that holds them and parsers for the structured ones.

Grammar references are RFC 3261 §25.1 (name-addr, via-parm, CSeq, generic-param), RFC 6665
§8.4 (Event, Allow-Events, Subscription-State) and RFC 3903 §11 (SIP-ETag, SIP-If-Match).
Values are stored unparsed; a structured value is parsed only when someone asks for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from presenced.sip.errors import ParseError
from presenced.sip.uri import SipUri, parse_hostport, parse_uri, valid_host

# Canonical spelling of the headers we know, keyed by lowercased name and by compact form
# (RFC 3261 §7.3.3 and the IANA registry). Unknown names keep the spelling they came with.
_CANONICAL_NAMES = (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
    "Max-Forwards", "Min-Expires", "MIME-Version", "Organization", "Path", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route", "Reply-To",
    "Require", "Retry-After", "Route", "Server", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
)
_COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info",
}
CANONICAL: dict[str, str] = {n.lower(): n for n in _CANONICAL_NAMES}
CANONICAL.update(_COMPACT)
for _full in _COMPACT.values():
    CANONICAL.setdefault(_full.lower(), _full)


def canonical_name(name: str) -> str:
    """The spelling we write for a header name (compact forms expanded)."""
    return CANONICAL.get(name.lower(), name)


_KEYS: dict[str, str] = {}  # memo of header_key for the names code asks for


def header_key(name: str) -> str:
    """The lookup key of a header name: lowercased, compact forms expanded."""
    key = _KEYS.get(name)
    if key is None:
        low = name.lower()
        full = CANONICAL.get(low)
        key = full.lower() if full is not None else low
        if len(_KEYS) < 4096:  # names come from our code, mostly; bound it anyway
            _KEYS[name] = key
    return key


_NAMES: dict[str, tuple[str, str]] = {}  # memo: name as code writes it -> (key, spelling)


def _names(name: str) -> tuple[str, str]:
    names = (header_key(name), canonical_name(name))
    if len(_NAMES) < 4096:  # names come from our code, mostly; bound it anyway
        _NAMES[name] = names
    return names


class Headers:
    """Ordered header fields; lookups are case-insensitive and know compact forms.

    Each entry is [key, name, value]: `key` is the lowercased full name used for lookups,
    `name` the spelling written on the wire.
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str, str]] = []
        if items:
            for name, value in items:
                self.add(name, value)

    @classmethod
    def _from_parsed(cls, entries: list[tuple[str, str, str]]) -> Headers:
        h = cls()
        h._items = entries
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        key = header_key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = header_key(name)
        return [v for k, _, v in self._items if k == key]

    def get_list(self, name: str) -> list[str]:
        """Comma-separated elements over every line of the header (RFC 3261 §7.3.1)."""
        key = header_key(name)
        out: list[str] = []
        for k, _, v in self._items:
            if k == key:
                out.extend(split_list(v))
        return out

    def add(self, name: str, value: str) -> None:
        names = _NAMES.get(name)
        if names is None:
            names = _names(name)
        self._items.append((names[0], names[1], value))

    def insert_first(self, name: str, value: str) -> None:
        self._items.insert(0, (header_key(name), canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of the header by one line (in place of the first)."""
        key = header_key(name)
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, canonical_name(name), value)
                self._items[i + 1 :] = [e for e in self._items[i + 1 :] if e[0] != key]
                return
        self._items.append((key, canonical_name(name), value))

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._items = [e for e in self._items if e[0] != key]

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._items))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        for k, _, _ in self._items:  # noqa: SIM110 - a loop, not any(): no generator here
            if k == key:
                return True
        return False

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"


def split_list(value: str) -> list[str]:
    """Split a header value at commas that are outside quotes and angle brackets."""
    if "," not in value:  # one element: the usual Contact, Via, Route
        v = value.strip()
        return [v] if v else []
    if '"' not in value and "<" not in value:
        return [p.strip() for p in value.split(",") if p.strip()]
    out: list[str] = []
    start = 0
    in_quotes = in_angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    if in_quotes:
        raise ParseError(f"unterminated quoted string in {value!r}")
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_DISPLAY_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"\s*', re.S)
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"\Z', re.S)


def is_token(text: str) -> bool:
    # Letters and digits alone (most tags and parameter names) are a token without the regex.
    return (text.isascii() and text.isalnum()) or _TOKEN.match(text) is not None


def unquote(value: str) -> str:
    """The content of a quoted-string with its quoted-pairs resolved; tokens pass through."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    return value


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    parts: list[str] = []
    start = 0
    in_quotes = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes:
        raise ParseError(f"unterminated quoted string in {text!r}")
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """`*( SEMI generic-param )`; `text` starts after the first ';'. Names are lowercased."""
    params: dict[str, str | None] = {}
    for item in _split_semicolons(text):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not name or not is_token(name):
            raise ParseError(f"bad parameter {item!r}")
        if eq:
            value = value.strip()
            # via-received is an IPv6address *without* brackets (RFC 3261 §25.1, RFC 5118
            # §4.5): neither a token nor a host, so it gets its own test.
            if not (
                is_token(value)
                or _QUOTED.match(value)
                or _IPV6_VALUE.match(value)
                or (name.lower() == "received" and _IPV6_BARE.match(value))
            ):
                raise ParseError(f"bad parameter value {item!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


_IPV6_VALUE = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
_IPV6_BARE = re.compile(r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\Z")


def format_params(params: dict[str, str | None]) -> str:
    # A loop, not a generator expression: compiled, it costs half as much.
    out: list[str] = []
    for k, v in params.items():
        out.append(";")
        out.append(k)
        if v is not None:
            out.append("=")
            out.append(v)
    return "".join(out)


# Records made for every message write their __init__ out (init=False): mypyc compiles it,
# where the one @dataclass generates stays interpreted: 0.25-0.77 us a call against 0.1-0.17
# (docs/performance.md, "Sixth pass"). Frozen ones set fields as @dataclass does.
@dataclass(slots=True, init=False)
class NameAddr:
    """`( name-addr / addr-spec ) *( SEMI param )` — From, To, Contact, Route, Record-Route."""

    uri: SipUri
    display: str | None = None  # unquoted display name
    params: dict[str, str | None] = field(default_factory=dict)
    star: bool = False  # "Contact: *"

    def __init__(self, uri: SipUri, display: str | None = None,
                 params: dict[str, str | None] | None = None, star: bool = False) -> None:
        self.uri = uri
        self.display = display
        self.params = {} if params is None else params
        self.star = star

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.star:
            return "*"
        display = ""
        if self.display:
            display = (self.display if _DISPLAY_TOKENS.match(self.display) else quote(self.display)) + " "
        return f"{display}<{self.uri}>{format_params(self.params)}"


_DISPLAY_TOKENS = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?: [A-Za-z0-9\-.!%*_+`'~]+)*\Z")
STAR_CONTACT = NameAddr(SipUri("sip"), star=True)  # "Contact: *", one shared value


def parse_name_addr(value: str) -> NameAddr:
    """Parse one name-addr or addr-spec with header parameters (RFC 3261 §20.10)."""
    value = value.strip()
    if value == "*":
        return STAR_CONTACT
    display: str | None = None
    if value.startswith('"'):
        m = _DISPLAY_QUOTED.match(value)
        if m is None:
            raise ParseError(f"unterminated display name in {value!r}")
        display = unquote('"' + m.group(1) + '"')
        value = value[m.end() :]
        if not value.startswith("<"):
            raise ParseError(f"display name without <URI> in {value!r}")
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            raise ParseError(f"unterminated <URI> in {value!r}")
        if lt > 0:
            display = value[:lt].strip() or None
        uri_text = value[lt + 1 : gt].strip()
        rest = value[gt + 1 :].strip()
    else:
        # addr-spec: the URI cannot carry ';' params here, they are header params (§20.10).
        uri_text, semi, params_text = value.partition(";")
        uri_text = uri_text.strip()
        rest = ";" + params_text if semi else ""
        if "?" in uri_text or "," in uri_text:
            raise ParseError(f"addr-spec with reserved characters must use <>: {value!r}")
    uri = parse_uri(uri_text)
    params: dict[str, str | None] = {}
    if rest:
        if rest[0] != ";":
            raise ParseError(f"junk after URI in {value!r}")
        params = parse_params(rest[1:])
    return NameAddr(uri, display, params)


@dataclass(slots=True, init=False)
class Via:
    """One via-parm (RFC 3261 §20.42, received/rport per RFC 3581)."""

    transport: str  # uppercased: "UDP", "TCP", "TLS", "WS", ...
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def __init__(self, transport: str, host: str, port: int | None = None,
                 params: dict[str, str | None] | None = None) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value is not None and _small_int(value) else None

    @property
    def sent_by(self) -> str:
        return f"{self.host.lower()}:{self.port or 5060}"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


# re.ASCII: DIGIT and LWS are ASCII (§25.1); Unicode digits would reach int() unchecked.
_VIA = re.compile(r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[^\]]*\]|[^\s:;]+)(?:\s*:\s*(\d+))?\s*(.*)\Z", re.S | re.I | re.A)


# The shape nearly every Via has -- "SIP/2.0/UDP host[:port]" and token parameters, one SP and
# no other LWS -- taken apart with string operations (compiled, the one regex and its groups
# cost 1.6 times as much), the host then checked as the general parser checks it; anything
# else goes to the general parser: both give the same Via or the same ParseError
# (tests/unit/test_via_fast_path.py compares them).
_VIA_PARAM_CHARS = re.compile(r"[A-Za-z0-9\-.!%*_+`'~;=]*\Z")  # one charset loop: the cheapest check


def parse_via(value: str) -> Via:
    if value.startswith("SIP/2.0/") and value.isascii():  # ASCII: isalpha, isdigit as in §25.1
        sp = value.find(" ", 8)
        semi = value.find(";", sp)
        if sp > 8:
            transport = value[8:sp]
            host, colon, port_text = (value[sp + 1:] if semi < 0 else value[sp + 1:semi]).partition(":")
            port: int | None = None
            if colon:
                port = int(port_text) if 0 < len(port_text) <= 5 and port_text.isdigit() else 65536
            if transport.isalpha() and (port is None or port <= 65535) and valid_host(host):
                params: dict[str, str | None] = {}
                if semi < 0:
                    return Via(transport.upper(), host, port, params)
                # Only token characters, ';' and '=', then each item a non-empty name with at
                # most one non-empty value.
                param_text = value[semi + 1:]
                if _VIA_PARAM_CHARS.match(param_text) is not None:
                    for item in param_text.split(";"):
                        name, eq, pvalue = item.partition("=")
                        if not name or (eq and (not pvalue or "=" in pvalue)):
                            break
                        params[name.lower()] = pvalue if eq else None
                    else:
                        return Via(transport.upper(), host, port, params)
    return _parse_via(value)


def _parse_via(value: str) -> Via:
    m = _VIA.match(value.strip())
    if m is None:
        raise ParseError(f"bad Via {value!r}")
    transport, host, port_text, rest = m.groups()
    host, _ = parse_hostport(host)
    port = None
    if port_text is not None:
        if len(port_text) > 10:
            raise ParseError(f"bad Via port {port_text[:20]!r}")
        port = int(port_text)
        if port > 65535:
            raise ParseError(f"bad Via port {port_text!r}")
    params: dict[str, str | None] = {}
    if rest:
        if rest[0] != ";":
            raise ParseError(f"junk in Via {value!r}")
        params = parse_params(rest[1:])
    return Via(transport.upper(), host, port, params)


@dataclass(frozen=True, slots=True, init=False)
class CSeq:
    seq: int
    method: str

    def __init__(self, seq: int, method: str) -> None:
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "method", method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_CSEQ = re.compile(r"\s*(\d{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)\s*\Z", re.A)


# Methods RFC 3261 and its extensions define: the endpoint answers those it does not serve
# with 405 and Allow (§8.2.1) and counts any other as "OTHER"; a CSeq "<digits> <one of
# these>" needs no regex.
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
     "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"}
)


def parse_cseq(value: str) -> CSeq:
    num, space, method = value.partition(" ")
    if space and method in KNOWN_METHODS and 0 < len(num) <= 10 and num.isascii() and num.isdigit():
        seq = int(num)
        if seq < 2**31:
            return CSeq(seq, method)
    m = _CSEQ.match(value)
    if m is None:
        raise ParseError(f"bad CSeq {value!r}")
    seq = int(m.group(1))
    if seq >= 2**31:  # RFC 3261 §8.1.1.5: less than 2**31
        raise ParseError(f"CSeq number too large {value!r}")
    return CSeq(seq, m.group(2))


@dataclass(frozen=True, slots=True, init=False)
class EventHeader:
    """Event: event-type *( ";" event-param ) (RFC 6665 §8.4). `package` is lowercased."""

    package: str
    params: dict[str, str | None] = field(default_factory=dict)

    def __init__(self, package: str, params: dict[str, str | None] | None = None) -> None:
        object.__setattr__(self, "package", package)
        object.__setattr__(self, "params", {} if params is None else params)

    @property
    def id(self) -> str | None:
        return self.params.get("id")


def parse_event(value: str) -> EventHeader:
    package, _, rest = value.strip().partition(";")
    package = package.strip()
    if not package or not is_token(package):
        raise ParseError(f"bad Event {value!r}")
    return EventHeader(package.lower(), parse_params(rest) if rest else {})


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """Subscription-State (RFC 6665 §8.4): state, expires, reason, retry-after."""

    state: str
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def expires(self) -> int | None:
        v = self.params.get("expires")
        return int(v) if v is not None and _small_int(v) else None

    @property
    def reason(self) -> str | None:
        return self.params.get("reason")


def parse_subscription_state(value: str) -> SubscriptionState:
    state, _, rest = value.strip().partition(";")
    state = state.strip().lower()
    if not state or not is_token(state):
        raise ParseError(f"bad Subscription-State {value!r}")
    return SubscriptionState(state, parse_params(rest) if rest else {})


def _small_int(text: str) -> bool:
    """ASCII digits, few enough for int() (CPython refuses strings over 4,300 digits)."""
    return len(text) <= 18 and text.isascii() and text.isdigit()


def parse_delta_seconds(value: str, name: str = "Expires") -> int:
    """delta-seconds; values beyond 2**32-1 are taken as 2**32-1 (RFC 3261 §20.19 style)."""
    text = value.strip()
    if len(text) > 20:  # int() of thousands of digits is slow, then refused by CPython
        raise ParseError(f"bad {name} (too long)")
    # isascii(): str.isdigit() accepts "²", which int() rejects with a ValueError.
    if not (text.isascii() and text.isdigit()):
        raise ParseError(f"bad {name} {value!r}")
    return min(int(text), 2**32 - 1)
