"""What the services' unit tests (test_services_*.py) run them against, in place of the network:
a fake driver implementing the ports of `presenced.services.ports` and recording every answer
and request, and a real `MemoryStorage` whose writes fail (or stall) on demand. Plus builders
for the SIP requests the services are handed and a settable clock."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from presenced.pa.publish import Publications, PublishPolicy
from presenced.pa.records import Binding, Publication, Subscription
from presenced.pa.subscription import Notifier, PaPolicy
from presenced.registrar.bindings import RegistrarPolicy
from presenced.services.notifier import NotifierService
from presenced.services.publish import PublishService
from presenced.services.registrar import RegistrarService
from presenced.sip.endpoint import Peer, RequestReceived
from presenced.sip.message import Request, Response, parse_message
from presenced.sip.transaction import server_key
from presenced.storage import StorageError
from presenced.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
WATCHER = Peer("udp", "192.0.2.10", 5070)
_n = itertools.count(1)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Sent:
    request: Request
    peer: Peer
    context: object
    validated: bool


@dataclass
class FakeNetwork:
    """The Responder, RequestSender and FlowCheck ports, recording instead of sending."""

    responses: list[Response] = field(default_factory=list)
    requests: list[Sent] = field(default_factory=list)
    flows: set[Peer] = field(default_factory=set)  # stream flows that are open

    def respond(self, event: RequestReceived, response: Response) -> None:
        self.responses.append(response)

    def send_request(self, request: Request, peer: Peer, context: object,
                     validated: bool = False) -> None:
        self.requests.append(Sent(request, peer, context, validated))

    def has_flow(self, peer: Peer) -> bool:
        return not peer.reliable or peer in self.flows

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def notifies(self) -> list[Sent]:
        return [s for s in self.requests if s.request.method == "NOTIFY"]


class FailingStorage(MemoryStorage):
    """`MemoryStorage` whose writes raise `StorageError` while their name is in `failing`
    ("put_subscription", "delete_binding", ...), and wait on `gate` while it is set (a slow
    disk). Records `writes` that succeeded, and `after_close` writes attempted once closed."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        self.gate: asyncio.Event | None = None
        self.writes: list[str] = []
        self.closed = False
        self.after_close: list[str] = []

    async def _write(self, name: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.closed:
            self.after_close.append(name)
        if name in self.failing:
            raise StorageError(f"{name}: disk on fire (test)")
        self.writes.append(name)

    async def close(self) -> None:
        self.closed = True
        await super().close()

    async def put_binding(self, binding: Binding) -> None:
        await self._write("put_binding")
        await super().put_binding(binding)

    async def delete_binding(self, aor: str, contact: str) -> None:
        await self._write("delete_binding")
        await super().delete_binding(aor, contact)

    async def put_subscription(self, sub: Subscription) -> None:
        await self._write("put_subscription")
        await super().put_subscription(sub)

    async def delete_subscription(self, sub_id: str) -> None:
        await self._write("delete_subscription")
        await super().delete_subscription(sub_id)

    async def put_publication(self, pub: Publication, replaces: str | None = None) -> None:
        await self._write("put_publication")
        await super().put_publication(pub, replaces)

    async def delete_publication(self, etag: str) -> None:
        await self._write("delete_publication")
        await super().delete_publication(etag)


def received(text: str, body: bytes = b"", peer: Peer = WATCHER) -> RequestReceived:
    head = text.replace("\n", "\r\n") + f"Content-Length: {len(body)}\r\n\r\n"
    msg = parse_message(head.encode() + body)
    assert isinstance(msg, Request)
    return RequestReceived(msg, peer, server_key(f"z9hG4bK{next(_n)}", "192.0.2.10:5070",
                                                 msg.method))


def subscribe(user: str = "alice", call_id: str = "sub1", cseq: int = 1, expires: int = 600,
              to_tag: str | None = None, from_tag: str = "w1",
              event: str = "presence") -> RequestReceived:
    to = f"<sip:{user}@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return received(
        f"SUBSCRIBE sip:{user}@example.com SIP/2.0\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKs{next(_n)}\n"
        "Max-Forwards: 70\n"
        f"From: <sip:watcher@example.com>;tag={from_tag}\n"
        f"To: {to}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} SUBSCRIBE\n"
        f"Event: {event}\n"
        f"Expires: {expires}\n"
        "Contact: <sip:watcher@192.0.2.10:5070>\n")


def register(user: str = "alice", contact: str = "sip:alice@192.0.2.20:5060", cseq: int = 1,
             expires: int = 600, call_id: str = "reg1") -> RequestReceived:
    return received(
        f"REGISTER sip:example.com SIP/2.0\n"
        f"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKr{next(_n)}\n"
        "Max-Forwards: 70\n"
        f"From: <sip:{user}@example.com>;tag=r1\n"
        f"To: <sip:{user}@example.com>\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} REGISTER\n"
        f"Contact: <{contact}>;expires={expires}\n",
        peer=Peer("udp", "192.0.2.20", 5060))


def pidf(basic: str = "open", note: str = "", user: str = "alice") -> bytes:
    extra = f"<note>{note}</note>" if note else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@example.com">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status>{extra}</tuple>'
        "</presence>"
    ).encode()


def publish(body: bytes = b"", if_match: str | None = None, expires: int = 600,
            user: str = "alice") -> RequestReceived:
    n = next(_n)
    lines = (
        f"PUBLISH sip:{user}@example.com SIP/2.0\n"
        f"Via: SIP/2.0/UDP 192.0.2.30:5060;branch=z9hG4bKp{n}\n"
        "Max-Forwards: 70\n"
        f"From: <sip:{user}@example.com>;tag=p{n}\n"
        f"To: <sip:{user}@example.com>\n"
        f"Call-ID: pub{n}\n"
        f"CSeq: {n} PUBLISH\n"
        "Event: presence\n"
        f"Expires: {expires}\n")
    if if_match is not None:
        lines += f"SIP-If-Match: {if_match}\n"
    if body:
        lines += "Content-Type: application/pidf+xml\n"
    return received(lines, body, peer=Peer("udp", "192.0.2.30", 5060))


@dataclass
class World:
    """The notifier, registrar and publication services wired as server.py wires them, over
    a `FakeNetwork` and a `FailingStorage`."""

    net: FakeNetwork
    storage: FailingStorage
    clock: Clock
    notifications: NotifierService
    registrar: RegistrarService
    publish: PublishService

    def answer_notifies(self, status: int = 200) -> int:
        """Answer every NOTIFY sent so far (as the watcher would); returns how many."""
        sent = self.net.notifies()
        for s in sent:
            assert isinstance(s.context, tuple)
            self.notifications.on_notify_result(s.context[1], status)
        self.net.requests.clear()
        return len(sent)


async def world(**policy: int) -> World:
    tokens = itertools.count(1)

    def token() -> str:
        return f"tok{next(tokens)}"

    net, storage, clock = FakeNetwork(), FailingStorage(), Clock()
    await storage.open()
    notifier = Notifier(PaPolicy(**policy), token, lambda p, t: f"sip:{p}")
    notifications = NotifierService(notifier, net, storage, clock)
    registrar = RegistrarService(RegistrarPolicy(), net, storage, notifications,
                                 frozenset({"example.com"}), clock)
    publish = PublishService(Publications(PublishPolicy(), token), net, storage, notifications,
                             frozenset({"example.com"}), clock)
    return World(net, storage, clock, notifications, registrar, publish)
