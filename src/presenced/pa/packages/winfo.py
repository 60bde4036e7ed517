"""The presence.winfo template package (RFC 3857) with application/watcherinfo+xml (RFC 3858).

The resource is the presentity's own AOR; its state is the list of the watchers of its
presence, which the notifier keeps (it holds the presence dialogs): pending, active and, once,
terminated ones with the event that ended them (RFC 3857 §3.3: subscribe, approved,
deactivated, probation, rejected, timeout, giveup). Watchers that asked while the presentity
had no winfo subscription are listed when it next subscribes: pending ones are dialogs (they
survive a restart with them), ended ones are persisted (bounded per presentity) until one
document has shown them ("offline winfo", as SER's pa did).

Full and partial documents (RFC 3858 §4): each state knows what changed since the state before
it (`changes`, one entry per watcher id that is new, changed or gone; a watcher that went away
without a final status reads `terminated`). The first NOTIFY of a subscription, one after a
refresh or a restart, and any after a gap (the watcher missed a state: coalesced changes, a
NOTIFY it did not accept) carry full state; every other one carries `state="partial"` with only
the changed watchers, which the subscriber merges by id into its table. Both are templates
built once per state (not per subscriber); the version written in is the subscription's own:
0 first, +1 per NOTIFY.

Only the presentity itself may watch (`owner_only`; with [auth] anyone else gets 403).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from presenced.pa.documents.xml import escape_attr, escape_text
from presenced.pa.packages.base import EventPackage

NAME = "presence.winfo"
CONTENT_TYPE = "application/watcherinfo+xml"
WINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
PART = "watchers"


@dataclass(frozen=True, slots=True)
class Watcher:
    id: str  # stable per subscription (RFC 3858 §5.2)
    uri: str  # the watcher's URI
    status: str  # pending | active | waiting | terminated
    event: str  # subscribe | approved | deactivated | probation | rejected | timeout | giveup


@dataclass(frozen=True, slots=True)
class WatcherList:
    watchers: tuple[Watcher, ...] = ()
    # What changed since the previous state (None: unknown, only full state may be sent), and
    # that state's serial: a subscriber that saw serial - 1 may get the partial document.
    changes: tuple[Watcher, ...] | None = None
    serial: int = 0


def diff(old: WatcherList, watchers: tuple[Watcher, ...]) -> WatcherList:
    """The state after `old` listing `watchers`, with what changed (RFC 3858 §4.2)."""
    before = {w.id: w for w in old.watchers}
    now_ids = set()
    changes: list[Watcher] = []
    for w in watchers:
        now_ids.add(w.id)
        if before.get(w.id) != w:
            changes.append(w)
    for w in old.watchers:
        if w.id not in now_ids and w.status != "terminated":
            # Gone without a final status (e.g. its dialog moved to another node): the
            # subscriber must drop it from its table, which a terminated entry tells it.
            changes.append(Watcher(w.id, w.uri, "terminated", "giveup"))
    return WatcherList(watchers, tuple(changes), old.serial + 1)


def _list(resource: str, package: str, watchers: tuple[Watcher, ...]) -> str:
    out = [f'<watcher-list resource="{escape_attr("sip:" + resource)}" '
           f'package="{escape_attr(package)}">\n']
    for w in watchers:
        out.append(f'<watcher id="{escape_attr(w.id)}" event="{escape_attr(w.event)}" '
                   f'status="{escape_attr(w.status)}">{escape_text(w.uri)}</watcher>\n')
    out.append("</watcher-list>\n")
    return "".join(out)


def encode_watcherinfo_template(resource: str, state: WatcherList, package: str = "presence",
                                partial: bool = False) -> tuple[bytes, bytes]:
    """(prefix, suffix) around the version number: the full document, or (`partial`) the one
    with only `state.changes`."""
    prefix = f'<?xml version="1.0" encoding="UTF-8"?>\n<watcherinfo xmlns="{WINFO_NS}" version="'
    if partial:
        # RFC 3858 §4.2: a partial document holds only the watcher-lists that changed, each
        # with only its changed watchers.
        changes = state.changes or ()
        body = _list(resource, package, changes) if changes else ""
        suffix = f'" state="partial">\n{body}</watcherinfo>\n'
    else:
        suffix = f'" state="full">\n{_list(resource, package, state.watchers)}</watcherinfo>\n'
    return prefix.encode(), suffix.encode("utf-8")


class WinfoPackage(EventPackage):
    name = NAME
    formats = (CONTENT_TYPE,)
    owner_only = True
    versioned = True

    def empty(self, resource: str) -> WatcherList:
        return WatcherList()

    def compose(self, resource: str, parts: Mapping[str, object]) -> WatcherList:
        part = parts.get(PART)
        return part if isinstance(part, WatcherList) else WatcherList()

    def template(self, resource: str, state: object, content_type: str,
                 now: float) -> tuple[bytes, bytes]:
        assert isinstance(state, WatcherList)
        return encode_watcherinfo_template(resource, state)

    def partial_template(self, resource: str, state: WatcherList) -> tuple[bytes, bytes]:
        return encode_watcherinfo_template(resource, state, partial=True)
