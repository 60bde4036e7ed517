"""XCAP URIs (RFC 4825 §6) and preconditions (§7.11, RFC 9110 §13)."""

from __future__ import annotations

import pytest

from presenced.xcap.conditions import evaluate, parse_etag_list
from presenced.xcap.errors import XcapConflict, XcapError
from presenced.xcap.uri import parse_xcap_uri, xui_aor


def test_a_users_document_with_a_node_selector_and_bindings() -> None:
    u = parse_xcap_uri("/xcap-root/pres-rules/users/sip:alice@example.com/index/~~/"
                       "cp:ruleset/cp:rule%5b@id=%22a%22%5d"
                       "?xmlns(cp=urn:ietf:params:xml:ns:common-policy)")
    assert (u.auid, u.xui, u.document) == ("pres-rules", "sip:alice@example.com", "index")
    assert u.node == 'cp:ruleset/cp:rule[@id="a"]'
    assert u.namespaces == (("cp", "urn:ietf:params:xml:ns:common-policy"),)
    assert u.document_path() == "/xcap-root/pres-rules/users/sip:alice@example.com/index"


def test_an_escaped_xui_and_the_global_tree() -> None:
    u = parse_xcap_uri("/xcap-root/pres-rules/users/sip%3Aalice%40example.com/index")
    assert u.xui == "sip:alice@example.com" and u.node is None
    g = parse_xcap_uri("/xcap-root/xcap-caps/global/index")
    assert g.is_global and g.document == "index"


def test_several_bindings_percent_encoded() -> None:
    u = parse_xcap_uri("/r/a/global/d/~~/x:a/y:b?xmlns(x=urn:x)%20xmlns(y%3Durn:y)", root="/r")
    assert u.namespaces == (("x", "urn:x"), ("y", "urn:y"))


@pytest.mark.parametrize(("target", "status"), [
    ("/other/pres-rules/users/sip:a@b/index", 404),
    ("/xcap-root/pres-rules/users/sip:a@b", 404),  # a directory, no document
    ("/xcap-root/pres-rules/users//index", 404),
    ("/xcap-root/pres-rules/elsewhere/x/index", 404),
    ("/xcap-root/pres-rules/users/sip:a@b/../index", 400),
    ("/xcap-root/pres-rules/users/sip:a@b/a%2Fb", 400),
    ("/xcap-root/pres-rules/users/sip:a%0d%0a@b/index", 400),
    ("/xcap-root/pres-rules/users/sip:a%ff@b/index", 400),
    ("/xcap-root/pres-rules/users/sip:a@b/index/~~", 400),
    ("/xcap-root/pres-rules/users/sip:a@b/index?xmlns(a=b)", 400),  # a query needs a selector
    ("/xcap-root/pres-rules/users/sip:a@b/index/~~/x?garbage", 400),
    ("/xcap-root/pres-rules/users/sip:a@b/index/" + "a" * 5000, 414),
])
def test_broken_or_foreign_uris(target: str, status: int) -> None:
    with pytest.raises(XcapError) as exc:
        parse_xcap_uri(target)
    assert exc.value.status == status


def test_xui_to_the_aor_the_rules_are_stored_under() -> None:
    assert xui_aor("sip:alice@Example.COM") == "alice@example.com"
    assert xui_aor("sips:alice@example.com") == "alice@example.com"
    assert xui_aor("alice@example.com") == "alice@example.com"  # no scheme: leniency
    for bad in ("tel:+123", "sip:example.com", "http://x/"):
        with pytest.raises(XcapError):
            xui_aor(bad)


# --- preconditions ---------------------------------------------------------------------


def test_etag_lists() -> None:
    assert parse_etag_list("*") is None
    assert parse_etag_list('"a", W/"b" ,"c"') == [(False, "a"), (True, "b"), (False, "c")]
    assert parse_etag_list("bare") == [(False, "bare")]


@pytest.mark.parametrize(("method", "current", "if_match", "if_none_match", "expected"), [
    ("PUT", "t1", '"t1"', None, None),
    ("PUT", "t2", '"t1"', None, 412),  # stale
    ("PUT", None, '"t1"', None, 412),
    ("PUT", None, "*", None, 412),  # If-Match: * wants a document
    ("PUT", "t1", "*", None, None),
    ("PUT", "t1", 'W/"t1"', None, 412),  # If-Match compares strongly
    ("PUT", "t1", '"x", "t1"', None, None),
    ("PUT", "t1", None, "*", 412),  # create only
    ("PUT", None, None, "*", None),
    ("GET", "t1", None, '"t1"', 304),
    ("GET", "t1", None, 'W/"t1"', 304),  # If-None-Match compares weakly
    ("GET", "t1", None, '"t0"', None),
    ("DELETE", "t1", None, '"t1"', 412),
    ("GET", None, None, None, None),
])
def test_rfc4825_7_11_preconditions(method: str, current: str | None, if_match: str | None,
                                    if_none_match: str | None, expected: int | None) -> None:
    assert evaluate(method, current, if_match, if_none_match) == expected


def test_error_conditions_are_the_rfcs() -> None:
    with pytest.raises(ValueError):
        XcapConflict("made-up")
