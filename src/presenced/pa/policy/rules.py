"""Presence rules: an RFC 4745 common-policy ruleset with the RFC 5025 presence extensions,
read through the one hardened XML parser into frozen types.

    <cp:ruleset xmlns:cp="urn:ietf:params:xml:ns:common-policy"
                xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
      <cp:rule id="a">
        <cp:conditions>                      all present conditions must hold (RFC 4745 §7)
          <cp:identity>                      any <one> or <many> matches (§7.1)
            <cp:one id="sip:bob@example.com"/>
            <cp:many domain="example.com"><cp:except id="sip:eve@example.com"/></cp:many>
          </cp:identity>
          <cp:sphere value="work"/>           (§7.2)
          <cp:validity><cp:from>..</cp:from><cp:until>..</cp:until></cp:validity>  (§7.3)
        </cp:conditions>
        <cp:actions><pr:sub-handling>allow</pr:sub-handling></cp:actions>     RFC 5025 §3.2.1
        <cp:transformations>                 RFC 5025 §3.3
          <pr:provide-services><pr:all-services/></pr:provide-services>
          <pr:provide-persons>..</pr:provide-persons> <pr:provide-devices>..</pr:provide-devices>
          <pr:provide-activities>true</pr:provide-activities> ... <pr:provide-all-attributes/>
        </cp:transformations>
      </cp:rule>
    </cp:ruleset>

Strictness: anything the schemas forbid and that would change a decision is an error
(`RulesError`, the XCAP server's schema-validation-error): another root, a rule without a
unique id, an unknown sub-handling value, a malformed date, a <one> without id, an <except>
with neither or both of id and domain. A condition element this server does not understand
makes its rule never match (RFC 4745 §7: a rule is only applied when all its conditions are
understood and true); unknown actions and transformations are ignored (§10.2: they grant
nothing).

Identities are compared as AORs: "sip:Bob@Example.COM" is "Bob@example.com" (scheme dropped
for sip, sips and pres, host lower-cased); other schemes (xmpp:, tel:) stay as URIs with the
scheme lower-cased, so an XMPP watcher "xmpp:juliet@capulet.lit" matches <one
id="xmpp:juliet@capulet.lit"/>.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from lxml import etree

from presenced.pa.documents.xml import DocumentError, parse_xml

CP_NS = "urn:ietf:params:xml:ns:common-policy"
PR_NS = "urn:ietf:params:xml:ns:pres-rules"

SubHandling = Literal["block", "confirm", "polite-block", "allow"]
# RFC 5025 §3.2.1: the values are ordered; combining keeps the largest (RFC 4745 §10.2).
SUB_HANDLING_VALUE: dict[str, int] = {"block": 0, "confirm": 10, "polite-block": 20, "allow": 30}

# RFC 5025 §3.3.7 - §3.3.19: the per-attribute booleans, by element name.
ATTRIBUTES = frozenset({
    "provide-activities", "provide-class", "provide-deviceID", "provide-mood",
    "provide-place-is", "provide-place-type", "provide-privacy", "provide-relationship",
    "provide-status-icon", "provide-sphere", "provide-time-offset", "provide-user-input",
    "provide-note",
})

MAX_RULES = 1000  # per document; more is refused (a document is also capped in bytes)


class RulesError(Exception):
    """A rules document that is not acceptable; `detail` says why (for the XCAP 409 body)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def normalize_identity(uri: str) -> str:
    """The form identities are compared in (module docstring)."""
    uri = uri.strip()
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep or "@" in scheme:  # no scheme: already an AOR ("bob@example.com")
        scheme, rest = "", uri
    if scheme in ("", "sip", "sips", "pres"):
        rest = rest.split(";", 1)[0].split("?", 1)[0]
        user, at, host = rest.rpartition("@")
        return f"{user}@{host.lower()}" if at else rest.lower()
    return f"{scheme}:{rest}"


def domain_of(identity: str) -> str:
    return identity.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Many:
    """<many> (RFC 4745 §7.1.2): every identity (of `domain`, when given) but the exceptions."""

    domain: str | None = None
    except_ids: frozenset[str] = frozenset()
    except_domains: frozenset[str] = frozenset()

    def matches(self, identity: str) -> bool:
        dom = domain_of(identity)
        if self.domain is not None and dom != self.domain:
            return False
        return identity not in self.except_ids and dom not in self.except_domains


