"""The publication service: PUBLISH (RFC 3903) against storage, expiry, and the "publish" part.

A presentity's publications are composed into one part of its presence (key "publish"); the
presence agent's composition policy decides how that part and the registrar's combine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from presenced.pa.compose import compose
from presenced.pa.model import PresenceDoc
from presenced.pa.publish import Publications
from presenced.services.alarm import Alarm, Background
from presenced.services.registrar import PresenceSink
from presenced.sip.endpoint import RequestReceived
from presenced.sip.message import make_response
from presenced.storage.base import Storage
from presenced.transport.driver import Driver

log = logging.getLogger("presenced.publish")

PART = "publish"


class PublishService:
    def __init__(self, pubs: Publications, driver: Driver, storage: Storage, presence: PresenceSink,
                 domains: frozenset[str], clock: Callable[[], float] = time.time) -> None:
        self.pubs = pubs
        self.driver = driver
        self.storage = storage
        self.presence = presence
        self.domains = domains
        self.clock = clock
        self._alarm = Alarm(self._expire_due, Background(), clock)

    def part(self, presentity: str) -> PresenceDoc | None:
        docs = self.pubs.docs_for(presentity)
        return compose(f"pres:{presentity}", docs) if docs else None

    async def load(self) -> tuple[set[str], set[str]]:
        """Take back persisted publications.

        Returns the presentities that have live publications, and those that lost one while
        we were down (their watchers are owed a NOTIFY)."""
        records = await self.storage.load_publications()
        stale = set(self.pubs.load(records, self.clock()))
        for etag in stale:
            await self.storage.delete_publication(etag)
        lost = {r.presentity for r in records if r.etag in stale}
        log.info("loaded %d publications (%d expired while down)", len(self.pubs), len(stale))
        self._arm()
        return self.pubs.presentities(), lost

    async def publish(self, event: RequestReceived) -> None:
        req = event.request
        presentity = req.ruri.aor
        outcome = self.pubs.handle(req, presentity, self.clock())
        try:
            if outcome.put is not None:
                await self.storage.put_publication(outcome.put, replaces=outcome.delete_etag)
            elif outcome.delete_etag is not None:
                await self.storage.delete_publication(outcome.delete_etag)
        except Exception:
            log.exception("storage write failed for PUBLISH to %s (Call-ID %s)", presentity, req.call_id)
            self.pubs.revert(outcome)
            self.driver.respond(event, make_response(req, 500, "Storage Failure"))
            return
        self.driver.respond(event, outcome.response)
        self._arm()
        for name in outcome.changed:
            await self.presence.set_part(name, PART, self.part(name))

    def _arm(self) -> None:
        self._alarm.arm(self.pubs.next_deadline())

    async def _expire_due(self) -> None:
        changed = self.pubs.expire(self.clock())
        for etag in self.pubs.take_expired():
            try:
                await self.storage.delete_publication(etag)
            except Exception:
                log.exception("storage delete of expired publication failed")
        for name in changed:
            log.info("publication for %s expired", name)
            await self.presence.set_part(name, PART, self.part(name))
        self._arm()

    def close(self) -> None:
        self._alarm.cancel()
