"""Digest authentication for a SIP server (RFC 3261 §22, RFC 7616 algorithms, RFC 8760 SHA-256).

Theory of operation. A request without acceptable credentials gets a 401/407 carrying the values of
`DigestAuthenticator.challenge()` (SHA-256 first, then MD5: RFC 8760 §2.4 has the server list its
preferred algorithm first). The client answers with an Authorization (or Proxy-Authorization)
header; `parse_digest_credentials()` turns its value into `DigestCredentials` (or raises
`AuthParseError`, answered with 400) and `DigestAuthenticator.verify()` decides OK, STALE or FAILED.

Realms. Every served domain is its own realm, and credentials are keyed by user@domain: the
realm of a request is the domain of the identity it acts as (the caller decides which header
names it), so alice@a.example never authenticates as alice@b.example.

Nonces: ``base64url(ts || HMAC-SHA-256(key, ts || realm)[:16])`` where ``ts`` is `now` in
microseconds as 8 signed big-endian bytes. A nonce is bound to its realm and checked without
storage; one older than `nonce_ttl` gives STALE when the response is otherwise right, so the
client retries with the new nonce without asking its user (RFC 7616 §3.3 "stale").

Replay. qop=auth is required (no RFC 2069 form), the digest-uri must name the Request-URI
(`same_request_target`), and `NonceCounts` keeps, per nonce once used, the highest nonce-count
accepted: a replayed or lower nc is STALE, never OK. The table is bounded; an evicted nonce
stays unusable (see `NonceCounts`).

Guessing. `AuthThrottle` counts failures per (source, user@domain) and per source, and refuses
both for a growing time; the caller asks it before verifying.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from presenced.sip.errors import ParseError
from presenced.sip.uri import SipUri, parse_uri

__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "AuthParseError",
    "AuthResult",
    "AuthThrottle",
    "CredentialStore",
    "DigestAuthenticator",
    "DigestCredentials",
    "NcCheck",
    "NonceCounts",
    "StaticCredentials",
    "ThrottlePolicy",
    "UnsupportedSchemeError",
    "compute_ha1",
    "digest_response",
    "load_users_file",
    "parse_digest_credentials",
    "same_request_target",
    "split_identity",
]


class AuthParseError(ParseError):
    """A malformed Authorization / Proxy-Authorization value: the peer's fault, answer 400."""


class UnsupportedSchemeError(AuthParseError):
    """Credentials in a scheme other than Digest (e.g. Basic, which RFC 3261 §22.1 forbids).

    Still an `AuthParseError` (400) for callers that do not care; a caller that does may catch
    it first and answer with a fresh challenge instead.
    """


# -- hashing -----------------------------------------------------------------------------------


class _Hash(Protocol):
    def hexdigest(self) -> str: ...


_HashFn = Callable[[bytes], _Hash]

# Base algorithm -> hash constructor and hex digest length.
_HASHES: dict[str, tuple[_HashFn, int]] = {
    "MD5": (hashlib.md5, 32),
    "SHA-256": (hashlib.sha256, 64),
}
# Every algorithm token we can verify, upper-cased, -> (base algorithm, session variant?).
ALGORITHMS: dict[str, tuple[str, bool]] = {
    "MD5": ("MD5", False),
    "MD5-SESS": ("MD5", True),
    "SHA-256": ("SHA-256", False),
    "SHA-256-SESS": ("SHA-256", True),
}
# How each is spelled on the wire (RFC 7616 §6.1 registry).
_WIRE_NAME = {
    "MD5": "MD5",
    "MD5-SESS": "MD5-sess",
    "SHA-256": "SHA-256",
    "SHA-256-SESS": "SHA-256-sess",
}


def _h(base: str, text: str) -> str:
    # surrogateescape: header bytes that are not UTF-8 hash as the bytes they were, not crash.
    return _HASHES[base][0](text.encode("utf-8", "surrogateescape")).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """HA1 = H(username ":" realm ":" password) for a base algorithm ("MD5" or "SHA-256")."""
    return _h(algorithm.upper(), f"{username}:{realm}:{password}")


