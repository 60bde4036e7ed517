"""XPIDF and LPIDF: the legacy formats SER's pa module wrote for desk phones and old clients."""

from __future__ import annotations

import pytest
from lxml import etree

from presenced.pa.documents.lpidf import encode_lpidf
from presenced.pa.documents.xpidf import encode_xpidf, msn_substatus
from presenced.pa.model import Person, PresenceDoc, Tuple

ENTITY = "pres:alice@example.com"


def _xpidf_tree(doc: PresenceDoc) -> etree._Element:
    # Our own output carries the draft's DOCTYPE, so it is read with a plain (trusted) parser that
    # neither loads nor resolves anything.
    parser = etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False)
    return etree.fromstring(encode_xpidf(doc), parser)


def test_xpidf_has_the_exact_elements_ser_wrote() -> None:
    doc = PresenceDoc(ENTITY, (Tuple("t1", "open", "sip:alice@192.0.2.1", 0.8),))
    body = encode_xpidf(doc)
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
        b'<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">\r\n'
        b"<presence>\r\n"
        b'<presentity uri="sip:alice@example.com;method=SUBSCRIBE"/>\r\n'
        b'<atom id="t1">\r\n'
        b'<address uri="sip:alice@192.0.2.1" priority="0.8">\r\n'
        b'<status status="open"/>\r\n'
        b'<msnsubstatus substatus="online"/>\r\n'
        b"</address>\r\n"
        b"</atom>\r\n"
        b"</presence>\r\n"
    )


def test_xpidf_writes_one_atom_per_tuple_with_status_and_substatus() -> None:
    doc = PresenceDoc(
        ENTITY,
        (
            Tuple("reg", "open", "sip:alice@192.0.2.1", activities=("on-the-phone",)),
            Tuple("pub", "closed", "sip:alice@198.51.100.7", 0.5),
            Tuple("xmpp", "open"),
        ),
    )
    root = _xpidf_tree(doc)
    atoms = root.findall("atom")
    assert [a.get("id") for a in atoms] == ["reg", "pub", "xmpp"]
    got = [
        (
            a.find("address").get("uri"),
            a.find("address").get("priority"),
            a.find("address/status").get("status"),
            a.find("address/msnsubstatus").get("substatus"),
        )
        for a in atoms
    ]
    assert got == [
        ("sip:alice@192.0.2.1", "1.0", "open", "onthephone"),
        ("sip:alice@198.51.100.7", "0.5", "closed", "offline"),
        ("sip:alice@example.com", "1.0", "open", "online"),  # no contact: the presentity's URI
    ]


def test_xpidf_without_tuples_has_one_closed_atom_named_none() -> None:
    root = _xpidf_tree(PresenceDoc(ENTITY))
    (atom,) = root.findall("atom")
    assert atom.get("id") == "none"
    assert atom.find("address/status").get("status") == "closed"


def test_xpidf_person_activities_apply_to_every_open_tuple() -> None:
    doc = PresenceDoc(
        ENTITY,
        (Tuple("a", "open", "sip:a@x"), Tuple("b", "closed", "sip:b@x")),
        (Person("p", ("meeting",)),),
    )
    subs = [e.get("substatus") for e in _xpidf_tree(doc).iter("msnsubstatus")]
    assert subs == ["busy", "offline"]


def test_xpidf_escapes_attribute_values() -> None:
    doc = PresenceDoc('pres:a"<b>@example.com', (Tuple('t"1', "open", 'sip:x@y;a="&"'),))
    root = _xpidf_tree(doc)
    assert root.find("presentity").get("uri") == 'sip:a"<b>@example.com;method=SUBSCRIBE'
    assert root.find("atom/address").get("uri") == 'sip:x@y;a="&"'


@pytest.mark.parametrize(
    ("basic", "activities", "expected"),
    [
        ("closed", {"on-the-phone"}, "offline"),
        ("open", set(), "online"),
        ("open", {"on-the-phone", "busy"}, "onthephone"),
        ("open", {"busy"}, "busy"),
        ("open", {"meeting"}, "busy"),
        ("open", {"meal", "away"}, "outtolunch"),
        ("open", {"dinner"}, "outtolunch"),
        ("open", {"away"}, "away"),
        ("open", {"vacation"}, "away"),
        ("open", {"sleeping"}, "away"),
        ("open", {"unknown"}, "online"),
        ("open", {"bowling"}, "online"),
    ],
)
def test_msn_substatus_mapping(basic: str, activities: set[str], expected: str) -> None:
    assert msn_substatus(basic, activities) == expected


def test_lpidf_has_the_exact_lines() -> None:
    doc = PresenceDoc(
        ENTITY,
        (
            Tuple("a", "open", "sip:alice@192.0.2.1", 0.8),
            Tuple("b", "closed", "sip:alice@198.51.100.7", 0.9),
            Tuple("c", "open", None),
            Tuple("d", "open", "sip:alice@203.0.113.5"),
        ),
    )
    assert encode_lpidf(doc) == (
        b"To: <sip:alice@example.com>\r\n"
        b"Contact: <sip:alice@192.0.2.1>;q=0.8\r\n"
        b"Contact: <sip:alice@198.51.100.7>;q=0.0\r\n"
        b"Contact: <sip:alice@203.0.113.5>;q=1.0\r\n"
    )


def test_lpidf_without_tuples_is_just_the_to_line() -> None:
    assert encode_lpidf(PresenceDoc("sip:bob@example.com")) == b"To: <sip:bob@example.com>\r\n"


def test_lpidf_cannot_be_used_to_inject_lines() -> None:
    doc = PresenceDoc(ENTITY, (Tuple("a", "open", "sip:x@y>\r\nContact: <sip:evil@z"),))
    lines = encode_lpidf(doc).split(b"\r\n")
    assert lines == [
        b"To: <sip:alice@example.com>",
        b"Contact: <sip:x@yContact: sip:evil@z>;q=1.0",
        b"",
    ]
