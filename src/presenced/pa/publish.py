"""PUBLISH decisions (RFC 3903): the event state compositor's publications, in memory.

Theory of operation
-------------------
`Publications` is the authoritative state of every live publication of the process, for every
event package that takes publications (presence, dialog, message-summary: the package decodes
and composes, this module keeps entity-tags, expiry and caps). A publication belongs to one
resource, (event, presentity). `handle(req, presentity, now)` runs RFC 3903 §6 steps 2-6 on one
PUBLISH and returns a
`PublishOutcome`: the response to send, plus what the caller must persist *before* sending it
(`put` / `delete_etag`, written as `Storage.put_publication(put, replaces=delete_etag)`, or
`Storage.delete_publication(delete_etag)` when there is nothing to put) and the presentities
(of the PUBLISH's event) whose composed state changed. If that write fails, `revert(outcome)` undoes the change in memory
and the caller answers 500 instead (§6: a PUBLISH is processed completely or not at all).

The checks run in the order of §6, each answering at once:

    Event missing or no package takes publications   489, Allow-Events: those that do (step 2)
    SIP-If-Match repeated or not one entity-tag       400                           (step 3)
    SIP-If-Match unknown, expired, other resource    412                           (step 3)
    Expires unparseable / 0 < Expires < min_expires   400 / 423, Min-Expires        (step 4)
    body of a type we do not read                     415, Accept                   (step 5)
    body too big, hostile, not a document of the event  400, reason names the problem (step 5)
    no body and no SIP-If-Match                       400                           (step 5)
    max_per_presentity publications already           403                           (step 5)
    the resource's live bodies would pass max_presentity_bytes  413                 (step 5)
    max_publications or max_total_bytes reached        503, Retry-After              (step 5)

and the four operations of §4 (Table 1) follow:

    initial  (no SIP-If-Match, body)     new publication, new etag
    refresh  (SIP-If-Match, no body)     same content, new etag, new expiry; no presence change
    modify   (SIP-If-Match, body)        content replaced, new etag
    remove   (SIP-If-Match, Expires: 0)  publication deleted; 200 with Expires: 0

Every success issues a fresh entity-tag: §6 step 6 says the ESC "MUST generate a new
entity-tag for each successful publication, replacing any previous entity-tag", and a refresh is
one. So each SIP-If-Match is good for exactly one request: of two PUBLISHes racing with the same
tag (a retransmitting client, a forking proxy) the first wins and the second gets 412, after
which the client starts over with an initial PUBLISH (§5). State changes happen synchronously
inside `handle`, so no await can slip between the lookup and the update.

Expires: 0 stores nothing (§6 step 5): with a SIP-If-Match it removes the publication (a body
sent along is still checked, then ignored); without one it is an initial publication that is
dropped at once. Either way the 200 carries Expires: 0 and no SIP-ETag, as no event state is
left for a tag to name.

Composition order: `docs_for` returns a resource's decoded documents in the order their content last
changed (a refresh does not move a publication), so with `compose` the newest content wins where
tuple ids coincide. Tuple ids are kept exactly as published: a client re-publishing the same
tuple id (say after a 412 left its old publication alive until expiry) replaces its old tuple
rather than adding a second one; different publishers only collide if they chose the same id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec

from presenced.pa.documents.xml import DocumentError
from presenced.pa.packages import EventPackage, Registry, registry
from presenced.pa.packages.presence import NAME as PRESENCE
from presenced.pa.records import Publication
from presenced.pa.timers import DeadlineHeap
from presenced.sip.errors import LocalError, ParseError
from presenced.sip.headers import is_token
from presenced.sip.message import Request, Response, make_response

_MAX_REASON = 120
_ETAG_ATTEMPTS = 16
_NO_CHANGE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PublishPolicy:
    default_expires: int = 3600  # when the PUBLISH has no Expires (§6 step 4)
    min_expires: int = 60  # below this (and above 0): 423 with Min-Expires
    max_expires: int = 86400  # longer requests are granted this
    max_body_size: int = 65536  # bigger bodies: 400, before any parsing
    max_per_presentity: int = 32  # live publications of one presentity; one more: 403
    # A presentity's live bodies together; passing it: 413 (the body is what is too large: a
    # smaller one would be taken, and the composed document stays within one NOTIFY).
    max_presentity_bytes: int = 65536
    max_publications: int = 100_000  # in the whole process; beyond: 503 + Retry-After
    max_total_bytes: int = 64 * 1024 * 1024  # all live bodies; beyond: 503 + Retry-After


# One per PUBLISH: its __init__ is written out (init=False), which mypyc compiles; the one
# @dataclass generates stays interpreted (9.5 k instructions a call, docs/performance.md
# "Tenth pass").
@dataclass(frozen=True, slots=True, init=False)
class PublishOutcome:
    """What one PUBLISH did. Persist `put` / `delete_etag` before sending `response`."""

    response: Response
    put: Publication | None
    delete_etag: str | None
    changed: frozenset[str]  # presentities whose composed state changed
    replaced: Publication | None  # the publication refreshed, modified or removed
    event: str  # the package of the publication (and of `changed`)

    def __init__(self, response: Response, put: Publication | None = None,
                 delete_etag: str | None = None, changed: frozenset[str] = _NO_CHANGE,
                 replaced: Publication | None = None, event: str = PRESENCE) -> None:
        object.__setattr__(self, "response", response)
        object.__setattr__(self, "put", put)
        object.__setattr__(self, "delete_etag", delete_etag)
        object.__setattr__(self, "changed", changed)
        object.__setattr__(self, "replaced", replaced)
        object.__setattr__(self, "event", event)


class _Entry:
    __slots__ = ("doc", "pub", "serial")

    def __init__(self, pub: Publication, doc: object, serial: int) -> None:
        self.pub = pub
        self.doc = doc  # decoded once by the package; NOTIFYs compose from this
        self.serial = serial  # position among the presentity's publications


def _reason(text: str) -> str:
    """A Reason-Phrase from a decoder message: no control characters, bounded length."""
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean if len(clean) <= _MAX_REASON else clean[: _MAX_REASON - 3] + "..."


Resource = tuple[str, str]  # (event, presentity)


class Publications:
    """All live publications of one process (RFC 3903 §6), keyed by entity-tag."""

    __slots__ = (
        "_by_etag",
        "_by_presentity",
        "_bytes",
        "_expired",
        "_make_etag",
        "_make_tag",
        "_packages",
        "_presentity_bytes",
        "_serial",
        "_timers",
        "policy",
    )

    def __init__(
        self,
        policy: PublishPolicy,
        make_etag: Callable[[], str],
        make_tag: Callable[[], str] | None = None,
        packages: Registry | None = None,
    ) -> None:
        self.policy = policy
        self._packages: dict[str, EventPackage] = {
            name: pkg for name, pkg in (packages if packages is not None else registry()).items()
            if pkg.publish_formats
        }
        self._make_etag = make_etag
        # To-tags for our responses (RFC 3261 §8.2.6.2); any token factory will do.
        self._make_tag = make_tag or make_etag
        self._by_etag: dict[str, _Entry] = {}
        # serial -> entry; dict order is the order content last changed (see module docstring)
        self._by_presentity: dict[Resource, dict[int, _Entry]] = {}
        self._timers: DeadlineHeap[str] = DeadlineHeap()
        self._serial = 0
        self._expired: list[str] = []
        self._bytes = 0  # bodies of all live publications
        self._presentity_bytes: dict[Resource, int] = {}

    @property
    def total_bytes(self) -> int:
        return self._bytes

    @property
    def events(self) -> tuple[str, ...]:
        """The packages that take publications."""
        return tuple(self._packages)

    def presentity_bytes(self, presentity: str, event: str = PRESENCE) -> int:
        return self._presentity_bytes.get((event, presentity), 0)

    # --- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_etag)

    def presentities(self, event: str = PRESENCE) -> set[str]:
        """Every presentity with at least one live publication of `event`."""
        return {name for ev, name in self._by_presentity if ev == event}

    def resources(self) -> set[Resource]:
        """Every (event, presentity) with at least one live publication."""
        return set(self._by_presentity)

    def get(self, etag: str) -> Publication | None:
        entry = self._by_etag.get(etag)
        return None if entry is None else entry.pub

    def docs_for(self, presentity: str, event: str = PRESENCE) -> list[object]:
        """The decoded documents of a resource's publications, oldest content first (presence:
        `PresenceDoc`s)."""
        entries = self._by_presentity.get((event, presentity))
        return [e.doc for e in entries.values()] if entries else []

    def compose(self, presentity: str, event: str = PRESENCE) -> object | None:
        """The resource's "publish" part: its publications composed by their package."""
        docs = self.docs_for(presentity, event)
        return self._packages[event].compose_publications(presentity, docs) if docs else None

    def next_deadline(self) -> float | None:
        return self._timers.next_deadline()

    def of(self, presentity: str, event: str | None = None) -> list[Publication]:
        """A presentity's live publications (of `event`, or of every package), oldest content
        first within each package."""
        out: list[Publication] = []
        for ev in self._packages if event is None else (event,):
            entries = self._by_presentity.get((ev, presentity))
            if entries:
                out.extend(e.pub for e in entries.values())
        return out

    def remove(self, etag: str) -> Publication | None:
        """Drop a publication on the operator's word (as if it expired); returns it, or None
        when no live publication has that entity-tag."""
        entry = self._by_etag.get(etag)
        if entry is None:
            return None
        self._drop(entry)
        return entry.pub

    # --- PUBLISH ---------------------------------------------------------------------------

    def handle(self, req: Request, presentity: str, now: float) -> PublishOutcome:
        """Process one PUBLISH for `presentity` (RFC 3903 §6 steps 2-6)."""
        policy = self.policy
        # Step 2: the event package.
        try:
            event = req.event
        except ParseError as exc:
            return self._fail(req, 400, f"Bad Event header ({_reason(exc.reason)})")
        package = self._packages.get(event.package) if event is not None else None
        if event is None or package is None:
            r = self._respond(req, 489)
            r.headers.add("Allow-Events", ", ".join(self._packages))
            return PublishOutcome(r)
        name = package.name

        # Step 3: the precondition. entity-tag = token (§11), and only one of them.
        entry: _Entry | None = None
        if_match = req.headers.get_all("SIP-If-Match")
        if if_match:
            tag = if_match[0].strip()
            if len(if_match) > 1 or not is_token(tag):
                return self._fail(req, 400, "SIP-If-Match must hold a single entity-tag")
            entry = self._by_etag.get(tag)
            if (entry is None or entry.pub.presentity != presentity or entry.pub.event != name
                    or entry.pub.expires_at <= now):
                return PublishOutcome(self._respond(req, 412), event=name)

        # Step 4: the expiration.
        try:
            requested = req.expires
        except ParseError as exc:
            return self._fail(req, 400, _reason(exc.reason))
        if requested is None:
            requested = policy.default_expires
        elif 0 < requested < policy.min_expires:
            r = self._respond(req, 423)
            r.headers.add("Min-Expires", str(policy.min_expires))
            return PublishOutcome(r)
        granted = min(requested, policy.max_expires)

        # Step 5: the body.
        body = req.body
        doc: object | None = None
        content_type = ""
        if body:
            content_type = req.content_type or ""
            if content_type not in package.publish_formats:
                r = self._respond(req, 415)
                r.headers.add("Accept", ", ".join(package.publish_formats))
                return PublishOutcome(r)
            try:
                doc = package.decode_publication(body, content_type, policy.max_body_size)
            except DocumentError as exc:
                return self._fail(req, 400, f"Bad {name} document: {_reason(exc.reason)}")
        elif entry is None:
            return self._fail(req, 400, "Initial PUBLISH without a body")

        # Step 5 (storing) and step 6 (the answer).
        if granted == 0:
            return self._remove(req, entry, name)
        if entry is None:
            assert doc is not None
            return self._initial(req, name, presentity, doc, content_type, body, now + granted,
                                 granted)
        return self._update(req, entry, doc, content_type, body, now + granted, granted)

    def _initial(
        self,
        req: Request,
        event: str,
        presentity: str,
        doc: object,
        content_type: str,
        body: bytes,
        expires_at: float,
        granted: int,
    ) -> PublishOutcome:
        policy = self.policy
        if len(self._by_presentity.get((event, presentity), ())) >= policy.max_per_presentity:
            # A client that forgets its entity-tags must not pile up state (and NOTIFY bulk).
            return self._fail(req, 403, "Forbidden (too many publications for this presentity)")
        refusal = self._check_bytes(req, (event, presentity), len(body), new=True)
        if refusal is not None:
            return refusal
        etag = self._new_etag()
        pub = Publication(etag, presentity, event, expires_at, content_type, body)
        self._serial += 1
        self._insert(_Entry(pub, doc, self._serial))
        return PublishOutcome(
            self._ok(req, etag, granted), put=pub, changed=frozenset((presentity,)), event=event
        )

    def _update(
        self,
        req: Request,
        entry: _Entry,
        doc: object | None,
        content_type: str,
        body: bytes,
        expires_at: float,
        granted: int,
    ) -> PublishOutcome:
        old = entry.pub
        resource = (old.event, old.presentity)
        grow = 0 if doc is None else len(body) - len(old.body)
        if grow > 0:
            refusal = self._check_bytes(req, resource, grow, new=False)
            if refusal is not None:
                return refusal
        etag = self._new_etag()
        changed = _NO_CHANGE
        if doc is None:  # refresh: same content under a new tag (§6 step 6)
            pub = msgspec.structs.replace(old, etag=etag, expires_at=expires_at)
        else:  # modify
            pub = Publication(etag, old.presentity, old.event, expires_at, content_type, body)
            if doc != entry.doc:
                changed = frozenset((old.presentity,))
                # newest content last, so it wins where tuple ids coincide
                entries = self._by_presentity[resource]
                del entries[entry.serial]
                self._serial += 1
                entry.serial = self._serial
                entries[entry.serial] = entry
            entry.doc = doc
        del self._by_etag[old.etag]
        self._timers.discard(old.etag)
        self._count_bytes(resource, len(pub.body) - len(old.body))
        entry.pub = pub
        self._by_etag[etag] = entry
        self._timers.set(etag, expires_at)
        return PublishOutcome(
            self._ok(req, etag, granted),
            put=pub,
            delete_etag=old.etag,
            changed=changed,
            replaced=old,
            event=old.event,
        )

    def _remove(self, req: Request, entry: _Entry | None, event: str) -> PublishOutcome:
        r = self._respond(req, 200)
        r.headers.add("Expires", "0")
        if entry is None:  # initial PUBLISH with Expires: 0: nothing to store (§6 step 5)
            return PublishOutcome(r, event=event)
        self._drop(entry)
        old = entry.pub
        return PublishOutcome(
            r, delete_etag=old.etag, changed=frozenset((old.presentity,)), replaced=old,
            event=old.event,
        )

    def revert(self, outcome: PublishOutcome) -> frozenset[str]:
        """Undo `outcome` in memory after its storage write failed; returns changed presentities.

        Call it before handling anything else that could touch the same publication. The
        restored publication goes last in its presentity's order.
        """
        if outcome.put is not None:
            entry = self._by_etag.get(outcome.put.etag)
            if entry is not None:
                self._drop(entry)
        old = outcome.replaced
        if old is not None and old.etag not in self._by_etag:
            self._serial += 1
            doc = self._packages[old.event].decode_publication(
                old.body, old.content_type, max(self.policy.max_body_size, len(old.body)))
            self._insert(_Entry(old, doc, self._serial))
        return outcome.changed

    # --- expiry and restart ----------------------------------------------------------------

    def expire(self, now: float) -> set[Resource]:
        """Drop publications whose time is up; returns the resources that changed.

        The dropped tags are kept for `take_expired()`, so the caller can delete them from
        storage.
        """
        changed: set[Resource] = set()
        for etag in self._timers.pop_due(now):
            entry = self._by_etag.get(etag)
            if entry is not None:
                self._drop(entry)
                self._expired.append(etag)
                changed.add((entry.pub.event, entry.pub.presentity))
        return changed

    def take_expired(self) -> list[str]:
        """The entity-tags `expire` dropped since the last call (to delete from storage)."""
        expired, self._expired = self._expired, []
        return expired

    def load(self, pubs: Iterable[Publication], now: float) -> list[str]:
        """Take over persisted publications after a restart, in the order given.

        Returns the entity-tags to delete from storage: publications already expired, and any
        that are not a publication this version can read.
        """
        stale: list[str] = []
        for pub in pubs:
            package = self._packages.get(pub.event)
            if (
                pub.expires_at <= now
                or package is None
                or pub.content_type not in package.publish_formats
            ):
                stale.append(pub.etag)
                continue
            try:
                doc = package.decode_publication(
                    pub.body, pub.content_type, max(self.policy.max_body_size, len(pub.body)))
            except DocumentError:
                stale.append(pub.etag)
                continue
            current = self._by_etag.get(pub.etag)
            if current is not None:
                self._drop(current)
            self._serial += 1
            self._insert(_Entry(pub, doc, self._serial))
        return stale

    # --- replicas (a cluster: another node decided, this node follows) ----------------------

    def apply(self, pub: Publication, replaces: str | None, now: float) -> set[Resource]:
        """Take a publication another node committed (replacing the entity-tag `replaces`);
        returns the resources that changed. No caps apply: the deciding node checked them."""
        changed: set[Resource] = set()
        if replaces is not None and replaces != pub.etag:
            gone = self.discard(replaces)
            if gone is not None:
                changed.add(gone)
        current = self._by_etag.get(pub.etag)
        if current is not None and current.pub == pub:
            return changed
        if not self.load([pub], now):
            changed.add((pub.event, pub.presentity))
        return changed

    def discard(self, etag: str) -> Resource | None:
        """Drop a publication another node removed; returns its resource (None: unknown)."""
        entry = self._by_etag.get(etag)
        if entry is None:
            return None
        self._drop(entry)
        return (entry.pub.event, entry.pub.presentity)

    def all(self) -> list[Publication]:
        """Every live publication (to compare with the shared store after a reconnection)."""
        return [e.pub for e in self._by_etag.values()]

    # --- helpers ---------------------------------------------------------------------------

    def _check_bytes(self, req: Request, resource: Resource, grow: int,
                     new: bool) -> PublishOutcome | None:
        """The caps a PUBLISH that adds `grow` body bytes (and maybe a publication) must pass."""
        policy = self.policy
        if self._presentity_bytes.get(resource, 0) + grow > policy.max_presentity_bytes:
            return self._fail(req, 413, "Request Entity Too Large (presentity's published state is full)")
        if (new and len(self._by_etag) >= policy.max_publications) or (
            self._bytes + grow > policy.max_total_bytes
        ):
            # A process-wide condition that lifts as publications expire (RFC 3261 §21.5.4).
            r = self._respond(req, 503, "Service Unavailable (publication capacity reached)")
            r.headers.add("Retry-After", "60")
            return PublishOutcome(r)
        return None

    def _count_bytes(self, resource: Resource, delta: int) -> None:
        self._bytes += delta
        left = self._presentity_bytes.get(resource, 0) + delta
        if left > 0:
            self._presentity_bytes[resource] = left
        else:
            self._presentity_bytes.pop(resource, None)

    def _insert(self, entry: _Entry) -> None:
        pub = entry.pub
        resource = (pub.event, pub.presentity)
        self._by_etag[pub.etag] = entry
        entries = self._by_presentity.get(resource)
        if entries is None:
            entries = self._by_presentity[resource] = {}
        entries[entry.serial] = entry
        self._timers.set(pub.etag, pub.expires_at)
        self._count_bytes(resource, len(pub.body))

    def _drop(self, entry: _Entry) -> None:
        pub = entry.pub
        resource = (pub.event, pub.presentity)
        del self._by_etag[pub.etag]
        self._timers.discard(pub.etag)
        self._count_bytes(resource, -len(pub.body))
        entries = self._by_presentity[resource]
        del entries[entry.serial]
        if not entries:
            del self._by_presentity[resource]

    def _new_etag(self) -> str:
        # Unique among live tags (§6 step 6). A tag being replaced is still registered when this
        # runs, so the new one differs from it too.
        for _ in range(_ETAG_ATTEMPTS):
            etag = self._make_etag()
            if etag not in self._by_etag:
                return etag
        raise LocalError("the entity-tag factory keeps returning tags in use")

    def _respond(self, req: Request, status: int, reason: str | None = None) -> Response:
        return make_response(req, status, reason, to_tag=self._make_tag())

    def _fail(self, req: Request, status: int, reason: str) -> PublishOutcome:
        return PublishOutcome(self._respond(req, status, reason))

    def _ok(self, req: Request, etag: str, granted: int) -> Response:
        r = self._respond(req, 200)
        r.headers.add("SIP-ETag", etag)
        r.headers.add("Expires", str(granted))
        return r