@dataclass(frozen=True, slots=True)
class Identity:
    ones: frozenset[str] = frozenset()
    many: tuple[Many, ...] = ()

    def matches(self, identity: str) -> bool:
        return identity in self.ones or any(m.matches(identity) for m in self.many)


@dataclass(frozen=True, slots=True)
class Conditions:
    identity: Identity | None = None  # None: any watcher
    spheres: frozenset[str] | None = None  # None: any sphere
    validity: tuple[tuple[float, float], ...] | None = None  # [from, until) intervals
    understood: bool = True  # False: an unknown condition element; the rule never matches

    def hold(self, identity: str, now: float, sphere: str | None) -> bool:
        if not self.understood:
            return False
        if self.identity is not None and not self.identity.matches(identity):
            return False
        if self.validity is not None and not any(a <= now < b for a, b in self.validity):
            return False
        # RFC 4745 §7.2: the rule maker's current sphere must be one of the values; presenced
        # knows no sphere unless told, so such a rule does not match then.
        return self.spheres is None or (sphere is not None and sphere in self.spheres)


@dataclass(frozen=True, slots=True)
class Provide:
    """One of provide-services / provide-persons / provide-devices (RFC 5025 §3.3.2-§3.3.4)."""

    all: bool = False
    uris: frozenset[str] = frozenset()  # service-uri
    schemes: frozenset[str] = frozenset()  # service-uri-scheme
    occurrences: frozenset[str] = frozenset()  # occurrence-id
    classes: frozenset[str] = frozenset()  # class
    device_ids: frozenset[str] = frozenset()  # deviceID


@dataclass(frozen=True, slots=True)
class Transformations:
    services: Provide | None = None  # None: none provided (RFC 5025 §3.3: absent = nothing)
    persons: Provide | None = None
    devices: Provide | None = None
    attributes: frozenset[str] = frozenset()  # the provide-* booleans that are true
    all_attributes: bool = False
    # provide-unknown-attribute (§3.3.20): (namespace, name) pairs; presenced's model holds
    # no unknown elements, so they are kept for the XCAP view only.
    unknown: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    conditions: Conditions
    sub_handling: SubHandling | None  # None: the rule has no sub-handling action
    transformations: Transformations


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()


def _cp(name: str) -> str:
    return f"{{{CP_NS}}}{name}"


def _pr(name: str) -> str:
    return f"{{{PR_NS}}}{name}"


def _local(el: etree._Element) -> tuple[str, str]:
    q = etree.QName(el)
    return q.namespace or "", q.localname


