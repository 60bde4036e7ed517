"""dialog-info codec (RFC 4235): parse, compose, encode, template route, hostile input."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from presenced.pa.documents.xml import DocumentError
from presenced.pa.packages.dialog_info import (
    CONTENT_TYPE,
    DIALOG_STATES,
    NS,
    DialogInfo,
    compose_dialogs,
    encode_dialog_info,
    encode_dialog_info_template,
    make_dialog,
    parse_dialog_info,
)

VECTORS = pathlib.Path(__file__).parents[1] / "vectors" / "rfc4235"
AOR = "sip:alice@example.com"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def doc(dialogs: str, version: str = "0", state: str = "full", entity: str = AOR) -> bytes:
    return (
        f'<dialog-info xmlns="{NS}" version="{version}" state="{state}" entity="{entity}">'
        f"{dialogs}</dialog-info>"
    ).encode()


def test_content_type_and_namespace_are_rfc4235s() -> None:
    assert CONTENT_TYPE == "application/dialog-info+xml"
    assert NS == "urn:ietf:params:xml:ns:dialog-info"


def test_rfc4235_early_example_parses_ids_tags_direction() -> None:
    info = parse_dialog_info(vector("rfc4235-early-minimal.xml"))
    assert info.entity == AOR and info.version == 1 and info.state == "full"
    (d,) = info.dialogs
    assert (d.id, d.state, d.direction, d.call_id, d.local_tag, d.remote_tag) == (
        "as7d900as8", "early", "initiator", "a84b4c76e66710", "1928301774", "456887766"
    )  # fmt: skip


def test_rfc4235_s6_full_example_keeps_every_child_and_attribute_verbatim() -> None:
    info = parse_dialog_info(vector("rfc4235-confirmed-full.xml"))
    confirmed, rejected = info.dialogs
    assert confirmed.state == "confirmed" and rejected.state == "terminated"
    assert rejected.direction == "recipient" and rejected.remote_tag is None
    el = etree.fromstring(confirmed.xml)
    ns = {"d": NS}
    assert el.findtext("d:duration", namespaces=ns) == "274"
    assert el.find("d:local/d:identity", ns).get("display") == "Alice"
    assert el.find("d:local/d:target/d:param", ns).attrib == {
        "pname": "+sip.rendering", "pval": "yes"
    }  # fmt: skip
    assert el.findtext("d:remote/d:identity", namespaces=ns) == "sip:bob@example.org"
    state = etree.fromstring(rejected.xml).find("d:state", ns)
    assert (state.get("event"), state.get("code")) == ("rejected", "486")


def test_kamailio_pua_dialoginfo_body_goes_to_watchers_under_the_aor_entity() -> None:
    info = parse_dialog_info(vector("kamailio-pua-dialoginfo-confirmed.xml"))
    out = encode_dialog_info("sip:1000@example.com", info.dialogs, 0)
    again = parse_dialog_info(out)
    assert again.dialogs == info.dialogs
    assert again.entity == "sip:1000@example.com" and again.version == 0


def test_partial_publication_is_refused_unless_reading_as_a_watcher() -> None:
    body = vector("yealink-partial-terminated.xml")
    with pytest.raises(DocumentError, match="partial"):
        parse_dialog_info(body)
    info = parse_dialog_info(body, accept_partial=True)
    assert info.state == "partial" and info.dialogs[0].state == "terminated"


def test_no_dialogs_encodes_a_valid_empty_document_rfc4235_s3_7_1() -> None:
    out = encode_dialog_info(AOR, (), 3)
    root = etree.fromstring(out)
    assert root.tag == f"{{{NS}}}dialog-info" and len(root) == 0
    assert root.attrib == {"version": "3", "state": "full", "entity": AOR}
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert parse_dialog_info(out) == DialogInfo(AOR, (), 3, "full")


def test_template_route_gives_the_same_bytes_as_encode_for_every_version() -> None:
    dialogs = parse_dialog_info(vector("rfc4235-confirmed-full.xml")).dialogs
    prefix, suffix = encode_dialog_info_template(AOR, dialogs, "full")
    for version in (0, 1, 2, 99, 10**12):
        assert prefix + str(version).encode() + suffix == encode_dialog_info(AOR, dialogs, version)


def test_compose_takes_the_latest_publication_per_dialog_id_in_stable_order() -> None:
    a1 = make_dialog("a", "trying")
    b1 = make_dialog("b", "early")
    a2 = make_dialog("a", "confirmed")
    c2 = make_dialog("c", "proceeding")
    old = DialogInfo(AOR, (a1, b1))
    new = DialogInfo(AOR, (c2, a2))
    assert compose_dialogs([old, new]) == (a2, b1, c2)
    assert compose_dialogs([]) == ()


def test_prefixed_publication_is_canonicalised_to_the_default_namespace() -> None:
    body = (
        f'<d:dialog-info xmlns:d="{NS}" version="0" state="full" entity="{AOR}">'
        '<d:dialog id="x"><d:state>early</d:state></d:dialog></d:dialog-info>'
    ).encode()
    (d,) = parse_dialog_info(body).dialogs
    assert d.xml == f'<dialog xmlns="{NS}" id="x"><state>early</state></dialog>'.encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'<dialog-info xmlns="urn:other" version="0" state="full" entity="x"/>', "root"),
        (doc("", version="-1"), "version"),
        (doc("", version="1.5"), "version"),
        (doc("", version=""), "version"),
        (doc("", state="complete"), "state"),
        (doc("", entity=""), "entity"),
        (doc("<dialog><state>early</state></dialog>"), "id"),
        (doc('<dialog id="a"/>'), "exactly one"),
        (doc('<dialog id="a"><state>early</state><state>trying</state></dialog>'), "exactly one"),
        (doc('<dialog id="a"><state>ringing</state></dialog>'), "unknown state"),
        (doc('<dialog id="a"><state event="boom">terminated</state></dialog>'), "event"),
        (doc('<dialog id="a"><state code="99x">terminated</state></dialog>'), "code"),
        (doc('<dialog id="a" direction="sideways"><state>early</state></dialog>'), "direction"),
        (doc('<dialog id="a"><state>early</state></dialog>' * 2), "duplicate"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]>' + doc(""), "DOCTYPE"),
        (doc("").replace(b"alice", b"\xff\xfe"), "UTF-8"),
        (doc("<dialog>\x01</dialog>"), "well-formed"),
    ],
)
def test_hostile_or_invalid_documents_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse_dialog_info(body)


def test_oversized_and_too_many_dialogs_are_refused() -> None:
    with pytest.raises(DocumentError, match="limit"):
        parse_dialog_info(doc("<x/>" * 20000))
    many = "".join(f'<dialog id="d{i}"><state>early</state></dialog>' for i in range(65))
    with pytest.raises(DocumentError, match="more than 64"):
        parse_dialog_info(doc(many))


TEXT = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    entity=TEXT,
    fields=st.lists(
        st.tuples(
            st.sampled_from(sorted(DIALOG_STATES)),
            st.sampled_from([None, "initiator", "recipient"]),
            st.none() | TEXT,
            st.none() | TEXT,
            st.none() | TEXT,
        ),
        max_size=4,
    ),
    version=st.integers(0, 2**40),
)
def test_encode_parse_round_trip_and_no_raw_line_breaks_or_controls(
    entity: str, fields: list[tuple[str, str | None, str | None, str | None, str | None]],
    version: int,
) -> None:  # fmt: skip
    dialogs = [
        make_dialog(f"d{i}", s, d, c, lt, rt, local_identity=c, remote_identity=rt)
        for i, (s, d, c, lt, rt) in enumerate(fields)
    ]
    out = encode_dialog_info(entity, dialogs, version)
    decl = b'<?xml version="1.0" encoding="UTF-8"?>\n'
    assert out.startswith(decl)
    assert b"\n" not in out[len(decl) :] and b"\r" not in out
    assert not any(b < 0x20 and b != 0x09 for b in out[len(decl) :])
    if entity.strip(" \t\n\r") and any(ch >= " " for ch in entity):
        again = parse_dialog_info(out)
        assert again.version == version
        assert [(d.id, d.state, d.direction) for d in again.dialogs] == [
            (d.id, d.state, d.direction) for d in dialogs
        ]
        # canonical form is a fixed point: parsing our own output changes no dialog bytes
        assert [d.xml for d in again.dialogs] == [d.xml for d in dialogs]


def test_states_are_read_case_insensitively_and_written_lower_case() -> None:
    """Kamailio 5.6's pua_dialoginfo publishes <state>Trying</state> (tests/integration/
    test_dialog_kamailio.py); the schema's values, and what watchers get, are lower case."""
    body = (b'<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
            b'version="0" state="full" entity="sip:alice@example.com">'
            b'<dialog id="k1"><state>Trying</state></dialog></dialog-info>')
    (dialog,) = parse_dialog_info(body).dialogs
    assert dialog.state == "trying"
    assert b"<state>trying</state>" in dialog.xml and b"Trying" not in dialog.xml
