"""Dialog (RFC 4235 busy-lamp field) benchmarks: fan-out of one PUBLISH, and subscribe cycles/s.

    .venv/bin/python bench/bench_dialog.py [--watchers 1000] [--repeat 5]
        [--rates 1400,2100] [--seconds 5] [--storage memory:|sqlite]

Fan-out: N BLF watchers (all on the load client's one UDP socket, each its own dialog)
SUBSCRIBE `Event: dialog` to one AOR and answer their first NOTIFY (the empty document). Then
the client PUBLISHes a dialog-info document with one confirmed dialog for that AOR, and we time
from sending it until the N-th NOTIFY carrying that confirmed dialog has arrived; the PUBLISH is
then removed (Expires: 0) and we wait for the N empty documents (also timed) before the next
round. Printed: best and median of `--repeat` rounds, the server's CPU time per NOTIFY and the
NOTIFY rate; the same as bench_fanout.py prints for presence (there the change is a REGISTER).

Subscribe cycles: sipp runs bench/scenarios/subscribe_dialog.xml (SUBSCRIBE -> NOTIFY ->
unSUBSCRIBE -> final NOTIFY, every call a new watcher and AOR) at each target rate for
`--seconds`; printed as bench_subscribe.py prints its presence cycles.

The server is bench/loadclient.py's BenchServer, whose config exempts 127.0.0.0/8 from the
per-source rate limits (`[limits] exempt`): the load comes from one address.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import (
    DOMAIN,
    HOST,
    BenchServer,
    LoadClient,
    apply_common,
    common_options,
    etag,
    header,
    profiled,
    report_profiles,
    run,
    run_sipp,
    udp_drops,
)

CONFIRMED = b"<state>confirmed</state>"
EMPTY = b"></dialog-info>"  # an empty document ends with its root's end tag right after it


def dialog_info(aor: str, version: int) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="{version}" state="full" entity="sip:{aor}@{DOMAIN}">'
        '<dialog id="blf1" call-id="bench-call@127.0.0.1" local-tag="lt" remote-tag="rt" '
        'direction="recipient"><state>confirmed</state>'
        f"<local><identity>sip:{aor}@{DOMAIN}</identity></local>"
        f"<remote><identity>sip:caller@{DOMAIN}</identity></remote>"
        "</dialog></dialog-info>"
    ).encode()


def subscribe_dialog(c: LoadClient, watcher: str, aor: str, call_id: str) -> asyncio.Future[bytes]:
    b = c.new_branch()
    data = (
        f"SUBSCRIBE sip:{aor}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{c.port};branch={b};rport\r\nMax-Forwards: 70\r\n"
        f"From: <sip:{watcher}@{DOMAIN}>;tag=w{watcher}\r\nTo: <sip:{aor}@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\n"
        f"Contact: <sip:{watcher}@{HOST}:{c.port}>\r\nEvent: dialog\r\n"
        "Accept: application/dialog-info+xml\r\nExpires: 86400\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return c.transact(b, data)


def publish_dialog(c: LoadClient, aor: str, body: bytes, expires: int, if_match: str,
                   cseq: int) -> asyncio.Future[bytes]:
    b = c.new_branch()
    extra = f"SIP-If-Match: {if_match}\r\n" if if_match else ""
    if body:
        extra += "Content-Type: application/dialog-info+xml\r\n"
    data = (
        f"PUBLISH sip:{aor}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{c.port};branch={b};rport\r\nMax-Forwards: 70\r\n"
        f"From: <sip:{aor}@{DOMAIN}>;tag=p{aor}\r\nTo: <sip:{aor}@{DOMAIN}>\r\n"
        f"Call-ID: pub-{aor}\r\nCSeq: {cseq} PUBLISH\r\nEvent: dialog\r\n"
        f"Expires: {expires}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return c.transact(b, data)


class Counter:
    """Counts distinct watcher dialogs whose NOTIFY holds `needle`."""

    def __init__(self) -> None:
        self.prefix = b""
        self.needle = b""
        self.want = 0
        self.seen: set[bytes] = set()
        self.last = 0.0
        self.done: asyncio.Future[None] | None = None

    def arm(self, prefix: str, needle: bytes, want: int) -> asyncio.Future[None]:
        self.prefix, self.needle, self.want = prefix.encode(), needle, want
        self.seen = set()
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def __call__(self, call_id: bytes, data: bytes) -> None:
        if call_id.startswith(self.prefix) and self.needle in data and call_id not in self.seen:
            self.seen.add(call_id)
            if len(self.seen) == self.want and self.done is not None and not self.done.done():
                self.last = time.perf_counter()
                self.done.set_result(None)


async def fanout(srv: BenchServer, n: int, repeat: int, profile: str | None) -> None:
    aor = f"blf{n}"
    prefix = f"d{n}-"
    async with LoadClient(srv.addr) as c:
        counter = Counter()
        c.on_notify = counter
        first = counter.arm(prefix, EMPTY, n)
        _ok, bad = await c.run_window(
            range(n), 400, lambda i: subscribe_dialog(c, f"bw{n}x{i}", aor, f"{prefix}{i}")
        )
        if bad:
            print(f"  {n:,} watchers: {bad:,} SUBSCRIBEs failed")
        await asyncio.wait_for(first, 60)
        ups: list[float] = []
        downs: list[float] = []
        cpu: list[float] = []
        drops = udp_drops()
        cseq = 0
        for rnd in range(repeat):
            tag = ""
            for needle, out in ((CONFIRMED, ups), (EMPTY, downs)):
                done = counter.arm(prefix, needle, n)
                c0 = srv.cpu()
                cseq += 1
                with profiled(srv.pid, profile):
                    started = time.perf_counter()
                    if needle is CONFIRMED:
                        resp = await publish_dialog(c, aor, dialog_info(aor, rnd), 3600, "", cseq)
                        tag = etag(resp)
                    else:
                        resp = await publish_dialog(c, aor, b"", 0, tag, cseq)
                    if resp[8:9] != b"2":
                        raise RuntimeError(f"PUBLISH failed: {resp[:80]!r}")
                    try:
                        await asyncio.wait_for(done, 60)
                    except TimeoutError:
                        print(f"  {n:,} watchers: only {len(counter.seen):,} NOTIFYs within 60 s")
                        return
                out.append(counter.last - started)
                await asyncio.sleep(0.2)  # let the last answers reach the server
                cpu.append((srv.cpu() - c0) / n)
        print(
            f"{n:8,}  {min(ups) * 1000:8.0f} {statistics.median(ups) * 1000:8.0f}  "
            f"{min(downs) * 1000:8.0f} {statistics.median(downs) * 1000:8.0f}  "
            f"{statistics.median(cpu) * 1e6:8.0f}  {n / statistics.median(ups):9,.0f}  "
            f"{udp_drops() - drops:6,}",
            flush=True,
        )
        if c.retransmissions or c.timeouts:
            print(f"(client retransmissions {c.retransmissions:,}, timeouts {c.timeouts:,})")


async def cycles(srv: BenchServer, rates: list[float], seconds: float,
                 profile: str | None) -> None:
    print(f"\ndialog subscribe cycles/s, {seconds:g} s per rate")
    print(f"{'target':>7} {'achieved':>9} {'ok':>7} {'failed':>6} {'retrans':>7} {'cpu%':>5}")
    for rate in rates:
        c0 = srv.cpu()
        with profiled(srv.pid, profile):
            r = await run_sipp("subscribe_dialog.xml", srv.addr, rate, seconds)
        busy = (srv.cpu() - c0) / r.elapsed * 100
        print(
            f"{rate:7,.0f} {r.achieved:9,.0f} {r.successful:7,} {r.failed:6,} "
            f"{r.retransmissions:7,} {busy:5.0f}",
            flush=True,
        )


async def main_async(args: argparse.Namespace) -> None:
    storage = "memory:" if args.storage.startswith("memory") else ""
    sizes = [int(x) for x in args.watchers.split(",") if x]
    rates = [float(x) for x in args.rates.split(",") if x]
    print(
        f"\nfan-out of one dialog PUBLISH to N BLF watchers ({args.storage} storage, "
        f"best / median of {args.repeat} rounds, ms)"
    )
    print(
        f"{'watchers':>8}  {'confirm':>8} {'median':>8}  {'removed':>8} {'median':>8}  "
        f"{'cpu us/N':>8}  {'NOTIFY/s':>9}  {'drops':>6}"
    )
    with BenchServer(storage=storage) as srv:
        for n in sizes:
            await fanout(srv, n, args.repeat, args.profile)
    if rates:
        with BenchServer(storage=storage) as srv:
            await cycles(srv, rates, args.seconds, args.profile)
    report_profiles(args.profile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--watchers", default="1000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rates", default="1400,2100")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--storage", default="sqlite")
    common_options(ap)
    args = ap.parse_args()
    apply_common(args)
    header("bench_dialog: dialog PUBLISH -> NOTIFY fan-out, dialog subscribe cycles")
    run(lambda: main_async(args))


if __name__ == "__main__":
    main()