def _elements(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


def _datetime(text: str | None, where: str) -> float:
    value = (text or "").strip()
    try:
        d = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RulesError(f"{where}: {value!r} is not an xs:dateTime") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def _identity(el: etree._Element, rule_id: str) -> Identity:
    ones: set[str] = set()
    many: list[Many] = []
    for child in _elements(el):
        ns, name = _local(child)
        if ns != CP_NS:
            continue  # extensions of identity (RFC 4745 §7.1) we do not know match nothing
        if name == "one":
            value = child.get("id")
            if not value:
                raise RulesError(f"rule {rule_id!r}: <one> needs an id")
            ones.add(normalize_identity(value))
        elif name == "many":
            domain = child.get("domain")
            ids: set[str] = set()
            domains: set[str] = set()
            for ex in _elements(child):
                if _local(ex) != (CP_NS, "except"):
                    continue
                i, d = ex.get("id"), ex.get("domain")
                if (i is None) == (d is None):
                    raise RulesError(f"rule {rule_id!r}: <except> needs either id or domain")
                if i is not None:
                    ids.add(normalize_identity(i))
                if d is not None:
                    domains.add(d.strip().lower())
            many.append(Many(domain.strip().lower() if domain is not None else None,
                             frozenset(ids), frozenset(domains)))
        else:
            raise RulesError(f"rule {rule_id!r}: unexpected <{name}> in <identity>")
    return Identity(frozenset(ones), tuple(many))


def _conditions(el: etree._Element | None, rule_id: str) -> Conditions:
    if el is None:
        return Conditions()
    identities: list[Identity] = []
    spheres: set[str] | None = None
    validity: list[tuple[float, float]] | None = None
    understood = True
    for child in _elements(el):
        ns, name = _local(child)
        if ns == CP_NS and name == "identity":
            identities.append(_identity(child, rule_id))
        elif ns == CP_NS and name == "sphere":
            values = (child.get("value") or "").split()
            spheres = (spheres or set()) | set(values)
        elif ns == CP_NS and name == "validity":
            validity = validity or []
            items = _elements(child)
            if len(items) % 2:
                raise RulesError(f"rule {rule_id!r}: <validity> needs <from>/<until> pairs")
            for a, b in zip(items[::2], items[1::2], strict=True):
                if _local(a) != (CP_NS, "from") or _local(b) != (CP_NS, "until"):
                    raise RulesError(f"rule {rule_id!r}: <validity> needs <from>/<until> pairs")
                start = _datetime(a.text, f"rule {rule_id!r} <from>")
                end = _datetime(b.text, f"rule {rule_id!r} <until>")
                validity.append((start, end))
        else:
            understood = False  # RFC 4745 §7: a condition we do not understand is false
    identity = None
    if identities:
        identity = Identity(frozenset().union(*(i.ones for i in identities)),
                            tuple(m for i in identities for m in i.many))
    return Conditions(identity, frozenset(spheres) if spheres is not None else None,
                      tuple(validity) if validity is not None else None, understood)


def _sub_handling(el: etree._Element | None, rule_id: str) -> SubHandling | None:
    if el is None:
        return None
    found: SubHandling | None = None
    for child in _elements(el):
        if _local(child) != (PR_NS, "sub-handling"):
            continue  # other actions grant nothing here (RFC 4745 §10.2)
        value = (child.text or "").strip()
        if value not in SUB_HANDLING_VALUE:
            raise RulesError(f"rule {rule_id!r}: unknown sub-handling {value!r}")
        found = value  # type: ignore[assignment]
    return found


_PROVIDE_ALL = {"provide-services": "all-services", "provide-persons": "all-persons",
                "provide-devices": "all-devices"}


def _provide(el: etree._Element, kind: str, rule_id: str) -> Provide:
    all_ = False
    sets: dict[str, set[str]] = {"service-uri": set(), "service-uri-scheme": set(),
                                 "occurrence-id": set(), "class": set(), "deviceID": set()}
    for child in _elements(el):
        ns, name = _local(child)
        if ns != PR_NS:
            continue
        if name == _PROVIDE_ALL[kind]:
            all_ = True
        elif name in sets:
            sets[name].add((child.text or "").strip())
        else:
            raise RulesError(f"rule {rule_id!r}: unexpected <{name}> in <{kind}>")
    return Provide(all_, frozenset(sets["service-uri"]),
                   frozenset(s.lower() for s in sets["service-uri-scheme"]),
                   frozenset(sets["occurrence-id"]), frozenset(sets["class"]),
                   frozenset(sets["deviceID"]))


def _boolean(el: etree._Element, rule_id: str) -> bool:
    value = (el.text or "").strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise RulesError(f"rule {rule_id!r}: <{_local(el)[1]}> must be true or false")


def _transformations(el: etree._Element | None, rule_id: str) -> Transformations:
    if el is None:
        return Transformations()
    provides: dict[str, Provide] = {}
    attributes: set[str] = set()
    unknown: set[tuple[str, str]] = set()
    all_attributes = False
    for child in _elements(el):
        ns, name = _local(child)
        if ns != PR_NS:
            continue  # transformations of other extensions grant nothing
        if name in _PROVIDE_ALL:
            provides[name] = _provide(child, name, rule_id)
        elif name == "provide-user-input":
            # RFC 5025 §3.3.19: false | bare | thresholds | full, not a boolean
            value = (child.text or "").strip()
            if value not in ("false", "bare", "thresholds", "full"):
                raise RulesError(f"rule {rule_id!r}: unknown provide-user-input {value!r}")
            if value != "false":
                attributes.add(name)
        elif name in ATTRIBUTES:
            if _boolean(child, rule_id):
                attributes.add(name)
        elif name == "provide-all-attributes":
            all_attributes = True
        elif name == "provide-unknown-attribute":
            ans, aname = child.get("ns"), child.get("name")
            if not ans or not aname:
                raise RulesError(f"rule {rule_id!r}: <provide-unknown-attribute> needs ns and name")
            if _boolean(child, rule_id):
                unknown.add((ans, aname))
    return Transformations(provides.get("provide-services"), provides.get("provide-persons"),
                           provides.get("provide-devices"), frozenset(attributes),
                           all_attributes, frozenset(unknown))


def parse_rules(body: bytes, max_size: int = 256 * 1024) -> RuleSet:
    """Read an `application/auth-policy+xml` document; raise `RulesError` if unacceptable."""
    try:
        root = parse_xml(body, max_size)
    except DocumentError as exc:
        raise RulesError(exc.reason) from None
    if root.tag != _cp("ruleset"):
        raise RulesError("root element is not a common-policy <ruleset>")
    rules: list[Rule] = []
    seen: set[str] = set()
    for el in _elements(root):
        if el.tag != _cp("rule"):
            raise RulesError(f"unexpected <{_local(el)[1]}> in <ruleset>")
        rule_id = el.get("id")
        if not rule_id:
            raise RulesError("a <rule> needs an id")
        if rule_id in seen:
            raise RulesError(f"duplicate rule id {rule_id!r}")
        seen.add(rule_id)
        if len(rules) >= MAX_RULES:
            raise RulesError(f"more than {MAX_RULES} rules")
        parts: dict[str, etree._Element] = {}
        for child in _elements(el):
            ns, name = _local(child)
            if ns != CP_NS or name not in ("conditions", "actions", "transformations"):
                raise RulesError(f"rule {rule_id!r}: unexpected <{name}>")
            if name in parts:
                raise RulesError(f"rule {rule_id!r}: more than one <{name}>")
            parts[name] = child
        rules.append(Rule(rule_id, _conditions(parts.get("conditions"), rule_id),
                          _sub_handling(parts.get("actions"), rule_id),
                          _transformations(parts.get("transformations"), rule_id)))
    return RuleSet(tuple(rules))


# --- writing (the operator tool builds documents; XCAP stores the client's own bytes) ---------


def simple_rules(entries: list[tuple[str, SubHandling, list[str]]]) -> bytes:
    """A ruleset with one rule per (rule id, sub-handling, identities): allow rules provide
    everything (services, persons, devices, all attributes); an identity "*" is every
    watcher, "*@domain" every watcher of that domain."""
    from presenced.pa.documents.xml import escape_attr

    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<cp:ruleset xmlns:cp="{CP_NS}" '
           f'xmlns:pr="{PR_NS}">\n']
    for rule_id, handling, identities in entries:
        out.append(f'<cp:rule id="{escape_attr(rule_id)}"><cp:conditions>')
        if "*" not in identities:
            out.append("<cp:identity>")
            for ident in identities:
                if ident.startswith("*@"):
                    out.append(f'<cp:many domain="{escape_attr(ident[2:])}"/>')
                else:
                    uri = ident if ":" in ident else f"sip:{ident}"
                    out.append(f'<cp:one id="{escape_attr(uri)}"/>')
            out.append("</cp:identity>")
        out.append(f"</cp:conditions><cp:actions><pr:sub-handling>{handling}"
                   "</pr:sub-handling></cp:actions>")
        if handling == "allow":
            out.append("<cp:transformations><pr:provide-services><pr:all-services/>"
                       "</pr:provide-services><pr:provide-persons><pr:all-persons/>"
                       "</pr:provide-persons><pr:provide-devices><pr:all-devices/>"
                       "</pr:provide-devices><pr:provide-all-attributes/>"
                       "</cp:transformations>")
        out.append("</cp:rule>\n")
    out.append("</cp:ruleset>\n")
    return "".join(out).encode("utf-8")
