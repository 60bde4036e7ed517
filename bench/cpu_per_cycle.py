"""Server CPU per sipp call at a rate the server sustains: the figure issue 11 is about.

    .venv/bin/python bench/cpu_per_cycle.py [--rate 800] [--seconds 5] [--repeat 3]
        [--scenarios register,subscribe,publish] [--storage sqlite|memory:] [--profile FILE]

Wall-clock rates on a shared machine say more about the neighbours than about the server;
CPU time does not (much). For each scenario a fresh presenced (defaults: one process, SQLite)
is loaded by sipp at `--rate` calls/s, well below the knee, so nothing is retransmitted and
each call costs what one cycle costs. CPU is user + system time of the server process, all
its threads (the SQLite writer included), from /proc, over the sipp run; the median of
`--repeat` runs is printed. The scenarios are side_by_side.py's (bench/scenarios/).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import BenchServer, header, print_collapsed, profiled, run, run_sipp


async def main_async(args: argparse.Namespace) -> None:
    scenarios = [s for s in args.scenarios.split(",") if s]
    storage = "memory:" if args.storage.startswith("memory") else ""
    rows: list[tuple[str, float, float, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cpc-") as d:
        inject = Path(d) / "presentities.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"p{i}\n" for i in range(1000)))
        for scenario in scenarios:
            figures: list[float] = []
            failed = retrans = 0
            with BenchServer(storage=storage) as srv:
                for _ in range(args.repeat):
                    c0 = srv.cpu()
                    with profiled(srv.pid, args.profile):
                        r = await run_sipp(f"{scenario}.xml", srv.addr, args.rate, args.seconds,
                                           inject=inject if scenario == "publish" else None)
                    cpu = srv.cpu() - c0
                    failed += r.failed
                    retrans += r.retransmissions
                    if r.successful:
                        figures.append(cpu / r.successful * 1000)
                    print(f"  {scenario:9} {r.achieved:8,.0f}/s {r.failed:5} failed "
                          f"{r.retransmissions:6} retrans  {figures[-1] if figures else 0:.3f} "
                          "ms/call", flush=True)
                    await asyncio.sleep(1.0)  # let Timer J / K state drain
            med = statistics.median(figures) if figures else float("nan")
            best = min(figures) if figures else float("nan")
            rows.append((scenario, med, best, failed, retrans))
    print(f"\n| scenario at {args.rate:,.0f} calls/s | CPU ms/call (median of {args.repeat}) "
          "| best | failed | retransmissions |")
    print("|---|---|---|---|---|")
    for scenario, med, best, failed, retrans in rows:
        print(f"| {scenario} | {med:.3f} | {best:.3f} | {failed} | {retrans} |")
    if args.profile:
        parts = sorted(Path(args.profile).parent.glob(Path(args.profile).name + ".*"))
        merged = Path(args.profile)
        merged.write_text("".join(p.read_text() for p in parts))
        for p in parts:
            p.unlink()
        print_collapsed(merged, 40)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rate", type=float, default=800)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenarios", default="register,subscribe,publish")
    ap.add_argument("--storage", default="sqlite")
    ap.add_argument("--profile", metavar="FILE", help="sample the server with py-spy")
    args = ap.parse_args()
    header(f"cpu_per_cycle: server CPU per sipp call at {args.rate:,.0f} calls/s")
    run(lambda: main_async(args))


if __name__ == "__main__":
    main()
