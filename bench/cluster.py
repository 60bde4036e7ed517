"""One worker on SQLite, one worker on Redis, two workers on Redis: the same sipp cycles and
fan-outs in one run, with CPU ms and Redis commands per cycle (issue 12).

    .venv/bin/python bench/cluster.py [--rates 800,1600,2400,3200] [--seconds 4]
        [--fanout 1000,10000] [--scenarios register,subscribe,publish] [--only a|b|c]

A throw-away redis-server (AOF on, appendfsync everysec: the durable setting
docs/configuration.md asks for) runs on a free port. Each configuration gets a fresh server per
scenario. CPU is the presenced processes' (the supervisor and its workers) plus, for Redis,
redis-server's own; Redis commands per cycle come from INFO stats (total_commands_processed,
which counts the commands scripts run too) and INFO commandstats (EVALSHA: one round trip
each). A model of throughput for N nodes follows from these (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import BenchServer, cpu_seconds
from side_by_side import Ladder, fanout, ladder


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


class Redis:
    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", self.dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stats(self) -> tuple[int, int]:
        total = int(self.client.info("stats")["total_commands_processed"])
        evalsha = int(self.client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
        return total, evalsha

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def wait_nodes(self, n: int) -> None:
        """Until n workers joined, and a moment for the last to bind: a worker binding later
        changes the SO_REUSEPORT group and the kernel rehashes flows mid-dialog."""
        deadline = time.monotonic() + 30
        while self.client.hlen("presenced:nodes") < n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.dir.cleanup()


class Measured(BenchServer):
    """presenced with every worker's CPU counted (and Redis's, when it has one)."""

    def __init__(self, redis: Redis | None, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.redis = redis

    def cpu(self) -> float:
        total = cpu_seconds(self.pid) + sum(cpu_seconds(c) for c in _children(self.pid))
        return total + (self.redis.cpu() if self.redis is not None else 0.0)


async def main_async(args: argparse.Namespace) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    sizes = [int(x) for x in args.fanout.split(",") if x]
    redis = Redis()
    url = f"redis://127.0.0.1:{redis.port}/0"
    configs = {
        "a": ("one worker, SQLite", lambda: Measured(None, storage="")),
        "b": ("one worker, Redis", lambda: Measured(redis, storage=url,
                                                    extra='[cluster]\nnode_id = "b"\n')),
        "c": ("two workers, Redis", lambda: Measured(redis, storage=url,
                                                     server_extra="workers = 2\n",
                                                     extra='[cluster]\nnode_id = "c"\n')),
    }
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as d:
        inject = Path(d) / "presentities.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"p{i}\n" for i in range(1000)))
        try:
            for key, (name, make) in configs.items():
                if args.only and args.only != key:
                    continue
                print(f"\n({key}) {name}: scenario  target  achieved failed retrans  cpu ms/call",
                      flush=True)
                for scenario in scenarios:
                    redis.client.flushall()
                    with make() as srv:
                        if key == "c":
                            redis.wait_nodes(2)
                        before = redis.stats()
                        lad: Ladder = await ladder(srv, scenario, rates, args.seconds,
                                                   inject if scenario == "publish" else None,
                                                   args.sipp_transport)
                        after = redis.stats()
                    calls = sum(s.successful for s in lad.steps) or 1
                    best = lad.best
                    per = ((after[0] - before[0]) / calls, (after[1] - before[1]) / calls)
                    rows.append(f"({key}) {scenario:9} best {best.achieved if best else 0:7,.0f}/s "
                                f"cpu {best.cpu_ms if best else float('nan'):6.3f} ms/cycle "
                                f"redis {per[0]:5.1f} commands, {per[1]:4.1f} EVALSHA/cycle")
                for n in sizes:
                    redis.client.flushall()
                    with make() as srv:
                        if key == "c":
                            redis.wait_nodes(2)
                        t = await fanout(srv, n)
                    shown = "failed" if t is None else f"{t * 1000:,.0f} ms"
                    rows.append(f"({key}) fan-out to {n:,} watchers: {shown} (median)")
                    print(f"  {rows[-1]}", flush=True)
        finally:
            redis.close()
    print("\nsummary")
    for r in rows:
        print("  " + r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="800,1600,2400,3200,4000,4800")
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--fanout", default="1000,10000")
    ap.add_argument("--scenarios", default="register,subscribe,publish")
    ap.add_argument("--only", choices=("a", "b", "c"))
    ap.add_argument("--sipp-transport", default="u1", choices=("u1", "un"),
                    help="sipp's -t: u1 is one socket (one flow: SO_REUSEPORT hands all of it "
                         "to one worker), un a socket per call (flows spread over the workers)")
    asyncio.run(main_async(ap.parse_args()))
    os._exit(0)


if __name__ == "__main__":
    main()
