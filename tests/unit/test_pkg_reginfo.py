"""reginfo codec (RFC 3680): contact events from binding changes, encode/parse, hostile input."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from presenced.pa.documents.xml import DocumentError
from presenced.pa.packages.reginfo import (
    CONTENT_TYPE,
    NS,
    REASON_ADMIN,
    REASON_DEACTIVATED,
    REASON_EXPIRY,
    REASON_REGISTER,
    BindingView,
    ContactInfo,
    Registration,
    contact_id,
    diff_contacts,
    encode_reginfo,
    encode_reginfo_template,
    parse_reginfo,
    registration_id,
    registration_state,
)

VECTORS = pathlib.Path(__file__).parents[1] / "vectors" / "rfc3680"
AOR = "sip:user@example.com"
NOW = 1_700_000_000.0
CID = contact_id(AOR, "sip:user@192.0.2.7:5060")
B1 = BindingView("sip:user@192.0.2.7:5060", NOW + 3600, 0.8, "call-1@ua", 1, None)


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_content_type_and_namespace_are_rfc3680s() -> None:
    assert CONTENT_TYPE == "application/reginfo+xml"
    assert NS == "urn:ietf:params:xml:ns:reginfo"


def test_rfc3680_full_example_parses_registration_and_contacts() -> None:
    version, state, (reg,) = parse_reginfo(vector("rfc3680-full.xml"))
    assert (version, state) == (0, "full")
    assert (reg.aor, reg.id, reg.state) == (AOR, "as9", "active")
    active, gone = reg.contacts
    assert (active.id, active.state, active.event, active.q) == ("76", "active", "registered", 0.8)
    assert active.uri == "sip:user@pc887.example.com"
    assert (gone.state, gone.event) == ("terminated", "expired")


def test_rfc3680_partial_example_reads_display_name_callid_cseq_and_instance() -> None:
    version, state, (reg,) = parse_reginfo(vector("rfc3680-partial-created.xml"))
    assert (version, state) == (1, "partial")
    (c,) = reg.contacts
    assert (c.event, c.expires, c.call_id, c.cseq) == ("created", 3600, "hy7qdD8@pc887", 2)
    assert c.display_name == "Guest Office"
    assert c.instance == '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'


def test_ids_are_stable_and_distinct() -> None:
    assert contact_id(AOR, B1.uri) == CID
    assert contact_id(AOR, "sip:user@192.0.2.8") != CID
    assert contact_id("sip:other@example.com", B1.uri) != CID
    assert registration_id(AOR) == registration_id(AOR) != registration_id("sip:x@example.com")


def test_register_new_binding_is_registered_rfc3680_s5_2() -> None:
    (c,) = diff_contacts({}, {CID: B1}, NOW, REASON_REGISTER)
    assert (c.id, c.state, c.event, c.expires, c.q) == (CID, "active", "registered", 3600, 0.8)


def test_binding_added_by_the_registrar_is_created() -> None:
    (c,) = diff_contacts({}, {CID: B1}, NOW, REASON_ADMIN)
    assert c.event == "created"


def test_refresh_with_same_or_later_expiry_is_refreshed_earlier_is_shortened() -> None:
    later = BindingView(B1.uri, NOW + 7200, 0.8, "call-1@ua", 2, None)
    same = BindingView(B1.uri, B1.expires_at, 0.8, "call-1@ua", 2, None)
    earlier = BindingView(B1.uri, NOW + 60, 0.8, "call-1@ua", 2, None)
    assert diff_contacts({CID: B1}, {CID: later}, NOW, REASON_REGISTER)[0].event == "refreshed"
    assert diff_contacts({CID: B1}, {CID: same}, NOW, REASON_REGISTER)[0].event == "refreshed"
    (c,) = diff_contacts({CID: B1}, {CID: earlier}, NOW, REASON_REGISTER)
    assert (c.event, c.expires, c.cseq) == ("shortened", 60, 2)


def test_unchanged_binding_gives_no_event() -> None:
    assert diff_contacts({CID: B1}, {CID: B1}, NOW, REASON_REGISTER) == ()


@pytest.mark.parametrize(
    ("reason", "event"),
    [(REASON_REGISTER, "unregistered"), (REASON_EXPIRY, "expired"),
     (REASON_DEACTIVATED, "deactivated"), ("probation", "probation"), ("rejected", "rejected")],
)  # fmt: skip
def test_removed_binding_terminates_with_the_event_of_its_cause(reason: str, event: str) -> None:
    (c,) = diff_contacts({CID: B1}, {}, NOW, reason)
    assert (c.state, c.event, c.expires, c.uri) == ("terminated", event, 0, B1.uri)


def test_unknown_reason_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="reason"):
        diff_contacts({}, {}, NOW, "because")


def test_registration_state_init_active_terminated() -> None:
    (active,) = diff_contacts({}, {CID: B1}, NOW, REASON_REGISTER)
    (gone,) = diff_contacts({CID: B1}, {}, NOW, REASON_EXPIRY)
    assert registration_state([]) == "init"
    assert registration_state([], ever_registered=True) == "terminated"
    assert registration_state([active]) == "active"
    assert registration_state([gone]) == "terminated"


def test_encode_is_namespaced_full_state_and_parses_back() -> None:
    contacts = diff_contacts({}, {CID: B1}, NOW, REASON_REGISTER)
    reg = Registration(AOR, registration_id(AOR), registration_state(contacts), contacts)
    out = encode_reginfo([reg], 0)
    root = etree.fromstring(out)
    assert root.tag == f"{{{NS}}}reginfo" and root.attrib == {"version": "0", "state": "full"}
    assert root[0].tag == f"{{{NS}}}registration"
    assert root[0][0][0].tag == f"{{{NS}}}uri"
    assert parse_reginfo(out) == (0, "full", (reg,))


def test_no_registration_is_a_valid_empty_document() -> None:
    assert parse_reginfo(encode_reginfo([], 5)) == (5, "full", ())
    reg = Registration(AOR, registration_id(AOR), "init", ())
    assert parse_reginfo(encode_reginfo([reg], 0))[2] == (reg,)


def test_template_route_gives_the_same_bytes_as_encode() -> None:
    contacts = diff_contacts({}, {CID: B1}, NOW, REASON_REGISTER)
    regs = [Registration(AOR, registration_id(AOR), "active", contacts)]
    prefix, suffix = encode_reginfo_template(regs, "partial")
    for version in (0, 1, 7, 10**15):
        assert prefix + str(version).encode() + suffix == encode_reginfo(regs, version, "partial")


def doc(inner: str, version: str = "0", state: str = "full") -> bytes:
    return f'<reginfo xmlns="{NS}" version="{version}" state="{state}">{inner}</reginfo>'.encode()


def reg(contact: str, state: str = "active") -> str:
    return f'<registration aor="{AOR}" id="r" state="{state}">{contact}</registration>'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'<reginfo xmlns="urn:x" version="0" state="full"/>', "root"),
        (doc("", version="-1"), "version"),
        (doc("", version="x"), "version"),
        (doc("", state="some"), "state"),
        (doc(reg("", state="busy")), "unknown state"),
        (doc('<registration id="r" state="active"/>'), "aor or id"),
        (doc(reg('<contact state="active" event="registered"><uri>sip:a@b</uri></contact>')), "id"),
        (doc(reg('<contact id="1" state="on" event="registered"><uri>sip:a@b</uri></contact>')), "state"),
        (doc(reg('<contact id="1" state="active" event="born"><uri>sip:a@b</uri></contact>')), "event"),
        (doc(reg('<contact id="1" state="active" event="created"/>')), "uri"),
        (doc(reg('<contact id="1" state="active" event="created" expires="-3"><uri>sip:a@b</uri></contact>')), "expires"),
        (doc(reg('<contact id="1" state="active" event="created" q="1.5"><uri>sip:a@b</uri></contact>')), "q"),
        (b'<!DOCTYPE r SYSTEM "http://127.0.0.1/x.dtd">' + doc(""), "DOCTYPE"),
        (doc("").replace(b"full", b"f\xffll"), "UTF-8"),
        (doc("<x/>" * 20000), "limit"),
    ],
)  # fmt: skip
def test_hostile_or_invalid_documents_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse_reginfo(body)


TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
URI = st.from_regex(r"sip:[a-z0-9]{1,8}@[a-z0-9.]{1,12}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    bindings=st.dictionaries(
        st.from_regex(r"c[0-9a-f]{4}", fullmatch=True),
        st.builds(
            BindingView,
            uri=URI,
            expires_at=st.floats(NOW - 10, NOW + 10**6),
            q=st.none() | st.sampled_from([0.0, 0.1, 0.5, 1.0]),
            call_id=st.none() | TEXT,
            cseq=st.none() | st.integers(0, 2**31),
            instance=st.none() | TEXT,
            display_name=st.none() | TEXT,
        ),
        max_size=4,
    ),
    version=st.integers(0, 2**40),
)
def test_round_trip_without_raw_line_breaks_and_every_binding_has_one_event(
    bindings: dict[str, BindingView], version: int
) -> None:
    contacts = diff_contacts({}, bindings, NOW, REASON_REGISTER)
    assert [c.id for c in contacts] == list(bindings)
    gone = diff_contacts(bindings, {}, NOW, REASON_EXPIRY)
    assert all(c.state == "terminated" and c.event == "expired" for c in gone)
    regs = [Registration(AOR, registration_id(AOR), registration_state(contacts), contacts + gone)]
    out = encode_reginfo(regs, version)
    decl = b'<?xml version="1.0" encoding="UTF-8"?>\n'
    assert out.startswith(decl) and b"\n" not in out[len(decl) :] and b"\r" not in out
    v, _, (back,) = parse_reginfo(out)
    assert v == version and len(back.contacts) == 2 * len(bindings)
    for got, want in zip(back.contacts, contacts + gone, strict=True):
        assert (got.id, got.uri, got.state, got.event, got.expires, got.q, got.cseq) == (
            want.id, want.uri, want.state, want.event, want.expires, want.q, want.cseq
        )  # fmt: skip


def test_contactinfo_keeps_the_documented_fields() -> None:
    c = ContactInfo("1", "sip:a@b", "active", "registered", 10, None, None, None)
    assert c.display_name is None and c.instance is None
