"""Presence rules: RFC 4745 parsing and combining (§7, §10), RFC 5025 sub-handling and
transformations (§3.2, §3.3), against the RFCs' example shapes (tests/vectors/rules/)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from presenced.pa.model import Note, Person, PresenceDoc, Tuple
from presenced.pa.packages.presence import closed_doc, presentity_tuple_id
from presenced.pa.policy.evaluate import Policy
from presenced.pa.policy.rules import RulesError, normalize_identity, parse_rules, simple_rules
from presenced.pa.policy.transform import apply_view

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "rules"
CP = 'xmlns:cp="urn:ietf:params:xml:ns:common-policy" xmlns:pr="urn:ietf:params:xml:ns:pres-rules"'
ALICE = "alice@example.com"


def ts(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


def doc_of(*rules: str) -> bytes:
    return f'<cp:ruleset {CP}>{"".join(rules)}</cp:ruleset>'.encode()


def rule(rid: str, conditions: str = "", handling: str | None = "allow",
         transformations: str = "") -> str:
    actions = f"<cp:actions><pr:sub-handling>{handling}</pr:sub-handling></cp:actions>" \
        if handling else ""
    return (f'<cp:rule id="{rid}"><cp:conditions>{conditions}</cp:conditions>{actions}'
            f"<cp:transformations>{transformations}</cp:transformations></cp:rule>")


def one(*ids: str) -> str:
    return "<cp:identity>" + "".join(f'<cp:one id="sip:{i}"/>' for i in ids) + "</cp:identity>"


def policy_with(body: bytes, default: str = "allow") -> Policy:
    p = Policy(default)  # type: ignore[arg-type]
    p.set_rules(ALICE, parse_rules(body))
    return p


# --- parsing -----------------------------------------------------------------------------------


def test_rfc4745_example_parses_with_identity_many_except_and_validity() -> None:
    rs = parse_rules((VECTORS / "rfc4745-example.xml").read_bytes())
    assert [r.id for r in rs.rules] == ["f3g44r1", "f3g44r2", "f3g44r3"]
    first = rs.rules[0].conditions
    assert first.identity is not None
    assert first.identity.ones == {"alice@example.com", "tel:+1-212-555-1234",
                                   "mailto:bob@example.net"}
    assert first.validity == ((ts("2003-12-24T17:00:00+01:00"), ts("2003-12-24T19:00:00+01:00")),)
    many = rs.rules[1].conditions.identity.many[0]  # type: ignore[union-attr]
    assert many.domain == "example.com" and many.except_ids == {"alice@example.com",
                                                                "bob@example.com"}
    assert rs.rules[2].conditions.identity.many[0].except_domains == {  # type: ignore[union-attr]
        "example.com", "example.org"}


def test_rfc5025_example_parses_its_transformations() -> None:
    rs = parse_rules((VECTORS / "rfc5025-example.xml").read_bytes())
    (r,) = rs.rules
    assert r.sub_handling == "allow"
    t = r.transformations
    assert t.services is not None and t.services.schemes == {"sip", "mailto"}
    assert t.persons is not None and t.persons.all
    assert t.devices is None
    assert t.attributes == {"provide-activities", "provide-user-input"}
    assert t.unknown == {("urn:vendor-specific:foo-namespace", "foo")}


@pytest.mark.parametrize(("body", "why"), [
    (b"<x/>", "ruleset"),
    (doc_of('<cp:rule><cp:conditions/></cp:rule>'), "id"),
    (doc_of(rule("a"), rule("a")), "duplicate"),
    (doc_of(rule("a", handling="maybe")), "sub-handling"),
    (doc_of(rule("a", "<cp:validity><cp:from>yesterday</cp:from><cp:until>x</cp:until>"
                      "</cp:validity>")), "dateTime"),
    (doc_of(rule("a", "<cp:identity><cp:one/></cp:identity>")), "id"),
    (doc_of(rule("a", '<cp:identity><cp:many><cp:except/></cp:many></cp:identity>')), "except"),
    (doc_of(rule("a", transformations="<pr:provide-note>yes</pr:provide-note>")), "true"),
    (b'<!DOCTYPE x [<!ENTITY e "e">]><x/>', "DOCTYPE"),
])
def test_invalid_documents_say_why(body: bytes, why: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(body)
    assert why in info.value.detail


@pytest.mark.parametrize(("uri", "key"), [
    ("sip:Bob@Example.COM", "Bob@example.com"), ("sips:bob@example.com;transport=tls",
                                                  "bob@example.com"),
    ("bob@example.com", "bob@example.com"), ("XMPP:juliet@capulet.lit", "xmpp:juliet@capulet.lit"),
    ("pres:bob@example.com", "bob@example.com"),
])
def test_identities_compare_as_aors(uri: str, key: str) -> None:
    assert normalize_identity(uri) == key


# --- conditions and combining --------------------------------------------------------------------


def test_unmatched_watcher_gets_the_default_policy() -> None:
    p = policy_with(doc_of(rule("a", one("bob@example.com"))), default="confirm")
    assert p.decide(ALICE, "carol@example.com", 0).handling == "confirm"
    assert p.decide(ALICE, "bob@example.com", 0).handling == "allow"
    assert Policy("block").decide(ALICE, "bob@example.com", 0).handling == "block"


def test_rfc4745_combining_the_most_permissive_sub_handling_wins() -> None:
    # RFC 4745 §10.2 / RFC 5025 §3.2.1: block < confirm < polite-block < allow.
    p = policy_with(doc_of(
        rule("d", '<cp:identity><cp:many domain="example.com"/></cp:identity>', "block"),
        rule("c", one("bob@example.com"), "confirm"),
        rule("p", one("carol@example.com"), "polite-block"),
        rule("a", one("carol@example.com", "dave@example.com"), "allow"),
    ), default="allow")
    assert p.decide(ALICE, "bob@example.com", 0).handling == "confirm"
    assert p.decide(ALICE, "carol@example.com", 0).handling == "allow"
    assert p.decide(ALICE, "eve@example.com", 0).handling == "block"
    assert p.decide(ALICE, "eve@example.org", 0).handling == "allow"  # no rule: the default


def test_matching_rules_without_sub_handling_mean_block() -> None:
    p = policy_with(doc_of(rule("a", one("bob@example.com"), handling=None)))
    assert p.decide(ALICE, "bob@example.com", 0).handling == "block"


def test_many_with_except_id_and_except_domain() -> None:
    rs = (VECTORS / "rfc4745-example.xml").read_bytes()
    p = policy_with(rs, default="allow")
    # r2: example.com except alice and bob -> confirm; r3: anyone outside example.com/.org
    assert p.decide(ALICE, "carol@example.com", 0).handling == "confirm"
    assert p.decide(ALICE, "bob@example.com", 0).handling == "allow"  # no rule matches
    assert p.decide(ALICE, "mallory@evil.example", 0).handling == "block"
    assert p.decide(ALICE, "dan@example.org", 0).handling == "allow"


def test_validity_bounds_a_rule_in_time() -> None:
    rs = (VECTORS / "rfc4745-example.xml").read_bytes()
    p = policy_with(rs, default="block")
    inside = ts("2003-12-24T18:00:00+01:00")
    assert p.decide(ALICE, "sip:alice@example.com", inside).handling == "allow"
    assert p.decide(ALICE, "alice@example.com", ts("2003-12-24T19:00:00+01:00")).handling == "block"
    assert p.decide(ALICE, "tel:+1-212-555-1234", inside).handling == "allow"


def test_sphere_and_unknown_conditions_do_not_match_unless_known() -> None:
    p = policy_with(doc_of(
        rule("s", one("bob@example.com") + '<cp:sphere value="work home"/>', "allow"),
        rule("u", one("carol@example.com") + '<x:geo xmlns:x="urn:x"/>', "allow"),
    ), default="block")
    assert p.decide(ALICE, "bob@example.com", 0).handling == "block"
    assert p.decide(ALICE, "bob@example.com", 0, sphere="work").handling == "allow"
    assert p.decide(ALICE, "carol@example.com", 0).handling == "block"


def test_a_rule_without_identity_matches_everyone() -> None:
    p = policy_with(doc_of(rule("all", "", "polite-block")), default="allow")
    assert p.decide(ALICE, "anyone@anywhere.example", 0).handling == "polite-block"


def test_simple_rules_round_trip_through_the_parser() -> None:
    body = simple_rules([("r1", "allow", ["bob@example.com", "*@example.org"]),
                         ("r2", "block", ["eve@example.com"])])
    p = policy_with(body, default="confirm")
    assert p.decide(ALICE, "bob@example.com", 0).handling == "allow"
    assert p.decide(ALICE, "x@example.org", 0).handling == "allow"
    assert p.decide(ALICE, "eve@example.com", 0).handling == "block"
    assert p.decide(ALICE, "y@example.net", 0).handling == "confirm"


# --- transformations (RFC 5025 §3.3) ----------------------------------------------------------------

REG_ID = presentity_tuple_id(ALICE)
DOC = PresenceDoc(
    f"pres:{ALICE}",
    (Tuple(REG_ID, "open", "sip:alice@192.0.2.9:5070", notes=(Note("reg"),)),
     Tuple("pub1", "open", "sip:alice@example.com", notes=(Note("phone"),),
           activities=("busy",)),
     Tuple("pub2", "closed", "mailto:alice@example.com")),
    (Person("p1", ("on-the-phone",), ("happy",), (Note("person note"),)),),
    (Note("presentity note"),),
)


def view_for(transformations: str, default: str = "allow") -> PresenceDoc:
    p = policy_with(doc_of(rule("a", one("bob@example.com"), "allow", transformations)), default)
    d = p.decide(ALICE, "bob@example.com", 0)
    assert d.view is not None
    return apply_view(DOC, d.view, ALICE)


def test_absent_permissions_provide_nothing() -> None:
    assert view_for("") == PresenceDoc(DOC.entity)


def test_provide_services_by_scheme_occurrence_and_all() -> None:
    by_scheme = view_for("<pr:provide-services><pr:service-uri-scheme>mailto"
                         "</pr:service-uri-scheme></pr:provide-services>")
    assert [t.id for t in by_scheme.tuples] == ["pub2"] and not by_scheme.persons
    by_id = view_for("<pr:provide-services><pr:occurrence-id>pub1</pr:occurrence-id>"
                     "</pr:provide-services>")
    assert [t.id for t in by_id.tuples] == ["pub1"]
    assert by_id.tuples[0].notes == () and by_id.tuples[0].activities == ()  # no attributes
    every = view_for("<pr:provide-services><pr:all-services/></pr:provide-services>")
    assert [t.id for t in every.tuples] == [REG_ID, "pub1", "pub2"]
    # Device privacy: the registrar's contact is the device's address; no provide-devices.
    assert every.tuples[0].contact == f"sip:{ALICE}" and every.tuples[1].contact == "sip:alice@example.com"


def test_provide_devices_grants_the_registered_contact() -> None:
    v = view_for("<pr:provide-services><pr:all-services/></pr:provide-services>"
                 "<pr:provide-devices><pr:all-devices/></pr:provide-devices>")
    assert v.tuples[0].contact == "sip:alice@192.0.2.9:5070"


def test_per_attribute_permissions() -> None:
    v = view_for("<pr:provide-services><pr:all-services/></pr:provide-services>"
                 "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
                 "<pr:provide-activities>true</pr:provide-activities>"
                 "<pr:provide-mood>false</pr:provide-mood>")
    assert v.tuples[1].activities == ("busy",) and v.tuples[1].notes == ()
    assert v.persons == (Person("p1", ("on-the-phone",), (), ()),)
    assert v.notes == ()
    full = view_for("<pr:provide-services><pr:all-services/></pr:provide-services>"
                    "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
                    "<pr:provide-all-attributes/>")
    assert full.persons == DOC.persons and full.notes == DOC.notes
    assert full.tuples[1] == DOC.tuples[1]


def test_transformations_of_matching_rules_are_united() -> None:
    p = policy_with(doc_of(
        rule("a", one("bob@example.com"), "allow",
             "<pr:provide-services><pr:occurrence-id>pub1</pr:occurrence-id></pr:provide-services>"),
        rule("b", '<cp:identity><cp:many domain="example.com"/></cp:identity>', "confirm",
             "<pr:provide-services><pr:occurrence-id>pub2</pr:occurrence-id></pr:provide-services>"
             "<pr:provide-note>true</pr:provide-note>"),
    ))
    d = p.decide(ALICE, "bob@example.com", 0)
    assert d.handling == "allow" and d.view is not None
    v = apply_view(DOC, d.view, ALICE)
    assert [t.id for t in v.tuples] == ["pub1", "pub2"] and v.notes == DOC.notes


def test_views_are_interned_so_bodies_cache_per_transformation() -> None:
    p = policy_with(doc_of(
        rule("a", one("bob@example.com", "carol@example.com"), "allow",
             "<pr:provide-services><pr:all-services/></pr:provide-services>"),
        rule("b", one("dave@example.com"), "allow",
             "<pr:provide-services><pr:all-services/></pr:provide-services>")))
    views = {id(p.decide(ALICE, w, 0).view) for w in ("bob@example.com", "carol@example.com",
                                                       "dave@example.com")}
    assert len(views) == 1


def test_polite_block_and_the_default_views() -> None:
    p = Policy("polite-block")
    d = p.decide(ALICE, "bob@example.com", 0)
    assert d.view is not None and apply_view(DOC, d.view, ALICE) == closed_doc(ALICE)
    full = Policy("allow").decide(ALICE, "bob@example.com", 0).view
    assert full is not None  # everything but the registered contact
    shown = apply_view(DOC, full, ALICE)
    assert shown.tuples[0].contact == f"sip:{ALICE}" and shown.tuples[1:] == DOC.tuples[1:]
    assert shown.persons == DOC.persons
    assert Policy("allow", expose_contacts=True).decide(ALICE, "bob@example.com", 0).view is None
