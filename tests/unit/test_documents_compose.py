"""Composition of a presentity's sources into one document (policy: presenced.pa.compose)."""

from __future__ import annotations

from presenced.pa.compose import compose
from presenced.pa.model import Note, Person, PresenceDoc, Tuple

E = "pres:alice@example.com"


def test_no_sources_give_an_empty_closed_document() -> None:
    doc = compose(E, [])
    assert doc == PresenceDoc(E)
    assert doc.basic == "closed"


def test_entity_comes_from_the_argument_not_the_parts() -> None:
    doc = compose(E, [PresenceDoc("sip:alice@example.com", (Tuple("t", "open"),))])
    assert doc.entity == E
    assert doc.tuples == (Tuple("t", "open"),)


def test_later_tuple_with_same_id_replaces_earlier_whole_in_first_position() -> None:
    old = PresenceDoc(E, (Tuple("a", "open", "sip:a@x", 0.5, (Note("old"),)), Tuple("b", "open")))
    new = PresenceDoc(E, (Tuple("a", "closed"),))
    doc = compose(E, [old, new])
    assert doc.tuples == (Tuple("a", "closed"), Tuple("b", "open"))


def test_closed_publication_and_live_registration_keep_both_tuples_and_read_open() -> None:
    registrar = PresenceDoc(E, (Tuple("reg", "open", "sip:alice@192.0.2.1"),))
    publish = PresenceDoc(E, (Tuple("pub", "closed", "sip:alice@192.0.2.1"),))
    doc = compose(E, [registrar, publish])
    assert [(t.id, t.basic) for t in doc.tuples] == [("reg", "open"), ("pub", "closed")]
    assert doc.basic == "open"


def test_all_closed_reads_closed() -> None:
    doc = compose(
        E, [PresenceDoc(E, (Tuple("a", "closed"),)), PresenceDoc(E, (Tuple("b", "closed"),))]
    )
    assert doc.basic == "closed"


def test_persons_with_same_id_are_merged_with_unions_in_order() -> None:
    a = PresenceDoc(
        E, persons=(Person("p", ("away", "meal"), ("happy",), (Note("x", "en"),), 10.0),)
    )
    b = PresenceDoc(
        E,
        persons=(
            Person(
                "p", ("meal", "busy"), ("happy", "sad"), (Note("x", "en"), Note("x", "fr")), 5.0
            ),
        ),
    )
    (p,) = compose(E, [a, b]).persons
    assert p == Person(
        "p", ("away", "meal", "busy"), ("happy", "sad"), (Note("x", "en"), Note("x", "fr")), 10.0
    )


def test_person_timestamp_is_the_latest_given() -> None:
    a = PresenceDoc(E, persons=(Person("p"),))
    b = PresenceDoc(E, persons=(Person("p", timestamp=7.0),))
    c = PresenceDoc(E, persons=(Person("p", timestamp=3.0),))
    assert compose(E, [a, b, c]).persons[0].timestamp == 7.0


def test_persons_with_different_ids_stay_apart_in_first_seen_order() -> None:
    a = PresenceDoc(E, persons=(Person("x", ("away",)),))
    b = PresenceDoc(E, persons=(Person("y", ("busy",)), Person("x", ("meal",))))
    assert compose(E, [a, b]).persons == (Person("x", ("away", "meal")), Person("y", ("busy",)))


def test_presentity_notes_are_unioned_keeping_lang_and_dropping_duplicates() -> None:
    a = PresenceDoc(E, notes=(Note("Tokyo"), Note("Tokyo", "en")))
    b = PresenceDoc(E, notes=(Note("Tokyo", "en"), Note("Tokyo", "fr"), Note("Tokyo")))
    assert compose(E, [a, b]).notes == (Note("Tokyo"), Note("Tokyo", "en"), Note("Tokyo", "fr"))


def test_duplicates_inside_a_single_part_are_dropped_too() -> None:
    a = PresenceDoc(E, (Tuple("t", "closed"), Tuple("t", "open")), notes=(Note("n"), Note("n")))
    doc = compose(E, [a])
    assert doc.tuples == (Tuple("t", "open"),)
    assert doc.notes == (Note("n"),)
