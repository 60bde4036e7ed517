"""PIDF / RPID / data-model codec (RFC 3863, RFC 4480, RFC 4479) and cpim-pidf."""

from __future__ import annotations

import pathlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from presenced.pa.documents.pidf import (
    CPIM_PIDF_NS,
    PIDF_NS,
    RPID_NS,
    decode_pidf,
    encode_cpim_pidf,
    encode_pidf,
    format_priority,
    format_timestamp,
    parse_timestamp,
    stable_id,
)
from presenced.pa.documents.xml import DocumentError
from presenced.pa.model import Note, Person, PresenceDoc, Tuple

VECTORS = pathlib.Path(__file__).parents[1] / "vectors" / "pidf"
T_2001 = 1004201369.0  # 2001-10-27T16:49:29Z, RFC 3863's example timestamp

DOC = PresenceDoc(
    "pres:alice@example.com",
    (
        Tuple("reg1", "open", "sip:alice@192.0.2.1:5060", 0.8, (Note("desk", "en"),), T_2001),
        Tuple("pub1", "closed", "sip:alice@198.51.100.7", None, (), None, ("busy",)),
    ),
    (Person("p1", ("away", "bowling"), ("happy",), (Note("back at 5", "en"),), T_2001 + 0.5),),
    (Note("I'll be in Tokyo next week"), Note("Je serai à Tokyo", "fr")),
)


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


# --- RFC samples -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rfc3863-minimal-prefixed.xml", "rfc3863-minimal-default-ns.xml"])
def test_rfc3863_minimal_example_decodes_with_prefix_or_default_namespace(name: str) -> None:
    assert decode_pidf(vector(name)) == PresenceDoc(
        "pres:someone@example.com", (Tuple("sg89ae", "open", "tel:+09012345678", 0.8),)
    )


def test_rfc3863_extended_example_decodes_notes_timestamp_and_ignores_extensions() -> None:
    doc = decode_pidf(vector("rfc3863-extended.xml"))
    assert doc.entity == "pres:someone@example.com"
    assert doc.tuples == (
        Tuple(
            "bs35r9",
            "open",
            "im:someone@mobilecarrier.net",
            0.8,
            (Note("Don't Disturb Please!", "en"), Note("Ne derangez pas, s'il vous plait", "fr")),
            T_2001,
        ),
        Tuple("eg92n8", "open", "mailto:someone@example.com", 1.0),
    )
    assert doc.notes == (Note("I'll be in Tokyo next week"),)
    assert doc.persons == ()


def test_rfc4480_example_maps_person_activities_mood_other_and_note() -> None:
    doc = decode_pidf(vector("rfc4480-rpid.xml"))
    assert doc.tuples == (
        Tuple("bs35r9", "open", "im:someone@mobilecarrier.net", 0.8, (), 1117490429.0),
    )
    # <rpid:note>Far away</rpid:note> inside <activities> has no place in the model; the device
    # and the other RPID elements are ignored.
    assert doc.persons == (
        Person(
            "p1",
            ("away",),
            ("angry", "brooding"),
            (Note("Scoring 120"),),
            parse_timestamp("2005-05-30T11:09:44Z"),
        ),
    )


def test_rfc4479_example_keeps_service_and_person_apart() -> None:
    doc = decode_pidf(vector("rfc4479-data-model.xml"))
    assert [t.id for t in doc.tuples] == ["sg89ae"]
    assert doc.tuples[0].contact == "sip:someone@example.com"
    assert doc.persons == (
        Person("p1", ("on-the-phone",), (), (Note("In a call", "en"),), 1117469384.0),
    )


def test_cpim_pidf_namespace_body_decodes_like_pidf() -> None:
    doc = decode_pidf(vector("cpim-pidf-legacy.xml"))
    assert doc == PresenceDoc(
        "pres:bob@example.org", (Tuple("ksac9udshce", "closed", "sip:bob@example.org", 1.0),)
    )


# --- round trips -----------------------------------------------------------------------------


def test_round_trip_of_a_rich_document() -> None:
    assert decode_pidf(encode_pidf(DOC)) == DOC


def test_round_trip_of_an_empty_document() -> None:
    doc = PresenceDoc("pres:nobody@example.com")
    assert decode_pidf(encode_pidf(doc)) == doc


def test_encoding_is_deterministic_without_now() -> None:
    assert encode_pidf(DOC) == encode_pidf(DOC)


def test_now_stamps_only_tuples_without_a_timestamp() -> None:
    doc = decode_pidf(encode_pidf(DOC, now=T_2001 + 60))
    assert doc.tuples[0].timestamp == T_2001
    assert doc.tuples[1].timestamp == T_2001 + 60


