"""Which rules apply to a watcher, and what they grant together (RFC 4745 §10, RFC 5025 §3).

`Policy.decide(presentity, watcher, now)` gives a `Decision`: the sub-handling and the `View`
(what of the document this watcher sees). Combining, over every rule whose conditions hold:

- sub-handling: the largest value (block 0 < confirm 10 < polite-block 20 < allow 30, RFC 5025
  §3.2.1), so the most permissive rule wins; matching rules that have no sub-handling add
  none, and when none of them has one the result is block (RFC 4745 §10.2: an absent
  permission is the most restrictive);
- provide-services / -persons / -devices: the union of what each grants (any all-* is all);
- the provide-* booleans: true when any matching rule says true (RFC 4745 §10.2).

No rule matches (or the presentity has no rules): `default` ([pa] default_policy), with the
full view. Views are interned: equal views are the same object, so the notifier keys its body
cache by view identity and encodes each distinct transformation once per state.

Speed: a ruleset is indexed when set: rules whose identity is only <one> elements are found
through a dict by watcher; the others (many, no identity) are scanned. So 100 <one> rules cost
one dict lookup per SUBSCRIBE (bench/authz.py).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from presenced.pa.policy.rules import (
    ATTRIBUTES,
    SUB_HANDLING_VALUE,
    Provide,
    Rule,
    RuleSet,
    SubHandling,
    normalize_identity,
)

DEFAULT_POLICIES: tuple[str, ...] = ("allow", "confirm", "polite-block", "block")
MAX_COMBINED = 10_000  # cached combinations of matched rules


@dataclass(frozen=True, slots=True, eq=False)
class View:
    """What one watcher may see of a presence document (interned: compare with `is`)."""

    offline: bool = False  # polite-block: always the closed document (RFC 5025 §3.2.1)
    services: Provide | None = None
    persons: Provide | None = None
    devices: Provide | None = None
    attributes: frozenset[str] = frozenset()
    all_attributes: bool = False
    # The registrar's tuple carries the registered contact (the device's IP:port): shown only
    # when provide-devices grants a device, or the operator opts in ([pa] expose_contacts).
    contacts: bool = False

    def key(self) -> tuple[object, ...]:
        return (self.offline, self.services, self.persons, self.devices, self.attributes,
                self.all_attributes, self.contacts)


@dataclass(frozen=True, slots=True)
class Decision:
    handling: SubHandling
    view: View | None  # None: the untransformed document (nothing to hide)


_ALL = Provide(all=True)


def _merge(a: Provide | None, b: Provide | None) -> Provide | None:
    if a is None:
        return b
    if b is None:
        return a
    if a.all or b.all:
        return _ALL
    return Provide(False, a.uris | b.uris, a.schemes | b.schemes, a.occurrences | b.occurrences,
                   a.classes | b.classes, a.device_ids | b.device_ids)


class _Indexed:
    __slots__ = ("boundaries", "by_one", "rules", "scanned")

    def __init__(self, ruleset: RuleSet) -> None:
        self.rules = ruleset.rules
        self.by_one: dict[str, list[Rule]] = {}
        scanned: list[Rule] = []
        # Every instant a rule's <validity> starts or ends (RFC 4745 §7.3), sorted.
        self.boundaries = tuple(sorted({t for rule in ruleset.rules
                                        for interval in rule.conditions.validity or ()
                                        for t in interval}))
        for rule in ruleset.rules:
            ident = rule.conditions.identity
            if ident is not None and not ident.many and rule.conditions.understood:
                for one in ident.ones:
                    self.by_one.setdefault(one, []).append(rule)
            else:
                scanned.append(rule)
        self.scanned = tuple(scanned)


class Policy:
    """The presentities' rulesets and the default policy; pure (time comes in as `now`)."""

    def __init__(self, default: SubHandling = "allow", expose_contacts: bool = False) -> None:
        if default not in DEFAULT_POLICIES:
            raise ValueError(f"unknown default policy {default!r}")
        self.default: SubHandling = default
        self.expose_contacts = expose_contacts
        self._rules: dict[str, _Indexed] = {}
        self._views: dict[tuple[object, ...], View] = {}
        # matched rules (by identity) -> their combination: most watchers match the same few
        # rule sets, and combining costs more than the lookup. Cleared when any rules change.
        self._combined: dict[tuple[int, ...], Decision] = {}
        # What "no rule matched" shows: everything, the registrar's contact only if opted in.
        self.full_view: View | None = None if expose_contacts else self.intern(View(
            services=_ALL, persons=_ALL, devices=_ALL, all_attributes=True, contacts=False))
        self.offline_view = self.intern(View(offline=True))
        self._default = Decision(default, self.offline_view if default == "polite-block"
                                 else self.full_view)

    def intern(self, view: View) -> View:
        return self._views.setdefault(view.key(), view)

    def set_rules(self, presentity: str, ruleset: RuleSet | None) -> None:
        self._combined.clear()  # keyed by rule identity: a replaced rule's id may be reused
        if ruleset is None:
            self._rules.pop(presentity, None)
        else:
            self._rules[presentity] = _Indexed(ruleset)

    def has_rules(self, presentity: str) -> bool:
        return presentity in self._rules

    def next_boundary(self, presentity: str, now: float) -> float | None:
        """The first instant after `now` at which a validity period of the presentity's rules
        starts or ends (RFC 4745 §7.3), when the decisions may change; None when none does."""
        indexed = self._rules.get(presentity)
        if indexed is None or not indexed.boundaries:
            return None
        b = indexed.boundaries
        i = bisect_right(b, now)
        return b[i] if i < len(b) else None

    def with_validity(self) -> list[str]:
        """The presentities whose rules have validity periods."""
        return [p for p, indexed in self._rules.items() if indexed.boundaries]

    @property
    def active(self) -> bool:
        """Whether any watcher can be refused or see less than everything."""
        return bool(self._rules) or self._default.view is not None or self.default != "allow"

    def decide(self, presentity: str, watcher: str, now: float,
               sphere: str | None = None) -> Decision:
        """`watcher`: the authenticated AOR, else the From AOR ("bob@example.com"), or a
        URI of another scheme ("xmpp:juliet@capulet.lit")."""
        indexed = self._rules.get(presentity)
        if indexed is None:
            return self._default
        who = normalize_identity(watcher)
        matched = [r for r in indexed.by_one.get(who, ()) if r.conditions.hold(who, now, sphere)]
        matched.extend(r for r in indexed.scanned if r.conditions.hold(who, now, sphere))
        if not matched:
            return self._default
        key = tuple(map(id, matched))
        decision = self._combined.get(key)
        if decision is None:
            if len(self._combined) >= MAX_COMBINED:
                self._combined.clear()
            decision = self._combined[key] = self.combine(matched)
        return decision

    def combine(self, rules: list[Rule]) -> Decision:
        """RFC 4745 §10 over the rules that matched (module docstring)."""
        value = -1
        services = persons = devices = None
        attributes: set[str] = set()
        all_attributes = False
        for rule in rules:
            if rule.sub_handling is not None:
                value = max(value, SUB_HANDLING_VALUE[rule.sub_handling])
            t = rule.transformations
            services = _merge(services, t.services)
            persons = _merge(persons, t.persons)
            devices = _merge(devices, t.devices)
            attributes |= t.attributes
            all_attributes = all_attributes or t.all_attributes
        handling: SubHandling = "block"
        for name, v in SUB_HANDLING_VALUE.items():
            if v == value:
                handling = name  # type: ignore[assignment]
        if handling == "polite-block":
            return Decision(handling, self.offline_view)
        if all_attributes:
            attributes = set(ATTRIBUTES)
        view = self.intern(View(False, services, persons, devices, frozenset(attributes),
                                all_attributes, self.expose_contacts or devices is not None))
        return Decision(handling, view)