def digest_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The request-digest (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1) for qop="auth" or no qop.

    `ha1` is H(user:realm:password) for the base algorithm, also for the -sess variants, whose
    session key H(HA1:nonce:cnonce) is derived here (RFC 7616 §3.4.2).
    """
    base, sess = ALGORITHMS[algorithm.upper()]
    if sess:
        ha1 = _h(base, f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = _h(base, f"{method}:{uri}")
    if qop is None:  # RFC 2069 compatibility form (RFC 3261 §22.4 item 8)
        return _h(base, f"{ha1}:{nonce}:{ha2}")
    return _h(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# -- parsing -----------------------------------------------------------------------------------

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE; qdtext is any char but controls (HTAB is
# allowed), '"' and '\'; quoted-pair = "\" followed by %x00-09 / %x0B-0C / %x0E-7F. The header
# layer has already unfolded continuation lines, so CR and LF never belong here.
_QUOTED = r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"'
_SCHEME_RE = re.compile(rf"[ \t]*({_TOKEN})(?:[ \t]+|\Z)")
# dig-resp = name EQUAL (token / quoted-string); EQUAL and COMMA allow whitespace around them.
_PARAM_RE = re.compile(rf"({_TOKEN})[ \t]*=[ \t]*(?:{_QUOTED}|({_TOKEN}))[ \t]*")
# One comma, then empty list elements are tolerated (", ,"), as RFC 7230 §7 does.
_COMMA_RE = re.compile(r",[ \t]*(?:,[ \t]*)*")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_NC_RE = re.compile(r"[0-9a-fA-F]{8}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")

_REQUIRED = ("username", "realm", "nonce", "uri", "response")


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The parameters of one Digest Authorization / Proxy-Authorization header value.

    `algorithm` is upper-cased ("MD5" when absent, RFC 7616 §3.4), `qop` lower-cased, `response`
    lower-cased hex; the rest are kept as sent, quoted-pairs resolved.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    nc: str | None = None
    qop: str | None = None
    opaque: str | None = None


def parse_digest_credentials(value: str) -> DigestCredentials:
    """Parse ``Digest username="...", realm="...", ...``; raise `AuthParseError` if malformed.

    Any parameter may come as a token or a quoted-string (clients differ on qop, nc and
    algorithm); unknown auth-params are ignored; a repeated parameter is an error (RFC 7616 §3.4).
    """
    m = _SCHEME_RE.match(value)
    if m is None:
        raise AuthParseError("malformed credentials: no auth scheme")
    scheme = m.group(1)
    if scheme.lower() != "digest":
        raise UnsupportedSchemeError(f"unsupported auth scheme {scheme!r}")
    params: dict[str, str] = {}
    pos = m.end()
    end = len(value)
    while True:
        m = _PARAM_RE.match(value, pos)
        if m is None:
            raise AuthParseError(f"malformed digest credentials at offset {pos}")
        name = m.group(1).lower()
        if name in params:
            raise AuthParseError(f"repeated digest parameter {name!r}")
        quoted = m.group(2)
        if quoted is None:
            params[name] = m.group(3)
        elif "\\" in quoted:
            params[name] = _UNESCAPE_RE.sub(r"\1", quoted)
        else:
            params[name] = quoted
        pos = m.end()
        if pos == end:
            break
        m = _COMMA_RE.match(value, pos)
        if m is None:
            raise AuthParseError(f"expected ',' in digest credentials at offset {pos}")
        pos = m.end()
        if pos == end:  # a trailing comma: an empty list element
            break

    for name in _REQUIRED:
        if name not in params:
            raise AuthParseError(f"digest credentials lack {name!r}")
    response = params["response"]
    if _HEX_RE.fullmatch(response) is None:
        raise AuthParseError("digest response is not hex")
    qop = params.get("qop")
    nc = params.get("nc")
    cnonce = params.get("cnonce")
    if qop is not None:
        qop = qop.lower()
        # RFC 7616 §3.4: with qop, cnonce and nc MUST be present.
        if cnonce is None or nc is None:
            raise AuthParseError("digest credentials with qop lack cnonce or nc")
    if nc is not None and _NC_RE.fullmatch(nc) is None:
        raise AuthParseError("digest nc is not 8 hex digits")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=response.lower(),
        algorithm=params.get("algorithm", "MD5").upper(),
        cnonce=cnonce,
        nc=nc,
        qop=qop,
        opaque=params.get("opaque"),
    )


# -- credential stores -------------------------------------------------------------------------


class CredentialStore(Protocol):
    """Where HA1 values come from: one per (user, realm, base algorithm "MD5" | "SHA-256").

    A realm is a served domain, so (user, realm) is the address user@domain.
    """

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """HA1 = H(username:realm:password) as lowercase hex, or None if unknown."""
        ...


def split_identity(name: str, default_domain: str) -> tuple[str, str]:
    """``"alice@b.example"`` -> ("alice", "b.example"); a plain ``"alice"`` is in `default_domain`.

    The domain is lower-cased (hosts compare case-insensitively, RFC 3261 §19.1.4); the user
    part is kept as written (user parts are case-sensitive).
    """
    user, at, domain = name.rpartition("@")
    if not at:
        return name, default_domain
    return user, domain.lower().rstrip(".")


class StaticCredentials:
    """An in-memory `CredentialStore`, keyed by user@domain.

    `realm` is the default domain: names given without ``@domain`` belong to it. Plaintext
    passwords are hashed on entry (for the user's own domain as realm) and not kept. A user may
    have HA1 values for only some algorithms; challenges offering another one fail for them.
    """

    __slots__ = ("_by_alg", "realm")

    def __init__(self, realm: str) -> None:
        self.realm = realm
        # base algorithm -> (user, realm) -> HA1
        self._by_alg: dict[str, dict[tuple[str, str], str]] = {base: {} for base in _HASHES}

    def _key(self, name: str, realm: str | None) -> tuple[str, str]:
        if realm is not None:
            return name, realm
        return split_identity(name, self.realm)

    def add_password(self, username: str, password: str, realm: str | None = None) -> None:
        """`username` is "user" (of `self.realm`) or "user@domain"; `realm` overrides the domain."""
        key = self._key(username, realm)
        for base, users in self._by_alg.items():
            users[key] = compute_ha1(base, key[0], key[1], password)

    def add_ha1(
        self,
        username: str,
        *,
        md5: str | None = None,
        sha256: str | None = None,
        realm: str | None = None,
    ) -> None:
        """Add precomputed HA1 values; they must have been computed for the user's domain."""
        key = self._key(username, realm)
        given = [
            (base, ha1) for base, ha1 in (("MD5", md5), ("SHA-256", sha256)) if ha1 is not None
        ]
        for base, ha1 in given:  # validate all before storing any
            size = _HASHES[base][1]
            if len(ha1) != size or _HEX_RE.fullmatch(ha1) is None:
                raise ValueError(f"{base} HA1 for {username!r} must be {size} hex digits")
        for base, ha1 in given:
            self._by_alg[base][key] = ha1.lower()

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        users = self._by_alg.get(algorithm)
        return None if users is None else users.get((username, realm))

    def domains(self) -> set[str]:
        return {realm for users in self._by_alg.values() for _, realm in users}

    def __contains__(self, name: object) -> bool:
        """``"alice"`` (in the default realm) or ``"alice@b.example"``."""
        if not isinstance(name, str):
            return False
        key = split_identity(name, self.realm)
        return any(key in users for users in self._by_alg.values())

    def __len__(self) -> int:
        names: set[tuple[str, str]] = set()
        for users in self._by_alg.values():
            names.update(users)
        return len(names)


def load_users_file(
    text: str, realm: str, domains: Iterable[str] | None = None
) -> StaticCredentials:
    """Build a `StaticCredentials` (default domain `realm`) from the text of a users file.

    One user per line; blank lines and lines starting with ``#`` are ignored::

        # user:plain:password            the password is the rest of the line (may hold ':')
        alice:plain:Circle Of Life
        # user:<MD5 HA1>:<SHA-256 HA1>   HA1 = H(user:realm:password), lowercase hex
        bob:939e7578ed9e3c518a452acee763bce9:5cb2...(64 hex digits)
        # either hash may be left empty to disable that algorithm for the user
        carol::5cb2...(64 hex digits)
        # user@domain: a user of another served domain (its realm is that domain)
        alice@b.example:plain:another password

    A name without ``@domain`` belongs to `realm`. A precomputed HA1 is only valid for the realm
    (domain) it was computed with. When `domains` is given, a user of any other domain is an
    error. Raises ValueError naming the line, never repeating a password or hash.
    """
    store = StaticCredentials(realm)
    served = None if domains is None else frozenset(domains)
    seen: set[tuple[str, str]] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = raw.split(":", 2)
        if len(parts) != 3:
            raise ValueError(
                f"users file line {lineno}: expected user:md5-ha1:sha256-ha1 or user:plain:password"
            )
        name, second, third = parts
        if not name or name != name.strip():
            raise ValueError(f"users file line {lineno}: empty user name or stray whitespace")
        user, domain = split_identity(name, realm)
        if not user or not domain:
            raise ValueError(f"users file line {lineno}: empty user or domain in {name!r}")
        if served is not None and domain not in served:
            raise ValueError(f"users file line {lineno}: {domain!r} is not a served domain")
        key = (user, domain)
        if key in seen:
            raise ValueError(f"users file line {lineno}: duplicate user {name!r}")
        seen.add(key)
        if second == "plain":
            store.add_password(user, third, realm=domain)
            continue
        md5, sha256 = second.strip(), third.strip()
        if not md5 and not sha256:
            raise ValueError(f"users file line {lineno}: no HA1 for {name!r}")
        try:
            store.add_ha1(user, md5=md5 or None, sha256=sha256 or None, realm=domain)
        except ValueError as exc:
            raise ValueError(f"users file line {lineno}: {exc}") from None
    return store


# -- digest-uri ---------------------------------------------------------------------------------


def same_request_target(digest_uri: str, request_uri: SipUri) -> bool:
    """Whether the digest-uri names the Request-URI (RFC 7616 §3.4.6, RFC 3261 §22.4 item 8).

    Compared as SIP URIs (RFC 3261 §19.1.4) on what names the resource: scheme, user
    (case-sensitive, escapes resolved), host (case-insensitive), port (absent != 5060).
    Parameters and headers are ignored, since a proxy in the path may add or strip some
    (;transport, ;lr, ;ob) without changing whose resource the request acts on.
    Non-SIP schemes (tel:) compare as exact strings.
    """
    try:
        d = parse_uri(digest_uri)
    except ParseError:
        return False
    if d.scheme != request_uri.scheme:
        return False
    if d.opaque is not None or request_uri.opaque is not None:
        return d.opaque == request_uri.opaque
    return (
        d.user_unescaped == request_uri.user_unescaped
        and d.host_key == request_uri.host_key
        and d.port == request_uri.port
    )


# -- nonce-counts --------------------------------------------------------------------------------


class NcCheck(enum.Enum):
    ACCEPTED = "accepted"  # higher than any nc seen with this nonce: recorded
    REPLAYED = "replayed"  # equal to or lower than one already accepted
    FORGOTTEN = "forgotten"  # not tracked and issued before the eviction floor


class NonceCounts:
    """Per issued nonce, the highest nonce-count accepted (RFC 7616 §3.4, §5.4).

    A nonce enters the table at its first use, so an issued-but-unused nonce costs nothing.
    Entries leave when their nonce expires (`expires` passed in) or, beyond `max_entries`, least
    recently used first. An evicted nonce must not become usable again with a low nc, so the
    table remembers the latest issue time it ever evicted (`floor`): an untracked nonce issued
    at or before it is FORGOTTEN (the caller answers stale=true and the client takes a new one).
    Sans-IO: times are passed in; one table per process (servers sharing the nonce key do not
    share it, which is why a SIP flow must stick to one process).
    """

    __slots__ = ("_entries", "floor", "max_entries")

    def __init__(self, max_entries: int = 50_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        # nonce -> [highest nc, issued (us), expires (s)]
        self._entries: OrderedDict[str, list[float]] = OrderedDict()
        self.floor = -(1 << 63)  # issue time (us) of the newest nonce ever evicted

    def __len__(self) -> int:
        return len(self._entries)

    def use(self, nonce: str, issued_us: int, nc: int, expires: float, now: float) -> NcCheck:
        entries = self._entries
        entry = entries.get(nonce)
        if entry is not None:
            entries.move_to_end(nonce)
            if nc <= entry[0]:
                return NcCheck.REPLAYED
            entry[0] = nc
            return NcCheck.ACCEPTED
        if issued_us <= self.floor:
            return NcCheck.FORGOTTEN
        # Drop expired entries from the old end (amortised O(1): each leaves once).
        while entries:
            oldest = next(iter(entries.values()))
            if oldest[2] > now:
                break
            entries.popitem(last=False)
        while len(entries) >= self.max_entries:
            _, evicted = entries.popitem(last=False)
            self.floor = max(self.floor, int(evicted[1]))
        entries[nonce] = [nc, issued_us, expires]
        return NcCheck.ACCEPTED


# -- the authenticator -------------------------------------------------------------------------


class AuthOutcome(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right credentials, unusable nonce: re-challenge with stale=true
    FAILED = "failed"  # re-challenge with stale=false (403 once the throttle says so)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What `verify` decided. `reason` is for server logs only; never send it to the peer."""

    outcome: AuthOutcome
    username: str | None = None  # set for OK and STALE
    realm: str | None = None  # set for OK and STALE
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK

    @property
    def identity(self) -> str | None:
        """The authenticated address "user@domain" (the realm is the user's domain)."""
        if self.username is None or self.realm is None:
            return None
        return f"{self.username}@{self.realm}"


_TS_LEN = 8
_MAC_LEN = 16  # HMAC-SHA-256 truncated to 128 bits (RFC 2104 §5)
_NONCE_LEN = 32  # base64 of 24 bytes: exactly 32 characters, no padding, one encoding per value
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{32}")
_FUTURE_SKEW = 2.0  # seconds; a nonce from the future means our clock went back: call it stale


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestAuthenticator:
    """Challenges and verifies Digest credentials, one realm per served domain.

    `realms` are the served domains, the default (for requests naming no served domain)
    first; a single string is one realm. `key` is the server secret for the nonce HMAC (at least
    16 random bytes). `algorithms` lists what the challenge offers, preferred first; a response
    using an algorithm not offered fails. `max_nonces` bounds the nonce-count table.
    """

    __slots__ = (
        "_algorithms",
        "_challenge_tails",
        "_dummy_ha1",
        "_key",
        "_opaque",
        "_realms_b",
        "_store",
        "nonce_counts",
        "nonce_ttl",
        "realm",
        "realms",
    )

    def __init__(
        self,
        realms: str | Iterable[str],
        key: bytes,
        credentials: CredentialStore,
        nonce_ttl: float = 300,
        *,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        max_nonces: int = 50_000,
    ) -> None:
        if len(key) < 16:
            raise ValueError("the digest nonce key must be at least 16 bytes")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        algs = tuple(a.upper() for a in algorithms)
        if not algs:
            raise ValueError("at least one digest algorithm must be offered")
        for alg in algs:
            if alg not in ALGORITHMS:
                raise ValueError(f"unsupported digest algorithm {alg!r}")
        names = (realms,) if isinstance(realms, str) else tuple(dict.fromkeys(realms))
        if not names:
            raise ValueError("at least one realm is needed")
        self.realms = frozenset(names)
        self.realm = names[0]
        self.nonce_ttl = nonce_ttl
        self.nonce_counts = NonceCounts(max_nonces)
        self._key = key
        self._store = credentials
        self._algorithms = frozenset(algs)
        self._realms_b = {r: r.encode("utf-8", "surrogateescape") for r in names}
        self._opaque: dict[str, str] = {}
        self._challenge_tails: dict[str, list[tuple[str, str]]] = {}
        for r, r_b in self._realms_b.items():
            opaque_mac = hmac.new(key, b"opaque\x00" + r_b, hashlib.sha256).digest()
            opaque = base64.urlsafe_b64encode(opaque_mac[:12]).decode()
            self._opaque[r] = opaque
            prefix = f"Digest realm={_quote(r)}, nonce="
            self._challenge_tails[r] = [
                (prefix, f', opaque="{opaque}", algorithm={_WIRE_NAME[alg]}, qop="auth"')
                for alg in algs
            ]
        # Unknown users are checked against these so they cost the same work as known ones.
        self._dummy_ha1 = {
            base: hmac.new(key, b"dummy-ha1\x00" + base.encode(), hashlib.sha256).hexdigest()[:size]
            for base, (_, size) in _HASHES.items()
        }

    def replace_credentials(self, credentials: CredentialStore) -> None:
        """Use another credential store from now on (the users file reloaded); nonces and
        their counts stay valid."""
        self._store = credentials

    def realm_for(self, domain: str) -> str:
        """The realm of a request whose identity lives in `domain` (lower-cased host)."""
        return domain if domain in self.realms else self.realm

    # nonces: base64url(ts || HMAC(key, ts || realm)[:16]), bound to their realm

    def _mac(self, ts: bytes, realm_b: bytes) -> bytes:
        return hmac.new(self._key, ts + realm_b, hashlib.sha256).digest()[:_MAC_LEN]

    def make_nonce(self, now: float, realm: str | None = None) -> str:
        realm_b = self._realms_b[self.realm if realm is None else realm]
        ts = int(now * 1_000_000).to_bytes(_TS_LEN, "big", signed=True)
        return base64.urlsafe_b64encode(ts + self._mac(ts, realm_b)).decode()

    def _nonce_issued(self, nonce: str, realm: str) -> int | None:
        """When `nonce` was issued for `realm` (microseconds), or None when it is not one of ours."""
        if len(nonce) != _NONCE_LEN or _NONCE_RE.fullmatch(nonce) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except (binascii.Error, ValueError):
            return None
        ts = raw[:_TS_LEN]
        if not hmac.compare_digest(raw[_TS_LEN:], self._mac(ts, self._realms_b[realm])):
            return None
        return int.from_bytes(ts, "big", signed=True)

    # the two operations

    def challenge(self, now: float, stale: bool = False, *, realm: str | None = None) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm, preferred first."""
        realm = self.realm if realm is None else realm
        nonce = self.make_nonce(now, realm)
        suffix = ", stale=true" if stale else ""
        return [f'{prefix}"{nonce}"{tail}{suffix}' for prefix, tail in self._challenge_tails[realm]]

    def verify(
        self,
        creds: DigestCredentials,
        method: str,
        request_uri: SipUri | str,
        now: float,
        *,
        realm: str | None = None,
    ) -> AuthResult:
        """Check `creds` sent with a request of `method` to `request_uri` in `realm`
        (`request_uri` a str: an HTTP request-target, for the XCAP server).

        RFC 3261 §22.4 and RFC 7616 §3.4: the realm must be the request's (default: the first),
        qop=auth is required, the digest-uri must name the Request-URI, the response must be
        right for the user@realm, and the nonce ours, fresh and its nonce-count never used.
        A right response over an unusable nonce (expired, not ours, nc replayed) is STALE:
        the client retries with a new nonce without asking its user (RFC 7616 §3.3), and a
        replayer, who cannot answer the new nonce, gains nothing.
        """
        realm = self.realm if realm is None else realm
        if creds.realm != realm:
            return AuthResult(AuthOutcome.FAILED, reason="realm mismatch")
        if creds.algorithm not in self._algorithms:
            return AuthResult(AuthOutcome.FAILED, reason=f"algorithm {creds.algorithm} not offered")
        # We offer qop="auth" only. Without qop (the RFC 2069 form) there is no nonce-count, so
        # a captured request could be replayed: refused (RFC 7616 §3.4 makes qop mandatory).
        if creds.qop != "auth":
            return AuthResult(AuthOutcome.FAILED, reason=f"qop {creds.qop or 'absent'} refused")
        if creds.opaque is not None and not hmac.compare_digest(
            creds.opaque.encode("utf-8", "surrogateescape"), self._opaque[realm].encode()
        ):
            return AuthResult(AuthOutcome.FAILED, reason="opaque mismatch")
        # A str is an HTTP request-target (XCAP), compared exactly (RFC 7616 §3.4.6).
        if creds.uri != str(request_uri) and (
            isinstance(request_uri, str) or not same_request_target(creds.uri, request_uri)
        ):
            return AuthResult(AuthOutcome.FAILED, reason="digest-uri is not the Request-URI")

        base = ALGORITHMS[creds.algorithm][0]
        ha1 = self._store.ha1(creds.username, realm, base)
        known = ha1 is not None
        expected = digest_response(
            creds.algorithm,
            ha1 if ha1 is not None else self._dummy_ha1[base],
            creds.nonce,
            method,
            creds.uri,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        matches = hmac.compare_digest(expected.encode(), creds.response.encode())
        if not (known and matches):
            # One reason for both, so logs shipped elsewhere do not enumerate users either.
            return AuthResult(AuthOutcome.FAILED, reason="bad credentials")

        def stale(reason: str) -> AuthResult:
            return AuthResult(AuthOutcome.STALE, creds.username, realm, reason)

        issued_us = self._nonce_issued(creds.nonce, realm)
        if issued_us is None:
            return stale("nonce not issued by us for this realm")
        age = now - issued_us / 1_000_000
        if age > self.nonce_ttl or age < -_FUTURE_SKEW:
            return stale("nonce expired")
        assert creds.nc is not None  # the parser requires nc with qop
        check = self.nonce_counts.use(
            creds.nonce, issued_us, int(creds.nc, 16), now - age + self.nonce_ttl, now
        )
        if check is NcCheck.REPLAYED:
            return stale("nonce-count replayed")
        if check is NcCheck.FORGOTTEN:
            return stale("nonce no longer tracked")
        return AuthResult(AuthOutcome.OK, creds.username, realm)


# -- password guessing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Limits of `AuthThrottle`; times in seconds.

    `max_failures` failed authentications of one (source, user@domain) pair, or
    `max_source_failures` of one source across all users within `lockout` seconds, refuse
    that pair (or source) for `lockout` seconds, doubling with each further lockout up to
    `max_lockout`. `max_pairs` / `max_sources` bound the tables (least recently seen evicted).
    """

    max_failures: int = 5
    max_source_failures: int = 20
    lockout: float = 30.0
    max_lockout: float = 3600.0
    max_pairs: int = 65_536
    max_sources: int = 16_384


class _Strikes:
    __slots__ = ("failures", "lockouts", "seen", "since", "until")

    def __init__(self, now: float) -> None:
        self.failures = 0
        self.lockouts = 0  # lockouts so far: the next one lasts lockout * 2**lockouts
        self.since = now  # start of the counting window (sources)
        self.until = 0.0  # refused while now < until
        self.seen = now


class AuthThrottle:
    """Counts failed authentications per (source address, user@domain) and per source address.

    Sans-IO: `now` is passed in (a monotonic clock). A refused pair or source is answered
    without checking credentials. Only the pair is refused after guesses against one user, so
    the real user at another address is never locked out; a source trying many user names
    (password spraying) is refused for every user. A success resets its pair, not its source
    (one valid account must not reset a spraying count). Entries quiet for `max_lockout`
    seconds are forgotten.
    """

    __slots__ = ("_pairs", "_sources", "policy")

    def __init__(self, policy: ThrottlePolicy = ThrottlePolicy()) -> None:
        if policy.max_failures < 1 or policy.max_source_failures < 1:
            raise ValueError("failure limits must be at least 1")
        if not 0 < policy.lockout <= policy.max_lockout:
            raise ValueError("need 0 < lockout <= max_lockout")
        self.policy = policy
        self._pairs: OrderedDict[tuple[str, str], _Strikes] = OrderedDict()
        self._sources: OrderedDict[str, _Strikes] = OrderedDict()

    def _lock(self, s: _Strikes, now: float) -> None:
        p = self.policy
        s.until = now + min(p.lockout * (2 ** min(s.lockouts, 32)), p.max_lockout)
        s.lockouts += 1
        s.failures = 0

    def source_refused(self, source: str, now: float) -> float:
        """Seconds `source` stays refused for every user (0.0: not refused)."""
        s = self._sources.get(source)
        return s.until - now if s is not None and s.until > now else 0.0

    def refused(self, source: str, identity: str, now: float) -> float:
        """Seconds the (source, identity) pair, or the source, stays refused (0.0: not refused)."""
        wait = self.source_refused(source, now)
        s = self._pairs.get((source, identity))
        if s is not None and s.until - now > wait:
            wait = s.until - now
        return wait

    def _entry(self, table: OrderedDict[Any, _Strikes], key: Any, cap: int, now: float) -> _Strikes:
        s = table.get(key)
        if s is not None and now - max(s.seen, s.until) > self.policy.max_lockout:
            s = None  # quiet long enough: start over
        if s is None:
            while len(table) >= cap:
                table.popitem(last=False)
            s = table[key] = _Strikes(now)
        else:
            table.move_to_end(key)
        s.seen = now
        return s

    def failed(self, source: str, identity: str, now: float, *, per_source: bool = True) -> bool:
        """Count one failure; True when it starts a lockout (of the pair or the source).

        `per_source=False` counts the pair only: for a trusted proxy, which speaks for many
        users, one of them guessing must not lock out all the others."""
        p = self.policy
        locked = False
        pair = self._entry(self._pairs, (source, identity), p.max_pairs, now)
        pair.failures += 1
        if pair.failures >= p.max_failures:
            self._lock(pair, now)
            locked = True
        if not per_source:
            return locked
        src = self._entry(self._sources, source, p.max_sources, now)
        if now - src.since >= p.lockout:
            src.since = now
            src.failures = 0
        src.failures += 1
        if src.failures >= p.max_source_failures:
            self._lock(src, now)
            locked = True
        return locked

    def succeeded(self, source: str, identity: str) -> None:
        """A success resets its pair (lockout level included)."""
        self._pairs.pop((source, identity), None)

    def __len__(self) -> int:
        return len(self._pairs) + len(self._sources)
