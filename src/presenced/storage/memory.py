"""The `memory:` backend: plain dicts, same semantics as SQLite, nothing survives the process.

Records are frozen structs holding only immutable values, so handing out the stored objects is
safe; `load_*` returns a fresh list so callers never see later writes through it.
"""

from __future__ import annotations

from presenced.pa.records import Binding, EndedWatchers, Publication, RulesDocument, Subscription
from presenced.storage import StorageClosedError, StorageError


class MemoryStorage:
    """In-process `Storage`. Contents outlive close()/open() of the same instance."""

    def __init__(self) -> None:
        self._bindings: dict[tuple[str, str], Binding] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._publications: dict[str, Publication] = {}
        self._rules: dict[str, RulesDocument] = {}
        self._ended: dict[str, EndedWatchers] = {}
        self._open = False

    async def open(self) -> None:
        if self._open:
            raise StorageError("memory storage is already open")
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check(self) -> None:
        if not self._open:
            raise StorageClosedError("memory storage is not open (closed or never opened)")

    async def put_binding(self, binding: Binding) -> None:
        self._check()
        self._bindings[binding.aor, binding.contact] = binding

    async def delete_binding(self, aor: str, contact: str) -> None:
        self._check()
        self._bindings.pop((aor, contact), None)

    async def load_bindings(self) -> list[Binding]:
        self._check()
        return list(self._bindings.values())

    async def put_subscription(self, sub: Subscription) -> None:
        self._check()
        self._subscriptions[sub.id] = sub

    async def delete_subscription(self, sub_id: str) -> None:
        self._check()
        self._subscriptions.pop(sub_id, None)

    async def load_subscriptions(self) -> list[Subscription]:
        self._check()
        return list(self._subscriptions.values())

    async def put_publication(self, pub: Publication, replaces: str | None = None) -> None:
        self._check()
        if replaces is not None:
            self._publications.pop(replaces, None)
        self._publications[pub.etag] = pub

    async def delete_publication(self, etag: str) -> None:
        self._check()
        self._publications.pop(etag, None)

    async def load_publications(self) -> list[Publication]:
        self._check()
        return list(self._publications.values())

    async def put_rules(self, rules: RulesDocument) -> None:
        self._check()
        self._rules[rules.aor] = rules

    async def delete_rules(self, aor: str) -> None:
        self._check()
        self._rules.pop(aor, None)

    async def load_rules(self) -> list[RulesDocument]:
        self._check()
        return list(self._rules.values())

    async def put_ended_watchers(self, ended: EndedWatchers) -> None:
        self._check()
        self._ended[ended.presentity] = ended

    async def delete_ended_watchers(self, presentity: str) -> None:
        self._check()
        self._ended.pop(presentity, None)

    async def load_ended_watchers(self) -> list[EndedWatchers]:
        self._check()
        return list(self._ended.values())
