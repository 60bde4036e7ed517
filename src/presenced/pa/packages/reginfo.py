"""application/reginfo+xml (RFC 3680): the registration state of an AOR, from our own registrar.

The two state machines of RFC 3680 §5.2, as this module reads them:

    registration  init --(a contact becomes active)--> active --(last contact ends)--> terminated
                  terminated --(a contact becomes active)--> active
    contact       init --registered (by REGISTER) | created (by the registrar/admin)--> active
                  active --refreshed (same or later expiry) | shortened (earlier)--> active
                  active --expired | deactivated | probation | unregistered | rejected--> terminated

`diff_contacts` turns one change of an AOR's bindings (a REGISTER, an un-REGISTER, an expiry
sweep, an administrative removal) into the contact events of that change; the notifier adds
them to each `reg` watcher's view and sends one document. `registration_state` derives the
registration's state from the contacts a watcher knows. Documents are built with lxml; strings
that XML cannot carry are dropped and raw line breaks in text are written as `&#10;`.

The instance id of a binding (RFC 5626 `+sip.instance`) is written as
`<unknown-param name="+sip.instance">` (RFC 3680 §5.3 unknown-param), as registrars do.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

from presenced.pa.documents.xml import DEFAULT_MAX_SIZE, DocumentError, parse_xml, xml_chars
from presenced.pa.packages.base import EventPackage

CONTENT_TYPE = "application/reginfo+xml"
NS = "urn:ietf:params:xml:ns:reginfo"
XML_NS = "http://www.w3.org/XML/1998/namespace"

REGISTRATION_STATES = frozenset({"init", "active", "terminated"})
CONTACT_STATES = frozenset({"active", "terminated"})
ACTIVE_EVENTS = frozenset({"registered", "created", "refreshed", "shortened"})
TERMINATED_EVENTS = frozenset({"expired", "deactivated", "probation", "unregistered", "rejected"})
CONTACT_EVENTS = ACTIVE_EVENTS | TERMINATED_EVENTS
DOC_STATES = frozenset({"full", "partial"})

# `reason` values of diff_contacts: what caused the change.
REASON_REGISTER = "register"  # a REGISTER from the UA (Expires 0 included)
REASON_EXPIRY = "expiry"  # the binding's expiry time passed
REASON_DEACTIVATED = "deactivated"  # the registrar removed it; the UA should re-register now
REASON_PROBATION = "probation"  # removed; the UA should re-register later
REASON_REJECTED = "rejected"  # removed; the UA should not re-register
REASON_ADMIN = "admin"  # added or changed by the registrar itself (added: "created")
_REMOVED_EVENT = {
    REASON_REGISTER: "unregistered",
    REASON_EXPIRY: "expired",
    REASON_DEACTIVATED: "deactivated",
    REASON_PROBATION: "probation",
    REASON_REJECTED: "rejected",
    REASON_ADMIN: "deactivated",
}
INSTANCE_PARAM = "+sip.instance"

# lxml-stubs type nsmap keys as str; None (the default namespace) is what lxml wants here.
_NSMAP: dict[Any, str] = {None: NS}
XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_ROOT_TAG = f"{{{NS}}}reginfo"
_REG_TAG = f"{{{NS}}}registration"
_CONTACT_TAG = f"{{{NS}}}contact"
_ROOT_HEAD = f'<reginfo xmlns="{NS}" version="0"'.encode()
_INT_RE = re.compile(r"[0-9]{1,20}")
_Q_RE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")  # RFC 3261 §20.10 qvalue


@dataclass(frozen=True, slots=True)
class ContactInfo:
    """One <contact> of RFC 3680 §5.3 (with its event, §5.2)."""

    id: str
    uri: str
    state: str
    event: str
    expires: int | None
    q: float | None
    call_id: str | None
    cseq: int | None
    display_name: str | None = None
    instance: str | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """One <registration> (RFC 3680 §5.3): an AOR, a stable id, its state and its contacts."""

    aor: str
    id: str
    state: str
    contacts: tuple[ContactInfo, ...]


@dataclass(frozen=True, slots=True)
class BindingView:
    """What reginfo needs of a registrar binding (so this module does not import storage)."""

    uri: str
    expires_at: float  # wall-clock epoch seconds
    q: float | None = None
    call_id: str | None = None
    cseq: int | None = None
    instance: str | None = None
    display_name: str | None = None


_safe = xml_chars


def _hash(*parts: str) -> str:
    seed = "\x00".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(seed).hexdigest()[:16]


def contact_id(aor: str, contact_uri: str) -> str:
    """A stable id for a binding: the same for its whole life, different between bindings.

    Pass the binding's key as `contact_uri`: its Contact URI, or its `+sip.instance` when the
    registrar keys bindings by instance (RFC 5626), whose URI may change on refresh.
    """
    return "c" + _hash(aor, contact_uri)


def registration_id(aor: str) -> str:
    """A stable id for the <registration> of an AOR."""
    return "r" + _hash(aor)


def registration_state(contacts: Sequence[ContactInfo], *, ever_registered: bool = False) -> str:
    """The registration state for the contacts a watcher knows (RFC 3680 §5.2).

    active if any contact is active; terminated if there are contacts and none is active;
    with no contacts: init, or terminated when `ever_registered` (the watcher saw this AOR
    registered before and the terminated contacts were since dropped from its view).
    """
    if any(c.state == "active" for c in contacts):
        return "active"
    if contacts or ever_registered:
        return "terminated"
    return "init"


def _expires_in(expires_at: float, now: float) -> int:
    remaining = expires_at - now
    if math.isnan(remaining) or remaining <= 0:
        return 0
    return int(min(math.ceil(remaining), 2**31 - 1))


def _info(cid: str, b: BindingView, state: str, event: str, expires: int | None) -> ContactInfo:
    return ContactInfo(
        id=cid,
        uri=b.uri,
        state=state,
        event=event,
        expires=expires,
        q=b.q,
        call_id=b.call_id,
        cseq=b.cseq,
        display_name=b.display_name,
        instance=b.instance,
    )


def diff_contacts(
    before: Mapping[str, BindingView],
    after: Mapping[str, BindingView],
    now: float,
    reason: str,
) -> tuple[ContactInfo, ...]:
    """The contact events (RFC 3680 §5.2) of one change of an AOR's bindings.

    `before`/`after` map a contact id (`contact_id(aor, key)`) to the binding, before and after
    the change; `reason` is one of the REASON_* constants. New binding: registered (REGISTER) or
    created (any other reason). Kept and changed: refreshed when it expires no earlier than
    before, shortened when earlier. Gone: unregistered (REGISTER, i.e. Expires 0), expired
    (expiry), deactivated / probation / rejected (registrar). Unchanged bindings give nothing.
    Order: the changes in `after`'s order, then the removals in `before`'s order.
    """
    if reason not in _REMOVED_EVENT:
        raise ValueError(f"unknown reason {reason!r}")
    out: list[ContactInfo] = []
    for cid, new in after.items():
        old = before.get(cid)
        if old is None:
            event = "registered" if reason == REASON_REGISTER else "created"
        elif old == new:
            continue
        elif new.expires_at >= old.expires_at:
            event = "refreshed"
        else:
            event = "shortened"
        out.append(_info(cid, new, "active", event, _expires_in(new.expires_at, now)))
    for cid, old in before.items():
        if cid not in after:
            out.append(_info(cid, old, "terminated", _REMOVED_EVENT[reason], 0))
    return tuple(out)


# --- Encoding --------------------------------------------------------------------------------


def _format_q(q: float) -> str:
    if math.isnan(q):
        q = 0.0
    q = min(max(q, 0.0), 1.0) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{q:.3f}".rstrip("0").rstrip(".")


def _contact_element(parent: etree._Element, c: ContactInfo) -> None:
    if c.state not in CONTACT_STATES:
        raise ValueError(f"contact {c.id!r}: unknown state {c.state!r}")
    if c.event not in CONTACT_EVENTS:
        raise ValueError(f"contact {c.id!r}: unknown event {c.event!r}")
    elem = etree.SubElement(parent, _CONTACT_TAG)
    elem.set("id", _safe(c.id))
    elem.set("state", c.state)
    elem.set("event", c.event)
    if c.expires is not None:
        elem.set("expires", str(max(c.expires, 0)))
    if c.q is not None:
        elem.set("q", _format_q(c.q))
    if c.call_id is not None:
        elem.set("callid", _safe(c.call_id))
    if c.cseq is not None:
        elem.set("cseq", str(max(c.cseq, 0)))
    etree.SubElement(elem, f"{{{NS}}}uri").text = _safe(c.uri)
    if c.display_name is not None:
        etree.SubElement(elem, f"{{{NS}}}display-name").text = _safe(c.display_name)
    if c.instance is not None:
        param = etree.SubElement(elem, f"{{{NS}}}unknown-param", name=INSTANCE_PARAM)
        param.text = _safe(c.instance)


def encode_reginfo_template(
    registrations: Sequence[Registration], state: str = "full"
) -> tuple[bytes, bytes]:
    """(prefix, suffix) with `prefix + str(version).encode() + suffix` the watcher's document."""
    if state not in DOC_STATES:
        raise ValueError(f"reginfo state must be full or partial, not {state!r}")
    root = etree.Element(_ROOT_TAG, nsmap=_NSMAP)
    root.set("version", "0")  # placeholder, cut out below
    root.set("state", state)
    root.text = ""  # never the self-closed form, so the shape is always the same
    for reg in registrations:
        if reg.state not in REGISTRATION_STATES:
            raise ValueError(f"registration {reg.id!r}: unknown state {reg.state!r}")
        elem = etree.SubElement(root, _REG_TAG)
        elem.set("aor", _safe(reg.aor))
        elem.set("id", _safe(reg.id))
        elem.set("state", reg.state)
        for contact in reg.contacts:
            _contact_element(elem, contact)
    doc = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    if not doc.startswith(_ROOT_HEAD):
        raise AssertionError(f"unexpected lxml serialization {doc[:80]!r}")
    # Never pretty-printed: every LF left in `doc` is from a text field.
    return XML_DECL + doc[: len(_ROOT_HEAD) - 2], doc[len(_ROOT_HEAD) - 1 :].replace(
        b"\n", b"&#10;"
    )


