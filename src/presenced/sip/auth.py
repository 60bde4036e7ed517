"""Digest authentication for a SIP server (RFC 3261 §22, RFC 7616 algorithms, RFC 8760 SHA-256).

Theory of operation. A request without acceptable credentials gets a 401/407 carrying the values of
`DigestAuthenticator.challenge()` (SHA-256 first, then MD5: RFC 8760 §2.4 has the server list its
preferred algorithm first). The client answers with an Authorization (or Proxy-Authorization)
header; `parse_digest_credentials()` turns its value into `DigestCredentials` (or raises
`AuthParseError`, answered with 400) and `DigestAuthenticator.verify()` decides OK, STALE or FAILED.

Nonces are stateless: ``base64url(ts || HMAC-SHA-256(key, ts || realm)[:16])`` where ``ts`` is
`now` in microseconds as 8 signed big-endian bytes. Any server sharing `key` can check one without
storage; a nonce older than `nonce_ttl` gives STALE when the response is otherwise right, so the
client retries with the new nonce without asking its user (RFC 7616 §3.3 "stale"). Use a wall clock
for `now` if nonces should survive a restart (a monotonic clock restarts near zero).

Replay: being stateless, the server keeps no nonce-count (nc) high-water mark, so a captured
request can be replayed for the same method and digest-uri until its nonce expires (`nonce_ttl`).
That is the accepted trade-off of stateless nonces (RFC 7616 §5.4 lets the server choose); run SIP
over TLS or keep `nonce_ttl` short where that matters.

Not checked here: that digest-uri equals the Request-URI (RFC 7616 §3.4.6) — comparing SIP URIs
is the caller's business, and proxies in the path may have rewritten the Request-URI.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from presenced.sip.errors import ParseError

__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "AuthParseError",
    "AuthResult",
    "CredentialStore",
    "DigestAuthenticator",
    "DigestCredentials",
    "StaticCredentials",
    "UnsupportedSchemeError",
    "compute_ha1",
    "digest_response",
    "load_users_file",
    "parse_digest_credentials",
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
    """Where HA1 values come from: one per (username, base algorithm "MD5" | "SHA-256")."""

    def ha1(self, username: str, algorithm: str) -> str | None:
        """HA1 = H(username:realm:password) as lowercase hex, or None if unknown."""
        ...


class StaticCredentials:
    """An in-memory `CredentialStore` for one realm.

    Plaintext passwords are hashed on entry and not kept. A user may have HA1 values for only
    some algorithms; challenges offering another one simply fail for that user.
    """

    __slots__ = ("_by_alg", "realm")

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self._by_alg: dict[str, dict[str, str]] = {base: {} for base in _HASHES}

    def add_password(self, username: str, password: str) -> None:
        for base, users in self._by_alg.items():
            users[username] = compute_ha1(base, username, self.realm, password)

    def add_ha1(self, username: str, *, md5: str | None = None, sha256: str | None = None) -> None:
        """Add precomputed HA1 values; they must have been computed for `self.realm`."""
        given = [
            (base, ha1) for base, ha1 in (("MD5", md5), ("SHA-256", sha256)) if ha1 is not None
        ]
        for base, ha1 in given:  # validate all before storing any
            size = _HASHES[base][1]
            if len(ha1) != size or _HEX_RE.fullmatch(ha1) is None:
                raise ValueError(f"{base} HA1 for {username!r} must be {size} hex digits")
        for base, ha1 in given:
            self._by_alg[base][username] = ha1.lower()

    def ha1(self, username: str, algorithm: str) -> str | None:
        users = self._by_alg.get(algorithm)
        return None if users is None else users.get(username)

    def __contains__(self, username: object) -> bool:
        return any(username in users for users in self._by_alg.values())

    def __len__(self) -> int:
        names: set[str] = set()
        for users in self._by_alg.values():
            names.update(users)
        return len(names)


def load_users_file(text: str, realm: str) -> StaticCredentials:
    """Build a `StaticCredentials` for `realm` from the text of a users file.

    One user per line; blank lines and lines starting with ``#`` are ignored::

        # user:plain:password            the password is the rest of the line (may hold ':')
        alice:plain:Circle Of Life
        # user:<MD5 HA1>:<SHA-256 HA1>   HA1 = H(user:realm:password), lowercase hex
        bob:939e7578ed9e3c518a452acee763bce9:5cb2...(64 hex digits)
        # either hash may be left empty to disable that algorithm for the user
        carol::5cb2...(64 hex digits)

    A precomputed HA1 is only valid for the realm it was computed with, so changing the realm
    invalidates hashed entries (plaintext ones are re-hashed). Raises ValueError naming the line.
    """
    store = StaticCredentials(realm)
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = raw.split(":", 2)
        if len(parts) != 3:
            raise ValueError(
                f"users file line {lineno}: expected user:md5-ha1:sha256-ha1 or user:plain:password"
            )
        user, second, third = parts
        if not user or user != user.strip():
            raise ValueError(f"users file line {lineno}: empty user name or stray whitespace")
        if user in seen:
            raise ValueError(f"users file line {lineno}: duplicate user {user!r}")
        seen.add(user)
        if second == "plain":
            store.add_password(user, third)
            continue
        md5, sha256 = second.strip(), third.strip()
        if not md5 and not sha256:
            raise ValueError(f"users file line {lineno}: no HA1 for {user!r}")
        try:
            store.add_ha1(user, md5=md5 or None, sha256=sha256 or None)
        except ValueError as exc:
            raise ValueError(f"users file line {lineno}: {exc}") from None
    return store


# -- the authenticator -------------------------------------------------------------------------


class AuthOutcome(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right credentials, expired nonce: re-challenge with stale=true
    FAILED = "failed"  # re-challenge with stale=false (or 403 after too many tries)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What `verify` decided. `reason` is for server logs only; never send it to the peer."""

    outcome: AuthOutcome
    username: str | None = None  # set for OK and STALE
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


