"""The event-package interface (RFC 6665 §7.2): what the notifier asks of each package.

The notifier (`pa/subscription.py`) knows dialogs, NOTIFY discipline, expiry and restart; it
knows nothing of bodies. A package says, for its event name:

- which body formats it produces (Accept negotiation, 406, Content-Type) and which it reads
  in PUBLISH (415, RFC 3903 §6 step 5; none: PUBLISH is answered 489);
- how the parts its sources contribute to one resource compose into one state (`compose`):
  the registrar's part, the publications' part, the XMPP gateway's part;
- how the PUBLISHed documents of one resource compose into the "publish" part;
- how a state is written (`encode`), or, for packages whose documents carry the watcher's own
  version (RFC 4235 §4.1, RFC 3680 §5.1), a template the version is written into;
- a smaller state to send when the whole one does not fit a NOTIFY (`summary`);
- who may subscribe (`owner_only`: with authentication, only the resource's own user).

States are opaque to the notifier: it compares them with `==` (an unchanged state notifies
nobody) and hands them back to the package. Adding a package is one module with one
`EventPackage` subclass, plus its entry in `pa/packages/__init__.py`'s registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from presenced.pa.documents.negotiate import choose_format
from presenced.pa.documents.xml import DocumentError

__all__ = ["DocumentError", "EventPackage"]


class EventPackage:
    """Base of every package. Subclasses set the class attributes and override the methods."""

    # Class-level facts, ClassVar so that the mypyc build keeps them on the class too.
    name: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ()  # bodies we produce, preferred first; [0] without Accept
    publish_formats: ClassVar[tuple[str, ...]] = ()  # bodies PUBLISH may carry; () = not publishable
    default_expires: ClassVar[int | None] = None  # None: [pa] default_expires
    owner_only: ClassVar[bool] = False  # with [auth], only the resource's own user may subscribe
    versioned: ClassVar[bool] = False  # documents carry the watcher's version counter

    def choose_format(self, accept: list[str] | None) -> str | None:
        """The format for a SUBSCRIBE's Accept (None header: the default), or None for 406."""
        return choose_format(accept, self.formats)

    def empty(self, resource: str) -> object:
        """The state of a resource nobody contributes to."""
        raise NotImplementedError

    def compose(self, resource: str, parts: Mapping[str, object]) -> object:
        """One state from the sources' parts (keys: "registrar", "publish", "xmpp", ...)."""
        raise NotImplementedError

    def decode_publication(self, body: bytes, content_type: str, max_size: int) -> object:
        """A PUBLISHed body (one of `publish_formats`) as this package's publication value;
        raises DocumentError (answered 400) when it is not an acceptable document."""
        raise DocumentError(f"the {self.name} package takes no publications")

    def compose_publications(self, resource: str, publications: Sequence[object]) -> object | None:
        """The "publish" part from the resource's live publications, oldest content first;
        None when there are none."""
        raise NotImplementedError

    def encode(self, resource: str, state: object, content_type: str, now: float) -> bytes:
        """The body of `state` (packages that are not `versioned`): the notifier encodes once
        per state and format, whatever the number of watchers."""
        raise NotImplementedError

    def template(self, resource: str, state: object, content_type: str,
                 now: float) -> tuple[bytes, bytes]:
        """For `versioned` packages: (prefix, suffix) such that prefix + the watcher's version
        (decimal) + suffix is its body. Built once per state and format; each watcher's NOTIFY
        costs one concatenation."""
        raise NotImplementedError

    def summary(self, resource: str, state: object) -> object | None:
        """A smaller state for a NOTIFY the whole state does not fit, or None."""
        return None
