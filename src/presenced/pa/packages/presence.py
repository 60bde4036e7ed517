"""The presence event package (RFC 3856): PIDF/RPID, cpim-pidf, XPIDF and LPIDF bodies.

Composition (docs/presence.md, "Composition policy") merges the parts of one presentity:
"registrar" (one tuple, open from the first binding to the last), "publish" (the composed
PUBLISHed documents) and "xmpp" (the XMPP gateway's tuples). How the registrar's tuple counts
beside publications is `RegistrarPolicy`:

- "fallback": only while no live publication has a tuple;
- "until-published" (the default): as "fallback", and once the AOR has published during its
  current registration (the "published" marker part, set by the publication service and
  cleared by the registrar when the last binding goes), not at all. A client that goes
  offline by withdrawing its PUBLISH but stays registered (liblinphone does) then shows
  offline, as it asked, instead of online with its device's address;
- "always": the registrar's tuple is merged with the publications';
- "never": registrations say nothing about presence.

Without any tuple left, the presentity is closed (person elements and notes are kept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from presenced.pa.compose import compose
from presenced.pa.documents.negotiate import SUPPORTED, encode
from presenced.pa.documents.pidf import decode_pidf, stable_id
from presenced.pa.model import PresenceDoc, Tuple
from presenced.pa.packages.base import EventPackage

RegistrarPolicy = Literal["until-published", "fallback", "always", "never"]
REGISTRAR_POLICIES: tuple[str, ...] = ("until-published", "fallback", "always", "never")

NAME = "presence"
# The key of the marker part: the presentity has published during its current registration.
PUBLISHED = "published"
PUBLISHED_MARK = True


def entity_of(presentity: str) -> str:
    return f"pres:{presentity}"


def presentity_tuple_id(presentity: str) -> str:
    """The id of a presentity's main tuple: the registrar's tuple and the closed default share
    it, so a watcher sees one service going open and closed (RFC 3863 §4.1.2)."""
    return stable_id(presentity)


def closed_doc(presentity: str) -> PresenceDoc:
    """What a user with no registration and no publication is: one closed tuple."""
    return PresenceDoc(entity_of(presentity), (Tuple(presentity_tuple_id(presentity), "closed"),))


def summary_doc(doc: PresenceDoc) -> PresenceDoc:
    """The smaller document sent when the whole one does not fit a NOTIFY: each tuple's id and
    basic status, no contacts, notes, activities or person elements."""
    return PresenceDoc(doc.entity, tuple(Tuple(t.id, t.basic) for t in doc.tuples))


class PresencePackage(EventPackage):
    name = NAME
    formats = SUPPORTED
    # decode_pidf reads both: RFC 3863 PIDF and the pre-RFC cpim-pidf namespace old clients use.
    publish_formats = ("application/pidf+xml", "application/cpim-pidf+xml")

    def __init__(self, registrar_policy: RegistrarPolicy = "until-published") -> None:
        if registrar_policy not in REGISTRAR_POLICIES:
            raise ValueError(f"unknown registrar policy {registrar_policy!r}")
        self.registrar_policy = registrar_policy

    def empty(self, resource: str) -> PresenceDoc:
        return closed_doc(resource)

    def compose(self, resource: str, parts: Mapping[str, object]) -> PresenceDoc:
        published = parts.get("publish")
        published_tuples = isinstance(published, PresenceDoc) and bool(published.tuples)
        with_registrar = self._registrar_counts(parts, published_tuples)
        docs = [part for key, part in parts.items()  # in the order the sources first spoke
                if isinstance(part, PresenceDoc) and (key != "registrar" or with_registrar)]
        doc = compose(entity_of(resource), docs)
        if doc.tuples:
            return doc
        return PresenceDoc(doc.entity, closed_doc(resource).tuples, doc.persons, doc.notes)

    def _registrar_counts(self, parts: Mapping[str, object], published_tuples: bool) -> bool:
        policy = self.registrar_policy
        if policy == "always":
            return True
        if policy == "never":
            return False
        if published_tuples:
            return False
        return policy == "fallback" or PUBLISHED not in parts

    def decode_publication(self, body: bytes, content_type: str, max_size: int) -> PresenceDoc:
        return decode_pidf(body, max_size=max_size)

    def compose_publications(self, resource: str,
                             publications: Sequence[object]) -> PresenceDoc | None:
        docs = [p for p in publications if isinstance(p, PresenceDoc)]
        return compose(entity_of(resource), docs) if docs else None

    def encode(self, resource: str, state: object, content_type: str, now: float) -> bytes:
        assert isinstance(state, PresenceDoc)
        try:
            return encode(state, content_type, now)
        except ValueError:
            # A document we accepted but cannot write must not take the presentity (or a
            # restart) down with it: say closed rather than nothing.
            return encode(closed_doc(resource), content_type, now)

    def summary(self, resource: str, state: object) -> PresenceDoc | None:
        assert isinstance(state, PresenceDoc)
        return summary_doc(state)
