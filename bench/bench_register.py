"""Registrar benchmark: register cycles/s driven by sipp, and memory per binding.

    .venv/bin/python bench/bench_register.py [--rates 1600,2400,3200] [--seconds 8]
        [--storages memory:,sqlite] [--bindings 100000] [--window 400] [--settle 0]
        [--profile FILE]

A cycle is REGISTER (Expires: 3600) -> 200, then REGISTER Expires: 0 -> 200 for the same
user (bench/scenarios/register.xml); every call is a new user. For each storage and target
rate, sipp runs for about `--seconds` and we print the achieved rate (successful cycles / wall
time), failed calls, retransmissions and the server's CPU use (100 % = one core).

Then, on a fresh server (default SQLite storage), the load client registers `--bindings`
distinct users and we print the server's RSS before, right after (the REGISTER server
transactions still linger for Timer J, 64*T1 = 32 s, RFC 3261 §17.2.2) and after `--settle`
seconds, when only the bindings are left. `--profile FILE` samples the server with py-spy
during the sipp runs.
Target (Kamailio 5.6 on the same 2-core machine): 1,600 register cycles/s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

TARGET = 1600


async def cycles(
    storages: list[str], rates: list[float], seconds: float, profile: str | None
) -> None:
    print(f"\nregister cycles/s (target {TARGET:,}/s), {seconds:g} s per rate")
    print(
        f"{'storage':8} {'target':>7} {'achieved':>9} {'ok':>7} {'failed':>6} {'retrans':>7} {'cpu%':>5}"
    )
    for storage in storages:
        with BenchServer(storage="memory:" if storage.startswith("memory") else "") as srv:
            for rate in rates:
                c0 = srv.cpu()
                with profiled(srv.pid, profile):
                    r = await run_sipp("register.xml", srv.addr, rate, seconds)
                cpu = (srv.cpu() - c0) / r.elapsed * 100
                name = "memory" if storage.startswith("memory") else "sqlite"
                print(
                    f"{name:8} {rate:7,.0f} {r.achieved:9,.0f} {r.successful:7,} {r.failed:6,} "
                    f"{r.retransmissions:7,} {cpu:5.0f}",
                    flush=True,
                )


async def memory_per_binding(n: int, window: int, settle: float) -> None:
    with BenchServer(storage="") as srv:
        async with LoadClient(srv.addr) as c:
            # Warm up every code path first so imports and caches are not counted per binding.
            await c.run_window(range(200), 50, lambda i: c.register(f"warm{i}"))
            await asyncio.sleep(0.5)
            before = srv.rss_kb()
            started = time.perf_counter()
            ok, bad = await c.run_window(range(n), window, lambda i: c.register(f"m{i}"))
            took = time.perf_counter() - started
            await asyncio.sleep(1.0)
            after = srv.rss_kb()
            if settle:
                await asyncio.sleep(settle)
            settled = srv.rss_kb()
    per = (after - before) * 1024 / max(ok, 1)
    per_settled = (settled - before) * 1024 / max(ok, 1)
    print(
        f"\nRSS at {n:,} bindings (SQLite storage; {ok:,} registered, {bad:,} failed, "
        f"{ok / took:,.0f} REGISTER/s with {window} in flight)"
    )
    print(
        f"  before {before / 1024:,.1f} MiB  after {after / 1024:,.1f} MiB ({per:,.0f} B/binding)  "
        f"after {settle:g} s {settled / 1024:,.1f} MiB ({per_settled:,.0f} B/binding)  "
        f"(retransmissions {c.retransmissions:,})"
    )


async def main_async(args: argparse.Namespace) -> None:
    rates = [float(x) for x in args.rates.split(",") if x]
    storages = [s for s in args.storages.split(",") if s]
    await cycles(storages, rates, args.seconds, args.profile)
    report_profiles(args.profile)
    if args.bindings:
        gc.collect()
        await memory_per_binding(args.bindings, args.window, args.settle)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="1600,2400,3200")
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--storages", default="memory:,sqlite")
    ap.add_argument("--bindings", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=400)
    ap.add_argument("--settle", type=float, default=0)
    common_options(ap)
    args = ap.parse_args()
    apply_common(args)
    header("bench_register: REGISTER / unREGISTER cycles through presenced")
    run(lambda: main_async(args))


if __name__ == "__main__":
    main()
