"""The publication service: PUBLISH (RFC 3903) against storage, expiry, and the "publish" part.

A resource's publications are composed by its package into one part (key "publish"); the
package's composition decides how that part and the other sources' combine.
"""

from __future__ import annotations

import logging
import time

from presenced.pa.model import PresenceDoc
from presenced.pa.packages.presence import NAME as PRESENCE
from presenced.pa.packages.presence import PUBLISHED, PUBLISHED_MARK
from presenced.pa.publish import Publications
from presenced.pa.records import Publication
from presenced.services.alarm import Alarm, Background
from presenced.services.ports import (
    Clock,
    ClusterClaims,
    PartSink,
    Responder,
    Storage,
    failure_response,
)
from presenced.sip.endpoint import RequestReceived

log = logging.getLogger("presenced.publish")

PART = "publish"


class PublishService:
    """PUBLISH for every package that takes publications; each resource's publications form
    its "publish" part in the notifier. A presence publication also sets the "published"
    marker part, which the registrar clears with the AOR's last binding (the registrar
    policy of the presence package, docs/presence.md)."""

    def __init__(self, pubs: Publications, responder: Responder, storage: Storage,
                 notifier: PartSink, domains: frozenset[str], clock: Clock = time.time) -> None:
        self.pubs = pubs
        self.responder = responder
        self.storage = storage
        self.notifier = notifier
        self.domains = domains
        self.clock = clock
        self.background = Background("publish")
        self._alarm = Alarm(self._expire_due, self.background, clock)
        # In a cluster (set by the composition root): expiry is claimed once cluster-wide.
        self.claims: ClusterClaims | None = None

    def part(self, presentity: str, event: str = PRESENCE) -> object | None:
        return self.pubs.compose(presentity, event)

    async def load(self) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Take back persisted publications.

        Returns the (event, presentity) resources that have live publications, and those that
        lost one while we were down (their watchers are owed a NOTIFY)."""
        records = await self.storage.load_publications()
        stale = set(self.pubs.load(records, self.clock()))
        for etag in stale:
            await self.storage.delete_publication(etag)
        lost = {(r.event, r.presentity) for r in records if r.etag in stale}
        log.info("loaded %d publications (%d expired while down)", len(self.pubs), len(stale))
        self._arm()
        return self.pubs.resources(), lost

    async def publish(self, event: RequestReceived) -> None:
        req = event.request
        presentity = req.ruri.aor
        outcome = self.pubs.handle(req, presentity, self.clock())
        try:
            if outcome.put is not None:
                await self.storage.put_publication(outcome.put, replaces=outcome.delete_etag)
            elif outcome.delete_etag is not None:
                await self.storage.delete_publication(outcome.delete_etag)
        except Exception as exc:
            log.exception("storage write failed for PUBLISH to %s (Call-ID %s)", presentity, req.call_id)
            self.pubs.revert(outcome)
            self.responder.respond(event, failure_response(req, exc))
            return
        self.responder.respond(event, outcome.response)
        self._arm()
        for name in outcome.changed:
            await self._changed(name, outcome.event)

    async def _changed(self, name: str, event: str) -> None:
        part = self.part(name, event)
        await self.notifier.set_part(name, PART, part, event)
        if isinstance(part, PresenceDoc) and part.tuples:
            # It speaks for its own availability now: the registrar policy may stop
            # counting the registration (after the part, so no NOTIFY in between).
            await self.notifier.set_part(name, PUBLISHED, PUBLISHED_MARK, PRESENCE)

    async def apply_remote(self, etag: str, pub: Publication | None, replaces: str | None) -> None:
        """Another cluster node committed a publication (None: removed it): keep this node's
        copy in step and tell the local notifier (it notifies the dialogs this node owns)."""
        if pub is None:
            gone = self.pubs.discard(etag)
            changed = set() if gone is None else {gone}
        else:
            changed = self.pubs.apply(pub, replaces, self.clock())
        self._arm()
        for event, name in changed:
            await self._changed(name, event)

    async def remove(self, etag: str) -> bool:
        """Remove one publication on the operator's word, as if it had expired (its watchers
        hear the recomposed state). False when no live publication has that entity-tag."""
        pub = self.pubs.remove(etag)
        if pub is None:
            return False
        try:
            await self.storage.delete_publication(etag)
        except Exception:
            self.pubs.load([pub], self.clock())  # put it back: nothing happened
            raise
        log.info("%s publication %s of %s removed by the operator", pub.event, etag, pub.presentity)
        self._arm()
        await self.notifier.set_part(pub.presentity, PART, self.part(pub.presentity, pub.event),
                                     pub.event)
        return True

    def _arm(self) -> None:
        self._alarm.arm(self.pubs.next_deadline())

    async def _expire_due(self) -> None:
        now = self.clock()
        changed = self.pubs.expire(now)
        claims = self.claims
        for etag in self.pubs.take_expired():
            try:
                if claims is None:
                    await self.storage.delete_publication(etag)
                    continue
                # Cluster: deleted once; one refreshed on another node meanwhile comes back
                # here before anyone is told (its part then composes as before: no NOTIFY).
                survivor = await claims.expire_publication(etag, now)
                if survivor is not None:
                    self.pubs.apply(survivor, None, now)
            except Exception:
                log.exception("storage delete of expired publication failed")
        for event, name in changed:
            log.info("%s publication for %s expired", event, name)
            await self.notifier.set_part(name, PART, self.part(name, event), event)
        self._arm()

    def close(self) -> None:
        self._alarm.cancel()
