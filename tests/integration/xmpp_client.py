"""A real slixmpp client session on the test Prosody, shared by the jabber integration tests.

It logs in over the plain loopback stream (the test Prosody has TLS off), records every
presence stanza it receives, and sends presence with show, statuses (each with xml:lang) and
priority built as raw elements, so tests can send exactly what a peer would, garbage included.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from xml.etree import ElementTree as ET

from prosody import ProsodyServer
from slixmpp import ClientXMPP

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class XmppUser:
    def __init__(
        self,
        prosody: ProsodyServer,
        user: str,
        *,
        password: str = "pw",
        resource: str = "phone",
        auto_authorize: bool = False,
    ) -> None:
        self.jid = f"{user}@{prosody.host}"
        self.client = ClientXMPP(
            f"{self.jid}/{resource}",
            password,
            plugin_config={
                "feature_mechanisms": {"unencrypted_scram": True, "unencrypted_plain": True}
            },
        )
        self.client.enable_direct_tls = False
        self.client.auto_authorize = auto_authorize or None  # None: leave requests pending
        self.client.auto_subscribe = False
        self.presences: list[Any] = []
        self._changed = asyncio.Event()
        self.prosody = prosody
        self.client.add_event_handler("presence", self._on_presence)

    def _on_presence(self, pres: Any) -> None:
        self.presences.append(pres)
        self._changed.set()

    async def connect(self, *, initial_presence: bool = True) -> None:
        started = asyncio.Event()
        self.client.add_event_handler("session_start", lambda _e: started.set())
        self.client.connect("127.0.0.1", self.prosody.c2s_port)
        await asyncio.wait_for(started.wait(), 10)
        await self.client.get_roster()
        if initial_presence:
            self.client.send_presence()

    async def wait(self, pred: Callable[[Any], bool], timeout: float = 8.0) -> Any:
        """The first recorded presence (old or new) that satisfies `pred`."""
        deadline = time.monotonic() + timeout
        while True:
            for p in self.presences:
                if pred(p):
                    return p
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [(str(p["from"]), p["type"]) for p in self.presences]
                raise AssertionError(f"{self.jid}: no matching presence; got {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def send(
        self,
        ptype: str | None = None,
        to: str | None = None,
        show: str | None = None,
        statuses: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        priority: str | None = None,
    ) -> None:
        pres = self.client.Presence()
        if to:
            pres["to"] = to
        if ptype:
            pres["type"] = ptype
        ns = pres.xml.tag[1:].partition("}")[0]
        if show:
            ET.SubElement(pres.xml, f"{{{ns}}}show").text = show
        for text, lang in statuses:
            el = ET.SubElement(pres.xml, f"{{{ns}}}status")
            el.text = text
            el.set(XML_LANG, lang)
        if priority is not None:
            ET.SubElement(pres.xml, f"{{{ns}}}priority").text = priority
        pres.send()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(asyncio.ensure_future(self.client.disconnect(wait=0.5)), 2)
        except Exception:
            self.client.abort()
        out = getattr(self.client, "_run_out_filters", None)
        if out is not None:
            out.cancel()


def statuses(pres: Any) -> list[tuple[str, str | None]]:
    """The (text, xml:lang) of every <status/> of a received presence."""
    ns = pres.xml.tag[1:].partition("}")[0]
    return [(el.text or "", el.get(XML_LANG)) for el in pres.xml.iterfind(f"{{{ns}}}status")]


@contextlib.asynccontextmanager
async def xmpp_user_factory(prosody: ProsodyServer) -> AsyncIterator[Callable[..., XmppUser]]:
    """`make(name, auto_authorize=False)` -> an `XmppUser` on `prosody` (not yet connected);
    every user made is closed on the way out. The tests' `xmpp_users` fixtures wrap this."""
    users: list[XmppUser] = []

    def make(name: str, *, auto_authorize: bool = False) -> XmppUser:
        u = XmppUser(prosody, name, auto_authorize=auto_authorize)
        users.append(u)
        return u

    try:
        yield make
    finally:
        for u in users:
            await u.close()
