"""The application usages served (RFC 4825 §5): what each AUID's documents are.

- `pres-rules` (RFC 5025 §9): one document per user, `users/<xui>/index`, of MIME type
  application/auth-policy+xml, a common-policy ruleset (RFC 4745) with presence extensions.
  Node selectors' unprefixed names are in the pres-rules namespace (RFC 5025 §9.4), so the
  rules themselves, in the common-policy namespace, need a prefix: `cp:ruleset/cp:rule`.
  Whether a document is valid is the rules store's to say (RulesInvalid); checked here are the
  root element and the uniqueness of rule ids (RFC 4745 §7: the id identifies a rule), which has
  its own error condition (RFC 4825 §11.2 uniqueness-failure).
- `xcap-caps` (RFC 4825 §12): one read-only global document, `global/index`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from presenced.xcap.errors import ERROR_NS, XcapConflict

__all__ = ["AUIDS", "CAPS_NS", "CP_NS", "PRES_RULES", "PR_NS", "XCAP_CAPS", "Auid"]

CP_NS = "urn:ietf:params:xml:ns:common-policy"
PR_NS = "urn:ietf:params:xml:ns:pres-rules"
CAPS_NS = "urn:ietf:params:xml:ns:xcap-caps"


@dataclass(frozen=True, slots=True)
class Auid:
    """An application usage. `prefixes`: well-known prefixes a node selector may use without
    binding them (leniency); `check`: the usage's own constraints on a whole document (raises
    XcapConflict); `users`: documents live in the users tree (else the global tree)."""

    name: str
    mime: str
    default_ns: str
    namespaces: tuple[str, ...]
    document: str = "index"
    users: bool = True
    writable: bool = True
    prefixes: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[etree._Element], None] | None = None


def _check_pres_rules(root: etree._Element) -> None:
    if root.tag != f"{{{CP_NS}}}ruleset":
        raise XcapConflict("schema-validation-error",
                           "the root element must be ruleset in the common-policy namespace")
    seen: set[str] = set()
    for rule in root.iterchildren(f"{{{CP_NS}}}rule"):
        rid = rule.get("id")
        if rid is None:
            raise XcapConflict("schema-validation-error", "a rule without an id")
        if rid in seen:
            alt = next(f"{rid}-{n}" for n in range(2, len(seen) + 3) if f"{rid}-{n}" not in seen)
            raise XcapConflict("uniqueness-failure", f"two rules with id {rid!r}",
                               exists="cp:ruleset/cp:rule/@id", alt_values=(alt,))
        seen.add(rid)


PRES_RULES = Auid(
    name="pres-rules",
    mime="application/auth-policy+xml",
    default_ns=PR_NS,
    namespaces=(PR_NS, CP_NS),
    prefixes={"cp": CP_NS, "pr": PR_NS},
    check=_check_pres_rules,
)

XCAP_CAPS = Auid(
    name="xcap-caps",
    mime="application/xcap-caps+xml",
    default_ns=CAPS_NS,
    namespaces=(CAPS_NS, ERROR_NS),
    users=False,
    writable=False,
)

AUIDS: dict[str, Auid] = {a.name: a for a in (XCAP_CAPS, PRES_RULES)}
