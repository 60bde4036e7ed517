"""The presence.winfo template package (RFC 3857) with application/watcherinfo+xml (RFC 3858).

The resource is the presentity's own AOR; its state is the list of the watchers of its
presence, which the notifier keeps (it holds the presence dialogs): pending, active and, once,
terminated ones with the event that ended them (RFC 3857 §3.3: subscribe, approved,
deactivated, probation, rejected, timeout, giveup). Watchers that asked while the presentity
had no winfo subscription are listed when it next subscribes: pending ones are dialogs (they
survive a restart with them), ended ones are kept in memory until one document has shown
them ("offline winfo", as SER's pa did).

Every document is full state (RFC 3858 §4: a partial document is an optimisation a notifier
may skip), with the subscription's own version: 0 first, +1 per NOTIFY.

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


def encode_watcherinfo_template(resource: str, state: WatcherList,
                                package: str = "presence") -> tuple[bytes, bytes]:
    """(prefix, suffix) around the version number."""
    prefix = f'<?xml version="1.0" encoding="UTF-8"?>\n<watcherinfo xmlns="{WINFO_NS}" version="'
    out = [f'" state="full">\n<watcher-list resource="{escape_attr("sip:" + resource)}" '
           f'package="{escape_attr(package)}">\n']
    for w in state.watchers:
        out.append(f'<watcher id="{escape_attr(w.id)}" event="{w.event}" status="{w.status}">'
                   f"{escape_text(w.uri)}</watcher>\n")
    out.append("</watcher-list>\n</watcherinfo>\n")
    return prefix.encode(), "".join(out).encode("utf-8")


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
