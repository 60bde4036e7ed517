"""Address translation between SIP AORs and XMPP JIDs for the jabber gateway (pure).

Two schemes, both compatible with Kamailio's xmpp module:

Separator addressing (the default, Kamailio's "gateway" mode). The separator (default ``*``)
stands in for the ``@`` of the foreign address so it fits into the local part:

* an XMPP user as seen from SIP:  ``juliet@jabber.test``  <->  ``sip:juliet*jabber.test@<gateway_domain>``
* a SIP user as seen from XMPP:   ``sip:alice@example.com``  <->  ``alice*example.com@<component>``

Direct addressing. A ``domains`` mapping (SIP domain -> XMPP domain) says that a user keeps its
name across the gateway: ``sip:juliet@D`` <-> ``juliet@D'`` for every ``D: D'`` in the mapping.
When a JID's domain is in the mapping, ``jid_to_sip`` prefers the direct form.

Normalisation ("nodeprep basics", not full RFC 7622 PRECIS): domains and localparts are
lowercased with ``str.casefold``; a localpart must be 1..1023 UTF-8 bytes and must not contain
the characters RFC 7622 §3.3.1 forbids (``" & ' / : < > @``), whitespace or control characters.
A domain must be 1..1023 bytes of dot-separated labels without those characters. No Unicode
normalisation is applied. Resources are dropped: every function returns bare JIDs.

SIP user parts are percent-decoded before they become JID localparts and characters outside the
RFC 3261 §25.1 ``user`` set are percent-encoded on the way back, so the mapping round-trips.

Faithful or refused. SIP user parts are case-sensitive (RFC 3261 §19.1.4) while JID localparts
are compared case-folded (RFC 7622 §3.3), so ``sip:Juliet*jabber.test@gw`` and
``sip:juliet*jabber.test@gw`` are two SIP users but could only be one JID. A SIP user part is
therefore mapped only when it is its own case fold: upper-case letters (and characters such as
``ß`` whose fold is another string) are refused rather than folded, as are characters a
localpart cannot hold and control characters (``%00`` included). The reverse direction refuses
JID localparts whose case fold is not their lower-case form (``ß``: XMPP keeps it, we could not).
`Addressing.lookup_jid` says why with a SIP status (`Unmappable`).

Every public method returns ``None`` for input it cannot translate; none raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import unquote

from presenced.sip.uri import escape_user

__all__ = ["Addressing", "Unmappable", "bare_jid", "split_jid"]

# RFC 7622 §3.3.1: characters never allowed in a localpart (besides space and controls).
_JID_FORBIDDEN = frozenset("\"&'/:<>@")
_MAX_PART = 1023
# RFC 3261 §25.1 escaped = "%" HEXDIG HEXDIG; anything else after "%" is malformed.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class Unmappable:
    """Why a SIP address has no faithful JID, and the status a SUBSCRIBE for it gets.

    400: the user part is malformed (bad escape, not UTF-8, control characters such as %00).
    404: well-formed, but no XMPP user can have this SIP address (upper case, characters a JID
    localpart cannot hold, not a gateway address).
    """

    status: int
    reason: str


_NOT_SIP = Unmappable(400, "not a SIP address")
_BAD_USER = Unmappable(400, "malformed user part")
_CONTROL = Unmappable(400, "control character in user part")
_CASE = Unmappable(404, "user part not in lower case (XMPP addresses ignore case)")
_JID_CHARS = Unmappable(404, "user part holds characters an XMPP address cannot")
_NOT_GATEWAY = Unmappable(404, "not an XMPP user's address")


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text)


def _faithful_jid_local(raw: str) -> bool:
    # RFC 7622 / RFC 8265 map case with toLower; casefold differs for a few characters (ß ->
    # ss). Where they differ our folding would not be the XMPP server's: refuse.
    low = raw.lower()
    return low.casefold() == low


def _valid_local(local: str) -> bool:
    if not local or len(local.encode("utf-8", "surrogatepass")) > _MAX_PART:
        return False
    for ch in local:
        if ch in _JID_FORBIDDEN or ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            return False
    return True


def _norm_domain(domain: str) -> str | None:
    """Lowercase a domain and check it is plausible; strip one trailing dot (RFC 7622 §3.2)."""
    d = domain.casefold()
    if d.endswith("."):
        d = d[:-1]
    if not d or len(d.encode("utf-8", "surrogatepass")) > _MAX_PART:
        return None
    if d.startswith("[") and d.endswith("]"):  # IPv6 literal: keep as is
        return d if len(d) > 2 and all(c in "0123456789abcdef:." for c in d[1:-1]) else None
    for label in d.split("."):
        if not label or len(label) > 63:
            return None
        # Letters, digits, hyphen and underscore only (IDN U-labels allowed as letters):
        # this keeps any separator out of domains, so splitting at it is unambiguous.
        if not all(ch.isalnum() or ch in "-_" for ch in label):
            return None
    return d


def split_jid(jid: str) -> tuple[str, str, str] | None:
    """``local@domain/resource`` -> ``(local, domain, resource)`` normalised; ``None`` if invalid.

    ``local`` and ``resource`` may be empty strings (domain-only JIDs, bare JIDs).
    """
    if not isinstance(jid, str) or not jid:
        return None
    rest, slash, resource = jid.partition("/")
    if slash and not resource:
        return None
    local, at, domain = rest.rpartition("@")
    if at and not _valid_local(local):
        return None
    norm = _norm_domain(domain)
    if norm is None:
        return None
    return local.casefold(), norm, resource


def bare_jid(jid: str) -> str | None:
    """The normalised bare JID (``local@domain`` or ``domain``) of any JID, or ``None``."""
    parts = split_jid(jid)
    if parts is None:
        return None
    local, domain, _ = parts
    return f"{local}@{domain}" if local else domain


def _split_sip(aor: str) -> tuple[str, str] | Unmappable:
    """``sip:user@host[:port][;params][?headers]`` (scheme optional) -> ``(user, host)``.

    The user part is percent-decoded and must be its own case fold (see the module docstring);
    the host is casefolded without its port.
    """
    if not isinstance(aor, str):
        return _NOT_SIP
    s = aor.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1]
    lower = s[:5].lower()
    if lower.startswith("sips:"):
        s = s[5:]
    elif lower.startswith("sip:"):
        s = s[4:]
    elif ":" in s.partition("@")[0]:
        return _NOT_SIP  # another scheme (tel:, xmpp:, ...) or user:password
    # Headers and parameters come after the host part (RFC 3261 §19.1.1).
    user, at, hostport = s.partition("@")
    if not at or not user:
        return _NOT_SIP
    for sep in "?;":
        hostport = hostport.partition(sep)[0]
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return _NOT_SIP
        host = hostport[: end + 1]
    else:
        host = hostport.partition(":")[0]
    norm_host = _norm_domain(host)
    if norm_host is None:
        return _NOT_SIP
    if _BAD_ESCAPE.search(user):
        return _BAD_USER
    try:
        decoded = unquote(user, errors="strict")
    except UnicodeDecodeError:
        return _BAD_USER
    return _check_user(decoded, norm_host)


def _check_user(user: str, host: str) -> tuple[str, str] | Unmappable:
    if not user:
        return _BAD_USER
    if _has_control(user):
        return _CONTROL
    # RFC 3261 §19.1.4: user parts compare case-sensitively; folding would merge two users.
    if user.casefold() != user:
        return _CASE
    return user, host


def _sip_user(local: str) -> str:
    return escape_user(local)  # RFC 3261 §25.1: user-unreserved characters stay literal


class Addressing:
    """Maps SIP AORs to JIDs and back for one gateway.

    ``gateway_domain`` is the SIP domain under which XMPP users appear to SIP
    (``sip:juliet*jabber.test@gateway_domain``); ``component`` is the XMPP component domain under
    which SIP users appear to XMPP (``alice*example.com@component``).
    """

    __slots__ = ("_component", "_gateway", "_sep", "_sip_to_xmpp", "_xmpp_to_sip")

    def __init__(
        self,
        gateway_domain: str,
        component: str,
        separator: str = "*",
        domains: Mapping[str, str] = MappingProxyType({}),
    ) -> None:
        gw = _norm_domain(gateway_domain)
        comp = _norm_domain(component)
        if gw is None:
            raise ValueError(f"gateway_domain: not a valid domain: {gateway_domain!r}")
        if comp is None:
            raise ValueError(f"component: not a valid domain: {component!r}")
        # The separator must survive inside both a SIP user part and a JID localpart, and
        # must never occur in a domain, otherwise splitting at it would be ambiguous.
        if (
            len(separator) != 1
            or separator in _JID_FORBIDDEN
            or separator in ".-_%"
            or separator.isalnum()
            or separator.isspace()
        ):
            raise ValueError(f"separator: unusable character {separator!r}")
        fwd: dict[str, str] = {}
        for sip_dom, xmpp_dom in domains.items():
            s, x = _norm_domain(sip_dom), _norm_domain(xmpp_dom)
            if s is None or x is None:
                raise ValueError(f"domains: invalid pair {sip_dom!r} -> {xmpp_dom!r}")
            fwd[s] = x
        self._gateway = gw
        self._component = comp
        self._sep = separator
        self._sip_to_xmpp = fwd
        self._xmpp_to_sip = {x: s for s, x in fwd.items()}

    @property
    def gateway_domain(self) -> str:
        return self._gateway

    @property
    def component(self) -> str:
        return self._component

    @property
    def separator(self) -> str:
        return self._sep

    # -- XMPP users seen from SIP ------------------------------------------------------------

    def sip_to_jid(self, sip_aor: str) -> str | None:
        """The bare JID of the XMPP user a SIP URI designates, or ``None`` if it designates none.

        ``sip:juliet*jabber.test@<gateway_domain>`` -> ``juliet@jabber.test``; with
        ``domains={"sip.d": "xmpp.d"}``, ``sip:juliet@sip.d`` -> ``juliet@xmpp.d``. This is the
        address a SIP watcher's SUBSCRIBE is turned into on the XMPP side.
        """
        found = self.lookup_jid(sip_aor)
        return found if isinstance(found, str) else None

    def lookup_jid(self, sip_aor: str) -> str | Unmappable:
        """Like `sip_to_jid`, but says why there is no JID (and what a SUBSCRIBE gets)."""
        parts = _split_sip(sip_aor)
        return parts if isinstance(parts, Unmappable) else self._to_jid(*parts)

    def presentity_to_jid(self, presentity: str, routed: bool = False) -> str | Unmappable:
        """Like `lookup_jid` for a presentity key ``user@host`` whose user is already decoded
        (`SipUri.aor`): decoding it again would map ``jul%2569et`` onto ``juliet``.

        `routed`: the operator's routing chose the gateway for this address, whatever its host
        (``sip:viola*jabber.test@example.com``): a host in ``[jabber.domains]`` maps as such,
        any other host is read like the gateway domain (the separator form)."""
        user, at, host = presentity.rpartition("@") if isinstance(presentity, str) else ("", "", "")
        norm_host = _norm_domain(host) if at else None
        if norm_host is None:
            return _NOT_SIP
        parts = _check_user(user, norm_host)
        return parts if isinstance(parts, Unmappable) else self._to_jid(*parts, routed)

    def _to_jid(self, user: str, host: str, routed: bool = False) -> str | Unmappable:
        if host == self._gateway or (routed and host not in self._sip_to_xmpp):
            local, sep, domain = user.rpartition(self._sep)
            if not sep:
                return _NOT_GATEWAY
            norm = _norm_domain(domain)
            # A JID on our own component would loop straight back into the gateway.
            if norm is None or norm == self._component:
                return _NOT_GATEWAY
            if not _valid_local(local):
                return _JID_CHARS
            return f"{local}@{norm}"
        mapped = self._sip_to_xmpp.get(host)
        if mapped is None:
            return _NOT_GATEWAY
        if not _valid_local(user):
            return _JID_CHARS
        return f"{user}@{mapped}"

    def jid_to_sip(self, jid: str) -> str | None:
        """The SIP URI under which an XMPP user is visible to SIP, or ``None``.

        Direct form when the JID's domain is in ``domains``, separator form otherwise. JIDs on
        the component domain are SIP users, not XMPP users: use `jid_as_sip_user` for those.
        """
        parts = split_jid(jid)
        if parts is None or not _faithful_jid_local(jid.partition("/")[0].rpartition("@")[0]):
            return None
        local, domain, _ = parts
        if not local or domain == self._component:
            return None
        sip_domain = self._xmpp_to_sip.get(domain)
        if sip_domain is not None:
            return f"sip:{_sip_user(local)}@{sip_domain}"
        return f"sip:{_sip_user(local + self._sep + domain)}@{self._gateway}"

    # -- SIP users seen from XMPP ------------------------------------------------------------

    def sip_user_as_jid(self, aor: str) -> str | None:
        """The component JID that stands for a SIP user: ``alice@example.com`` ->
        ``alice*example.com@<component>``; ``None`` when the AOR is not a usable SIP address."""
        parts = _split_sip(aor)
        if isinstance(parts, Unmappable):
            return None
        user, host = parts
        local = f"{user}{self._sep}{host}"
        if not _valid_local(local):
            return None
        return f"{local}@{self._component}"

    def jid_as_sip_user(self, component_jid: str) -> str | None:
        """The SIP AOR behind a component JID: ``alice*example.com@<component>[/res]`` ->
        ``sip:alice@example.com``; ``None`` for any other JID."""
        parts = split_jid(component_jid)
        raw_local = component_jid.partition("/")[0].rpartition("@")[0] if parts else ""
        if parts is None or not _faithful_jid_local(raw_local):
            return None
        local, domain, _ = parts
        if domain != self._component:
            return None
        user, sep, host = local.rpartition(self._sep)
        if not sep or not user:
            return None
        norm = _norm_domain(host)
        if norm is None:
            return None
        return f"sip:{_sip_user(user)}@{norm}"
