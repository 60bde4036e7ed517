"""This node's side of a cluster: what another node's committed change means here.

Every node keeps a replica of all bindings and publications (as a single node keeps them all),
so each recomposes the changed resources itself; its notifier holds only the dialogs this node
owns, so each watcher gets exactly one NOTIFY per change, from its dialog's owner. The cluster
adapter (cluster/node.py) calls these methods in the order Redis committed the changes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from presenced.pa.records import Binding, Publication, Subscription
from presenced.services.notifier import NotifierService
from presenced.services.publish import PublishService
from presenced.services.registrar import RegistrarService

log = logging.getLogger("presenced.cluster")


class ClusterReplica:
    def __init__(self, notifications: NotifierService, registrar: RegistrarService,
                 publish: PublishService, accept_hosts: Callable[[Iterable[str]], None],
                 rules: Callable[[], Awaitable[None]] | None = None) -> None:
        """`rules()`: read the presence rules again and re-decide the live subscriptions
        whose rules changed (`RulesService.reload`)."""
        self.notifications = notifications
        self._rules = rules
        self.registrar = registrar
        self.publish = publish
        self._accept_hosts = accept_hosts
        # The XMPP gateway's feed handler (`JabberGateway.on_feed`), when [jabber] is on.
        self.jabber_handler: Callable[[str, str, list[Any]], Awaitable[None]] | None = None

    async def binding(self, aor: str, contact: str, binding: Binding | None, expired: bool) -> None:
        await self.registrar.apply_remote(aor, contact, binding, expired)

    async def publication(self, etag: str, pub: Publication | None, replaces: str | None) -> None:
        await self.publish.apply_remote(etag, pub, replaces)

    async def release(self, sub_ids: list[str]) -> None:
        await self.notifications.release(sub_ids)

    async def adopt(self, records: list[Subscription]) -> None:
        await self.notifications.adopt(records)

    async def jabber(self, kind: str, origin: str, rest: list[Any]) -> None:
        if self.jabber_handler is not None:
            await self.jabber_handler(kind, origin, rest)

    async def rules_changed(self) -> None:
        if self._rules is not None:
            await self._rules()

    def local_dialogs(self) -> list[str]:
        return list(self.notifications.notifier.dialogs)

    def accept_hosts(self, hosts: Iterable[str]) -> None:
        self._accept_hosts(hosts)

    async def resync(self, bindings: list[Binding], pubs: list[Publication]) -> None:
        """After the feed was lost for a while: bring the replica to what Redis holds now."""
        now = self.registrar.clock()
        stored = {(b.aor, b.contact): b for b in bindings}
        held = {(aor, c): b for aor, table in self.registrar.bindings.items() for c, b in table.items()}
        for key, b in held.items():
            if key not in stored:
                await self.registrar.apply_remote(key[0], key[1], None, b.expires_at <= now)
        for key, b in stored.items():
            if held.get(key) != b:
                await self.registrar.apply_remote(key[0], key[1], b, False)
        stored_pubs = {p.etag: p for p in pubs}
        for p in self.publish.pubs.all():
            if p.etag not in stored_pubs:
                await self.publish.apply_remote(p.etag, None, None)
        for etag, p in stored_pubs.items():
            if self.publish.pubs.get(etag) != p:
                await self.publish.apply_remote(etag, p, None)
        log.info("replica resynchronised: %d bindings, %d publications", len(stored), len(stored_pubs))
