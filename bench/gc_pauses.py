"""What the cyclic garbage collector costs the server under a steady sipp load.

    [PYTHONPATH=.build/compiled] .venv/bin/python bench/gc_pauses.py [--scenario subscribe]
        [--rate 2000] [--seconds 60]

One presenced on its defaults (BenchServer: SQLite, loopback exempt from the limiter), loaded
by one of side_by_side.py's sipp scenarios at `--rate` calls/s for `--seconds`. The server runs
with a `sitecustomize` module on its PYTHONPATH (written to a temporary directory) that times
every collection through `gc.callbacks` and, at 90 % of the load, notes the server's RSS and
how many objects the collector tracks. Printed: collections per generation, their total and
longest pause (up to the server's exit), and those two figures. A pause is a stall of the event
loop: at thousands of datagrams a second, a long one fills the receive queue
(docs/performance.md, "Overload").
The server imports presenced from PYTHONPATH (a mypyc build, say) if it is set, else from src/.

Timer J keeps a UDP server transaction 32 s after its answer, so a run shorter than that
never reaches the steady state; the default is 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import BenchServer, header, run_sipp

_PROBE = '''\
import atexit, gc, os, sys, threading, time
if "presenced" in sys.argv[0]:
    _log = open(os.path.join({dir!r}, "gc.log"), "a", buffering=1)
    _start = [0.0]
    def _timed(phase, info):
        if phase == "start":
            _start[0] = time.perf_counter()
        else:
            _log.write(f"gen={{info['generation']}} ms={{(time.perf_counter() - _start[0]) * 1e3:.3f}}\\n")
    gc.callbacks.append(_timed)
    def _snapshot():
        time.sleep({at})
        rss = next(line for line in open("/proc/self/status") if line.startswith("VmRSS"))
        _log.write(f"rss_kb={{rss.split()[1]}} tracked={{len(gc.get_objects())}}\\n")
    threading.Thread(target=_snapshot, daemon=True).start()
    atexit.register(lambda: _log.write("exit\\n"))  # what is collected at exit is no pause
'''


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as d:
        probe = Path(d) / "probe"
        probe.mkdir()
        # BenchServer's start-up takes ~1 s; the snapshot lands at ~90 % of the load.
        (probe / "sitecustomize.py").write_text(
            _PROBE.format(dir=str(probe), at=1.0 + 0.9 * args.seconds))
        inject = Path(d) / "presentities.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"p{i}\n" for i in range(1000)))
        src = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1] / "src")
        with BenchServer(storage="", pythonpath=f"{probe}:{src}") as srv:  # the default: SQLite
            c0 = srv.cpu()
            r = await run_sipp(f"{args.scenario}.xml", srv.addr, args.rate, args.seconds,
                               inject=inject if args.scenario == "publish" else None)
            cpu = srv.cpu() - c0
        log = (probe / "gc.log").read_text().partition("exit\n")[0]
    print(f"{args.scenario} at {args.rate:,.0f}/s for {args.seconds:.0f} s: {r.successful:,} "
          f"calls, {r.failed:,} failed, {r.retransmissions:,} retransmissions, "
          f"{cpu / max(r.successful, 1) * 1000:.3f} ms CPU/call")
    for gen in (0, 1, 2):
        pauses = [float(m) for m in re.findall(rf"gen={gen} ms=([\d.]+)", log)]
        if pauses:
            print(f"  generation {gen}: {len(pauses):4d} collections, {sum(pauses):8.1f} ms in "
                  f"all, longest {max(pauses):6.1f} ms")
    snap = re.search(r"rss_kb=(\d+) tracked=(\d+)", log)
    if snap:
        print(f"  at 90 % of the load: RSS {int(snap[1]) / 1024:,.0f} MiB, "
              f"{int(snap[2]):,} objects tracked by the collector")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="subscribe",
                    choices=("register", "subscribe", "publish"))
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    header(f"gc_pauses: {args.scenario} at {args.rate:,.0f}/s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
