"""Fan-out benchmark: how long one change takes to reach every watcher of a presentity.

    .venv/bin/python bench/bench_fanout.py [--watchers 1000,5000,10000] [--repeat 3]
        [--storage sqlite|memory:] [--profile FILE]

For each size N, N watchers (all on the load client's one UDP socket, each its own dialog)
subscribe to presentity fanN and their first NOTIFY (closed) is answered. Then the client
sends a REGISTER for fanN and we time from sending it until the N-th NOTIFY saying open has
arrived (the client answers each NOTIFY with 200 at once, as a phone would). The REGISTER
is then removed (Expires: 0) and we wait for the N closed NOTIFYs before the next round, so
every round starts from the same state. Printed: best and median of `--repeat` rounds, for
"open" and for "closed", the server's CPU time per NOTIFY (its answer included), the NOTIFY
rate, and UDP datagrams the kernel dropped for full receive buffers during the rounds.
Targets (Kamailio 5.6 on the same 2-core machine): 1,000 watchers in 125 ms, 5,000 in
1.14 s; we aim for 10,000 in under 1 s.
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
    BenchServer,
    LoadClient,
    apply_common,
    common_options,
    header,
    profiled,
    report_profiles,
    run,
    udp_drops,
)

TARGETS = {1000: 0.125, 5000: 1.14, 10000: 1.0}


class Counter:
    """Counts NOTIFYs of one presentity's watchers carrying a given basic status."""

    def __init__(self) -> None:
        self.prefix = b""
        self.needle = b""
        self.want = 0
        self.seen: set[bytes] = set()
        self.last = 0.0
        self.done: asyncio.Future[None] | None = None

    def arm(self, prefix: str, basic: str, want: int) -> asyncio.Future[None]:
        self.prefix = prefix.encode()
        self.needle = f"<basic>{basic}</basic>".encode()
        self.want = want
        self.seen = set()
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def __call__(self, call_id: bytes, data: bytes) -> None:
        # Distinct dialogs: a retransmitted NOTIFY must not count twice.
        if call_id.startswith(self.prefix) and self.needle in data and call_id not in self.seen:
            self.seen.add(call_id)
            if len(self.seen) == self.want and self.done is not None and not self.done.done():
                self.last = time.perf_counter()
                self.done.set_result(None)


async def one_size(
    srv: BenchServer,
    c: LoadClient,
    counter: Counter,
    n: int,
    repeat: int,
    profile: str | None = None,
) -> None:
    presentity = f"fan{n}"
    prefix = f"f{n}-"
    first = counter.arm(prefix, "closed", n)
    _ok, bad = await c.run_window(
        range(n),
        400,
        lambda i: c.subscribe(f"fw{n}x{i}", presentity, 86400, call_id=f"{prefix}{i}"),
    )
    if bad:
        print(f"  {n:,} watchers: {bad:,} SUBSCRIBEs failed")
    await asyncio.wait_for(first, 60)
    opens: list[float] = []
    closes: list[float] = []
    cpu_per_notify: list[float] = []
    drops = udp_drops()
    for rnd in range(repeat):
        for basic, expires, out in (("open", 3600, opens), ("closed", 0, closes)):
            done = counter.arm(prefix, basic, n)
            c0 = srv.cpu()
            cseq = 2 * rnd + (expires == 0) + 1
            with profiled(srv.pid, profile):
                started = time.perf_counter()
                resp = await c.register(presentity, expires, call_id=f"reg-{presentity}", cseq=cseq)
                if resp[8:9] != b"2":
                    raise RuntimeError(f"REGISTER failed: {resp[:60]!r}")
                try:
                    await asyncio.wait_for(done, 60)
                except TimeoutError:
                    print(
                        f"  {n:,} watchers: only {len(counter.seen):,} {basic} NOTIFYs within 60 s"
                    )
                    return
            out.append(counter.last - started)
            await asyncio.sleep(0.2)  # let the last answers reach the server before reading CPU
            cpu_per_notify.append((srv.cpu() - c0) / n)
    target = TARGETS.get(n)
    verdict = ""
    if target is not None:
        verdict = f"target {target * 1000:,.0f} ms {'ok' if min(opens) <= target else 'MISSED'}"
    print(
        f"{n:8,}  {min(opens) * 1000:8.0f} {statistics.median(opens) * 1000:8.0f}  "
        f"{min(closes) * 1000:8.0f} {statistics.median(closes) * 1000:8.0f}  "
        f"{statistics.median(cpu_per_notify) * 1e6:8.0f}  "
        f"{n / statistics.median(opens):9,.0f}  {udp_drops() - drops:6,}  {verdict}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    sizes = [int(x) for x in args.watchers.split(",") if x]
    storage = "memory:" if args.storage.startswith("memory") else ""
    print(
        f"\nfan-out of one REGISTER to N watchers ({args.storage} storage, "
        f"best / median of {args.repeat} rounds, ms)"
    )
    print(
        f"{'watchers':>8}  {'open':>8} {'median':>8}  {'closed':>8} {'median':>8}  "
        f"{'cpu us/N':>8}  {'NOTIFY/s':>9}  {'drops':>6}"
    )
    with BenchServer(storage=storage) as srv:
        async with LoadClient(srv.addr) as c:
            counter = Counter()
            c.on_notify = counter
            for n in sizes:
                await one_size(srv, c, counter, n, args.repeat, args.profile)
            if c.retransmissions or c.timeouts:
                print(f"(client retransmissions {c.retransmissions:,}, timeouts {c.timeouts:,})")
    report_profiles(args.profile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--watchers", default="1000,5000,10000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--storage", default="sqlite")
    common_options(ap)
    args = ap.parse_args()
    apply_common(args)
    header("bench_fanout: one REGISTER -> NOTIFY to every watcher")
    run(lambda: main_async(args))


if __name__ == "__main__":
    main()
