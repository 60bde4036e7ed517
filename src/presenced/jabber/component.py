"""The XMPP side of the jabber gateway: an external component (XEP-0114) on slixmpp.

This is the only module in presenced that imports slixmpp. It turns slixmpp's string events and
stanza objects into small frozen dataclasses (`XmppEvent`) handed to one ``on_event`` callback,
and turns method calls back into stanzas. It makes no decisions: subscriptions are neither
approved nor refused here, and presence probes are not answered — slixmpp's roster machinery,
which would do both, is switched off, and the gateway (the presence agent) decides.

Resilience: one supervisor task connects, waits for the handshake, and when the stream drops
(or never comes up) tries again after an exponential backoff (``min_backoff`` doubling up to
``max_backoff``) until `XmppComponent.stop`. `Connected` is emitted each time the handshake
succeeds and `Disconnected` each time an established stream is lost. Stanzas sent while the
stream is down are dropped (with a log line): on `Connected` the caller re-announces state.

Nothing raises out of the component: malformed stanzas, bad JIDs and exceptions from the
callback are logged and dropped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from presenced.jabber.addressing import bare_jid, split_jid
from presenced.jabber.mapping import SHOW_VALUES, XmppPresence

__all__ = [
    "Connected",
    "Disconnected",
    "PresenceChanged",
    "Probe",
    "SubscribeRequest",
    "Subscribed",
    "Unsubscribe",
    "Unsubscribed",
    "XmppComponent",
    "XmppEvent",
]

log = logging.getLogger(__name__)

_NS = "jabber:component:accept"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The component stream is up (handshake accepted)."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """An established component stream was lost (or closed by `XmppComponent.stop`)."""


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """Available or unavailable presence from ``from_jid`` (a full JID when it has a resource)."""

    from_jid: str
    to_jid: str
    presence: XmppPresence


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """``from_bare`` asks to see ``to_bare``'s presence (RFC 6121 §3.1)."""

    from_bare: str
    to_bare: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    """``from_bare`` approved ``to_bare``'s subscription (RFC 6121 §3.1.5)."""

    from_bare: str
    to_bare: str


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """``from_bare`` refused or cancelled ``to_bare``'s subscription (RFC 6121 §3.2)."""

    from_bare: str
    to_bare: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``from_bare`` no longer wants ``to_bare``'s presence (RFC 6121 §3.3)."""

    from_bare: str
    to_bare: str


@dataclass(frozen=True, slots=True)
class Probe:
    """``from_jid`` (its server, RFC 6121 §4.3) asks for ``to_bare``'s current presence."""

    from_jid: str
    to_bare: str


XmppEvent = (
    Connected
    | Disconnected
    | PresenceChanged
    | SubscribeRequest
    | Subscribed
    | Unsubscribed
    | Unsubscribe
    | Probe
)

EventCallback = Callable[[XmppEvent], object]

_SUBSCRIPTION_EVENTS: dict[
    str, type[SubscribeRequest | Subscribed | Unsubscribed | Unsubscribe]
] = {
    "subscribe": SubscribeRequest,
    "subscribed": Subscribed,
    "unsubscribed": Unsubscribed,
    "unsubscribe": Unsubscribe,
}


# -- stanza parsing (plain ElementTree, so malformed input cannot reach slixmpp's accessors) ----


def _full_jid(jid: str | None) -> str | None:
    parts = split_jid(jid) if jid else None
    if parts is None:
        return None
    local, domain, resource = parts
    bare = f"{local}@{domain}" if local else domain
    return f"{bare}/{resource}" if resource else bare


def parse_presence(
    xml: ET.Element, max_statuses: int = 16, max_status_len: int = 4096
) -> XmppPresence:
    """Read show/status/priority from a <presence/> element (RFC 6121 §4.7.2).

    Unknown <show/> values are ignored, the priority is clamped to -128..127 (garbage -> 0),
    statuses keep their xml:lang (inherited from the stanza when absent), empty ones are skipped.
    """
    ns = xml.tag[1:].partition("}")[0] if xml.tag.startswith("{") else _NS
    available = xml.get("type") in (None, "", "available")
    show: str | None = None
    priority = 0
    statuses: list[tuple[str, str | None]] = []
    default_lang = xml.get(_XML_LANG)
    if available:
        show_text = xml.findtext(f"{{{ns}}}show")
        if show_text is not None and show_text.strip() in SHOW_VALUES:
            show = show_text.strip()
        prio_text = xml.findtext(f"{{{ns}}}priority")
        if prio_text is not None:
            try:
                priority = max(-128, min(127, int(prio_text.strip())))
            except ValueError:
                priority = 0
    for el in xml.iterfind(f"{{{ns}}}status"):
        if len(statuses) >= max_statuses:
            break
        text = (el.text or "").strip()
        if text:
            statuses.append((text[:max_status_len], el.get(_XML_LANG) or default_lang or None))
    return XmppPresence(available=available, show=show, statuses=tuple(statuses), priority=priority)


