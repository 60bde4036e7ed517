"""CPU per cycle of the whole server stack, in one process, without the kernel's network.

    .venv/bin/python bench/inproc_cycles.py [--cycles 4000] [--repeat 5]
        [--scenarios register,subscribe,publish] [--storage sqlite|memory:|redis://HOST:PORT/DB]

The real `Server` starts on its defaults (SQLite in a temporary data dir, the bench scripts'
`[limits]` exemptions), listening on a free UDP port like any run; then the datagrams of
sipp's scenarios (bench/scenarios/) are handed straight to `Driver.receive`, as the UDP
transport would, and what the server sends is captured instead of written to the socket. So
every layer runs -- parser, endpoint, transactions, dispatcher, services, notifier, storage
commits (the 2xx waits for them as always) -- except the two system calls per datagram.

The figure is the CPU time of the process (all threads: the SQLite writer too) per cycle,
the best of `--repeat` rounds of `--cycles` cycles each, one cycle in flight at a time. CPU time
of our own code moves far less than wall-clock rates when other work shares the machine,
which is why this script exists (issue 11); the sipp scripts measure what the kernel adds.

With `--storage redis://...` the server is a cluster node (`[cluster] node_id = "inproc"`) on
that Redis (flushed first: use a throw-away one), and the figure adds redis-server's own CPU
(`INFO cpu`) per cycle, shown apart too. One cycle in flight means no group commit: each
write is its own round trip, the cluster path's worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import DOMAIN, HOST, free_port, header

from presenced.config import parse_config
from presenced.server import Server
from presenced.sip.endpoint import Peer

CLIENT = ("127.0.0.1", 5099)
_TO_TAG = re.compile(rb"\r\nTo:[^\r]*;tag=([^;\r>]+)", re.I)
_ETAG = re.compile(rb"\r\nSIP-ETag: *([^\r ]+)", re.I)


class Wire:
    """What the server sent, as a queue the scenario reads from."""

    def __init__(self) -> None:
        self.out: asyncio.Queue[bytes] = asyncio.Queue()

    def send(self, data: bytes, peer: Peer) -> None:
        self.out.put_nowait(data)

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.out.get(), 10)


def _req(method: str, ruri: str, call_id: str, cseq: int, from_tag: str, to_tag: str | None,
         user: str, extra: str = "", body: bytes = b"", branch: str = "") -> bytes:
    to = f"<sip:{user}@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else "")
    head = (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch=z9hG4bK{branch};rport\r\n"
            f"From: <sip:watcher@{DOMAIN}>;tag={from_tag}\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:watcher@{CLIENT[0]}:{CLIENT[1]}>\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _answer(notify: bytes) -> bytes:
    """The watcher's 200 to a NOTIFY: its Via, From, To, Call-ID and CSeq copied."""
    head = notify.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [line for line in head[1:]
            if line.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"to", b"call-id",
                                                         b"cseq")]
    return b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"


PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'entity="pres:{user}@' + DOMAIN + '">\n<tuple id="t1"><status><basic>{basic}</basic>'
        '</status></tuple>\n</presence>')


class Cycles:
    def __init__(self, receive: Callable[[bytes, Peer], None], wire: Wire) -> None:
        self.receive = receive
        self.wire = wire
        self.peer = Peer("udp", CLIENT[0], CLIENT[1], None, None)
        self.n = 0

    async def _send(self, data: bytes) -> None:
        self.receive(data, self.peer)

    async def _expect(self, status: bytes) -> bytes:
        got = await self.wire.next()
        if not got.startswith(b"SIP/2.0 " + status):
            raise RuntimeError(f"expected {status!r}, got {got[:80]!r}")
        return got

    async def _notify(self) -> None:
        got = await self.wire.next()
        if not got.startswith(b"NOTIFY "):
            raise RuntimeError(f"expected NOTIFY, got {got[:80]!r}")
        await self._send(_answer(got))

    async def register(self) -> None:
        self.n += 1
        i = self.n
        user = f"b{i}"  # a user per cycle, as sipp's register.xml has it
        for cseq, expires in ((1, 3600), (2, 0)):
            await self._send(_req("REGISTER", f"sip:{DOMAIN}", f"reg{i}", cseq, f"f{i}", None,
                                  user, f"Expires: {expires}\r\n", branch=f"r{i}x{cseq}"))
            await self._expect(b"200")

    async def subscribe(self) -> None:
        self.n += 1
        i = self.n
        user, call_id = f"p{i % 1000}", f"sub{i}"
        await self._send(_req("SUBSCRIBE", f"sip:{user}@{DOMAIN}", call_id, 1, f"f{i}", None,
                              user, "Event: presence\r\nExpires: 3600\r\n", branch=f"s{i}a"))
        ok = await self._expect(b"200")
        m = _TO_TAG.search(ok)
        assert m is not None
        await self._notify()
        await self._send(_req("SUBSCRIBE", f"sip:{user}@{DOMAIN}", call_id, 2, f"f{i}",
                              m[1].decode(), user, "Event: presence\r\nExpires: 0\r\n",
                              branch=f"s{i}b"))
        await self._expect(b"200")
        await self._notify()

    async def publish(self) -> None:
        self.n += 1
        i = self.n
        user = f"p{i % 1000}"
        etag = ""
        for cseq, basic, expires in ((1, "open", 3600), (2, "closed", 3600), (3, None, 0)):
            extra = f"Event: presence\r\nExpires: {expires}\r\n"
            if etag:
                extra += f"SIP-If-Match: {etag}\r\n"
            body = b""
            if basic is not None:
                extra += "Content-Type: application/pidf+xml\r\n"
                body = PIDF.format(user=user, basic=basic).encode()
            await self._send(_req("PUBLISH", f"sip:{user}@{DOMAIN}", f"pub{i}", cseq, f"f{i}",
                                  None, user, extra, body, branch=f"p{i}x{cseq}"))
            ok = await self._expect(b"200")
            m = _ETAG.search(ok)
            etag = m[1].decode() if m else ""