_ids = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,10}", fullmatch=True)
# Text XML 1.0 can carry: no C0 controls but TAB/LF/CR, no surrogates, no U+FFFE/U+FFFF.
_xml_text = st.text(
    st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters=[chr(c) for c in range(0x20) if c not in (9, 10, 13)]
        + ["\ufffe", "\uffff"],
    ),
    max_size=40,
)
_notes = st.lists(
    st.builds(Note, _xml_text, st.none() | st.sampled_from(["en", "fr", "de-CH", "ja"])),
    max_size=3,
).map(tuple)
_names = st.lists(
    st.sampled_from(["away", "busy", "on-the-phone", "meal"]) | _ids, max_size=3, unique=True
).map(tuple)
_ts = st.none() | st.integers(0, 4_000_000_000).map(float)


@st.composite
def _docs(draw: st.DrawFn) -> PresenceDoc:
    ids = draw(st.lists(_ids, max_size=5, unique=True))
    n_tuples = draw(st.integers(0, len(ids)))
    tuples = []
    for tid in ids[:n_tuples]:
        contact = draw(st.none() | st.from_regex(r"sip:[a-z]{1,8}@[a-z0-9.]{1,12}", fullmatch=True))
        priority = draw(st.none() | st.integers(0, 1000).map(lambda n: n / 1000))
        tuples.append(
            Tuple(
                tid,
                draw(st.sampled_from(["open", "closed"])),
                contact,
                priority if contact is not None else None,
                draw(_notes),
                draw(_ts),
                draw(_names),
            )
        )
    persons = [
        Person(pid, draw(_names), draw(_names), draw(_notes), draw(_ts)) for pid in ids[n_tuples:]
    ]
    return PresenceDoc(
        draw(st.from_regex(r"pres:[a-z]{1,8}@example\.com", fullmatch=True)),
        tuple(tuples),
        tuple(persons),
        draw(_notes),
    )


@settings(max_examples=150, deadline=None)
@given(_docs())
def test_decode_of_encode_is_identity(doc: PresenceDoc) -> None:
    assert decode_pidf(encode_pidf(doc)) == doc


@settings(max_examples=200, deadline=None)
@given(_xml_text, _xml_text)
def test_arbitrary_note_text_survives_encode_decode(text: str, lang_text: str) -> None:
    doc = PresenceDoc(
        "pres:a@example.com",
        (Tuple("t1", "open", notes=(Note(text, "en"),)),),
        (Person("p1", notes=(Note(lang_text),)),),
        (Note(text + lang_text),),
    )
    assert decode_pidf(encode_pidf(doc)) == doc


def test_markup_characters_in_notes_and_entity_are_escaped() -> None:
    nasty = '</note><tuple id="evil"><status><basic>open</basic></status></tuple> & "q" \'s'
    doc = PresenceDoc('pres:a"b@example.com', (Tuple("t1", "closed", notes=(Note(nasty, 'x"y'),)),))
    back = decode_pidf(encode_pidf(doc))
    assert back == doc
    assert [t.id for t in back.tuples] == ["t1"]


def test_characters_xml_cannot_carry_are_dropped_not_emitted() -> None:
    doc = PresenceDoc("pres:a@example.com", notes=(Note("a\x00b\x1bc\ud800d\uffffe"),))
    assert decode_pidf(encode_pidf(doc)).notes == (Note("abcde"),)


# --- the XML written -------------------------------------------------------------------------


def test_encoded_document_uses_the_rfc_namespaces_and_element_order() -> None:
    root = etree.fromstring(encode_pidf(DOC))
    assert root.tag == f"{{{PIDF_NS}}}presence"
    assert root.get("entity") == "pres:alice@example.com"
    local = [etree.QName(c).localname for c in root]
    # RFC 3863 schema: tuples, then notes, then foreign elements (the dm:person).
    assert local == ["tuple", "tuple", "note", "note", "person"]
    t1 = root[0]
    assert [etree.QName(c).localname for c in t1] == ["status", "contact", "note", "timestamp"]
    assert t1.findtext(f"{{{PIDF_NS}}}timestamp") == "2001-10-27T16:49:29Z"
    assert t1.find(f"{{{PIDF_NS}}}contact").get("priority") == "0.8"
    person = root[4]
    assert person.find(f"{{{RPID_NS}}}activities/{{{RPID_NS}}}away") is not None
    assert person.findtext(f"{{{RPID_NS}}}activities/{{{RPID_NS}}}other") == "bowling"
    assert person.find(f"{{{RPID_NS}}}mood/{{{RPID_NS}}}happy") is not None
    note = root[3]
    assert note.get("{http://www.w3.org/XML/1998/namespace}lang") == "fr"


def test_plain_document_declares_no_extension_namespaces() -> None:
    body = encode_pidf(PresenceDoc("pres:a@example.com", (Tuple("t1", "open"),)))
    assert b"rpid" not in body and b"data-model" not in body


