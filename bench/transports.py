"""Transports benchmark: subscribe cycles/s over UDP, TCP and TLS (sipp `-t u1`, `-t t1`,
`-t l1`), and the server's memory per idle TLS and WebSocket connection.

    PYTHONPATH=src .venv/bin/python bench/transports.py [--rate 500] [--seconds 5]
        [--connections 10000]

A cycle is bench/scenarios/subscribe.xml (SUBSCRIBE, NOTIFY, unsubscribe, final NOTIFY). sipp
must be built with OpenSSL for `-t l1`; Debian's sip-tester 3.6 is not, which is printed (not
hidden) and that row is left out. Memory: `--connections` idle connections are opened from
this process (TLS: full handshakes; WS: the `sip` subprotocol), the server's RSS is read
before and after, and the difference per connection is printed. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadclient import HOST, SIPP, free_port, header, rss_kb, run_sipp

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """presenced with udp, tcp, tls, ws listeners and limits raised for one loopback source."""

    def __init__(self, directory: Path, certs: object) -> None:
        self.dir = directory
        self.ports = {t: free_port() for t in ("udp", "tls", "ws")}
        self.ports["tcp"] = self.ports["udp"]
        c = certs
        listen = ", ".join(f'"{t}:{HOST}:{p}"' for t, p in self.ports.items())
        (directory / "presenced.toml").write_text(
            f"[server]\nlisten = [{listen}]\ndomains = [\"example.com\"]\n"
            f'data_dir = "{directory}"\nlog_level = "warning"\n'
            "max_tcp_connections = 50000\nmax_connections_per_source = 50000\n"
            "connection_first_message_timeout = 3600\nconnection_idle_timeout = 3600\n"
            '[storage]\nurl = "memory:"\n[limits]\nexempt = ["127.0.0.0/8"]\n'
            "[pa]\nmax_subscriptions_per_watcher = 10000000\n"
            f'[tls]\ncertificate = "{c.certificate}"\nprivate_key = "{c.private_key}"\n'  # type: ignore[attr-defined]
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "presenced", "--config", str(directory / "presenced.toml")],
            stdout=subprocess.DEVNULL, stderr=open(directory / "stderr.log", "wb"),  # noqa: SIM115
            cwd=directory, env=env)
        deadline = time.monotonic() + 20
        while True:
            try:
                import socket

                socket.create_connection((HOST, self.ports["ws"]), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((directory / "stderr.log").read_text()[-2000:]) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sipp_has_tls() -> bool:
    out = subprocess.run([SIPP, "-v"], capture_output=True, text=True, check=False).stdout
    return "TLS" in out


async def cycles(srv: Server, rate: float, seconds: float) -> None:
    print(f"\nsubscribe cycles/s at {rate:g}/s for {seconds:g} s")
    print(f"{'transport':9} {'achieved':>9} {'ok':>7} {'failed':>6} {'retrans':>7}")
    for name, flag, port in (("udp", "u1", srv.ports["udp"]), ("tcp", "t1", srv.ports["tcp"]),
                             ("tls", "l1", srv.ports["tls"])):
        if name == "tls" and not sipp_has_tls():
            print(f"{name:9} sipp here is built without OpenSSL: `-t l1` unavailable")
            continue
        r = await run_sipp("subscribe.xml", (HOST, port), rate, seconds, extra=("-t", flag))
        print(f"{name:9} {r.achieved:9.0f} {r.successful:7d} {r.failed:6d} {r.retransmissions:7d}")


async def idle_memory(srv: Server, n: int, ca: str) -> None:
    import aiohttp

    print(f"\nmemory per idle connection, {n:,} connections from one process")
    ctx = ssl.create_default_context(cafile=ca)
    loop = asyncio.get_running_loop()
    base = rss_kb(srv.proc.pid)
    held: list[object] = []
    started = time.perf_counter()
    sem = asyncio.Semaphore(200)

    async def tls_one() -> None:
        async with sem:
            t, _ = await loop.create_connection(asyncio.Protocol, HOST, srv.ports["tls"], ssl=ctx,
                                                server_hostname=HOST)
            held.append(t)

    await asyncio.gather(*(tls_one() for _ in range(n)))
    await asyncio.sleep(1)
    after = rss_kb(srv.proc.pid)
    print(f"tls: {n:,} up in {time.perf_counter() - started:.1f} s, server RSS {base / 1024:.0f} -> "
          f"{after / 1024:.0f} MiB: {(after - base) * 1024 / n / 1024:.1f} KiB per connection")
    for t in held:
        t.close()  # type: ignore[attr-defined]
    held.clear()
    await asyncio.sleep(2)

    base = rss_kb(srv.proc.pid)
    started = time.perf_counter()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = f"ws://{HOST}:{srv.ports['ws']}/"

    async def ws_one() -> None:
        async with sem:
            held.append(await session.ws_connect(url, protocols=("sip",), autoping=True))

    await asyncio.gather(*(ws_one() for _ in range(n)))
    await asyncio.sleep(1)
    after = rss_kb(srv.proc.pid)
    print(f"ws:  {n:,} up in {time.perf_counter() - started:.1f} s, server RSS {base / 1024:.0f} -> "
          f"{after / 1024:.0f} MiB: {(after - base) * 1024 / n / 1024:.1f} KiB per connection")
    for ws in held:
        await ws.close()  # type: ignore[attr-defined]
    await session.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--connections", type=int, default=10_000)
    args = ap.parse_args()
    import trustme

    header("transports: UDP / TCP / TLS subscribe cycles, idle TLS and WS connection memory")
    with tempfile.TemporaryDirectory(prefix="presenced-bench-tls-") as d:
        root = Path(d)
        ca = trustme.CA()
        cert = ca.issue_cert(HOST)
        cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
        ca.cert_pem.write_to_path(str(root / "ca.pem"))

        class Files:
            certificate = root / "server.pem"
            private_key = root / "server.pem"

        srv = Server(root, Files)
        try:
            if shutil.which(SIPP):
                await cycles(srv, args.rate, args.seconds)
            await idle_memory(srv, args.connections, str(root / "ca.pem"))
        finally:
            srv.stop()


if __name__ == "__main__":
    asyncio.run(main())
