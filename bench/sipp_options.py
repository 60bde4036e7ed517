"""OPTIONS throughput of the real server process, driven by sipp at increasing rates.

    .venv/bin/python bench/sipp_options.py [--duration 5] [--rates 250,500,1000,...] [--transport udp]

Starts presenced (memory storage) through the integration harness, then for each target rate
runs tests/integration/scenarios/options.xml for `--duration` seconds and prints the calls/s
achieved, failed calls, the server's CPU use and its resident memory. It stops climbing once a
step fails more than 1% of its calls or falls below 80% of its target rate (the knee).
Not a test: numbers depend on the machine, which is printed first.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from harness import LOOPBACK_UNLIMITED, ServerProcess, run_sipp  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per rate step")
    ap.add_argument(
        "--rates", default="500,1000,2000,4000,8000,16000", help="calls/s, comma-separated"
    )
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument("--keep-going", action="store_true", help="run every rate, even past the knee")
    args = ap.parse_args()

    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",") if r.strip()]

    print(
        f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{platform.machine()}, {platform.system()} {platform.release()}"
    )
    print(f"python: {platform.python_implementation()} {platform.python_version()}")
    print(f"sipp: {sipp}; transport {args.transport}; {args.duration:g}s per step; storage memory:")

    with tempfile.TemporaryDirectory(prefix="presenced-bench-") as tmp:
        srv = ServerProcess(Path(tmp) / "server", storage="memory:", log_level="warning",
                            sections=LOOPBACK_UNLIMITED)
        srv.start()
        try:
            print(f"server: pid {srv.pid} on {srv.host}:{srv.port}\n")
            header = (
                f"{'target/s':>9} {'calls':>7} {'ok':>7} {'failed':>7} {'achieved/s':>11} "
                f"{'server CPU':>10} {'RSS MB':>7}"
            )
            print(header)
            print("-" * len(header))
            for rate in rates:
                calls = max(1, int(rate * args.duration))
                cpu0 = _cpu_seconds(srv.pid)
                result = run_sipp(
                    sipp,
                    "options.xml",
                    srv.addr,
                    Path(tmp) / "sipp",
                    calls=calls,
                    rate=rate,
                    transport=args.transport,
                    timeout=args.duration * 4 + 30,
                    recv_timeout_ms=5000,
                )
                cpu = _cpu_seconds(srv.pid) - cpu0
                achieved = result.successful / result.elapsed if result.elapsed > 0 else 0.0
                print(
                    f"{rate:>9} {calls:>7} {result.successful:>7} {result.failed:>7} "
                    f"{achieved:>11.0f} {cpu / result.elapsed:>9.0%} {_rss_mb(srv.pid):>7.1f}",
                    flush=True,
                )
                srv.assert_running()
                knee = result.failed > calls * 0.01 or achieved < rate * 0.8
                if knee and not args.keep_going:
                    print(f"\nstopping: past the knee at {rate}/s (use --keep-going to continue)")
                    break
        finally:
            srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