def _config(d: Path, port: int, storage: str) -> str:
    store = f'[storage]\nurl = "{storage}"\n' if storage else ""
    if storage.startswith("redis"):
        store += '[cluster]\nnode_id = "inproc"\n'
    return (f'[server]\nlisten = ["udp:{HOST}:{port}"]\ndomains = ["{DOMAIN}"]\n'
            f'data_dir = "{d}"\nlog_level = "warning"\n'
            '[limits]\nexempt = ["127.0.0.0/8"]\n[pa]\nmax_subscriptions_per_watcher = 10000000\n'
            f"{store}")


class RedisCpu:
    """redis-server's own CPU seconds (user + system, from INFO), when storage is Redis."""

    def __init__(self, storage: str) -> None:
        self.client = None
        if storage.startswith("redis"):
            import redis

            self.client = redis.Redis.from_url(storage)
            self.client.flushdb()

    def seconds(self) -> float:
        if self.client is None:
            return 0.0
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def run_scenario(name: str, cycles: int, repeat: int,
                       storage: str) -> tuple[list[float], list[float]]:
    redis_cpu = RedisCpu(storage)
    with tempfile.TemporaryDirectory(prefix="bench-inproc-") as d:
        cfg = parse_config(_config(Path(d), free_port(), storage), Path(d))
        server = Server(cfg)
        await server.start()
        try:
            wire = Wire()
            for t in server.transports:
                t.send = wire.send  # type: ignore[method-assign]
            driver = server.driver
            c = Cycles(driver.receive, wire)
            step = getattr(c, name)
            for _ in range(min(200, cycles)):  # warm-up: caches, first-time paths
                await step()
            figures, redis_figures = [], []
            for _ in range(repeat):
                t0, r0 = time.process_time(), redis_cpu.seconds()
                for _ in range(cycles):
                    await step()
                r = (redis_cpu.seconds() - r0) / cycles * 1000
                figures.append((time.process_time() - t0) / cycles * 1000 + r)
                redis_figures.append(r)
            return figures, redis_figures
        finally:
            await server.stop()


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    storage = args.storage
    if storage.startswith("memory"):
        storage = "memory:"
    elif not storage.startswith("redis"):
        storage = ""  # the default: SQLite in the data dir
    for name in [s for s in args.scenarios.split(",") if s]:
        figures, redis_figures = await run_scenario(name, args.cycles, args.repeat, storage)
        rows.append((name, min(figures), sorted(figures)[len(figures) // 2]))
        shown = " ".join(f"{f:.3f}" for f in figures)
        if storage.startswith("redis"):
            shown += " (redis-server: " + " ".join(f"{f:.3f}" for f in redis_figures) + ")"
        print(f"  {name:9} {shown} ms/cycle", flush=True)
    print(f"\n| scenario (in-process, {args.storage}) | CPU ms/cycle, best of {args.repeat} "
          "| median |")
    print("|---|---|---|")
    for name, best, med in rows:
        print(f"| {name} | {best:.3f} | {med:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cycles", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scenarios", default="register,subscribe,publish")
    ap.add_argument("--storage", default="sqlite")
    args = ap.parse_args()
    header(f"inproc_cycles: server CPU per cycle without the network, pid {os.getpid()}")
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(main_async(args))


if __name__ == "__main__":
    main()
