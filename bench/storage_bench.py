"""SQLite storage benchmark: durable puts/s by writer concurrency, and startup load time.

    .venv/bin/python bench/storage_bench.py [--seconds 2] [--writers 1,10,100]
        [--subscriptions 100000] [--synchronous NORMAL] [--uvloop] [--dir DIR]

Every put counted here has been COMMITTED (its await returned), so the figures are durable writes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from presenced.pa.records import Binding, Subscription
from presenced.storage.sqlite import SqliteStorage


def _binding(writer: int, i: int) -> Binding:
    return Binding(
        aor=f"user{writer}@example.com",
        contact=f"sip:user{writer}@192.0.2.{writer % 250}:{5000 + i % 500}",
        expires_at=time.time() + 3600,
        call_id=f"reg-{writer}@example.com",
        cseq=i,
        q=1.0,
        peer=f"udp:192.0.2.{writer % 250}:5060",
        user_agent="bench/1.0",
    )


def _subscription(i: int) -> Subscription:
    return Subscription(
        id=f"call-{i}@198.51.100.1;l{i};r{i}",
        presentity=f"user{i % 5000}@example.com",
        event="presence",
        source="registrar",
        call_id=f"call-{i}@198.51.100.1",
        local_tag=f"l{i}",
        remote_tag=f"r{i}",
        local_uri=f"sip:user{i % 5000}@example.com",
        remote_uri=f"sip:watcher{i}@example.com",
        watcher=f"watcher{i}@example.com",
        remote_target=f"sip:watcher{i}@198.51.100.1:5060;transport=udp",
        route_set=("<sip:proxy.example.com;lr>",) if i % 2 else (),
        local_cseq=1,
        remote_cseq=1,
        expires_at=time.time() + 3600,
        content_type="application/pidf+xml",
        peer="udp:198.51.100.1:5060",
    )


async def bench_puts(path: Path, writers: int, seconds: float, synchronous: str) -> None:
    store = SqliteStorage(path, synchronous=synchronous)
    await store.open()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def writer(w: int) -> int:
        n = 0
        clock = time.perf_counter
        while True:
            start = clock()
            if start >= deadline:
                return n
            await store.put_binding(_binding(w, n))
            latencies.append(clock() - start)
            n += 1

    started = time.perf_counter()
    counts = await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - started
    await store.close()
    total = sum(counts)
    q = statistics.quantiles(latencies, n=100)
    print(
        f"  {writers:>4} writers: {total / elapsed:>9,.0f} durable puts/s "
        f"(latency p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms)"
    )


async def bench_load(path: Path, count: int, synchronous: str) -> None:
    store = SqliteStorage(path, synchronous=synchronous)
    await store.open()
    started = time.perf_counter()
    chunk = 1000
    for base in range(0, count, chunk):
        await asyncio.gather(
            *(
                store.put_subscription(_subscription(i))
                for i in range(base, min(base + chunk, count))
            )
        )
    insert = time.perf_counter() - started
    await store.close()

    started = time.perf_counter()
    store = SqliteStorage(path, synchronous=synchronous)
    await store.open()
    opened = time.perf_counter() - started
    started = time.perf_counter()
    subs = await store.load_subscriptions()
    loaded = time.perf_counter() - started
    await store.close()
    assert len(subs) == count, len(subs)
    size = path.stat().st_size / 1e6
    print(
        f"  {count:,} subscriptions: insert {count / insert:,.0f}/s (gathered, 1000 at a time), "
        f"reopen {opened * 1e3:.1f} ms, load_subscriptions {loaded * 1e3:.0f} ms, file {size:.1f} MB"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"sqlite synchronous={args.synchronous}, {args.seconds:g} s per level, in {tmp}")
        for n in args.writers:
            await bench_puts(Path(tmp) / f"puts-{n}.db", n, args.seconds, args.synchronous)
        await bench_load(Path(tmp) / "load.db", args.subscriptions, args.synchronous)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--writers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 100])
    p.add_argument("--subscriptions", type=int, default=100_000)
    p.add_argument("--synchronous", default="NORMAL", choices=["OFF", "NORMAL", "FULL"])
    p.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    p.add_argument("--dir", default=None, help="where to put the scratch databases")
    return p.parse_args()


if __name__ == "__main__":
    args = _parse()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))