def test_cpim_pidf_uses_the_draft_namespace_and_only_base_elements() -> None:
    body = encode_cpim_pidf(DOC)
    root = etree.fromstring(body)
    assert root.tag == f"{{{CPIM_PIDF_NS}}}presence"
    assert b"rpid" not in body and b"person" not in body
    back = decode_pidf(body)
    assert [t.basic for t in back.tuples] == ["open", "closed"]
    assert back.tuples[1].activities == ()
    assert back.notes == DOC.notes


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0.0, "1970-01-01T00:00:00Z"),
        (T_2001, "2001-10-27T16:49:29Z"),
        (T_2001 + 0.25, "2001-10-27T16:49:29.250Z"),
        (T_2001 + 0.9996, "2001-10-27T16:49:30Z"),
    ],
)
def test_timestamps_are_rfc3339_utc(ts: float, text: str) -> None:
    assert format_timestamp(ts) == text


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("2001-10-27T16:49:29Z", T_2001),
        ("2001-10-27T18:49:29+02:00", T_2001),
        ("2001-10-27T16:49:29.5Z", T_2001 + 0.5),
        ("2001-10-27T16:49:29", T_2001),
        ("yesterday", None),
        ("", None),
    ],
)
def test_timestamps_with_offsets_are_read(text: str, ts: float | None) -> None:
    assert parse_timestamp(text) == ts


@pytest.mark.parametrize(
    ("p", "text"),
    [(0.8, "0.8"), (1.0, "1.0"), (0.0, "0.0"), (0.125, "0.125"), (7.0, "1.0"), (-1.0, "0.0")],
)
def test_priorities_are_qvalues(p: float, text: str) -> None:
    assert format_priority(p) == text


def test_stable_id_is_a_valid_stable_tuple_id() -> None:
    tid = stable_id("alice@example.com")
    assert tid == stable_id("alice@example.com") != stable_id("bob@example.com")
    doc = PresenceDoc("pres:alice@example.com", (Tuple(tid, "open"),))
    assert decode_pidf(encode_pidf(doc)) == doc


# --- what decode rejects and what it tolerates -----------------------------------------------

P = '<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (P + "/>", "entity"),
        (P + ' entity="  "/>', "entity"),
        ('<presence xmlns="urn:example:other" entity="pres:a@b"/>', "PIDF"),
        ('<presence entity="pres:a@b"/>', "PIDF"),
        (
            P + ' entity="pres:a@b"><tuple><status><basic>open</basic></status></tuple></presence>',
            "id",
        ),
        (P + ' entity="pres:a@b"><tuple id="1x"><status/></tuple></presence>', "XML ID"),
        (P + ' entity="pres:a@b"><tuple id="a:b"><status/></tuple></presence>', "XML ID"),
        (
            P
            + ' entity="pres:a@b"><tuple id="t"><status/></tuple><tuple id="t"><status/></tuple></presence>',
            "duplicate",
        ),
        (
            P + ' entity="pres:a@b"><tuple id="t"><status/></tuple><dm:person id="t"/></presence>',
            "duplicate",
        ),
        (
            P + ' entity="pres:a@b"><tuple id="t"><contact>sip:x@y</contact></tuple></presence>',
            "status",
        ),
        (
            P
            + ' entity="pres:a@b"><tuple id="t"><status><basic>away</basic></status></tuple></presence>',
            "open or closed",
        ),
        (P + ' entity="pres:a@b"><dm:person/></presence>', "person"),
    ],
)
def test_invalid_pidf_is_a_document_error(body: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        decode_pidf(body.encode())


def test_status_without_basic_reads_closed_and_bad_priority_and_timestamp_are_dropped() -> None:
    body = (
        P + ' entity="pres:a@b"><tuple id="t"><status><foo xmlns="urn:x"/></status>'
        '<contact priority="high">sip:x@y</contact><timestamp>soon</timestamp>'
        "<unknown>ignored</unknown></tuple><extension xmlns='urn:x'/></presence>"
    )
    assert decode_pidf(body.encode()) == PresenceDoc("pres:a@b", (Tuple("t", "closed", "sip:x@y"),))


def test_decode_honours_the_size_limit() -> None:
    with pytest.raises(DocumentError, match="limit"):
        decode_pidf(encode_pidf(DOC), max_size=100)


# --- speed (generous bounds: a regression guard, not a benchmark) ----------------------------


def _per_call(fn: object, n: int = 2000) -> float:
    call = fn  # type: ignore[assignment]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            call()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - start) / n)
    return best


def test_encoding_a_two_tuple_document_is_fast() -> None:
    doc = PresenceDoc("pres:alice@example.com", DOC.tuples)
    assert _per_call(lambda: encode_pidf(doc)) < 50e-6


def test_decoding_a_small_pidf_is_fast() -> None:
    body = vector("rfc3863-minimal-default-ns.xml")
    assert _per_call(lambda: decode_pidf(body)) < 60e-6


def test_timestamp_beyond_year_9999_in_utc_is_dropped_not_kept_to_crash_later() -> None:
    """9999-12-31T23:59:59-14:00 is year 10000 in UTC: we could never write it back."""
    from presenced.pa.documents.pidf import decode_pidf, encode_pidf

    body = (
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@example.com">'
        b"<tuple id=\"t\"><status><basic>open</basic></status>"
        b"<timestamp>9999-12-31T23:59:59-14:00</timestamp></tuple></presence>"
    )
    doc = decode_pidf(body)
    assert doc.tuples[0].timestamp is None
    assert b"<basic>open</basic>" in encode_pidf(doc)
