"""The presence-rules service: `ports.RulesStore` over storage and the authorization policy.

A put is validated by the rules parser (`pa.policy.rules`), committed to storage, installed in
the `Policy`, and then applied to the live subscriptions of that presentity (`apply`, given by
the composition root: the notifier service re-decides every watcher) — all before it returns,
so an XCAP 200 means the watchers already got what the new rules say.

Puts and deletes are serialised by one lock, so `expect` (RFC 4825 §7.11) is checked and the
write made without another writer in between. Entity tags are random tokens: a document put
twice gets two tags, as a changed resource must (RFC 4825 §7.10 only asks that they differ).

AORs are "user@domain"; a "sip:" / "sips:" URI is accepted and reduced to that (the XCAP
server names users by their XUI, RFC 4825 §4).

`reload()` re-reads every document from storage and applies what changed: the operator tool
(`presenced rules`) writes to storage directly, and a running server picks its writes up on
SIGUSR1 (docs/presence.md "Authorization").
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from presenced.pa.policy.evaluate import Policy
from presenced.pa.policy.rules import RulesError, RuleSet, normalize_identity, parse_rules
from presenced.pa.records import RulesDocument
from presenced.services.ports import Clock, RulesInvalid, RulesPreconditionFailed, Storage

log = logging.getLogger("presenced.rules")

MAX_DOCUMENT_SIZE = 256 * 1024

Apply = Callable[[str], Awaitable[None]]


async def _nothing(presentity: str) -> None:
    return None


def rules_aor(aor: str) -> str:
    """"sip:Alice@Example.com" -> "Alice@example.com" (the key rules are stored under)."""
    return normalize_identity(aor)


def _etag() -> str:
    return secrets.token_hex(8)


class RulesService:
    """Implements `ports.RulesStore`."""

    def __init__(self, storage: Storage, policy: Policy, apply: Apply = _nothing,
                 clock: Clock = time.time, max_document_size: int = MAX_DOCUMENT_SIZE) -> None:
        """`apply(presentity)`: re-decide that presentity's live subscriptions (the notifier
        service's `reauthorize`); called after the policy changed."""
        self.storage = storage
        self.policy = policy
        self.apply = apply
        self.clock = clock
        self.max_document_size = max_document_size
        self._docs: dict[str, RulesDocument] = {}
        self._lock = asyncio.Lock()

    # --- start-up and reload ---------------------------------------------------------------

    async def load(self) -> list[str]:
        """Read every stored document into the policy; returns the AORs whose rules changed
        (all of them at start-up). A stored document that no longer parses is logged and left
        out (the default policy applies to that user) rather than stopping the server."""
        stored = {d.aor: d for d in await self.storage.load_rules()}
        changed: list[str] = []
        for aor, doc in stored.items():
            old = self._docs.get(aor)
            if old is not None and old.etag == doc.etag:
                continue
            try:
                ruleset = parse_rules(doc.document, self.max_document_size)
            except RulesError as exc:
                log.error("rules of %s in storage are invalid, default policy applies: %s",
                          aor, exc.detail)
                ruleset = None
            self._docs[aor] = doc
            self.policy.set_rules(aor, ruleset)
            changed.append(aor)
        for aor in [a for a in self._docs if a not in stored]:
            del self._docs[aor]
            self.policy.set_rules(aor, None)
            changed.append(aor)
        return changed

    async def reload(self) -> None:
        """Pick up what the operator tool wrote to storage, and apply it at once."""
        async with self._lock:
            changed = await self.load()
        log.info("rules reloaded: %d presentities changed", len(changed))
        for aor in changed:
            await self.apply(aor)

    # --- RulesStore ----------------------------------------------------------------------------

    async def get_rules(self, aor: str) -> tuple[bytes, str] | None:
        doc = self._docs.get(rules_aor(aor))
        return None if doc is None else (doc.document, doc.etag)

    def ruleset(self, aor: str) -> RuleSet | None:
        """The parsed rules of a user (the operator tool shows them)."""
        doc = self._docs.get(rules_aor(aor))
        if doc is None:
            return None
        try:
            return parse_rules(doc.document, self.max_document_size)
        except RulesError:
            return None

    def _check(self, aor: str, expect: str | None) -> None:
        doc = self._docs.get(aor)
        if expect is None:
            return
        if expect == "*":
            ok = doc is not None
        elif expect == "":
            ok = doc is None
        else:
            ok = doc is not None and doc.etag == expect
        if not ok:
            raise RulesPreconditionFailed(f"rules of {aor}: entity tag does not match {expect!r}")

    async def put_rules(self, aor: str, document: bytes, expect: str | None = None) -> str:
        key = rules_aor(aor)
        try:
            ruleset = parse_rules(bytes(document), self.max_document_size)
        except RulesError as exc:
            raise RulesInvalid(exc.detail) from None
        async with self._lock:
            self._check(key, expect)
            doc = RulesDocument(key, bytes(document), _etag(), self.clock())
            await self.storage.put_rules(doc)
            self._docs[key] = doc
            self.policy.set_rules(key, ruleset)
        log.info("rules of %s set (%d rules, etag %s)", key, len(ruleset.rules), doc.etag)
        await self.apply(key)
        return doc.etag

    async def delete_rules(self, aor: str, expect: str | None = None) -> bool:
        key = rules_aor(aor)
        async with self._lock:
            self._check(key, expect)
            if key not in self._docs:
                return False
            await self.storage.delete_rules(key)
            del self._docs[key]
            self.policy.set_rules(key, None)
        log.info("rules of %s deleted", key)
        await self.apply(key)
        return True
