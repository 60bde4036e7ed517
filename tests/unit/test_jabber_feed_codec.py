"""The gateway leader hands an XMPP user's presence to the other nodes as msgpack ("jp" on the
cluster feed); what a node decodes must be the same document, made of the model's own classes,
in the pure and in the mypyc build (msgspec reads the Structs' field types)."""

from __future__ import annotations

from presenced.pa.model import Note, Person, PresenceDoc, Tuple
from presenced.services.jabber import _decode_doc, _encode_doc


def test_a_document_survives_the_feed_with_its_own_classes() -> None:
    doc = PresenceDoc(
        "pres:juliet@xmpp.example.com",
        (Tuple("t1", "open", "xmpp:juliet@xmpp.example.com/balcony", 0.5, (Note("here", "en"),)),),
        (Person("p1", ("away",), (), (Note("back soon"),), 1_700_000_000.0),),
        (Note("hello"),),
    )
    back = _decode_doc(_encode_doc(doc))
    assert back == doc
    assert back is not None and isinstance(back.tuples[0], Tuple)
    assert isinstance(back.persons[0], Person) and isinstance(back.persons[0].notes[0], Note)


def test_no_document_is_none() -> None:
    assert _decode_doc(_encode_doc(None)) is None
