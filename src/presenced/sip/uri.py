"""SIP and SIPS URIs (RFC 3261 §19.1, grammar §25.1) with IPv6 references (RFC 5118).

A `SipUri` keeps the user part exactly as written (escaped), so serializing gives back what
was parsed; `aor` gives the unescaped, case-normalised "user@host" used as a lookup key.
Other schemes (tel:, urn:, ...) parse to a `SipUri` with `opaque` set and no host, so the
endpoint can answer 416 (RFC 3261 §8.2.2.1) instead of failing the whole message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from presenced.sip.errors import ParseError

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
# user = 1*( unreserved / escaped / user-unreserved ); user-unreserved = & = + $ , ; ? /
_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
# password = *( unreserved / escaped / & = + $ , )
_PASSWORD = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
# hostname / IPv4address (toplabel must start with a letter, but we accept digit-led labels
# because IPv4 addresses take the same shape); IPv6reference is checked separately.
_HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?\Z")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
_PARAM = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+\Z")
# hnv-unreserved = [ ] / ? : + $  (header names and values inside a URI)
_HVALUE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*\Z")
# An escaped C0 control or DEL (%00-%1F, %7F): legal in the grammar, but once decoded it
# would be pasted into header values and storage keys (CRLF injection), so refused.
_ESCAPED_CTL = re.compile(r"%(?:[01][0-9A-Fa-f]|7[Ff])")


# Records made for every message write their __init__ out (init=False): mypyc compiles it,
# where the one @dataclass generates stays interpreted: 0.25-0.77 us a call against 0.1-0.17
# (docs/performance.md, "Sixth pass"). Frozen ones set fields as @dataclass does.
@dataclass(slots=True, init=False)
class SipUri:
    scheme: str  # lowercased: "sip", "sips", "tel", ...
    user: str | None = None  # as written (escaped)
    password: str | None = None
    host: str = ""  # as written; IPv6 references keep their brackets
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)  # names lowercased
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None  # the part after "scheme:" for non-SIP schemes

    def __init__(self, scheme: str, user: str | None = None, password: str | None = None,
                 host: str = "", port: int | None = None, params: dict[str, str | None] | None = None,
                 headers: dict[str, str] | None = None, opaque: str | None = None) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = {} if headers is None else headers
        self.opaque = opaque

    @property
    def is_sip(self) -> bool:
        return self.opaque is None

    @property
    def host_key(self) -> str:
        """Host for comparisons: lowercased, no trailing dot."""
        return self.host.lower().rstrip(".")

    @property
    def user_unescaped(self) -> str | None:
        """The user part percent-decoded; ParseError(400) when it would decode to a control
        character (%0D%0A, %00, ...), which must never reach a header we write."""
        user = self.user
        if user is None:
            return None
        if "%" not in user:
            return user  # the grammar admits no raw control characters
        if _ESCAPED_CTL.search(user) is not None:
            raise ParseError("escaped control character in a URI user part")  # echo none of it
        return unquote(user)

    @property
    def aor(self) -> str:
        """Address-of-record key "user@host" (RFC 3261 §10.3 step 5: scheme-independent)."""
        host = self.host_key
        if self.user is None:
            return host
        return f"{self.user_unescaped}@{host}"

    def without_params(self) -> SipUri:
        return SipUri(self.scheme, self.user, self.password, self.host, self.port, {}, {}, self.opaque)

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":")
                out.append(self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            out.append("?")
            out.append("&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)


# Hosts `_HOSTNAME` has accepted: the same few proxies and clients name themselves in every
# Via, Contact and URI, and the pattern's nested repeats cost ~0.6 us a look. Bounded in count
# and in each name's length (a DNS name has at most 253 characters): a peer that sends new or
# huge names each time only empties it, and it never holds more than ~1 MiB.
_GOOD_HOSTS: set[str] = set()
_GOOD_HOSTS_MAX = 4096
_GOOD_HOST_LEN = 253


def valid_host(host: str) -> bool:
    """Whether `host` is a hostname or IPv4 address (the shape `_HOSTNAME` checks)."""
    if host in _GOOD_HOSTS:
        return True
    if _HOSTNAME.match(host) is None:
        return False
    if len(host) <= _GOOD_HOST_LEN:
        if len(_GOOD_HOSTS) >= _GOOD_HOSTS_MAX:
            _GOOD_HOSTS.clear()
        _GOOD_HOSTS.add(host)
    return True


# user-unreserved and unreserved characters (RFC 3261 §25.1): what a user part keeps literal.
_USER_SAFE = "-_.!~*'()&=+$,;?/"
_USER_LITERAL = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]*\Z")


def escape_user(user: str) -> str:
    """`user` (unescaped) as a URI user part: every other character percent-escaped."""
    if (user.isascii() and user.isalnum()) or _USER_LITERAL.match(user) is not None:
        return user  # what quote() would give back, at a tenth of its cost (letters and digits: less)
    return quote(user, safe=_USER_SAFE)


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Parse `host [":" port]` (RFC 3261 hostport), IPv6 references in brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text!r}")
        host = text[: end + 1]
        rest = text[end + 1 :]
        if not _IPV6.match(host):
            raise ParseError(f"bad IPv6 reference {host!r}")
        if not rest:
            return host, None
        if rest[0] != ":":
            raise ParseError(f"junk after IPv6 reference in {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.partition(":")
        if not valid_host(host):
            raise ParseError(f"bad host {host!r}")
        if not sep:
            return host, None
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or int(port_text) > 65535:
        raise ParseError(f"bad port {port_text!r}")
    return host, int(port_text)


# The shape nearly every URI on the wire has -- sip:user@host[:port][;param[=value]]... in
# lowercase scheme, no password, escapes, IPv6 or URI headers -- taken apart with string
# operations (compiled, the one regex this was cost 1.8 times as much). The user part and the parameters
# are checked against one character class each, the host with the general parser's pattern,
# and anything else goes to the general parser: both give the same SipUri or the same
# ParseError (tests/unit/test_uri_fast_path.py compares them).
_COMMON_PARAMS = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$=;]*\Z")


def parse_uri(text: str) -> SipUri:
    """Parse an absolute URI; SIP/SIPS fully, other schemes as opaque. Raises ParseError."""
    if text.startswith("sip:"):
        scheme, start = "sip", 4
    elif text.startswith("sips:"):
        scheme, start = "sips", 5
    else:
        return _parse_uri(text)
    if not text.isascii():  # ASCII: isalnum and isdigit mean what §25.1 means
        return _parse_uri(text)
    user: str | None = None
    at = text.find("@", start)
    if at >= 0:
        user = text[start:at]
        if not user or not (user.isalnum() or _USER_LITERAL.match(user) is not None):
            return _parse_uri(text)
        start = at + 1
    semi = text.find(";", start)
    host, colon, port_text = (text[start:] if semi < 0 else text[start:semi]).partition(":")
    port: int | None = None
    if colon:
        if not (0 < len(port_text) <= 5 and port_text.isdigit()):
            return _parse_uri(text)
        port = int(port_text)
    if (port is not None and port > 65535) or not valid_host(host):
        return _parse_uri(text)
    params: dict[str, str | None] = {}
    if semi >= 0:
        param_text = text[semi + 1:]
        if _COMMON_PARAMS.match(param_text) is None:
            return _parse_uri(text)
        for item in param_text.split(";"):
            pname, eq, pvalue = item.partition("=")
            if not pname or (eq and (not pvalue or "=" in pvalue)):
                return _parse_uri(text)  # the general parser names the bad parameter
            params[pname.lower()] = pvalue if eq else None
    return SipUri(scheme, user, None, host, port, params, {})


def _parse_uri(text: str) -> SipUri:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise ParseError(f"bad URI {text!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        if not rest or any(c in rest for c in " \t\r\n<>\""):
            raise ParseError(f"bad URI {text!r}")
        return SipUri(scheme, opaque=rest)
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if not _USER.match(user):
            raise ParseError(f"bad user part in {text!r}")
        if colon:
            if not _PASSWORD.match(pw):
                raise ParseError(f"bad password in {text!r}")
            password = pw
    headers: dict[str, str] = {}
    rest, q, header_text = rest.partition("?")
    if q:
        for item in header_text.split("&"):
            hname, eq, hvalue = item.partition("=")
            if not hname or not eq or not _HVALUE.match(hname) or not _HVALUE.match(hvalue):
                raise ParseError(f"bad URI header in {text!r}")
            headers[hname] = hvalue
    hostport, *param_items = rest.split(";")
    host, port = parse_hostport(hostport)
    params: dict[str, str | None] = {}
    for item in param_items:
        pname, eq, pvalue = item.partition("=")
        if not _PARAM.match(pname) or (eq and not _PARAM.match(pvalue)):
            raise ParseError(f"bad URI parameter {item!r} in {text!r}")
        params[pname.lower()] = pvalue if eq else None
    return SipUri(scheme, user, password, host, port, params, headers)
