"""XMPP presence <-> presence model mapping for the jabber gateway (RFC 8048; pure).

RFC 8048 (which obsoletes RFC 7248) §4 maps XMPP presence to SIP/PIDF and back. What this module
does with each piece (the same table is in docs/jabber.md):

=======================  =============================================================
XMPP                     PresenceDoc
=======================  =============================================================
no 'type' (available)    tuple basic "open"
type='unavailable'       tuple basic "closed"
resource                 one Tuple per resource; id = ``tuple_id(resource)``: PIDF tuple
                         ids are xs:ID (must start with a letter) while resources are free
                         strings, so the id is a stable digest, not the resource itself
<show/> away / xa        RPID activity "away" (RPID has no "extended away")
<show/> dnd              RPID activity "busy"
<show/> chat / absent    no activity
<status xml:lang=L>      Note(text, lang=L) on the resource's tuple, language kept
<priority/> 0..127       Tuple.priority = priority / 127 rounded to 3 places (0.0 .. 1.0);
                         negative priorities are not mapped (Tuple.priority None)
=======================  =============================================================

The activities of the highest-priority available resource also go on one RPID Person, because
RPID puts activities on the person (RFC 4480 §3.2); per-resource activities stay on the tuples.

The reverse direction (`pidf_to_xmpp`) collapses a document into the one presence a component
JID can send: available when any tuple is open; "busy" -> dnd, else "away" -> away (also for
activities that only sit on tuples); notes from persons, open tuples and the document in that
order, duplicates dropped; the highest open tuple priority scaled back to 0..127.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from presenced.pa.model import Note, Person, PresenceDoc, Tuple

__all__ = [
    "SHOW_VALUES",
    "XmppPresence",
    "person_id",
    "pidf_priority_to_xmpp",
    "pidf_to_xmpp",
    "tuple_id",
    "xmpp_priority_to_pidf",
    "xmpp_to_pidf",
]

# RFC 6121 §4.7.2.1: the only defined <show/> values.
SHOW_VALUES = frozenset({"away", "chat", "dnd", "xa"})

_SHOW_TO_ACTIVITIES: dict[str | None, tuple[str, ...]] = {
    None: (),
    "chat": (),
    "away": ("away",),
    "xa": ("away",),
    "dnd": ("busy",),
}

_MAX_PRIORITY = 127  # RFC 6121 §4.7.2.3: priority is -128..+127


@dataclass(frozen=True, slots=True)
class XmppPresence:
    """One resource's presence as XMPP carries it (RFC 6121 §4.7).

    ``statuses`` holds every <status/> as ``(text, xml:lang or None)``; ``show`` is one of
    `SHOW_VALUES` or ``None``; ``priority`` is clamped to -128..127 by the component.
    """

    available: bool
    show: str | None = None
    statuses: tuple[tuple[str, str | None], ...] = ()
    priority: int = 0


@lru_cache(maxsize=4096)
def tuple_id(resource: str) -> str:
    """A stable PIDF tuple id (an xs:ID, RFC 3863 §4.1.2) derived from an XMPP resource."""
    return "x" + hashlib.sha256(resource.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@lru_cache(maxsize=4096)
def person_id(entity: str) -> str:
    """A stable RPID person id derived from the presentity."""
    return "p" + hashlib.sha256(entity.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def xmpp_priority_to_pidf(priority: int) -> float | None:
    """XMPP priority (-128..127) -> PIDF contact priority (0..1, three decimals) per RFC 8048:
    negative values are not mapped, 0 -> 0.0, 127 -> 1.0, values in between stay distinct."""
    if priority < 0:
        return None
    return round(min(priority, _MAX_PRIORITY) / _MAX_PRIORITY, 3)


def pidf_priority_to_xmpp(priority: float | None) -> int:
    """Inverse of `xmpp_priority_to_pidf`; ``None`` (no priority) becomes the XMPP default 0."""
    if priority is None or priority != priority:  # None or NaN
        return 0
    return max(0, min(_MAX_PRIORITY, round(priority * _MAX_PRIORITY)))


def _rank(item: tuple[str, XmppPresence]) -> tuple[int, str]:
    # Highest priority first; the resource name breaks ties so the choice is deterministic.
    resource, pres = item
    return (-pres.priority, resource)


def xmpp_to_pidf(entity: str, resources: Mapping[str, XmppPresence]) -> PresenceDoc:
    """Build the PresenceDoc of ``entity`` (used verbatim as PresenceDoc.entity) from the last
    presence of each of its XMPP resources (RFC 8048 §4).

    No resources at all gives a single closed tuple (id ``tuple_id("")``) so watchers still
    see a stable tuple go closed.
    """
    if not resources:
        return PresenceDoc(entity=entity, tuples=(Tuple(id=tuple_id(""), basic="closed"),))
    ordered = sorted(resources.items(), key=_rank)
    tuples: list[Tuple] = []
    for resource, pres in ordered:
        notes = tuple(Note(text, lang) for text, lang in pres.statuses)
        if pres.available:
            activities = _SHOW_TO_ACTIVITIES.get(pres.show, ())
            tuples.append(
                Tuple(
                    id=tuple_id(resource),
                    basic="open",
                    priority=xmpp_priority_to_pidf(pres.priority),
                    notes=notes,
                    activities=activities,
                )
            )
        else:
            tuples.append(Tuple(id=tuple_id(resource), basic="closed", notes=notes))
    top = next((p for _, p in ordered if p.available), None)
    top_activities = _SHOW_TO_ACTIVITIES.get(top.show, ()) if top is not None else ()
    persons = (Person(id=person_id(entity), activities=top_activities),) if top_activities else ()
    return PresenceDoc(entity=entity, tuples=tuple(tuples), persons=persons)


def _unique_notes(groups: Iterable[Iterable[Note]]) -> tuple[tuple[str, str | None], ...]:
    seen: set[tuple[str, str | None]] = set()
    out: list[tuple[str, str | None]] = []
    for group in groups:
        for note in group:
            key = (note.text, note.lang)
            if key not in seen:
                seen.add(key)
                out.append(key)
    return tuple(out)


def pidf_to_xmpp(doc: PresenceDoc) -> XmppPresence:
    """Collapse a PresenceDoc into one XMPP presence (RFC 8048 §4, SIP to XMPP direction)."""
    open_tuples = [t for t in doc.tuples if t.basic == "open"]
    if not open_tuples:
        statuses = _unique_notes(
            [*(p.notes for p in doc.persons), *(t.notes for t in doc.tuples), doc.notes]
        )
        return XmppPresence(available=False, statuses=statuses)
    activities: set[str] = set()
    for person in doc.persons:
        activities.update(person.activities)
    for t in open_tuples:
        activities.update(t.activities)
    show: str | None = None
    if "busy" in activities:
        show = "dnd"
    elif "away" in activities:
        show = "away"
    statuses = _unique_notes(
        [*(p.notes for p in doc.persons), *(t.notes for t in open_tuples), doc.notes]
    )
    priorities = [t.priority for t in open_tuples if t.priority is not None]
    priority = pidf_priority_to_xmpp(max(priorities)) if priorities else 0
    return XmppPresence(available=True, show=show, statuses=statuses, priority=priority)
