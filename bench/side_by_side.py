"""Kamailio and presenced side by side, in one run, with the same sipp scenarios: the ratios.

    .venv/bin/python bench/side_by_side.py [--from 1600] [--to 8000] [--step 800]
        [--seconds 4] [--fanout 1000,10000] [--scenarios register,subscribe,publish]
        [--presenced-storage sqlite|memory:] [--only presenced|kamailio]
        [--compiled DIR]

Each server is started in turn on a fresh port of 127.0.0.1 and loaded with the same sipp
scenarios (bench/scenarios/): register (REGISTER, REGISTER Expires 0), subscribe (SUBSCRIBE,
NOTIFY, SUBSCRIBE Expires 0, NOTIFY) and publish (open, modify with SIP-If-Match, remove).
Each scenario climbs a ladder of offered call rates, `--seconds` per step; a step is sustained
when at least 95 % of the offered rate was achieved and at most 0.5 % of calls failed; the
ladder stops at the first step that is not. CPU per call is the CPU time of the server and all
its processes (from /proc, Kamailio's workers included) over the calls of the best sustained
step. Then the fan-out of one change to N watchers: N subscriptions to one presentity, one
REGISTER, time until the N-th NOTIFY saying open has arrived (median of 3 rounds), as in
bench_fanout.py.

The servers:
- Kamailio 5.6 (Debian's kamailio + kamailio-presence-modules), bench/kamailio/presence.cfg:
  registrar, presence and presence_xml, registrations published by pua_usrloc, everything in
  memory (nothing survives a restart), 4 UDP workers.
- presenced on its default configuration (one process, SQLite, everything committed before
  the answer), with one change that every bench/ script makes (loadclient.BenchServer): the
  load comes from 127.0.0.1 at thousands of requests a second, so loopback is exempt from the
  per-source limiter (`[limits] exempt`); without it the benchmark would measure the limiter
  doing its job.

The presenced column is the checkout's own sources: the pure-Python core, what an editable
install runs. With `--compiled DIR` (`pip install --no-deps --target DIR .`: the wheel a user's
`pip install .` builds, compiled where a C compiler is present) a third server runs the same
ladders, presenced importing from DIR, so the pure and the compiled core are measured in the
same run as Kamailio.

Absolute figures on a shared 2-core machine are noisy; the ratios of one run are what
docs/performance.md quotes. Both servers and sipp share the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fanout import Counter
from loadclient import (
    HOST,
    ROOT,
    BenchServer,
    LoadClient,
    _options_ok,
    free_port,
    header,
    run,
    run_sipp,
)

KAMAILIO_CFG = Path(__file__).resolve().parent / "kamailio" / "presence.cfg"
DBTEXT_SCHEMA = Path("/usr/share/kamailio/dbtext/kamailio")


def _pgrp_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in a process group."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class KamailioServer:
    """Kamailio with bench/kamailio/presence.cfg in its own process group and temp dir."""

    def __init__(self, workers: int = 4) -> None:
        self.workers = workers
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def addr(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return _pgrp_cpu(self.pid)

    def __enter__(self) -> KamailioServer:
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        self._dir = tempfile.TemporaryDirectory(prefix="kamailio-bench-")
        d = Path(self._dir.name)
        self.port = free_port()
        cfg = d / "presence.cfg"
        cfg.write_text(
            KAMAILIO_CFG.read_text()
            .replace('"!BENCH_ADDR!127.0.0.1!g"', f'"!BENCH_ADDR!{HOST}!g"')
            .replace('"!BENCH_PORT!5060!g"', f'"!BENCH_PORT!{self.port}!g"')
            .replace('"!BENCH_DB!/usr/share/kamailio/dbtext/kamailio!g"', f'"!BENCH_DB!{d / "db"}!g"')
            .replace("children=4", f"children={self.workers}")
        )
        shutil.copytree(DBTEXT_SCHEMA, d / "db")
        (d / "run").mkdir()
        self.proc = subprocess.Popen(
            [binary, "-f", str(cfg), "-DD", "-E", "-Y", str(d / "run"), "-m", "1024", "-M", "16"],
            stdout=subprocess.DEVNULL,
            stderr=open(d / "stderr.log", "wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("kamailio exited: " + (d / "stderr.log").read_text()[-2000:])
            if _options_ok(self.addr):
                return self
        raise RuntimeError("kamailio did not answer OPTIONS within 15 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self._dir is not None:
            self._dir.cleanup()


@dataclass
class Step:
    rate: float
    achieved: float
    successful: int
    failed: int
    retransmissions: int
    cpu_ms: float  # server CPU per successful call

    @property
    def line(self) -> str:
        return (f"{self.rate:7,.0f} {self.achieved:9,.0f} {self.failed:6,} "
                f"{self.retransmissions:7,} {self.cpu_ms:7.3f}")


SRC = ROOT / "src"  # the pure build: this checkout's sources


@dataclass
class Ladder:
    steps: list[Step] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        ok = [s for s in self.steps if _sustained(s)]
        return ok[-1] if ok else None


def _sustained(s: Step) -> bool:
    return s.achieved >= 0.95 * s.rate and s.failed <= 0.005 * (s.successful + s.failed)


async def ladder(server: KamailioServer | BenchServer, scenario: str, rates: list[float],
                 seconds: float, inject: Path | None, transport: str = "u1") -> Ladder:
    out = Ladder()
    for rate in rates:
        c0 = server.cpu()
        r = await run_sipp(f"{scenario}.xml", server.addr, rate, seconds, inject=inject,
                           transport=transport)
        cpu = server.cpu() - c0
        step = Step(rate, r.achieved, r.successful, r.failed, r.retransmissions,
                    cpu / r.successful * 1000 if r.successful else float("nan"))
        out.steps.append(step)
        print(f"  {scenario:9} {step.line}", flush=True)
        if not _sustained(step):
            break
        await asyncio.sleep(1.0)  # let Timer J / K state drain before the next step
    return out


async def fanout(server: KamailioServer | BenchServer, n: int, rounds: int = 3) -> float | None:
    """Median seconds from a REGISTER until N watchers have their open NOTIFY."""
    async with LoadClient(server.addr) as c:
        counter = Counter()
        c.on_notify = counter
        presentity = f"fan{n}"
        prefix = f"f{n}-"
        first = counter.arm(prefix, "closed", n)
        counter.needle = b""  # any first NOTIFY: Kamailio's for an unpublished user has no body
        _ok, bad = await c.run_window(
            range(n), 200,
            lambda i: c.subscribe(f"fw{n}x{i}", presentity, 86400, call_id=f"{prefix}{i}"),
        )
        if bad:
            print(f"  fan-out {n:,}: {bad:,} SUBSCRIBEs failed")
        try:
            await asyncio.wait_for(first, 60)
        except TimeoutError:
            print(f"  fan-out {n:,}: only {len(counter.seen):,} first NOTIFYs")
        times: list[float] = []
        for rnd in range(rounds):
            for basic, expires in (("open", 3600), ("closed", 0)):
                done = counter.arm(prefix, basic, n)
                started = time.perf_counter()
                resp = await c.register(presentity, expires, call_id=f"reg-{presentity}",
                                        cseq=2 * rnd + (expires == 0) + 1)
                if resp[8:9] != b"2":
                    raise RuntimeError(f"REGISTER failed: {resp[:60]!r}")
                try:
                    await asyncio.wait_for(done, 60)
                except TimeoutError:
                    print(f"  fan-out {n:,}: only {len(counter.seen):,} {basic} NOTIFYs in 60 s")
                    return None
                if basic == "open":
                    times.append(counter.last - started)
                await asyncio.sleep(0.5)
        return statistics.median(times)


async def main_async(args: argparse.Namespace) -> None:
    rates = [float(r) for r in range(args.start, args.to + 1, args.step)]
    scenarios = [s for s in args.scenarios.split(",") if s]
    sizes = [int(x) for x in args.fanout.split(",") if x]
    storage = "memory:" if args.presenced_storage.startswith("memory") else ""
    results: dict[str, dict[str, Ladder | float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sbs-") as d:
        inject = Path(d) / "presentities.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"p{i}\n" for i in range(1000)))
        servers: list[tuple[str, Callable[[], KamailioServer | BenchServer]]] = [
            ("kamailio", lambda: KamailioServer()),
            ("presenced", lambda: BenchServer(storage=storage, pythonpath=str(SRC)))]
        if args.compiled:
            compiled = str(Path(args.compiled).resolve())
            servers.append(("mypyc", lambda: BenchServer(storage=storage, pythonpath=compiled)))
        for name, make in servers:
            if args.only and args.only != name and not (args.only == "presenced"
                                                        and name == "mypyc"):
                continue
            results[name] = {}
            print(f"\n{name}: scenario  target  achieved failed retrans  cpu ms/call", flush=True)
            for scenario in scenarios:
                with make() as srv:  # a fresh server per scenario: no state carried over
                    results[name][scenario] = await ladder(
                        srv, scenario, rates, args.seconds,
                        inject if scenario == "publish" else None)
            for n in sizes:
                with make() as srv:
                    t = await fanout(srv, n)
                    results[name][f"fanout{n}"] = t
                    shown = "failed" if t is None else f"{t * 1000:,.0f} ms"
                    print(f"  fan-out to {n:,} watchers: {shown} (median)", flush=True)
    report(results, scenarios, sizes)


def report(results: dict[str, dict[str, Ladder | float | None]], scenarios: list[str],
           sizes: list[int]) -> None:
    k = results.get("kamailio", {})
    ours = [n for n in ("presenced", "mypyc") if n in results]
    title = {"presenced": "presenced", "mypyc": "presenced mypyc"}
    print("\n| scenario | Kamailio max rate | " + " | ".join(
        f"{title[n]} max rate | ratio" for n in ours) + " | Kamailio CPU ms/call | " + " | ".join(
        f"{title[n]} CPU ms/call" for n in ours) + " |")
    print("|---|---|" + "---|---|" * len(ours) + "---|" + "---|" * len(ours))
    for s in scenarios:
        kb = _best(k.get(s))
        bests = [_best(results[n].get(s)) for n in ours]
        cells = [f"{_rate(b)} | {f'{b.rate / kb.rate:.2f}x' if kb and b else '—'}" for b in bests]
        print(f"| {s} | {_rate(kb)} | " + " | ".join(cells) + f" | {_cpu(kb)} | "
              + " | ".join(_cpu(b) for b in bests) + " |")
    for n in sizes:
        kt = k.get(f"fanout{n}")
        cells = []
        for name in ours:
            pt = results[name].get(f"fanout{n}")
            ratio = (f"{kt / pt:.1f}x faster" if isinstance(kt, float) and isinstance(pt, float)
                     else "—")
            cells.append(f"{_ms(pt)} | {ratio}")
        print(f"| fan-out to {n:,} watchers (median) | {_ms(kt)} | " + " | ".join(cells)
              + " |" + " |" * (1 + len(ours)))


def _best(ladder: object) -> Step | None:
    return ladder.best if isinstance(ladder, Ladder) else None


def _rate(s: Step | None) -> str:
    return "none sustained" if s is None else f"{s.rate:,.0f}/s"


def _cpu(s: Step | None) -> str:
    return "" if s is None else f"{s.cpu_ms:.2f}"


def _ms(t: object) -> str:
    return f"{t * 1000:,.0f} ms" if isinstance(t, float) else "failed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--from", dest="start", type=int, default=1600)
    ap.add_argument("--to", type=int, default=8000)
    ap.add_argument("--step", type=int, default=800)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--fanout", default="1000,10000")
    ap.add_argument("--scenarios", default="register,subscribe,publish")
    ap.add_argument("--presenced-storage", default="sqlite")
    ap.add_argument("--only", choices=("presenced", "kamailio"))
    ap.add_argument("--compiled", metavar="DIR",
                    help="also run presenced from a mypyc build installed in DIR")
    args = ap.parse_args()
    header("side_by_side: Kamailio and presenced, same sipp scenarios, one run")
    run(lambda: main_async(args))


if __name__ == "__main__":
    main()