def encode_reginfo(
    registrations: Sequence[Registration], version: int, state: str = "full"
) -> bytes:
    """The reginfo document for one watcher (RFC 3680 §5.3); `version` is that watcher's own
    counter, 0 for the first document and +1 for each next one (§5.4)."""
    if version < 0:
        raise ValueError("version must be non-negative")
    prefix, suffix = encode_reginfo_template(registrations, state)
    return prefix + str(version).encode() + suffix


# --- Parsing (watchers, tests) ---------------------------------------------------------------


def _int_attr(elem: etree._Element, name: str, what: str) -> int | None:
    value = elem.get(name)
    if value is None:
        return None
    if not _INT_RE.fullmatch(value):
        raise DocumentError(f"{what}: {name} {value[:30]!r} is not a non-negative integer")
    return int(value)


def _parse_contact(elem: etree._Element, where: str) -> ContactInfo:
    cid = elem.get("id")
    if not cid:
        raise DocumentError(f"{where}: contact without an id (RFC 3680 §5.3)")
    what = f"contact {cid[:40]!r}"
    state = elem.get("state")
    if state not in CONTACT_STATES:
        raise DocumentError(f"{what}: state must be active or terminated")
    event = elem.get("event")
    if event not in CONTACT_EVENTS:
        raise DocumentError(f"{what}: unknown event {str(event)[:30]!r} (RFC 3680 §5.2)")
    q_text = elem.get("q")
    if q_text is not None and not _Q_RE.fullmatch(q_text):
        raise DocumentError(f"{what}: q {q_text[:30]!r} is no q-value")
    uris = elem.findall(f"{{{NS}}}uri")
    if len(uris) != 1 or not (uris[0].text or "").strip():
        raise DocumentError(f"{what}: needs exactly one non-empty <uri> (RFC 3680 §5.3)")
    display = elem.find(f"{{{NS}}}display-name")
    instance = None
    for param in elem.findall(f"{{{NS}}}unknown-param"):
        if param.get("name") == INSTANCE_PARAM:
            instance = param.text or ""
    return ContactInfo(
        id=cid,
        uri=(uris[0].text or "").strip(),
        state=state,
        event=event,
        expires=_int_attr(elem, "expires", what),
        q=float(q_text) if q_text is not None else None,
        call_id=elem.get("callid"),
        cseq=_int_attr(elem, "cseq", what),
        display_name=display.text or "" if display is not None else None,
        instance=instance,
    )


