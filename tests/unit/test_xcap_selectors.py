"""XCAP node selectors and the §8.2 edits, against RFC 4825's own examples (§6.3, §6.4)
and a pres-rules document (RFC 5025)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from presenced.pa.documents.xml import parse_xml
from presenced.xcap.auids import CP_NS, PR_NS, PRES_RULES
from presenced.xcap.errors import ERROR_NS, XcapConflict, XcapError
from presenced.xcap.selectors import (
    ATT_MIME,
    EL_MIME,
    NS_MIME,
    delete_node,
    get_node,
    parse_attribute_value,
    parse_element_body,
    parse_node_selector,
    put_attribute,
    put_element,
    select_elements,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "xcap"
WI_NS = "urn:ietf:params:xml:ns:watcherinfo"
DOC = "/xcap-root/pres-rules/users/sip:alice@example.com/index"


def load(name: str) -> etree._Element:
    return parse_xml((VECTORS / name).read_bytes())


def wi_sel(text: str, bindings: dict[str, str] | None = None):
    return parse_node_selector(text, bindings or {}, WI_NS)


def rules_sel(text: str, bindings: dict[str, str] | None = None):
    return parse_node_selector(text, bindings or {}, PRES_RULES.default_ns, PRES_RULES.prefixes)


# --- §6.3: selecting in the watcherinfo example ------------------------------------------


def test_rfc4825_6_3_by_attribute_selects_one_watcher() -> None:
    root = load("rfc4825-6.3-watcherinfo.xml")
    found = select_elements(root, wi_sel('watcherinfo/watcher-list/watcher[@id="8ajksjda7s"]').steps)
    assert [el.text for el in found] == ["sip:userA@example.net"]


def test_rfc4825_6_3_by_position_and_wildcard() -> None:
    root = load("rfc4825-6.3-watcherinfo.xml")
    assert select_elements(root, wi_sel("watcherinfo/watcher-list/watcher[2]").steps)[0].text \
        == "sip:userB@example.org"
    assert select_elements(root, wi_sel("watcherinfo/*/*[1]").steps)[0].text \
        == "sip:userA@example.net"
    # The position counts the children matching the name, then the attribute test filters.
    assert select_elements(
        root, wi_sel('watcherinfo/watcher-list/watcher[2][@status="pending"]').steps)
    assert not select_elements(
        root, wi_sel('watcherinfo/watcher-list/watcher[1][@status="pending"]').steps)


def test_rfc4825_6_3_several_matches_are_not_one_node() -> None:
    root = load("rfc4825-6.3-watcherinfo.xml")
    sel = wi_sel("watcherinfo/watcher-list/watcher")
    assert len(select_elements(root, sel.steps)) == 2
    with pytest.raises(XcapError) as exc:
        get_node(root, sel)
    assert exc.value.status == 404


def test_rfc4825_6_3_attribute_selector_gets_the_value() -> None:
    root = load("rfc4825-6.3-watcherinfo.xml")
    body, mime = get_node(root, wi_sel('watcherinfo/watcher-list/watcher[@id="hh8juja87s997-ass7"]'
                                       '/@display-name'))
    assert (body, mime) == (b"Mr. Subscriber", ATT_MIME)


def test_an_element_get_carries_its_namespace_declarations() -> None:
    root = load("rfc4825-6.3-watcherinfo.xml")
    body, mime = get_node(root, wi_sel("watcherinfo/watcher-list/watcher[1]"))
    assert mime == EL_MIME
    el = parse_xml(body)
    assert el.tag == f"{{{WI_NS}}}watcher" and el.get("id") == "8ajksjda7s"


def test_unprefixed_names_are_in_the_auid_default_namespace_not_the_documents() -> None:
    # §6.3: a selector's unprefixed names take the application usage's default namespace.
    root = load("rfc4825-6.3-watcherinfo.xml")
    other = parse_node_selector("watcherinfo", {}, "urn:other")
    assert select_elements(root, other.steps) == []


# --- §6.4: namespace bindings -------------------------------------------------------------


def test_rfc4825_6_4_prefixes_bound_by_the_query_select_by_namespace_not_prefix() -> None:
    root = load("rfc4825-6.4-namespaces.xml")
    ns = {"a": "urn:test:namespace1-uri", "b": "urn:test:namespace1-uri"}
    sel = parse_node_selector("foo/a:bar/b:baz", ns, "urn:test:default-namespace")
    (el,) = select_elements(root, sel.steps)
    # The first baz, which the document writes unprefixed in namespace1.
    assert el.tag == "{urn:test:namespace1-uri}baz"
    sel2 = parse_node_selector("foo/a:bar/c:baz", {"a": "urn:test:namespace1-uri",
                                                   "c": "urn:test:namespace2-uri"},
                               "urn:test:default-namespace")
    assert [e.tag for e in select_elements(root, sel2.steps)] == ["{urn:test:namespace2-uri}baz"]


def test_rfc4825_6_4_an_unbound_prefix_is_a_bad_request() -> None:
    with pytest.raises(XcapError) as exc:
        parse_node_selector("foo/a:bar", {}, "urn:test:default-namespace")
    assert exc.value.status == 400


def test_namespace_selector_lists_the_bindings_in_scope() -> None:
    root = load("rfc4825-6.4-namespaces.xml")
    sel = parse_node_selector("foo/a:bar/namespace::*", {"a": "urn:test:namespace1-uri"},
                              "urn:test:default-namespace")
    body, mime = get_node(root, sel)
    assert mime == NS_MIME
    el = parse_xml(body)
    assert el.tag == "{urn:test:namespace1-uri}bar"
    assert el.nsmap["ns1"] == "urn:test:namespace1-uri" and len(el) == 0


@pytest.mark.parametrize("text", [
    "", "watcherinfo//watcher", "watcherinfo/watcher[0]", "watcherinfo/watcher[x]",
    'watcherinfo/watcher[@id="a]', "watcherinfo/@", "@id", 'w[@id="a"][1]',
    'w[@id="&bogus"]', "1abc", "namespace::*",
])
def test_malformed_selectors_are_400(text: str) -> None:
    with pytest.raises(XcapError) as exc:
        parse_node_selector(text, {}, WI_NS)
    assert exc.value.status == 400


def test_quoted_values_may_hold_slashes_and_references() -> None:
    sel = wi_sel("a/b[@x=\"sip:x/y&amp;z\"]/c[@y='q\"r']")
    assert [s.attr for s in sel.steps[1:]] == [("x", "sip:x/y&z"), ("y", 'q"r')]


# --- pres-rules: rules by id (the brief's example) ---------------------------------------


def test_rule_by_id_with_a_prefix_bound_in_the_query_or_well_known() -> None:
    root = load("pres-rules.xml")
    for bindings in ({"cp": CP_NS}, {}):
        sel = rules_sel('cp:ruleset/cp:rule[@id="b"]', bindings)
        body, mime = get_node(root, sel)
        assert mime == EL_MIME and parse_xml(body).get("id") == "b"
    handling = rules_sel('cp:ruleset/cp:rule[@id="a"]/cp:actions/sub-handling')
    assert parse_xml(get_node(root, handling)[0]).text == "allow"
    assert select_elements(root, handling.steps)[0].tag == f"{{{PR_NS}}}sub-handling"


def _rule(rule_id: str, handling: str, root: etree._Element) -> etree._Element:
    body = (f'<cp:rule id="{rule_id}"><cp:conditions/><cp:actions>'
            f"<sub-handling>{handling}</sub-handling></cp:actions></cp:rule>").encode()
    return parse_element_body(body, root, 65536, PRES_RULES.prefixes)


def test_put_element_inserts_a_new_rule_then_replaces_it() -> None:
    root = load("pres-rules.xml")
    sel = rules_sel('cp:ruleset/cp:rule[@id="c"]')
    root = put_element(root, sel, _rule("c", "confirm", root), DOC)
    assert [r.get("id") for r in root] == ["a", "b", "c"]
    root = put_element(root, sel, _rule("c", "polite-block", root), DOC)
    assert [r.get("id") for r in root] == ["a", "b", "c"]
    (rule,) = select_elements(root, sel.steps)
    assert rule.findtext(f"{{{CP_NS}}}actions/{{{PR_NS}}}sub-handling") == "polite-block"


def test_put_element_body_inherits_the_parents_namespace_bindings() -> None:
    # The body writes "cr:" and an unprefixed sub-handling, declared only in the document.
    root = load("pres-rules.xml")
    new = parse_element_body(b'<cr:rule id="c"><cr:actions><sub-handling>allow</sub-handling>'
                             b"</cr:actions></cr:rule>", root, 65536)
    assert new.tag == f"{{{CP_NS}}}rule"
    assert new.find(f"{{{CP_NS}}}actions/{{{PR_NS}}}sub-handling") is not None
    # "cp:" is not bound in the document: the URI's bindings or the AUID's well-known ones.
    assert _rule("d", "allow", root).tag == f"{{{CP_NS}}}rule"
    bound = parse_element_body(b'<x:rule id="e"/>', root, 65536, None, {"x": CP_NS})
    assert bound.tag == f"{{{CP_NS}}}rule"


def test_put_element_by_position_inserts_at_that_position() -> None:
    root = load("pres-rules.xml")
    root = put_element(root, rules_sel('cp:ruleset/cp:rule[2][@id="z"]'),
                       _rule("z", "allow", root), DOC)
    assert [r.get("id") for r in root] == ["a", "z", "b"]
    root = put_element(root, rules_sel("cp:ruleset/cp:rule[4]"), _rule("y", "allow", root), DOC)
    assert [r.get("id") for r in root] == ["a", "z", "b", "y"]
    with pytest.raises(XcapConflict) as exc:  # no 5th sibling to follow: cannot be the 6th
        put_element(root, rules_sel("cp:ruleset/cp:rule[6]"), _rule("w", "allow", root), DOC)
    assert exc.value.condition == "cannot-insert"


def test_put_element_that_the_uri_would_not_select_is_cannot_insert() -> None:
    # §8.2.5 idempotence: the URI names id "c", the body says id "d".
    root = load("pres-rules.xml")
    with pytest.raises(XcapConflict) as exc:
        put_element(root, rules_sel('cp:ruleset/cp:rule[@id="c"]'), _rule("d", "allow", root), DOC)
    assert exc.value.condition == "cannot-insert"


def test_put_element_without_parent_is_no_parent_with_the_closest_ancestor() -> None:
    root = load("pres-rules.xml")
    sel = rules_sel('cp:ruleset/cp:rule[@id="zz"]/cp:actions/sub-handling')
    body = parse_element_body(b"<sub-handling>allow</sub-handling>", root, 65536)
    with pytest.raises(XcapConflict) as exc:
        put_element(root, sel, body, DOC)
    assert exc.value.condition == "no-parent"
    assert exc.value.ancestor == DOC + "/~~/cp:ruleset"
    err = parse_xml(exc.value.body())
    assert err.tag == f"{{{ERROR_NS}}}xcap-error"
    assert err.findtext(f"{{{ERROR_NS}}}no-parent/{{{ERROR_NS}}}ancestor") == DOC + "/~~/cp:ruleset"


def test_delete_rule_by_id_and_delete_by_position_that_would_shift_is_cannot_delete() -> None:
    root = load("pres-rules.xml")
    delete_node(root, rules_sel('cp:ruleset/cp:rule[@id="a"]'))
    assert [r.get("id") for r in root] == ["b"]
    with pytest.raises(XcapError) as exc404:
        delete_node(root, rules_sel('cp:ruleset/cp:rule[@id="a"]'))
    assert exc404.value.status == 404
    root = load("pres-rules.xml")
    with pytest.raises(XcapConflict) as exc:  # rule[1] would then select rule "b"
        delete_node(root, rules_sel("cp:ruleset/cp:rule[1]"))
    assert exc.value.condition == "cannot-delete"
    with pytest.raises(XcapConflict):
        delete_node(load("pres-rules.xml"), rules_sel("cp:ruleset"))


def test_put_and_delete_an_attribute() -> None:
    root = load("pres-rules.xml")
    many = rules_sel('cp:ruleset/cp:rule[@id="a"]/cp:conditions/cp:identity/cp:many/@domain')
    put_attribute(root, many, parse_attribute_value(b"example.org"), DOC)
    assert get_node(root, many) == (b"example.org", ATT_MIME)
    delete_node(root, many)
    with pytest.raises(XcapError):
        get_node(root, many)
    # Changing the id the URI selects by makes the URI select nothing: cannot-insert.
    with pytest.raises(XcapConflict) as exc:
        put_attribute(root, rules_sel('cp:ruleset/cp:rule[@id="a"]/@id'), "x", DOC)
    assert exc.value.condition == "cannot-insert"


@pytest.mark.parametrize("body", [b'a"b', b"a<b", b"a&b", b"a&#0;"])
def test_bad_attribute_values_are_not_xml_att_value(body: bytes) -> None:
    with pytest.raises(XcapConflict) as exc:
        parse_attribute_value(body)
    assert exc.value.condition == "not-xml-att-value"


def test_attribute_values_resolve_references() -> None:
    assert parse_attribute_value(b"a&amp;b&#x41;") == "a&bA"


@pytest.mark.parametrize("body", [
    b"<a/><b/>", b"text<a/>", b"<a>", b"", b"</xcap-wrapper><a/><xcap-wrapper>",
    b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', b"<?xml version='1.0'?><a/>",
])
def test_element_bodies_that_are_not_one_element_are_not_xml_frag(body: bytes) -> None:
    with pytest.raises(XcapConflict) as exc:
        parse_element_body(body, None, 65536)
    assert exc.value.condition == "not-xml-frag"


def test_element_body_that_is_not_utf8_is_not_utf8() -> None:
    with pytest.raises(XcapConflict) as exc:
        parse_element_body(b"<a>\xff</a>", None, 65536)
    assert exc.value.condition == "not-utf-8"


def test_pres_rules_check_finds_duplicate_ids_as_uniqueness_failure() -> None:
    root = load("pres-rules.xml")
    root.append(_rule("a", "allow", root))
    assert PRES_RULES.check is not None
    with pytest.raises(XcapConflict) as exc:
        PRES_RULES.check(root)
    assert exc.value.condition == "uniqueness-failure"
    err = parse_xml(exc.value.body())
    exists = err.find(f"{{{ERROR_NS}}}uniqueness-failure/{{{ERROR_NS}}}exists")
    assert exists is not None and exists.get("field") == "cp:ruleset/cp:rule/@id"
    assert exists.findtext(f"{{{ERROR_NS}}}alt-value") == "a-2"


def test_pres_rules_check_wants_a_common_policy_ruleset() -> None:
    assert PRES_RULES.check is not None
    with pytest.raises(XcapConflict) as exc:
        PRES_RULES.check(parse_xml(b'<ruleset xmlns="urn:wrong"/>'))
    assert exc.value.condition == "schema-validation-error"
