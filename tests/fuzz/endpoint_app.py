"""The whole server in one process, without sockets: what the endpoint-level fuzzer drives.

`start_app(auth=...)` runs the real composition root (`presenced.server.Server.start`) with the
memory storage backend, transports that only record what they are asked to send, and a driver
whose endpoint clock is a plain float. Everything else -- endpoint, dispatcher, digest auth,
routing, presence agent, registrar, publication service -- is the production code, wired by
server.py itself, so a change there is fuzzed without touching this file.

`App.check()` holds the properties every run must keep (see `Violation`):
- no exception escaped (the endpoint raised, a handler answered 500, a task failed, anything
  logged at ERROR by presenced);
- every message the server would send parses with our own parser, within `max_message_size`;
- no header line of it carries a control character (CR/LF injection), none is folded;
- every destination is a source that sent us something: UDP to a source host (a request to the
  exact source host:port), TCP only over a connection the source opened (no outbound dial).
"""

from __future__ import annotations

import asyncio
import logging
import re
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import presenced.server as server_module
from presenced.config import Config, parse_config
from presenced.server import Server
from presenced.sip.endpoint import Peer, Transmit
from presenced.sip.errors import ParseError
from presenced.sip.message import Limits, Request, Response, parse_message
from presenced.transport.driver import Driver

DOMAIN = "example.com"
USERS = {"alice": "alice-password", "bob": "bob-password"}
LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")

# The sources the fuzzer sends from, and addresses that never send anything (victims): a
# message that reaches one of those is traffic to a third party.
SOURCES = (
    Peer("udp", "127.0.0.2", 5070),
    Peer("udp", "127.0.0.3", 5080),
    Peer("tcp", "127.0.0.4", 40000, conn_id=1),
)
VICTIMS = ("127.0.0.99", "192.0.2.99", "[::1]")

# A line break inside a header line we send. (Other control characters, NUL included, may stand
# in a quoted-pair, RFC 3261 §25.1; RFC 4475 §3.1.1.1 has a valid message with them.)
_CONTROL = re.compile(rb"[\r\n]")


def make_config(auth: bool) -> Config:
    """The configuration the fuzzer serves: two users when `auth`, anyone otherwise."""
    listen = ", ".join(f'"{a}"' for a in LISTEN)
    text = f'[server]\nlisten = [{listen}]\ndomains = ["{DOMAIN}"]\n[storage]\nurl = "memory:"\n'
    if auth:
        users = ", ".join(f'{u} = "{p}"' for u, p in USERS.items())
        text += f'[auth]\nrealm = "{DOMAIN}"\nusers = {{ {users} }}\n'
    return parse_config(text, Path("/nonexistent-presenced-fuzz"))


class FakeLoop:
    """The two things `Driver` asks of its loop: the time, and one timer (`call_at`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.deadline: float | None = None
        self.callback: Callable[[], None] | None = None

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        self.deadline, self.callback = when, callback
        return _Handle(self)


class _Handle:
    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop

    def cancel(self) -> None:
        self.loop.deadline = self.loop.callback = None


def fake_clock_driver(endpoint: Any) -> Driver:
    """The production driver with the endpoint's clock and timer on a `FakeLoop` (a function,
    not a subclass: the compiled build's Driver is a native class)."""
    return Driver(endpoint, FakeLoop())


class RecordingTransport:
    """Stands where UdpTransport/TcpTransport stand; sends nothing, records every Transmit."""

    def __init__(self, receiver: Callable[[bytes, Peer], None], host: str, port: int,
                 advertised_host: str | None = None, **_options: object) -> None:
        self.receiver = receiver
        self.host, self.port = host, port
        self.name = ""
        self.v6 = ":" in host
        self.local = f"{advertised_host or host}:{port}"  # the Transport protocol's listener
        self.sent: list[Transmit] = []
        # TcpTransport's view of its live connections, for has_flow.
        self.by_addr: dict[tuple[str, int], object] = {}
        self.connections: dict[int, object] = {}

    def has_flow(self, peer: Peer) -> bool:
        if self.name == "udp":
            return True
        return (peer.conn_id is not None and peer.conn_id in self.connections) or (
            (peer.host, peer.port) in self.by_addr)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def send(self, data: bytes, peer: Peer) -> None:
        self.sent.append(Transmit(data, peer))


