"""XMPP presence <-> PresenceDoc mapping (RFC 8048 §4; RFC 6121 §4.7 for XMPP presence)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presenced.jabber.mapping import (
    XmppPresence,
    person_id,
    pidf_priority_to_xmpp,
    pidf_to_xmpp,
    tuple_id,
    xmpp_priority_to_pidf,
    xmpp_to_pidf,
)
from presenced.pa.model import Note, Person, PresenceDoc, Tuple

ENTITY = "pres:juliet@jabber.test"
# xs:ID is an NCName: a letter or "_" first, then letters, digits, ".", "-", "_".
NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")


# -- XMPP -> PIDF ------------------------------------------------------------------------------


def test_available_presence_is_an_open_tuple() -> None:
    doc = xmpp_to_pidf(ENTITY, {"balcony": XmppPresence(available=True)})
    assert doc.entity == ENTITY
    assert doc.basic == "open"
    assert doc.tuples == (Tuple(id=tuple_id("balcony"), basic="open", priority=0.0),)
    assert doc.persons == ()


def test_unavailable_presence_is_a_closed_tuple_keeping_its_status() -> None:
    pres = XmppPresence(available=False, statuses=(("Gone to bed", "en"),))
    doc = xmpp_to_pidf(ENTITY, {"balcony": pres})
    assert doc.basic == "closed"
    assert doc.tuples == (
        Tuple(id=tuple_id("balcony"), basic="closed", notes=(Note("Gone to bed", "en"),)),
    )


def test_no_resources_gives_one_stable_closed_tuple() -> None:
    doc = xmpp_to_pidf(ENTITY, {})
    assert doc.basic == "closed"
    assert [t.id for t in doc.tuples] == [tuple_id("")]


@pytest.mark.parametrize(
    ("show", "activities"),
    [
        (None, ()),
        ("chat", ()),
        ("away", ("away",)),
        ("xa", ("away",)),  # RPID has no "extended away"
        ("dnd", ("busy",)),
    ],
)
def test_show_maps_to_rpid_activities(show: str | None, activities: tuple[str, ...]) -> None:
    doc = xmpp_to_pidf(ENTITY, {"r": XmppPresence(available=True, show=show)})
    (t,) = doc.tuples
    assert t.basic == "open"
    assert t.activities == activities
    assert doc.persons == (
        (Person(id=person_id(ENTITY), activities=activities),) if activities else ()
    )


def test_unknown_show_value_maps_to_no_activity() -> None:
    doc = xmpp_to_pidf(ENTITY, {"r": XmppPresence(available=True, show="sleeping")})
    assert doc.tuples[0].activities == ()
    assert doc.persons == ()


def test_every_status_becomes_a_note_with_its_language() -> None:
    statuses = (("Parti déjeuner", "fr"), ("Out for lunch", "en"), ("¯\\_(ツ)_/¯", None))
    doc = xmpp_to_pidf(ENTITY, {"r": XmppPresence(available=True, statuses=statuses)})
    assert doc.tuples[0].notes == (
        Note("Parti déjeuner", "fr"),
        Note("Out for lunch", "en"),
        Note("¯\\_(ツ)_/¯", None),
    )


@pytest.mark.parametrize(
    ("xmpp", "pidf"),
    [(0, 0.0), (1, 0.008), (2, 0.016), (64, 0.504), (126, 0.992), (127, 1.0), (500, 1.0)],
)
def test_priority_scales_to_pidf_zero_to_one(xmpp: int, pidf: float) -> None:
    assert xmpp_priority_to_pidf(xmpp) == pidf


@pytest.mark.parametrize("prio", [-1, -128])
def test_negative_priority_is_not_mapped(prio: int) -> None:
    assert xmpp_priority_to_pidf(prio) is None
    doc = xmpp_to_pidf(ENTITY, {"r": XmppPresence(available=True, priority=prio)})
    assert doc.tuples[0].priority is None


def test_priority_mapping_is_unique_and_round_trips_for_every_value() -> None:
    mapped = [xmpp_priority_to_pidf(p) for p in range(128)]
    assert len(set(mapped)) == 128
    assert [pidf_priority_to_xmpp(q) for q in mapped] == list(range(128))


@pytest.mark.parametrize(
    ("pidf", "xmpp"), [(None, 0), (0.0, 0), (0.5, 64), (1.0, 127), (7.0, 127), (-1.0, 0)]
)
def test_pidf_priority_to_xmpp_is_clamped(pidf: float | None, xmpp: int) -> None:
    assert pidf_priority_to_xmpp(pidf) == xmpp


def test_one_tuple_per_resource_and_person_follows_the_top_priority_resource() -> None:
    resources = {
        "phone": XmppPresence(available=True, show="dnd", priority=1),
        "desk": XmppPresence(available=True, show="away", priority=10),
        "old": XmppPresence(available=False),
    }
    doc = xmpp_to_pidf(ENTITY, resources)
    assert [t.id for t in doc.tuples] == [tuple_id("desk"), tuple_id("phone"), tuple_id("old")]
    assert [t.basic for t in doc.tuples] == ["open", "open", "closed"]
    assert doc.persons == (Person(id=person_id(ENTITY), activities=("away",)),)


def test_equal_priorities_pick_the_person_deterministically() -> None:
    a = {"b": XmppPresence(True, "dnd"), "a": XmppPresence(True, "away")}
    b = {"a": XmppPresence(True, "away"), "b": XmppPresence(True, "dnd")}
    assert xmpp_to_pidf(ENTITY, a) == xmpp_to_pidf(ENTITY, b)
    assert xmpp_to_pidf(ENTITY, a).persons[0].activities == ("away",)


@pytest.mark.parametrize("resource", ["", "balcony", "1abc", "a b/c", "Ωμέγα", "x" * 500, "-", "."])
def test_tuple_id_is_a_stable_xs_id(resource: str) -> None:
    tid = tuple_id(resource)
    assert NCNAME.match(tid)
    assert tuple_id(resource) == tid
    assert NCNAME.match(person_id(resource))


def test_tuple_ids_differ_per_resource() -> None:
    ids = {tuple_id(f"res{i}") for i in range(1000)}
    assert len(ids) == 1000


# -- PIDF -> XMPP ------------------------------------------------------------------------------


def _doc(
    *tuples: Tuple, persons: tuple[Person, ...] = (), notes: tuple[Note, ...] = ()
) -> PresenceDoc:
    return PresenceDoc(entity=ENTITY, tuples=tuples, persons=persons, notes=notes)


def test_closed_document_is_unavailable() -> None:
    doc = _doc(Tuple("t", "closed", notes=(Note("Offline", "en"),)))
    assert pidf_to_xmpp(doc) == XmppPresence(available=False, statuses=(("Offline", "en"),))
    assert pidf_to_xmpp(_doc()) == XmppPresence(available=False)


def test_any_open_tuple_makes_it_available() -> None:
    doc = _doc(Tuple("a", "closed"), Tuple("b", "open"))
    assert pidf_to_xmpp(doc) == XmppPresence(available=True)


@pytest.mark.parametrize(
    ("activities", "show"),
    [
        ((), None),
        (("away",), "away"),
        (("busy",), "dnd"),
        (("away", "busy"), "dnd"),
        (("on-the-phone",), None),  # not in RFC 8048's mapping: carried only as notes
        (("meeting",), None),
    ],
)
def test_rpid_activities_map_to_show(activities: tuple[str, ...], show: str | None) -> None:
    on_person = _doc(Tuple("t", "open"), persons=(Person("p", activities=activities),))
    on_tuple = _doc(Tuple("t", "open", activities=activities))
    assert pidf_to_xmpp(on_person).show == show
    assert pidf_to_xmpp(on_tuple).show == show


def test_activities_of_closed_tuples_are_ignored() -> None:
    doc = _doc(Tuple("a", "open"), Tuple("b", "closed", activities=("busy",)))
    assert pidf_to_xmpp(doc).show is None


def test_notes_keep_language_order_and_drop_duplicates() -> None:
    doc = _doc(
        Tuple("t", "open", notes=(Note("Au bureau", "fr"), Note("At the office", "en"))),
        Tuple("u", "closed", notes=(Note("ignored while available", "en"),)),
        persons=(Person("p", notes=(Note("At the office", "en"),)),),
        notes=(Note("Au bureau", "fr"), Note("Global", None)),
    )
    assert pidf_to_xmpp(doc).statuses == (
        ("At the office", "en"),
        ("Au bureau", "fr"),
        ("Global", None),
    )


def test_priority_is_the_highest_open_tuple_priority() -> None:
    doc = _doc(
        Tuple("a", "open", priority=0.2),
        Tuple("b", "open", priority=0.8),
        Tuple("c", "closed", priority=1.0),
        Tuple("d", "open"),
    )
    assert pidf_to_xmpp(doc).priority == round(0.8 * 127)
    assert pidf_to_xmpp(_doc(Tuple("d", "open"))).priority == 0


# -- both ways ---------------------------------------------------------------------------------

_shows = st.sampled_from([None, "away", "dnd", "chat", "xa"])
_statuses = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.sampled_from([None, "en", "fr", "de-CH"])),
    max_size=4,
    unique=True,
).map(tuple)


@given(st.booleans(), _shows, _statuses, st.integers(-128, 127))
def test_single_resource_round_trip(
    available: bool, show: str | None, statuses: tuple[tuple[str, str | None], ...], prio: int
) -> None:
    pres = XmppPresence(available, show if available else None, statuses, prio if available else 0)
    back = pidf_to_xmpp(xmpp_to_pidf(ENTITY, {"r": pres}))
    # Lossy by design (RFC 8048): xa -> away, chat -> none, negative priority -> 0.
    expected_show = {"xa": "away", "chat": None}.get(pres.show, pres.show) if available else None
    assert back == XmppPresence(
        available=available,
        show=expected_show,
        statuses=statuses,
        priority=max(pres.priority, 0),
    )
