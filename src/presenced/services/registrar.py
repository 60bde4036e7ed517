"""The registrar service: REGISTER handling, binding expiry, and the "registrar" presence source.

Bindings live in memory (per AOR) and in storage; a change is committed before the 200 goes
out. Every binding's expiry sits in one `DeadlineHeap` driven by one timer. The AOR's presence
part is *open* (one tuple, contact = the best binding) from its first binding to its last,
and the presence agent only hears about real changes, so a refresh never makes a watcher's
state flap.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from email.utils import formatdate

import msgspec

from presenced.pa.model import PresenceDoc, Tuple
from presenced.pa.packages.presence import PUBLISHED, presentity_tuple_id
from presenced.pa.packages.reginfo import (
    REASON_DEACTIVATED,
    REASON_EXPIRY,
    REASON_REGISTER,
    BindingView,
    ContactInfo,
    RegState,
    apply_changes,
    contact_id,
    diff_contacts,
)
from presenced.pa.records import Binding
from presenced.pa.timers import DeadlineHeap
from presenced.registrar.bindings import (
    RegistrarPolicy,
    contact_header_values,
    process_register,
)
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
from presenced.sip.errors import ParseError
from presenced.sip.message import make_response

log = logging.getLogger("presenced.registrar")

# Cluster: a binding whose expiry claim could not reach Redis is tried again this much later.
RETRY_EXPIRY = 5.0

REG = "reg"  # the event package the registrar feeds beside presence (RFC 3680)


class RegistrarService:
    def __init__(self, policy: RegistrarPolicy, responder: Responder, storage: Storage,
                 notifier: PartSink, domains: frozenset[str], clock: Clock = time.time,
                 max_bindings: int = 100_000) -> None:
        """`notifier`: where the AORs' presence and reg parts go (the notifier service)."""
        self.policy = policy
        self.max_bindings = max_bindings  # in the whole process; beyond: 503 + Retry-After
        self.total = 0  # bindings held, kept in step with `bindings`
        self.responder = responder
        self.storage = storage
        self.notifier = notifier
        self.domains = domains
        self.clock = clock
        self.bindings: dict[str, dict[str, Binding]] = {}
        self.expiry: DeadlineHeap[tuple[str, str]] = DeadlineHeap()
        # reg (RFC 3680): per AOR with bindings, each contact's latest event, by contact id
        self._reg: dict[str, dict[str, ContactInfo]] = {}
        self.background = Background("registrar")
        self._alarm = Alarm(self._expire_due, self.background, clock)
        # In a cluster (set by the composition root): expiry is claimed once cluster-wide.
        self.claims: ClusterClaims | None = None

    async def load(self) -> set[str]:
        """Take back persisted bindings; drop those that expired while we were down.

        Returns the AORs that were closed by that (their watchers must hear of it)."""
        now = self.clock()
        closed: set[str] = set()
        stale: list[Binding] = []
        for b in await self.storage.load_bindings():
            if b.expires_at <= now:
                stale.append(b)
                closed.add(b.aor)
                continue
            table = self.bindings.setdefault(b.aor, {})
            self.total += b.contact not in table
            table[b.contact] = b
            self.expiry.set((b.aor, b.contact), b.expires_at)
        for b in stale:
            await self.storage.delete_binding(b.aor, b.contact)
        closed -= set(self.bindings)
        log.info("loaded %d bindings for %d AORs (%d expired while down)",
                 sum(len(v) for v in self.bindings.values()), len(self.bindings), len(stale))
        self._arm()
        return closed

    def part(self, aor: str) -> PresenceDoc | None:
        """The registrar's contribution to `aor`'s presence: one open tuple, or nothing."""
        current = self.bindings.get(aor)
        if not current:
            return None
        best = max(current.values(), key=lambda b: (b.q if b.q is not None else 0.5, b.expires_at))
        return PresenceDoc(f"pres:{aor}", (Tuple(presentity_tuple_id(aor), "open", contact=best.contact),))

    async def register(self, event: RequestReceived) -> None:
        req = event.request
        now = self.clock()
        try:
            aor = req.to.uri.aor
            to_host = req.to.uri.host_key
        except ParseError as exc:
            self.responder.respond(event, make_response(req, 400, f"Bad Request ({exc.reason})"))
            return
        if to_host not in self.domains:
            self.responder.respond(event, make_response(req, 404, "Domain Not Served"))
            return
        if not req.to.uri.user:
            # RFC 3261 §10.3 step 5: the To URI must name a user of the domain.
            self.responder.respond(event, make_response(req, 404, "Not Found (no user in To)"))
            return
        current = list(self.bindings.get(aor, {}).values())
        was_open = bool(current)
        outcome = process_register(req, aor, current, self.policy, now, str(event.peer))
        if outcome.status != 200:
            resp = make_response(req, outcome.status, outcome.reason)
            if outcome.min_expires is not None:
                resp.headers.add("Min-Expires", str(outcome.min_expires))
            self.responder.respond(event, resp)
            return
        existing = self.bindings.get(aor, {})
        added = sum(1 for b in outcome.puts if b.contact not in existing)
        removed = sum(1 for b in outcome.deletes if b.contact in existing)
        if added > removed and self.total + added - removed > self.max_bindings:
            # A process-wide condition that lifts as bindings expire (RFC 3261 §21.5.4).
            resp = make_response(req, 503, "Service Unavailable (registrar full)")
            resp.headers.add("Retry-After", "60")
            self.responder.respond(event, resp)
            return
        # Apply to memory first, so a concurrent REGISTER for the AOR sees this one's result.
        table = self.bindings.setdefault(aor, {})
        before = dict(table)
        for b in outcome.deletes:
            table.pop(b.contact, None)
            self.expiry.discard((aor, b.contact))
        for b in outcome.puts:
            table[b.contact] = b
            self.expiry.set((aor, b.contact), b.expires_at)
        self.total += len(table) - len(before)
        if not table:
            del self.bindings[aor]
        writes = [self.storage.delete_binding(aor, b.contact) for b in outcome.deletes]
        writes += [self.storage.put_binding(b) for b in outcome.puts]
        try:
            if writes:
                await asyncio.gather(*writes)
        except Exception as exc:
            log.exception("storage write failed for REGISTER of %s", aor)
            self._restore(aor, before)
            self.responder.respond(event, failure_response(req, exc))
            return
        resp = make_response(req, 200)
        for value in contact_header_values(outcome.bindings, now):
            resp.headers.add("Contact", value)
        resp.headers.add("Date", _http_date(int(now)))
        self.responder.respond(event, resp)
        self._arm()
        if was_open != bool(outcome.bindings) or outcome.puts or outcome.deletes:
            await self._publish(aor, before, REASON_REGISTER, now)

    def _restore(self, aor: str, before: dict[str, Binding]) -> None:
        """Put an AOR's bindings back as they were (its REGISTER could not be stored)."""
        self.total += len(before) - len(self.bindings.get(aor, {}))
        for contact in self.bindings.get(aor, {}):
            if contact not in before:
                self.expiry.discard((aor, contact))
        for b in before.values():
            self.expiry.set((aor, b.contact), b.expires_at)
        if before:
            self.bindings[aor] = before
        else:
            self.bindings.pop(aor, None)

    async def remove(self, aor: str, contact: str | None = None) -> int:
        """Remove a binding of `aor` (every binding when `contact` is None) on the operator's
        word, as if it had expired; returns how many went."""
        table = self.bindings.get(aor)
        if not table:
            return 0
        gone = [b for c, b in table.items() if contact is None or c == contact]
        if not gone:
            return 0
        before = dict(table)
        for b in gone:
            del table[b.contact]
            self.expiry.discard((aor, b.contact))
        self.total -= len(gone)
        if not table:
            del self.bindings[aor]
        try:
            await asyncio.gather(*(self.storage.delete_binding(aor, b.contact) for b in gone))
        except Exception:
            self._restore(aor, before)
            raise
        log.info("%d binding(s) of %s removed by the operator", len(gone), aor)
        self._arm()
        await self._publish(aor, before, REASON_DEACTIVATED, self.clock())  # RFC 3680 §5.2
        return len(gone)

    def reg_parts(self, aor: str) -> dict[str, object]:
        """The registrar's part of a `reg` resource coming into being (its first watcher, a
        fetch, a restored subscription): the AOR's bindings as registered contacts. From then
        on, while someone watches, each change adds its contact events (`_publish`)."""
        table = self.bindings.get(aor)
        if not table:
            self._reg.pop(aor, None)
            return {}
        known = self._reg[aor] = {c.id: c for c in diff_contacts(
            {}, _views(aor, table), self.clock(), REASON_REGISTER)}
        return {"registrar": RegState(tuple(known.values()), True)}

    async def _publish(self, aor: str, before: dict[str, Binding], reason: str,
                       now: float) -> None:
        """Tell the notifier: the presence part, and the reg part with this change's contact
        events (RFC 3680 §5.2: a refresh is a `refreshed` event for reg watchers, and nothing
        for presence watchers, whose document does not change)."""
        after = self.bindings.get(aor, {})
        await self.notifier.set_part(aor, "registrar", self.part(aor))
        if not after:  # the registration is over: the presence package's marker goes too
            await self.notifier.set_part(aor, PUBLISHED, None)
        if not self.notifier.watching(aor, REG):
            # Nobody watches its reg: no RFC 3680 bookkeeping (a first watcher gets the
            # bindings as they are, `reg_parts`); a state left for past watchers goes.
            if self._reg.pop(aor, None) is not None:
                await self.notifier.set_part(aor, "registrar", None, REG, quiet=True)
            return
        changes = diff_contacts(_views(aor, before), _views(aor, after), now, reason)
        if not changes:
            return
        known = self._reg.setdefault(aor, {})
        await self.notifier.set_part(aor, "registrar", apply_changes(known, changes), REG)
        if not known:
            # Reported once; the AOR's reg resource keeps that last state for its watchers
            # without holding memory for AORs nobody watches.
            del self._reg[aor]
            await self.notifier.set_part(aor, "registrar", None, REG, quiet=True)

    def _arm(self) -> None:
        self._alarm.arm(self.expiry.next_deadline())

    async def _expire_due(self) -> None:
        now = self.clock()
        changed: dict[str, dict[str, Binding]] = {}  # AOR -> its bindings before the sweep
        due: list[tuple[str, str]] = []
        for aor, contact in self.expiry.pop_due(now):
            table = self.bindings.get(aor)
            if table is None or contact not in table:
                continue
            if aor not in changed:
                changed[aor] = dict(table)
            del table[contact]
            self.total -= 1
            if not table:
                del self.bindings[aor]
            due.append((aor, contact))
        if due and self.claims is None:
            try:
                await asyncio.gather(*(self.storage.delete_binding(a, c) for a, c in due))
            except Exception:
                log.exception("storage delete of expired bindings failed")
        elif due:
            await self._claim_expiry(due, changed, now)
        for aor, before in changed.items():
            log.info("binding of %s expired%s", aor, "" if aor in self.bindings else ": now closed")
            await self._publish(aor, before, REASON_EXPIRY, now)
        self._arm()

    async def _claim_expiry(self, due: list[tuple[str, str]],
                            changed: dict[str, dict[str, Binding]], now: float) -> None:
        """Cluster: each due binding is deleted by one node (an atomic claim); one refreshed
        meanwhile on another node comes back before anyone is told. A claim that cannot
        reach Redis leaves the binding in place, to be tried again shortly."""
        assert self.claims is not None
        results = await asyncio.gather(*(self.claims.expire_binding(a, c, now) for a, c in due),
                                       return_exceptions=True)
        for (aor, contact), result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("expiry claim of a binding of %s failed: %s", aor, result)
                back = msgspec.structs.replace(changed[aor][contact], expires_at=now + RETRY_EXPIRY)
            elif result is not None:
                back = result  # refreshed through another node: it lives on
            else:
                continue
            table = self.bindings.setdefault(aor, {})
            self.total += contact not in table
            table[contact] = back
            self.expiry.set((aor, contact), back.expires_at)

    async def apply_remote(self, aor: str, contact: str, binding: Binding | None,
                           expired: bool) -> None:
        """Another cluster node committed a change of one binding (None: removed; `expired`:
        by expiry): keep this node's copy in step and tell the local notifier, which
        notifies only the dialogs this node owns."""
        table = self.bindings.get(aor, {})
        current = table.get(contact)
        if current == binding:
            return
        before = dict(table)
        table = self.bindings.setdefault(aor, {})
        if binding is None:
            del table[contact]
            self.total -= 1
            self.expiry.discard((aor, contact))
        else:
            self.total += contact not in table
            table[contact] = binding
            self.expiry.set((aor, contact), binding.expires_at)
        if not table:
            del self.bindings[aor]
        self._arm()
        await self._publish(aor, before, REASON_EXPIRY if expired else REASON_REGISTER,
                            self.clock())

    def close(self) -> None:
        self._alarm.cancel()


@functools.lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    """The Date header (RFC 3261 §20.17), formatted once per second."""
    return formatdate(second, usegmt=True)


def _views(aor: str, table: dict[str, Binding]) -> dict[str, BindingView]:
    """Bindings as reginfo sees them, keyed by their stable contact id."""
    return {
        contact_id(aor, b.contact): BindingView(b.contact, b.expires_at, b.q, b.call_id, b.cseq,
                                                b.instance)
        for b in table.values()
    }
