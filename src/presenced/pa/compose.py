"""Composition: one presence document for a presentity out of all its sources.

A presentity's state comes from several independent sources — the registrar (one tuple per
registered contact), each live PUBLISH (RFC 3903) and each XMPP resource via the gateway — each
handed in as a `PresenceDoc`. `compose(entity, parts)` merges them; `parts` is ordered oldest
source first (the caller decides the order; the agent uses the order in which the sources last
changed), and the policy is:

1. Entity: the composed document is about `entity`; the parts' own entity attributes are ignored
   (a PUBLISH may name the presentity with a sip: URI, the registrar with pres:).
2. Tuples are kept by id. A later part whose tuple has the same id replaces the earlier tuple
   whole (status, contact, notes, timestamp: no field-by-field mixing), and the tuple keeps the
   position where the id first appeared, so watchers see a stable order. Tuples with different ids
   are all kept, whatever their status.
3. Overall status is not decided here: every tuple is kept, and `PresenceDoc.basic` is open when
   any tuple is open. So a publication saying "closed" while a registration is live gives two
   tuples, one closed and one open, and the flat formats (XPIDF, LPIDF summary) say open — the
   presentity is reachable through the registered contact (RFC 3863: each tuple is one
   service; the RFC 4479 data model keeps services separate rather than averaging them).
4. Persons are merged by id: activities and moods are unioned in first-seen order, duplicates
   dropped; notes likewise (a note is a duplicate when text and xml:lang are both equal); the
   timestamp is the latest one given. Persons with different ids stay separate, in first-seen
   order.
5. Presentity notes are unioned in first-seen order; a note repeated with the same text and
   xml:lang is kept once, the same text in another language is kept as well.

Composition is pure and cheap (dict and tuple work only); it runs on every source change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from presenced.pa.model import Note, Person, PresenceDoc, Tuple

_T = TypeVar("_T")


def _union(into: list[_T], seen: set[_T], items: Iterable[_T]) -> None:
    for item in items:
        if item not in seen:
            seen.add(item)
            into.append(item)


class _PersonAcc:
    __slots__ = ("activities", "moods", "notes", "seen_a", "seen_m", "seen_n", "timestamp")

    def __init__(self) -> None:
        self.activities: list[str] = []
        self.moods: list[str] = []
        self.notes: list[Note] = []
        self.seen_a: set[str] = set()
        self.seen_m: set[str] = set()
        self.seen_n: set[Note] = set()
        self.timestamp: float | None = None

    def add(self, p: Person) -> None:
        _union(self.activities, self.seen_a, p.activities)
        _union(self.moods, self.seen_m, p.moods)
        _union(self.notes, self.seen_n, p.notes)
        if p.timestamp is not None and (self.timestamp is None or p.timestamp > self.timestamp):
            self.timestamp = p.timestamp


def compose(entity: str, parts: Sequence[PresenceDoc]) -> PresenceDoc:
    """Merge the sources of one presentity into one document (policy in the module docstring)."""
    tuples: dict[str, Tuple] = {}
    persons: dict[str, _PersonAcc] = {}
    notes: list[Note] = []
    seen_notes: set[Note] = set()
    for part in parts:
        for t in part.tuples:
            tuples[t.id] = t  # a dict keeps the first insertion position on reassignment
        for p in part.persons:
            acc = persons.get(p.id)
            if acc is None:
                acc = persons[p.id] = _PersonAcc()
            acc.add(p)
        _union(notes, seen_notes, part.notes)
    return PresenceDoc(
        entity=entity,
        tuples=tuple(tuples.values()),
        persons=tuple(
            Person(pid, tuple(a.activities), tuple(a.moods), tuple(a.notes), a.timestamp)
            for pid, a in persons.items()
        ),
        notes=tuple(notes),
    )
