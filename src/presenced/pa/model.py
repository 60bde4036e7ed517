"""The presence model every document codec and every source maps to and from.

One `PresenceDoc` describes one presentity (RFC 3863 §3.1): tuples (services, each open or
closed), RPID persons (RFC 4480 activities and notes) and presentity-level notes. The codecs in
`pa.documents` turn it into PIDF, XPIDF, LPIDF or cpim-pidf bytes, and PIDF bytes back into it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Basic = Literal["open", "closed"]

# Frozen msgspec Structs, not frozen dataclasses: a dataclass's generated __init__ sets each
# field through object.__setattr__ in interpreted code (1.2 us for a Tuple), a Struct's is C
# (docs/performance.md, "Ninth pass"). Trees of these hold no cycles, hence gc=False. They
# encode to the same msgpack maps the dataclasses did, so stored documents read back.


class Note(msgspec.Struct, frozen=True, gc=False):
    """A human-readable note (RFC 3863 §4.1.6) with its xml:lang, kept as received."""

    text: str
    lang: str | None = None


class Tuple(msgspec.Struct, frozen=True, gc=False):
    """One PIDF tuple: a service with a basic status.

    `id` must stay stable across notifications for the same source (RFC 3863 §4.1.2), so sources
    derive it from something durable (the registrar from the AOR, PUBLISH from the published id,
    the XMPP gateway from the resource).
    """

    id: str
    basic: Basic
    contact: str | None = None
    priority: float | None = None  # contact priority, 0.0 .. 1.0 (RFC 3863 §4.1.5)
    notes: tuple[Note, ...] = ()
    timestamp: float | None = None  # epoch seconds; serialized as RFC 3339 UTC
    # RPID elements that may sit in a tuple's <status> (RFC 4480 §3.1)
    activities: tuple[str, ...] = ()


class Person(msgspec.Struct, frozen=True, gc=False):
    """An RPID <dm:person> (RFC 4480 §4 / RFC 4479 data model)."""

    id: str
    activities: tuple[str, ...] = ()  # RPID activity names: "away", "busy", "on-the-phone", ...
    moods: tuple[str, ...] = ()
    notes: tuple[Note, ...] = ()
    timestamp: float | None = None


class PresenceDoc(msgspec.Struct, frozen=True, gc=False):
    """Everything presenced knows about one presentity at one moment."""

    entity: str  # "pres:alice@example.com" (RFC 3863 §4.1.1)
    tuples: tuple[Tuple, ...] = ()
    persons: tuple[Person, ...] = ()
    notes: tuple[Note, ...] = ()

    @property
    def basic(self) -> Basic:
        """Open when any tuple is open: the summary used by the flat formats (LPIDF, XPIDF)."""
        return "open" if any(t.basic == "open" for t in self.tuples) else "closed"