def parse_reginfo(
    body: bytes, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[int, str, tuple[Registration, ...]]:
    """Validate a reginfo body (RFC 3680 §5.3) and return (version, state, registrations)."""
    root = parse_xml(body, max_size)
    if root.tag != _ROOT_TAG:
        raise DocumentError(f"root element is {root.tag!s:.80}, not {{{NS}}}reginfo")
    version = _int_attr(root, "version", "reginfo")
    if version is None:
        raise DocumentError("reginfo without a version (RFC 3680 §5.3)")
    state = root.get("state")
    if state not in DOC_STATES:
        raise DocumentError("reginfo state must be full or partial (RFC 3680 §5.3)")
    registrations: list[Registration] = []
    for elem in root.iter(_REG_TAG):
        aor, rid, rstate = elem.get("aor"), elem.get("id"), elem.get("state")
        if not aor or not rid:
            raise DocumentError("registration without aor or id (RFC 3680 §5.3)")
        if rstate not in REGISTRATION_STATES:
            raise DocumentError(f"registration {rid[:40]!r}: unknown state {str(rstate)[:30]!r}")
        contacts = tuple(
            _parse_contact(c, f"registration {rid[:40]!r}") for c in elem.iter(_CONTACT_TAG)
        )
        registrations.append(Registration(aor, rid, rstate, contacts))
    return version, state, tuple(registrations)


# --- the event package ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegState:
    """An AOR's registration as reg watchers see it: its active contacts with their latest
    event, then the contacts its latest change ended (state terminated), once."""

    contacts: tuple[ContactInfo, ...] = ()
    ever_registered: bool = False


def apply_changes(known: dict[str, ContactInfo], changes: Sequence[ContactInfo]) -> RegState:
    """One registrar change applied to `known` (contact id -> latest info of each active
    contact, updated in place): the state reg watchers get, with the contacts the change
    ended listed once after the active ones."""
    ended: list[ContactInfo] = []
    for info in changes:
        if info.state == "active":
            known[info.id] = info
        else:
            known.pop(info.id, None)
            ended.append(info)
    return RegState((*known.values(), *ended), ever_registered=True)


class RegPackage(EventPackage):
    """`Event: reg` (RFC 3680), straight from our own registrar: every REGISTER, un-REGISTER and
    binding expiry is one document (full state, the watcher's own version). A registration
    lists the user's devices, so with authentication only the AOR's own user may watch it."""

    name = "reg"
    formats = (CONTENT_TYPE,)
    owner_only = True
    versioned = True

    def empty(self, resource: str) -> RegState:
        return RegState()

    def compose(self, resource: str, parts: Mapping[str, object]) -> RegState:
        part = parts.get("registrar")
        return part if isinstance(part, RegState) else RegState()

    def template(self, resource: str, state: object, content_type: str,
                 now: float) -> tuple[bytes, bytes]:
        assert isinstance(state, RegState)
        reg = Registration(
            aor=f"sip:{resource}",
            id=registration_id(resource),
            state=registration_state(state.contacts, ever_registered=state.ever_registered),
            contacts=state.contacts,
        )
        return encode_reginfo_template([reg], "full")