# -- the component -----------------------------------------------------------------------------


class XmppComponent:
    """An XEP-0114 component connection that reports typed events and reconnects by itself."""

    def __init__(
        self,
        jid: str,
        secret: str,
        host: str,
        port: int,
        on_event: EventCallback,
        *,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        handshake_timeout: float = 10.0,
        max_pending_callbacks: int = 1000,
    ) -> None:
        domain = bare_jid(jid)
        if domain is None or "@" in domain:
            raise ValueError(f"component jid must be a domain: {jid!r}")
        self.jid = domain
        self.on_event = on_event
        self._secret = secret
        self._host = host
        self._port = port
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._handshake_timeout = handshake_timeout
        self._max_pending = max_pending_callbacks
        self._xmpp: ComponentXMPP | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._stopping = False
        self._connected = False
        self._session_up: asyncio.Event | None = None
        self._ended: asyncio.Event | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; returns at once (watch for `Connected`)."""
        if self._task is not None:
            return
        self._stopping = False
        self._xmpp = self._make_stream()
        self._task = asyncio.create_task(self._supervise(), name=f"xmpp-component {self.jid}")

    async def stop(self) -> None:
        """Close the stream (emitting `Disconnected` if it was up) and stop reconnecting."""
        self._stopping = True
        xmpp, task = self._xmpp, self._task
        if xmpp is None or task is None:
            return
        if self._connected:
            try:
                await asyncio.wait_for(asyncio.ensure_future(xmpp.disconnect(wait=1.0)), 2.0)
            except (TimeoutError, asyncio.CancelledError):
                xmpp.abort()
            except Exception:
                log.exception("xmpp component %s: error while disconnecting", self.jid)
            # Let the supervisor see the end of the stream and emit Disconnected.
            try:
                await asyncio.wait_for(asyncio.shield(task), 1.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        xmpp.cancel_connection_attempt()
        xmpp.abort()
        # slixmpp keeps a per-stream send task alive forever; it is ours to end.
        out = getattr(xmpp, "_run_out_filters", None)
        if out is not None and not out.done():
            out.cancel()
        for fut in list(self._pending):
            fut.cancel()
        self._task = None
        self._xmpp = None

    def _make_stream(self) -> ComponentXMPP:
        xmpp = ComponentXMPP(self.jid, self._secret, self._host, self._port)  # type: ignore[no-untyped-call]
        xmpp.enable_direct_tls = False  # XEP-0114 is plain TCP on the component port
        xmpp.auto_authorize = None
        xmpp.auto_subscribe = False
        # Take presence away from slixmpp's roster, which would answer probes and
        # subscriptions by itself; the gateway decides.
        xmpp.remove_handler("Presence")
        xmpp.del_event_handler("presence_probe", xmpp._handle_probe)
        xmpp.register_handler(
            Callback(
                "presenced presence",
                MatchXPath(f"{{{xmpp.default_ns}}}presence"),
                self._on_presence_stanza,
            )
        )
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("disconnected", self._on_stream_end)
        xmpp.add_event_handler("connection_failed", self._on_connection_failed)
        xmpp.add_event_handler("stream_error", self._on_stream_error)
        # slixmpp's default exception hook logs; keep it but with our context.
        xmpp.exception = self._on_slixmpp_exception  # type: ignore[method-assign]
        return xmpp

    async def _supervise(self) -> None:
        delay = self._min_backoff
        while not self._stopping:
            had_session = await self._attempt()
            if self._stopping:
                break
            if had_session:
                delay = self._min_backoff
            log.info("xmpp component %s: reconnecting in %.1f s", self.jid, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)

    async def _attempt(self) -> bool:
        """One connection: returns True when a session was established (and has now ended)."""
        xmpp = self._xmpp
        assert xmpp is not None
        session_up = self._session_up = asyncio.Event()
        ended = self._ended = asyncio.Event()
        log.debug("xmpp component %s: connecting to %s:%d", self.jid, self._host, self._port)
        try:
            xmpp.connect(self._host, self._port)
        except Exception:
            log.exception("xmpp component %s: connect() failed", self.jid)
            return False
        up = asyncio.ensure_future(session_up.wait())
        down = asyncio.ensure_future(ended.wait())
        try:
            await asyncio.wait(
                {up, down}, timeout=self._handshake_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            up.cancel()
            down.cancel()
        if not session_up.is_set() or ended.is_set():
            # Stop slixmpp's own retry loop: the backoff is ours.
            xmpp.cancel_connection_attempt()
            if xmpp.transport is not None:
                log.warning(
                    "xmpp component %s: no handshake within %.1f s",
                    self.jid,
                    self._handshake_timeout,
                )
                xmpp.abort()
            return False
        self._connected = True
        log.info("xmpp component %s: connected to %s:%d", self.jid, self._host, self._port)
        self._emit(Connected())
        try:
            await ended.wait()
        finally:
            self._connected = False
            xmpp.cancel_connection_attempt()
            log.info("xmpp component %s: disconnected", self.jid)
            self._emit(Disconnected())
        return True

    # -- slixmpp callbacks -------------------------------------------------------------------

    def _on_session_start(self, _event: Any) -> None:
        if self._session_up is not None:
            self._session_up.set()

    def _on_stream_end(self, reason: Any) -> None:
        log.debug("xmpp component %s: stream ended: %s", self.jid, reason)
        if self._ended is not None:
            self._ended.set()

    def _on_connection_failed(self, reason: Any) -> None:
        log.debug(
            "xmpp component %s: connection to %s:%d failed: %s",
            self.jid,
            self._host,
            self._port,
            reason,
        )
        if self._ended is not None:
            self._ended.set()

    def _on_stream_error(self, error: Any) -> None:
        try:
            condition = error["condition"]
        except Exception:
            condition = "?"
        log.warning("xmpp component %s: stream error %s", self.jid, condition)

    def _on_slixmpp_exception(self, exc: Exception) -> None:
        log.error("xmpp component %s: error in stanza handling: %r", self.jid, exc, exc_info=exc)

    def _on_presence_stanza(self, stanza: Any) -> None:
        try:
            event = self._presence_event(stanza.xml)
        except Exception:
            log.exception("xmpp component %s: dropping malformed presence", self.jid)
            return
        if event is not None:
            self._emit(event)

    def _presence_event(self, xml: ET.Element) -> XmppEvent | None:
        ptype = xml.get("type") or "available"
        raw_from, raw_to = xml.get("from"), xml.get("to")
        from_jid, to_jid = _full_jid(raw_from), _full_jid(raw_to)
        if from_jid is None or to_jid is None:
            log.info(
                "xmpp component %s: dropping presence type=%s with bad from=%r to=%r",
                self.jid,
                ptype,
                raw_from,
                raw_to,
            )
            return None
        if ptype in ("available", "unavailable"):
            return PresenceChanged(from_jid, to_jid, parse_presence(xml))
        from_bare = from_jid.partition("/")[0]
        to_bare = to_jid.partition("/")[0]
        sub = _SUBSCRIPTION_EVENTS.get(ptype)
        if sub is not None:
            return sub(from_bare, to_bare)
        if ptype == "probe":
            return Probe(from_jid, to_bare)
        if ptype == "error":
            err = xml.find(f"{{{xml.tag[1:].partition('}')[0]}}}error")
            cond = next((c.tag.rpartition("}")[2] for c in err), "?") if err is not None else "?"
            log.info(
                "xmpp component %s: presence error %s from %s to %s",
                self.jid,
                cond,
                from_jid,
                to_jid,
            )
            return None
        log.info(
            "xmpp component %s: dropping presence of unknown type %r from %s",
            self.jid,
            ptype,
            from_jid,
        )
        return None

    def _emit(self, event: XmppEvent) -> None:
        try:
            result = self.on_event(event)
        except Exception:
            log.exception("xmpp component %s: on_event failed for %r", self.jid, event)
            return
        if inspect.isawaitable(result):
            if len(self._pending) >= self._max_pending:
                log.warning(
                    "xmpp component %s: %d callbacks pending, dropping %r",
                    self.jid,
                    len(self._pending),
                    event,
                )
                if inspect.iscoroutine(result):
                    result.close()
                return
            fut = asyncio.ensure_future(result)
            self._pending.add(fut)
            fut.add_done_callback(self._callback_done)

    def _callback_done(self, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("xmpp component %s: on_event failed", self.jid, exc_info=fut.exception())

    # -- sending -----------------------------------------------------------------------------

    def _presence(self, from_jid: str, to_jid: str, ptype: str | None) -> Any:
        """A presence stanza ready to fill, or None when it cannot be sent now."""
        xmpp = self._xmpp
        if xmpp is None or not self._connected:
            log.debug(
                "xmpp component %s: not connected, dropping presence type=%s %s -> %s",
                self.jid,
                ptype or "available",
                from_jid,
                to_jid,
            )
            return None
        src, dst = _full_jid(from_jid), _full_jid(to_jid)
        if src is None or dst is None:
            log.warning(
                "xmpp component %s: not sending presence with bad from=%r to=%r",
                self.jid,
                from_jid,
                to_jid,
            )
            return None
        stanza = xmpp.Presence()
        stanza["from"] = src
        stanza["to"] = dst
        if ptype is not None:
            stanza["type"] = ptype
        return stanza

    def _send(self, stanza: Any) -> bool:
        try:
            stanza.send()
        except Exception:
            log.exception("xmpp component %s: failed to send %s", self.jid, stanza)
            return False
        return True

    def send_presence(self, from_jid: str, to_jid: str, presence: XmppPresence) -> bool:
        """Send available/unavailable presence; returns False when it was dropped."""
        stanza = self._presence(from_jid, to_jid, None if presence.available else "unavailable")
        if stanza is None:
            return False
        try:
            xml = stanza.xml
            ns = xml.tag[1:].partition("}")[0]
            if presence.available and presence.show in SHOW_VALUES:
                ET.SubElement(xml, f"{{{ns}}}show").text = presence.show
            for text, lang in presence.statuses:
                el = ET.SubElement(xml, f"{{{ns}}}status")
                el.text = text
                if lang:
                    el.set(_XML_LANG, lang)
            if presence.available and presence.priority:
                prio = max(-128, min(127, int(presence.priority)))
                ET.SubElement(xml, f"{{{ns}}}priority").text = str(prio)
        except Exception:
            log.exception("xmpp component %s: cannot build presence %r", self.jid, presence)
            return False
        return self._send(stanza)

    def _subscription(self, ptype: str, from_bare: str, to_bare: str) -> bool:
        src, dst = bare_jid(from_bare), bare_jid(to_bare)
        if src is None or dst is None:
            log.warning(
                "xmpp component %s: not sending %s with bad from=%r to=%r",
                self.jid,
                ptype,
                from_bare,
                to_bare,
            )
            return False
        stanza = self._presence(src, dst, ptype)
        return stanza is not None and self._send(stanza)

    def subscribe(self, from_bare: str, to_bare: str) -> bool:
        """Ask ``to_bare`` for its presence on behalf of ``from_bare`` (RFC 6121 §3.1.1)."""
        return self._subscription("subscribe", from_bare, to_bare)

    def unsubscribe(self, from_bare: str, to_bare: str) -> bool:
        """Stop receiving ``to_bare``'s presence (RFC 6121 §3.3.1)."""
        return self._subscription("unsubscribe", from_bare, to_bare)

    def approve(self, from_bare: str, to_bare: str) -> bool:
        """Approve ``to_bare``'s subscription to ``from_bare`` (type subscribed, RFC 6121 §3.1.4)."""
        return self._subscription("subscribed", from_bare, to_bare)

    def refuse(self, from_bare: str, to_bare: str) -> bool:
        """Refuse or cancel ``to_bare``'s subscription to ``from_bare`` (RFC 6121 §3.2.1)."""
        return self._subscription("unsubscribed", from_bare, to_bare)

    def probe(self, from_bare: str, to_bare: str) -> bool:
        """Ask ``to_bare``'s server for its current presence (RFC 6121 §4.3)."""
        return self._subscription("probe", from_bare, to_bare)
