"""The storage protocol every backend implements (the records it stores are `pa.records`).

The registrar and the presence agent keep their working set in memory and write through to a
`Storage`; a write is awaited (committed) before the SIP answer that reports it goes out, so state
survives `kill -9`. Backends: `memory:` (tests, throw-away), SQLite (default), Redis (multi-node).
"""

from __future__ import annotations

from typing import Protocol

from presenced.pa.records import Binding, EndedWatchers, Publication, RulesDocument, Subscription

__all__ = ["Binding", "EndedWatchers", "Publication", "RulesDocument", "Storage", "Subscription"]


class Storage(Protocol):
    """What every backend provides. All writes are durable when the awaitable completes."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put_binding(self, binding: Binding) -> None:
        """Insert or replace the binding keyed by (aor, contact)."""

    async def delete_binding(self, aor: str, contact: str) -> None: ...

    async def load_bindings(self) -> list[Binding]: ...

    async def put_subscription(self, sub: Subscription) -> None:
        """Insert or replace the subscription keyed by id."""

    async def delete_subscription(self, sub_id: str) -> None: ...

    async def load_subscriptions(self) -> list[Subscription]: ...

    async def put_publication(self, pub: Publication, replaces: str | None = None) -> None:
        """Insert or replace by etag; when `replaces` names another etag, delete it atomically."""

    async def delete_publication(self, etag: str) -> None: ...

    async def load_publications(self) -> list[Publication]: ...

    async def put_rules(self, rules: RulesDocument) -> None:
        """Insert or replace the user's presence-rules document, keyed by aor."""

    async def delete_rules(self, aor: str) -> None: ...

    async def load_rules(self) -> list[RulesDocument]: ...

    async def put_ended_watchers(self, ended: EndedWatchers) -> None:
        """Insert or replace the presentity's ended watchers not yet shown (offline winfo)."""

    async def delete_ended_watchers(self, presentity: str) -> None: ...

    async def load_ended_watchers(self) -> list[EndedWatchers]: ...
