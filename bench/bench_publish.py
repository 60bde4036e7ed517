"""Publication benchmark: publish cycles/s driven by sipp, without and with watchers.

    .venv/bin/python bench/bench_publish.py [--rates 1200,2400] [--seconds 10]
        [--storage sqlite|memory:] [--presentities 1000] [--watchers 10]
        [--profile FILE]

A cycle (bench/scenarios/publish.xml, RFC 3903) is PUBLISH open -> 200 (SIP-ETag), PUBLISH
closed with SIP-If-Match -> 200, PUBLISH Expires: 0 with SIP-If-Match -> 200: three PUBLISHes.
sipp takes the presentities p0 .. p<N-1> in turn from an injection file.

First run: nobody watches. Second run: before sipp starts, the load client subscribes
`--watchers` watchers to each presentity and then answers every NOTIFY, so each PUBLISH
changes the state of a watched presentity. For each target rate we print the achieved cycles/s,
PUBLISH/s (3 per cycle), NOTIFYs answered per second, failures, retransmissions and the
server's CPU use (100 % = one core).
Target (Kamailio 5.6 on the same 2-core machine): 2,400 publish cycles/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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

TARGET = 2400


async def runs(args: argparse.Namespace, watchers: int, inject: Path) -> None:
    rates = [float(x) for x in args.rates.split(",") if x]
    storage = "memory:" if args.storage.startswith("memory") else ""
    with BenchServer(storage=storage) as srv:
        async with LoadClient(srv.addr) as c:
            if watchers:
                n = args.presentities * watchers
                _ok, bad = await c.run_window(
                    range(n),
                    400,
                    lambda i: c.subscribe(f"pw{i}", f"p{i % args.presentities}", 86400),
                )
                if bad:
                    print(f"({bad:,} of {n:,} SUBSCRIBEs failed)")
            for rate in rates:
                c0 = srv.cpu()
                n0 = c.notifies
                with profiled(srv.pid, args.profile):
                    r = await run_sipp("publish.xml", srv.addr, rate, args.seconds, inject=inject)
                cpu = (srv.cpu() - c0) / r.elapsed * 100
                notifies = (c.notifies - n0) / r.elapsed
                print(
                    f"{watchers:8} {rate:7,.0f} {r.achieved:9,.0f} {r.achieved * 3:9,.0f} "
                    f"{notifies:9,.0f} {r.failed:6,} {r.retransmissions:7,} {cpu:5.0f}",
                    flush=True,
                )


async def main_async(args: argparse.Namespace) -> None:
    print(
        f"\npublish cycles/s (target {TARGET:,}/s), {args.storage} storage, "
        f"{args.presentities:,} presentities, {args.seconds:g} s per rate"
    )
    print(
        f"{'watchers':>8} {'target':>7} {'cycles/s':>9} {'PUBLISH/s':>9} {'NOTIFY/s':>9} "
        f"{'failed':>6} {'retrans':>7} {'cpu%':>5}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as d:
        inject = Path(d) / "presentities.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"p{i}\n" for i in range(args.presentities)))
        await runs(args, 0, inject)
        if args.watchers:
            await runs(args, args.watchers, inject)
    report_profiles(args.profile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="1200,2400")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--storage", default="sqlite")
    ap.add_argument("--presentities", type=int, default=1000)
    ap.add_argument("--watchers", type=int, default=10)
    common_options(ap)
    args = ap.parse_args()
    apply_common(args)
    header("bench_publish: PUBLISH open / modify / remove cycles through presenced")
    run(lambda: main_async(args))


if __name__ == "__main__":
    main()
