"""REGISTER processing (RFC 3261 §10.3), as a pure function of the request and current bindings.

`process_register` decides; the registrar service persists what it decided, answers, and
tells the presence agent when an address-of-record opened or closed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from presenced.pa.records import Binding
from presenced.sip.errors import ParseError
from presenced.sip.headers import NameAddr
from presenced.sip.message import Request
from presenced.sip.uri import SipUri


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 86400
    max_contacts: int = 32


# One per REGISTER: __init__ written out (init=False) so that mypyc compiles it (setup.py).
@dataclass(slots=True, init=False)
class RegisterOutcome:
    status: int
    reason: str | None
    min_expires: int | None  # for 423 (RFC 3261 §10.3 step 7)
    puts: list[Binding]
    deletes: list[Binding]
    bindings: list[Binding]  # the AOR's bindings afterwards

    def __init__(self, status: int, reason: str | None = None, min_expires: int | None = None,
                 puts: list[Binding] | None = None, deletes: list[Binding] | None = None,
                 bindings: list[Binding] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.min_expires = min_expires
        self.puts = [] if puts is None else puts
        self.deletes = [] if deletes is None else deletes
        self.bindings = [] if bindings is None else bindings


def contact_key(contact: NameAddr) -> str:
    """What identifies a binding: the contact URI (RFC 3261 §10.3 step 7, §19.1.4 simplified).

    Scheme and host compare case-insensitively; the user part and parameters as written.
    """
    uri = contact.uri
    if not uri.is_sip or uri.host == uri.host_key:
        return str(uri)
    # Rebuild rather than replace text: the host's spelling may also occur in the user part.
    return str(SipUri(uri.scheme, uri.user, uri.password, uri.host_key, uri.port, uri.params,
                      uri.headers))


# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )  (RFC 3261 §25.1)
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")


def process_register(
    req: Request,
    aor: str,
    current: Sequence[Binding],
    policy: RegistrarPolicy,
    now: float,
    peer: str,
) -> RegisterOutcome:
    """Decide what a REGISTER does to `aor`'s bindings. `now` is wall-clock epoch seconds."""
    try:
        contacts = req.contacts
        header_expires = req.expires
        call_id = req.call_id
        cseq = req.cseq.seq
    except ParseError as exc:
        return RegisterOutcome(400, f"Bad Request ({exc.reason})", bindings=list(current))
    by_contact = {b.contact: b for b in current}
    user_agent = req.headers.get("User-Agent")
    if user_agent is not None and not user_agent.isascii():
        # Informational only: a Latin-1 phone's bytes are kept readable, not refused.
        user_agent = user_agent.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    if any(c.star for c in contacts):
        # §10.3 step 6: "*" only alone and only with Expires: 0.
        if len(contacts) != 1 or header_expires != 0:
            return RegisterOutcome(400, "Bad Request (Contact: * needs Expires: 0 and no other contact)",
                                   bindings=list(current))
        # A binding from the same Call-ID with a CSeq not below ours: "the update MUST be
        # aborted and the request fails" — no binding at all is removed.
        if any(b.call_id == call_id and cseq <= b.cseq for b in current):
            return RegisterOutcome(500, "Out of Order", bindings=list(current))
        return RegisterOutcome(200, deletes=list(current), bindings=[])

    puts: dict[str, Binding] = {}
    deletes: dict[str, Binding] = {}
    for contact in contacts:
        params = contact.params
        if "expires" in params:
            expires_param = params["expires"]  # None for a bare ";expires": no value at all
            if expires_param is None or not expires_param.isdigit():
                return RegisterOutcome(400, "Bad Request (bad expires parameter)", bindings=list(current))
            expires = min(int(expires_param), 2**32 - 1)
        elif header_expires is not None:
            expires = header_expires
        else:
            expires = policy.default_expires
        # §10.3 step 7: 423 only below one hour, whatever the configured minimum.
        if 0 < expires < min(policy.min_expires, 3600):
            return RegisterOutcome(423, min_expires=policy.min_expires, bindings=list(current))
        expires = min(expires, policy.max_expires)
        q: float | None = None
        if "q" in params:
            q_text = params["q"]
            # float() alone would take "nan", "1e-1" or "0_1".
            if q_text is None or not _QVALUE.match(q_text):
                return RegisterOutcome(400, "Bad Request (bad q value)", bindings=list(current))
            q = float(q_text)
        key = contact_key(contact)
        existing = by_contact.get(key)
        if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
            # §10.3 step 7 / §12.2.2: an older or repeated CSeq from the same Call-ID.
            return RegisterOutcome(500, "Out of Order", bindings=list(current))
        if expires == 0:
            if existing is not None:
                deletes[key] = existing
            puts.pop(key, None)
            continue
        instance = params.get("+sip.instance")
        puts[key] = Binding(
            aor=aor, contact=key, expires_at=now + expires, call_id=call_id, cseq=cseq, q=q,
            peer=peer, instance=instance.strip('"') if instance else None, user_agent=user_agent,
        )
    after = {k: b for k, b in by_contact.items() if k not in deletes}
    after.update(puts)
    if len(after) > policy.max_contacts:
        return RegisterOutcome(403, "Forbidden (too many contacts)", bindings=list(current))
    return RegisterOutcome(200, puts=list(puts.values()), deletes=list(deletes.values()),
                           bindings=list(after.values()))


def contact_header_values(bindings: Sequence[Binding], now: float) -> list[str]:
    """The Contact values a 200 lists: every current binding with its remaining expiry."""
    out = []
    for b in bindings:
        remaining = max(0, int(b.expires_at - now + 0.5))
        q = f";q={b.q:g}" if b.q is not None else ""
        out.append(f"<{b.contact}>;expires={remaining}{q}")
    return out