_TS_LEN = 8
_MAC_LEN = 16  # HMAC-SHA-256 truncated to 128 bits (RFC 2104 §5)
_NONCE_LEN = 32  # base64 of 24 bytes: exactly 32 characters, no padding, one encoding per value
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{32}")
_FUTURE_SKEW = 2.0  # seconds; a nonce from the future means our clock went back: call it stale


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestAuthenticator:
    """Challenges and verifies Digest credentials for one realm, keeping no per-client state.

    `key` is the server secret for the nonce HMAC (at least 16 random bytes; servers sharing it
    accept each other's nonces). `algorithms` lists what the challenge offers, preferred first;
    a response using an algorithm not offered fails.
    """

    __slots__ = (
        "_algorithms",
        "_challenge_tail",
        "_dummy_ha1",
        "_key",
        "_opaque",
        "_realm_b",
        "_store",
        "nonce_ttl",
        "realm",
    )

    def __init__(
        self,
        realm: str,
        key: bytes,
        credentials: CredentialStore,
        nonce_ttl: float = 300,
        *,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
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
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self._key = key
        self._realm_b = realm.encode()
        self._store = credentials
        self._algorithms = frozenset(algs)
        opaque_mac = hmac.new(key, b"opaque\x00" + self._realm_b, hashlib.sha256).digest()
        self._opaque = base64.urlsafe_b64encode(opaque_mac[:12]).decode()
        # Unknown users are checked against these so they cost the same work as known ones.
        self._dummy_ha1 = {
            base: hmac.new(key, b"dummy-ha1\x00" + base.encode(), hashlib.sha256).hexdigest()[:size]
            for base, (_, size) in _HASHES.items()
        }
        prefix = f"Digest realm={_quote(realm)}, nonce="
        self._challenge_tail = [
            (prefix, f', opaque="{self._opaque}", algorithm={_WIRE_NAME[alg]}, qop="auth"')
            for alg in algs
        ]

    # nonces

    def _mac(self, ts: bytes) -> bytes:
        return hmac.new(self._key, ts + self._realm_b, hashlib.sha256).digest()[:_MAC_LEN]

    def make_nonce(self, now: float) -> str:
        ts = int(now * 1_000_000).to_bytes(_TS_LEN, "big", signed=True)
        return base64.urlsafe_b64encode(ts + self._mac(ts)).decode()

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since `nonce` was issued, or None when it is not one of ours."""
        if len(nonce) != _NONCE_LEN or _NONCE_RE.fullmatch(nonce) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except (binascii.Error, ValueError):
            return None
        ts = raw[:_TS_LEN]
        if not hmac.compare_digest(raw[_TS_LEN:], self._mac(ts)):
            return None
        issued_us = int.from_bytes(ts, "big", signed=True)
        return (int(now * 1_000_000) - issued_us) / 1_000_000

    # the two operations

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm, preferred first."""
        nonce = self.make_nonce(now)
        suffix = ", stale=true" if stale else ""
        return [f'{prefix}"{nonce}"{tail}{suffix}' for prefix, tail in self._challenge_tail]

    def verify(self, creds: DigestCredentials, method: str, now: float) -> AuthResult:
        """Check `creds` sent with a request of `method` (RFC 3261 §22.4, RFC 7616 §3.4)."""
        if creds.realm != self.realm:
            return AuthResult(AuthOutcome.FAILED, reason="realm mismatch")
        if creds.algorithm not in self._algorithms:
            return AuthResult(AuthOutcome.FAILED, reason=f"algorithm {creds.algorithm} not offered")
        # We offer qop="auth" only; a response without qop is the RFC 2069 form (RFC 3261 §22.4).
        if creds.qop is not None and creds.qop != "auth":
            return AuthResult(AuthOutcome.FAILED, reason=f"qop {creds.qop} not offered")
        if creds.opaque is not None and not hmac.compare_digest(
            creds.opaque.encode("utf-8", "surrogateescape"), self._opaque.encode()
        ):
            return AuthResult(AuthOutcome.FAILED, reason="opaque mismatch")
        age = self._nonce_age(creds.nonce, now)
        if age is None:
            return AuthResult(AuthOutcome.FAILED, reason="nonce not issued by us")

        base = ALGORITHMS[creds.algorithm][0]
        ha1 = self._store.ha1(creds.username, base)
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
        if age > self.nonce_ttl or age < -_FUTURE_SKEW:
            return AuthResult(AuthOutcome.STALE, username=creds.username, reason="nonce expired")
        return AuthResult(AuthOutcome.OK, username=creds.username)
