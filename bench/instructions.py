"""Instructions per cycle of the whole server stack: a figure the machine's pace cannot move.

    .venv/bin/python bench/instructions.py [--scenarios register,subscribe,publish]
        [--cycles 200,600] [--storage sqlite|memory:|redis://HOST:PORT/DB]

On this shared machine CPU time per call moves by 10-20 % between runs of the same code (the
host's pace, not ours), more than most single changes save. So this script counts instead:
`inproc_cycles.py` (every layer of the real server, in one process, no network) runs under
valgrind's cachegrind (`--cache-sim=no`: instruction counts only, ~20x slower) twice, with
two cycle counts, and the difference of the two totals over the difference of the cycles is
the user-space instructions one cycle costs: start-up and the load generator's set-up cancel
out. On memory storage repeated runs agree to ~0.2 %; on SQLite the per-cycle figure moves by
up to ~3 % (1.644-1.677 M for one subscribe build, 2026-12-02; the other threads' work is
counted too): take the median of three, or compare code paths with `--storage memory:`. The
load generator's own work is counted too, but it is small and the same for every build: it
fills in the scenarios' datagrams and reads the server's answers with two byte regexes, never
presenced's parser, so a parser change counts for the server alone. The kernel's share
(system calls) is not counted at all: compare builds and commits with this, and quote CPU
time from `cpu_per_cycle.py` / `side_by_side.py`.

Runs whichever build `PYTHONPATH` puts first, like the other scripts. Needs valgrind
(`apt-get install valgrind`); about 15 s per scenario and cycle count.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import header

HERE = Path(__file__).resolve().parent
_REFS = re.compile(rb"I\s+refs:\s+([\d,]+)")


def count(scenario: str, cycles: int, storage: str) -> int:
    """Instructions cachegrind counted for one inproc_cycles run (all threads)."""
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, str(HERE / "inproc_cycles.py"), "--cycles", str(cycles),
           "--repeat", "1", "--scenarios", scenario, "--storage", storage]
    out = subprocess.run(cmd, capture_output=True, env=os.environ)
    if out.returncode != 0:
        raise RuntimeError(f"{scenario} at {cycles} cycles failed (exit {out.returncode}):\n"
                           f"{out.stderr.decode(errors='replace')[-2000:]}")
    m = _REFS.search(out.stderr)
    if m is None:
        raise RuntimeError(f"no instruction count from cachegrind:\n{out.stderr.decode()[-2000:]}")
    return int(m.group(1).replace(b",", b""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="register,subscribe,publish")
    ap.add_argument("--cycles", default="200,600", help="two cycle counts, smaller first")
    ap.add_argument("--storage", default="sqlite")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found: apt-get install valgrind")
    low, high = (int(c) for c in args.cycles.split(","))
    if not 0 < low < high:
        sys.exit("--cycles: two counts, smaller first")
    header("instructions per cycle (cachegrind, in process)")
    print(f"\n| scenario ({args.storage}) | instructions per cycle | total at {low} / {high} |")
    print("|---|---|---|")
    for scenario in [s for s in args.scenarios.split(",") if s]:
        a = count(scenario, low, args.storage)
        b = count(scenario, high, args.storage)
        per = (b - a) / (high - low)
        print(f"| {scenario} | {per / 1e6:.3f} M | {a / 1e6:,.0f} M / {b / 1e6:,.0f} M |",
              flush=True)


if __name__ == "__main__":
    main()
