"""Subscription benchmark: full subscribe cycles/s driven by sipp, and memory per subscription.

    .venv/bin/python bench/bench_subscribe.py [--rates 1400,2100,2800] [--seconds 8]
        [--storages sqlite,memory:] [--subscriptions 100000] [--window 400] [--settle 0]
        [--profile FILE]

A cycle (bench/scenarios/subscribe.xml) is SUBSCRIBE -> 200 -> NOTIFY -> 200, then the
unsubscribe in the dialog (Expires: 0) -> 200 -> final NOTIFY -> 200: 4 transactions, 2 of them
server-initiated. Every call is a new watcher and presentity. For each storage and target rate
we print the achieved rate (successful cycles / wall time), failures, retransmissions and the
server's CPU use (100 % = one core).

Then the load client opens `--subscriptions` subscriptions (Expires 86400: they stay active;
watcher w<i> watches presentity u<i mod 10000>, i.e. 10 watchers per presentity, nobody
registered) on a fresh server with the default SQLite storage, answering every NOTIFY. We print
RSS before, right after (server transactions still linger for Timer J, 64*T1 = 32 s, RFC 3261
§17.2.2) and after `--settle` seconds, when only the subscriptions are left.
Target (Kamailio 5.6 on the same 2-core machine): 2,800 subscribe cycles/s.
"""

from __future__ import annotations

import argparse
import asyncio
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
    run_sipp,
)

TARGET = 2800


async def cycles(
    storages: list[str], rates: list[float], seconds: float, profile: str | None
) -> None:
    print(f"\nsubscribe cycles/s (target {TARGET:,}/s), {seconds:g} s per rate")
    print(
        f"{'storage':8} {'target':>7} {'achieved':>9} {'ok':>7} {'failed':>6} {'retrans':>7} {'cpu%':>5}"
    )
    for storage in storages:
        memory = storage.startswith("memory")
        with BenchServer(storage="memory:" if memory else "") as srv:
            for rate in rates:
                c0 = srv.cpu()
                with profiled(srv.pid, profile):
                    r = await run_sipp("subscribe.xml", srv.addr, rate, seconds)
                cpu = (srv.cpu() - c0) / r.elapsed * 100
                print(
                    f"{'memory' if memory else 'sqlite':8} {rate:7,.0f} {r.achieved:9,.0f} "
                    f"{r.successful:7,} {r.failed:6,} {r.retransmissions:7,} {cpu:5.0f}",
                    flush=True,
                )


async def memory_per_subscription(n: int, window: int, settle: float) -> None:
    with BenchServer(storage="") as srv:
        async with LoadClient(srv.addr) as c:
            await c.run_window(range(200), 50, lambda i: c.subscribe(f"warm{i}", f"u{i}", 86400))
            await asyncio.sleep(0.5)
            before = srv.rss_kb()
            started = time.perf_counter()
            ok, bad = await c.run_window(
                range(n), window, lambda i: c.subscribe(f"w{i}", f"u{i % 10000}", 86400)
            )
            took = time.perf_counter() - started
            await asyncio.sleep(1.0)
            after = srv.rss_kb()
            if settle:
                await asyncio.sleep(settle)
            settled = srv.rss_kb()
            notifies = c.notifies
    per = (after - before) * 1024 / max(ok, 1)
    per_settled = (settled - before) * 1024 / max(ok, 1)
    print(
        f"\nRSS at {n:,} active subscriptions (SQLite storage; {ok:,} accepted, {bad:,} failed, "
        f"{notifies:,} NOTIFYs answered, {ok / took:,.0f} SUBSCRIBE/s with {window} in flight)"
    )
    print(
        f"  before {before / 1024:,.1f} MiB  after {after / 1024:,.1f} MiB ({per:,.0f} B/sub)  "
        f"after {settle:g} s {settled / 1024:,.1f} MiB ({per_settled:,.0f} B/sub)  "
        f"(retransmissions {c.retransmissions:,})"
    )


async def main_async(args: argparse.Namespace) -> None:
    rates = [float(x) for x in args.rates.split(",") if x]
    await cycles([s for s in args.storages.split(",") if s], rates, args.seconds, args.profile)
    report_profiles(args.profile)
    if args.subscriptions:
        await memory_per_subscription(args.subscriptions, args.window, args.settle)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="1400,2100,2800")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--storages", default="sqlite,memory:")
    ap.add_argument("--subscriptions", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=400)
    ap.add_argument("--settle", type=float, default=0)
    common_options(ap)
    args = ap.parse_args()
    apply_common(args)
    header("bench_subscribe: SUBSCRIBE / NOTIFY / unSUBSCRIBE cycles through presenced")
    run(lambda: main_async(args))


if __name__ == "__main__":
    main()