class _Udp(RecordingTransport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = "udp"


class _Tcp(RecordingTransport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = "tcp"


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# The properties, by kind (a test may check some of them; see `App.kinds`).
KINDS = ("exception", "parse", "injection", "destination")


class Violation(AssertionError):
    """A property of `App.check()` does not hold; the message says which and shows the bytes."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"[{kind}] {message}")
        self.kind = kind


@contextmanager
def _patched_root() -> Iterator[None]:
    """server.py with recording transports, the fake-clock driver, and no process-wide GC
    tuning (gc.freeze() once per fuzz input would pin every input's garbage)."""
    saved = (server_module.UdpTransport, server_module.TcpTransport, server_module.Driver,
             server_module.gc)
    server_module.UdpTransport = _Udp  # type: ignore[misc, assignment]
    server_module.TcpTransport = _Tcp  # type: ignore[misc, assignment]
    server_module.Driver = fake_clock_driver  # type: ignore[misc, assignment]
    server_module.gc = types.SimpleNamespace(  # type: ignore[assignment]
        freeze=lambda: None, set_threshold=lambda *a: None, disable=lambda: None,
        enable=lambda: None)
    try:
        yield
    finally:
        (server_module.UdpTransport, server_module.TcpTransport, server_module.Driver,
         server_module.gc) = saved  # type: ignore[misc, assignment]


@dataclass
class App:
    server: Server
    config: Config
    errors: _ErrorLog
    sent_from: set[Peer] = field(default_factory=set)
    checked: int = 0  # transmits already checked
    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    kinds: frozenset[str] = frozenset(KINDS)  # the properties check() enforces
    ignored: list[Violation] = field(default_factory=list)  # those of other kinds

    # --- the parts ---------------------------------------------------------------------------

    @property
    def driver(self) -> Driver:
        return self.server.driver

    @property
    def transmits(self) -> list[Transmit]:
        out: list[Transmit] = []
        for t in self.server.transports:
            out.extend(t.sent)  # type: ignore[union-attr]
        return out

    def tcp(self) -> RecordingTransport:
        return self.driver.transports["tcp"]  # type: ignore[return-value]

    # --- input ---------------------------------------------------------------------------------

    async def feed(self, data: bytes, peer: Peer) -> None:
        """One message from `peer`, then everything it set off (handlers, storage, NOTIFYs)."""
        self.sent_from.add(peer)
        if peer.transport == "tcp":
            self.tcp().by_addr[(peer.host, peer.port)] = peer
            self.tcp().connections[peer.conn_id or 0] = peer
        try:
            self.driver.receive(data, peer)  # nothing may escape from here
        except Exception as exc:
            v = Violation("exception", f"Endpoint.receive raised {exc!r} for {data[:2000]!r}")
            if v.kind in self.kinds:
                raise v from exc
            self.ignored.append(v)
        await settle()

    def drop_connection(self, peer: Peer) -> None:
        """The TCP connection of `peer` closes (the watcher went away)."""
        self.tcp().by_addr.pop((peer.host, peer.port), None)
        self.tcp().connections.pop(peer.conn_id or 0, None)

    async def advance(self, seconds: float) -> None:
        """Move the endpoint clock on, firing transaction timers (retransmissions, timeouts)."""
        fake = self.driver.loop
        assert isinstance(fake, FakeLoop)
        end = fake.now + seconds
        for _ in range(200):
            if fake.deadline is None or fake.deadline > end or fake.callback is None:
                break
            fake.now = max(fake.now, fake.deadline)
            callback = fake.callback
            fake.deadline = fake.callback = None
            callback()
            await settle()
        fake.now = end

    # --- the properties --------------------------------------------------------------------------

    def check(self) -> None:
        """Raise the first violation of a property in `kinds` since the last check."""
        for v in self._violations():
            if v.kind in self.kinds:
                raise v
            self.ignored.append(v)

    def _violations(self) -> Iterator[Violation]:
        while self.errors.records:
            rec = self.errors.records.pop(0)
            detail = rec.getMessage()
            if rec.exc_info and rec.exc_info[1] is not None:
                detail += f": {rec.exc_info[0].__name__}: {rec.exc_info[1]}"  # type: ignore[union-attr]
            yield Violation("exception", f"logged at ERROR: {detail}")
        while self.loop_errors:
            ctx = self.loop_errors.pop(0)
            yield Violation("exception", f"unhandled in the loop: {ctx.get('message')} "
                                         f"{ctx.get('exception')!r}")
        if self.server.dispatcher.errors:
            self.server.dispatcher.errors = 0
            yield Violation("exception", "a handler failed (answered 500)")
        limits = self.server.endpoint.config.limits
        max_size = self.config.server.max_message_size
        transmits = self.transmits
        for tx in transmits[self.checked:]:
            yield from check_transmit(tx, self.sent_from, limits, max_size)
        self.checked = len(transmits)

    async def stop(self) -> None:
        await self.server.stop()
        await settle()
        logging.getLogger("presenced").removeHandler(self.errors)


async def settle(rounds: int = 2000) -> None:
    """Run the loop until every task but ours has finished (bounded)."""
    me = asyncio.current_task()
    for _ in range(rounds):
        if all(t is me or t.done() for t in asyncio.all_tasks()):
            return
        await asyncio.sleep(0)


async def start_app(auth: bool) -> App:
    """The server of server.py, wired by server.py, on recording transports and a fake clock."""
    config = make_config(auth)
    errors = _ErrorLog()
    logger = logging.getLogger("presenced")
    logger.addHandler(errors)  # removed again by App.stop(); levels are left as they are
    server = Server(config)
    with _patched_root():
        await server.start()
    app = App(server, config, errors)
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: app.loop_errors.append(ctx))
    return app


def _answers_an_incomplete_request(data: bytes, exc: ParseError) -> bool:
    """A 400 to a request that lacked From, To, Call-ID or CSeq echoes what the request had
    (RFC 4475 §3.3.1), so it lacks that header too: well-formed but for that."""
    return (data.startswith(b"SIP/2.0 400 ") and isinstance(exc.partial, Response)
            and exc.reason.startswith("missing ") and exc.reason.removeprefix("missing ")
            in ("From header", "To header", "Call-ID header", "CSeq header"))


def check_transmit(tx: Transmit, sources: set[Peer], limits: Limits,
                   max_size: int) -> Iterator[Violation]:
    """The properties of one message the server would put on the wire."""
    data = tx.data
    if len(data) > max_size:
        yield Violation("parse", f"{len(data)} bytes to {tx.peer}: over max_message_size {max_size}")
    try:
        msg = parse_message(data, limits)
    except ParseError as exc:
        if not _answers_an_incomplete_request(data, exc):
            yield Violation("parse", f"we sent what we cannot parse ({exc}) to {tx.peer}: {data[:2000]!r}")
            return
        msg = exc.partial  # the 400 echoes what the request had (RFC 4475 §3.3.1)
        assert isinstance(msg, Response)
    head, _sep, _body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if _CONTROL.search(line):
            yield Violation("injection", f"CR or LF in a header line we sent: {line!r}")
            break
        if line[:1] in (b" ", b"\t"):
            yield Violation("injection", f"folded line in what we sent (injected line break?): {line!r}")
            break
    for name, _value in msg.headers:
        if name.lower().startswith("x-injected"):
            yield Violation("injection", f"injected header {name!r} in what we sent: {data[:2000]!r}")
            break
    problem = _destination_problem(tx.peer, isinstance(msg, Request), sources)
    if problem is not None:
        what = data.split(b"\r\n", 1)[0]
        yield Violation("destination", f"{what!r} to {tx.peer}: {problem}")


def _destination_problem(peer: Peer, request: bool, sources: set[Peer]) -> str | None:
    """No traffic to third parties: only back to where the input came from."""
    if peer.transport == "udp":
        hosts = {s.host for s in sources if s.transport == "udp"}
        exact = {(s.host, s.port) for s in sources if s.transport == "udp"}
        if peer.host not in hosts:
            return f"an address that sent nothing (sources {sorted(exact)})"
        # A response may go to the Via's sent-by port of the source host (RFC 3261 §18.2.2);
        # a request we originate (NOTIFY) goes to where the SUBSCRIBE came from.
        if request and (peer.host, peer.port) not in exact:
            return f"a request to a port that sent nothing (sources {sorted(exact)})"
        return None
    if peer.transport == "tcp":
        conns = {s.conn_id for s in sources if s.transport == "tcp"}
        flows = {(s.host, s.port) for s in sources if s.transport == "tcp"}
        if peer.conn_id in conns or (peer.host, peer.port) in flows:
            return None
        return "would open a TCP connection to a third party"
    return f"transport {peer.transport!r}"
