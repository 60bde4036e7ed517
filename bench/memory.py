"""Memory per active subscription and the restart that reloads them all (issue 11).

    .venv/bin/python bench/memory.py [--subscriptions 1000000] [--presentities 1000]

What it builds, and why that is fair: the subscription rows are written straight into a fresh
SQLite database with the backend's own statement (`storage/sqlite.py`, `_PUT_SUBSCRIPTION`),
shaped like the ones a SUBSCRIBE from a UDP watcher leaves (one watcher address each, spread
over `--presentities` presentities, none expiring during the run). Then the real server
starts on that database (defaults, as every bench script configures it) and is timed from
exec until it answers OPTIONS: the restart, i.e. loading every row into the notifier's table.
The restart is reported as wall time and as the server's CPU time until then (the robust
figure on a shared machine). RSS is read once it answers, with no transaction alive (nothing was sent or received but
the probe), so the figure is the state itself: records, dialogs, expiry heap, watcher sets.
Not covered: NOTIFY templates, which a dialog keeps once it has been notified twice (the
one-off cost of a fan-out), and per-transaction state under load (transient, bounded by
`max_transactions`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import DOMAIN, BenchServer, header

from presenced.pa.records import Subscription
from presenced.storage import sqlite as sqlite_backend


def rows(n: int, presentities: int, expires_at: float) -> Iterator[list[object]]:
    """Subscription rows in the backend's column order, like a sipp SUBSCRIBE leaves them."""
    for i in range(n):
        call_id = f"{i}-4711@127.0.0.1"
        local_tag, remote_tag = f"{i:016x}", f"{i}SIPpTag00{i}"
        port = 10000 + i % 50000
        host = f"127.0.{(i // 50000) % 256}.{1 + i // 12_800_000}"
        p = f"p{i % presentities}"
        sub = Subscription(
            id=f"{call_id};{local_tag};{remote_tag}", presentity=f"{p}@{DOMAIN}",
            event="presence", source="registrar", call_id=call_id, local_tag=local_tag,
            remote_tag=remote_tag, local_uri=f"sip:{p}@{DOMAIN}",
            remote_uri=f"sip:w{i}@{DOMAIN}", watcher=f"w{i}@{DOMAIN}",
            remote_target=f"sip:w{i}@{host}:{port};transport=UDP", route_set=(),
            local_cseq=1000, remote_cseq=1, expires_at=expires_at,
            content_type="application/pidf+xml", peer=f"udp:{host}:{port}", version=0)
        values = list(sqlite_backend._astuple(sub))
        values[sqlite_backend._ROUTE_SET_INDEX] = "[]"
        yield values


def build(path: Path, n: int, presentities: int) -> float:
    started = time.monotonic()
    storage = sqlite_backend.SqliteStorage(path)
    conn = storage._connect()  # the backend's own file setup and migrations, synchronously
    try:
        conn.execute("BEGIN")
        conn.executemany(sqlite_backend._PUT_SUBSCRIPTION,
                         rows(n, presentities, time.time() + 86400))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--subscriptions", type=int, default=1_000_000)
    ap.add_argument("--presentities", type=int, default=1000)
    args = ap.parse_args()
    n = args.subscriptions
    header(f"memory: {n:,} active subscriptions, restart from SQLite")
    srv = BenchServer(storage="")
    srv.start_timeout = 300.0
    started = time.monotonic()
    srv.start()
    empty_s = time.monotonic() - started
    empty_kb = srv.rss_kb()
    built: list[float] = []

    def fill(data_dir: Path) -> None:
        built.append(build(data_dir / "presenced.db", n, args.presentities))
        print(f"wrote {n:,} rows in {built[0]:.1f} s", flush=True)
        # Timed from here: the restart itself.
        built.append(time.monotonic())

    try:
        srv.restart(fill)
        restart_s = time.monotonic() - built[1]
        restart_cpu = srv.cpu()
        loaded_kb = srv.rss_kb()
    finally:
        srv.stop()
    per_sub = (loaded_kb - empty_kb) * 1024 / max(1, n)
    print(f"empty server: answered OPTIONS {empty_s:.1f} s after exec, RSS {empty_kb / 1024:,.0f} MiB")
    print(f"restart with {n:,} subscriptions: answered OPTIONS {restart_s:.1f} s after exec "
          f"({restart_cpu:.1f} s of server CPU), "
          f"RSS {loaded_kb / 1024:,.0f} MiB ({per_sub:,.0f} bytes per subscription more than "
          "the empty server)")


if __name__ == "__main__":
    main()
