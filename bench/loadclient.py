"""Shared benchmark helpers: the server under test, sipp runs, and a fast raw-UDP SIP client.

    with BenchServer(storage="memory:") as srv:        # own tmp dir, free port, waits for OPTIONS
        async with LoadClient(srv.addr) as c:          # one UDP socket, thousands of transactions
            await c.run_window(range(100_000), 500, lambda i: c.register(f"u{i}"))
        print(srv.rss_kb())

The client speaks SIP as raw bytes (f-string templates out, a few regexes in) so that it costs
far less CPU than the server it loads; both share the machine. It retransmits on the RFC 3261
Timer E schedule (T1 = 0.5 s doubling to T2 = 4 s, giving up after 64*T1) and answers every
NOTIFY with a 200 at once, telling a callback about it. Everything a script starts (server,
sipp) is stopped by the context managers, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
PRESENCED = ROOT / ".venv" / "bin" / "presenced"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
HOST = "127.0.0.1"
DOMAIN = "example.com"
T1, T2, TIMER_F = 0.5, 4.0, 32.0

T = TypeVar("T")


# --- the machine ------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import uvloop  # noqa: F401

        loop = "yes"
    except ImportError:
        loop = "no"
    # The server inherits PYTHONPATH: pointing it at a mypyc build (docs/performance.md) benchmarks
    # that build, and this line says which core the figures are from.
    from presenced.build import core_build

    return (
        f"machine: nproc={os.cpu_count()} cpu={cpu!r} python={platform.python_version()} "
        f"uvloop={loop} kernel={platform.release()} core={core_build()}"
    )


def header(title: str) -> None:
    print(f"== {title}")
    print(machine())
    sys.stdout.flush()


def common_options(ap: Any) -> None:
    """Options every load script takes."""
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="sample the server with py-spy during the sipp runs; print the hot spots",
    )


def apply_common(args: Any) -> None:
    """Nothing to apply any more: the server tunes its garbage collector itself."""


def profiled(pid: int, path: str | None) -> contextlib.AbstractContextManager[Any]:
    """py-spy on `pid` appending to `path`.N when asked, else nothing."""
    if not path:
        return contextlib.nullcontext()
    global _PROFILES
    _PROFILES += 1
    return PySpy(pid, Path(f"{path}.{_PROFILES}"))


_PROFILES = 0


def report_profiles(path: str | None) -> None:
    """Merge the collapsed stacks of every profiled run into `path` and print the hot spots."""
    if not path:
        return
    parts = sorted(Path(path).parent.glob(Path(path).name + ".*"))
    merged = Path(path)
    merged.write_text("".join(p.read_text() for p in parts))
    for p in parts:
        p.unlink()
    print_collapsed(merged, 25)


def free_port() -> int:
    """A port free for both UDP and TCP on HOST right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status (VmRSS, in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_drops() -> int:
    """Datagrams the kernel dropped for a full socket receive buffer, machine-wide
    (RcvbufErrors in /proc/net/snmp): a burst bigger than a socket's buffer shows up here."""
    lines = [
        ln.split()
        for ln in Path("/proc/net/snmp").read_text().splitlines()
        if ln.startswith("Udp:")
    ]
    return int(dict(zip(lines[0], lines[1], strict=False)).get("RcvbufErrors", 0))




# --- the server under test --------------------------------------------------------------------


class BenchServer:
    """presenced in a subprocess with its own data dir and port; stopped on exit."""

    def __init__(
        self,
        storage: str = "memory:",
        extra: str = "",
        profile: str | None = None,
        server_extra: str = "",
        pythonpath: str | None = None,
    ) -> None:
        self.storage = storage
        # Where the server imports presenced from (a mypyc build, docs/performance.md); None:
        # whatever this process's environment says.
        self.pythonpath = pythonpath
        self.extra = extra
        self.server_extra = server_extra  # more [server] keys ("workers = 2\n")
        self.profile = profile  # a cProfile output path: run the server under cProfile
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.start_timeout = 15.0  # seconds until it must answer OPTIONS (a big reload: more)

    @property
    def addr(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> BenchServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="presenced-bench-")
        d = Path(self._dir.name)
        self.port = free_port()
        storage = f'[storage]\nurl = "{self.storage}"\n' if self.storage else ""
        # The load comes from one address: measure the server, not the per-source limits.
        # PRESENCED_BENCH_BEFORE_LIMITS=1 leaves those keys out, for measuring a checkout from
        # before they existed (commit b3e8d48 and older) with today's scripts.
        # Likewise the per-watcher cap: without [auth] it counts the source address, and every
        # benchmark watcher shares 127.0.0.1.
        limits = "" if os.environ.get("PRESENCED_BENCH_BEFORE_LIMITS") else (
            'max_connections_per_source = 100000\n[limits]\nexempt = ["127.0.0.0/8"]\n'
            "[pa]\nmax_subscriptions_per_watcher = 10000000\n")
        (d / "presenced.toml").write_text(
            f'[server]\nlisten = ["udp:{HOST}:{self.port}", "tcp:{HOST}:{self.port}"]\n'
            f'domains = ["{DOMAIN}"]\ndata_dir = "{d}"\nlog_level = "warning"\n'
            f"{self.server_extra}{limits}{storage}{self.extra}\n"
        )
        self._spawn()

    def _spawn(self) -> None:
        assert self._dir is not None
        d = Path(self._dir.name)
        python = str(PRESENCED.parent / "python")
        if self.profile:
            cmd = [python, "-m", "cProfile", "-o", self.profile, str(PRESENCED)]
        else:
            cmd = [str(PRESENCED)]
        env = None if self.pythonpath is None else {**os.environ, "PYTHONPATH": self.pythonpath}
        self.proc = subprocess.Popen(
            [*cmd, "--config", str(d / "presenced.toml")],
            stdout=subprocess.DEVNULL,
            stderr=open(d / "stderr.log", "wb"),  # noqa: SIM115
            cwd=d,
            env=env,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("presenced exited: " + (d / "stderr.log").read_text()[-2000:])
            if _options_ok(self.addr):
                return
        self.stop()
        raise RuntimeError(f"presenced did not answer OPTIONS within {self.start_timeout:.0f} s")

    def restart(self, between: Callable[[Path], object] | None = None) -> None:
        """Stop the server, call `between(data_dir)`, start it again on the same data dir and
        port; returns once it answers OPTIONS."""
        assert self._dir is not None
        self._halt()
        if between is not None:
            between(Path(self._dir.name))
        self._spawn()

    def stop(self) -> None:
        self._halt()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _halt(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.profile else signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stderr_tail(self, n: int = 2000) -> str:
        if self._dir is None:
            return ""
        return (Path(self._dir.name) / "stderr.log").read_text(errors="replace")[-n:]


def _options_ok(addr: tuple[str, int]) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        s.settimeout(0.2)
        port = s.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(6)
        s.sendto(
            (
                f"OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{port};branch={branch}\r\n"
                f"From: <sip:probe@{DOMAIN}>;tag=p\r\nTo: <sip:{DOMAIN}>\r\nCall-ID: {branch}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            addr,
        )
        try:
            data = s.recv(65535)
        except OSError:
            time.sleep(0.1)
            return False
        return data.startswith(b"SIP/2.0 200")


# --- sipp -------------------------------------------------------------------------------------


@dataclass
class SippResult:
    rate: float  # target calls/s
    successful: int
    failed: int
    elapsed: float  # seconds of wall time, sipp start to exit (all calls done)
    retransmissions: int

    @property
    def achieved(self) -> float:
        return self.successful / self.elapsed if self.elapsed else 0.0


async def run_sipp(
    scenario: str,
    addr: tuple[str, int],
    rate: float,
    seconds: float,
    inject: Path | None = None,
    limit: int | None = None,
    extra: Iterable[str] = (),
    transport: str = "u1",
) -> SippResult:
    """Run a scenario at `rate` calls/s for about `seconds`; parse sipp's statistics file."""
    with tempfile.TemporaryDirectory(prefix="bench-sipp-") as d:
        stf = Path(d) / "stats.csv"
        calls = max(1, int(rate * seconds))
        cmd = [
            SIPP,
            "-sf",
            str(SCENARIOS / scenario),
            f"{addr[0]}:{addr[1]}",
            "-i",
            HOST,
            "-p",
            "0",
            "-t",
            transport,
            "-key",
            "domain",
            DOMAIN,
            "-m",
            str(calls),
            "-r",
            str(int(rate)),
            "-rp",
            "1000",
            "-l",
            str(limit or max(100, int(rate * 2))),
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(stf),
            "-fd",
            "1",
            "-timeout",
            f"{int(seconds * 3 + 10)}s",
            "-max_recv_loops",
            "10000",
            "-recv_timeout",
            "10000",
            *extra,
            *(("-max_socket", "15000") if transport == "un" else ()),
        ]
        if inject is not None:
            cmd += ["-inf", str(inject)]
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=d
        )
        try:
            _, err = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        wall = time.perf_counter() - started
        try:
            return _parse_sipp_stats(stf, rate, wall)
        except (OSError, ValueError, IndexError) as exc:
            raise RuntimeError(
                f"sipp failed ({exc}): {err.decode(errors='replace')[-1500:]}"
            ) from None


def _parse_sipp_stats(path: Path, rate: float, wall: float) -> SippResult:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    names = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    row = dict(zip(names, values, strict=False))
    # sipp's ElapsedTime has whole seconds only: the wall time of the run is finer.
    return SippResult(
        rate,
        int(row["SuccessfulCall(C)"]),
        int(row["FailedCall(C)"]),
        wall,
        int(row.get("Retransmissions(C)", "0") or 0),
    )


# --- the raw UDP load client ------------------------------------------------------------------

_BRANCH = re.compile(rb"branch=([^;,\r\n ]+)")
_TO_TAG = re.compile(rb"\r\n(?:To|t)[ \t]*:[^\r\n]*;tag=([^;>\r\n ]+)", re.I)
_ETAG = re.compile(rb"\r\nSIP-ETag[ \t]*:[ \t]*([^\r\n ]+)", re.I)
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.I)
# The headers a 200 to a NOTIFY copies (RFC 3261 §8.2.6.2).
_COPIED = re.compile(rb"\r\n((?:Via|v|From|f|To|t|Call-ID|i|CSeq)[ \t]*:[^\r\n]*)", re.I)


def to_tag(response: bytes) -> str:
    m = _TO_TAG.search(response)
    return m.group(1).decode() if m else ""


def etag(response: bytes) -> str:
    m = _ETAG.search(response)
    return m.group(1).decode() if m else ""


NotifyHandler = Callable[[bytes, bytes], None]  # (call_id, whole NOTIFY)


class LoadClient(asyncio.DatagramProtocol):
    """Many concurrent client transactions and dialogs on one UDP socket."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[
            bytes, tuple[asyncio.Future[bytes], bytes, float, asyncio.TimerHandle]
        ] = {}
        self._seq = 0
        self._prefix = secrets.token_hex(4)
        self.on_notify: NotifyHandler | None = None
        self.notifies = 0
        self.retransmissions = 0
        self.timeouts = 0

    async def __aenter__(self) -> LoadClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # A fan-out to 10,000 watchers arrives as one burst: give the socket room for it.
        for force, plain in (
            (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF),
            (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, 32 * 1024 * 1024)
            except OSError:  # not privileged: the ordinary, capped buffers
                sock.setsockopt(socket.SOL_SOCKET, plain, 32 * 1024 * 1024)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        await loop.create_datagram_endpoint(lambda: self, sock=sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for fut, _, _, timer in self._pending.values():
            timer.cancel()
            fut.cancel()
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data.startswith(b"SIP/2.0 "):
            if data[8:9] == b"1":
                return  # provisional
            m = _BRANCH.search(data)
            if m is None:
                return
            entry = self._pending.pop(m.group(1), None)
            if entry is not None:
                entry[3].cancel()
                if not entry[0].done():
                    entry[0].set_result(data)
            return
        if data.startswith(b"NOTIFY ") or data.startswith(b"OPTIONS "):
            copied = b"\r\n".join(_COPIED.findall(data))
            assert self._transport is not None
            self._transport.sendto(
                b"SIP/2.0 200 OK\r\n" + copied + b"\r\nContent-Length: 0\r\n\r\n", addr
            )
            if data.startswith(b"NOTIFY "):
                self.notifies += 1
                if self.on_notify is not None:
                    m = _CALL_ID.search(data)
                    self.on_notify(m.group(1).strip() if m else b"", data)

    def error_received(self, exc: Exception) -> None:
        pass

    # --- transactions --------------------------------------------------------------------------

    def new_branch(self) -> str:
        self._seq += 1
        return f"z9hG4bK{self._prefix}x{self._seq}"

    def transact(self, branch: str, data: bytes) -> asyncio.Future[bytes]:
        """Send a request whose top Via has `branch`; the future gets the final response
        (a b"SIP/2.0 408" stand-in after Timer F)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        key = branch.encode()
        timer = loop.call_later(T1, self._retransmit, key, T1)
        self._pending[key] = (fut, data, loop.time() + TIMER_F, timer)
        assert self._transport is not None
        self._transport.sendto(data, self.server)
        return fut

    def _retransmit(self, key: bytes, interval: float) -> None:
        entry = self._pending.get(key)
        if entry is None:
            return
        fut, data, give_up, _ = entry
        loop = asyncio.get_running_loop()
        if loop.time() >= give_up:
            del self._pending[key]
            self.timeouts += 1
            fut.set_result(b"SIP/2.0 408 Timeout\r\n\r\n")
            return
        self.retransmissions += 1
        assert self._transport is not None
        self._transport.sendto(data, self.server)
        interval = min(interval * 2, T2)
        self._pending[key] = (
            fut,
            data,
            give_up,
            loop.call_later(interval, self._retransmit, key, interval),
        )

    # --- requests ------------------------------------------------------------------------------

    def _via(self, branch: str) -> str:
        return f"Via: SIP/2.0/UDP {HOST}:{self.port};branch={branch};rport\r\n"

    def register(
        self, user: str, expires: int = 3600, call_id: str | None = None, cseq: int = 1
    ) -> asyncio.Future[bytes]:
        b = self.new_branch()
        data = (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n{self._via(b)}Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=r{user}\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
            f"Call-ID: {call_id or 'reg-' + user}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{HOST}:{self.port}>\r\nExpires: {expires}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        return self.transact(b, data)

    def subscribe(
        self,
        watcher: str,
        presentity: str,
        expires: int = 3600,
        call_id: str = "",
        to_tag: str = "",
        cseq: int = 1,
    ) -> asyncio.Future[bytes]:
        """An initial SUBSCRIBE (no `to_tag`) or one inside the dialog (refresh / Expires: 0).
        The dialog's Call-ID defaults to "<watcher>-<presentity>"; From-tag is the watcher."""
        b = self.new_branch()
        to = f";tag={to_tag}" if to_tag else ""
        data = (
            f"SUBSCRIBE sip:{presentity}@{DOMAIN} SIP/2.0\r\n{self._via(b)}Max-Forwards: 70\r\n"
            f"From: <sip:{watcher}@{DOMAIN}>;tag=w{watcher}\r\n"
            f"To: <sip:{presentity}@{DOMAIN}>{to}\r\n"
            f"Call-ID: {call_id or watcher + '-' + presentity}\r\nCSeq: {cseq} SUBSCRIBE\r\n"
            f"Contact: <sip:{watcher}@{HOST}:{self.port}>\r\nEvent: presence\r\n"
            f"Accept: application/pidf+xml\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        return self.transact(b, data)

    def publish(
        self,
        presentity: str,
        basic: str | None,
        expires: int = 3600,
        if_match: str = "",
        cseq: int = 1,
    ) -> asyncio.Future[bytes]:
        """PUBLISH a one-tuple PIDF (`basic` "open"/"closed"); `basic=None` sends no body
        (a refresh or, with expires=0, a removal: RFC 3903 §4.1)."""
        b = self.new_branch()
        body = b""
        if basic is not None:
            body = pidf(f"{presentity}@{DOMAIN}", basic)
        extra = f"SIP-If-Match: {if_match}\r\n" if if_match else ""
        if body:
            extra += "Content-Type: application/pidf+xml\r\n"
        data = (
            f"PUBLISH sip:{presentity}@{DOMAIN} SIP/2.0\r\n{self._via(b)}Max-Forwards: 70\r\n"
            f"From: <sip:{presentity}@{DOMAIN}>;tag=p{presentity}\r\n"
            f"To: <sip:{presentity}@{DOMAIN}>\r\nCall-ID: pub-{presentity}-{b}\r\n"
            f"CSeq: {cseq} PUBLISH\r\nEvent: presence\r\nExpires: {expires}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        return self.transact(b, data)

    # --- load shaping --------------------------------------------------------------------------

    @staticmethod
    async def run_window(
        items: Iterable[T], window: int, fn: Callable[[T], Awaitable[bytes]]
    ) -> tuple[int, int]:
        """Run `fn(item)` for every item with at most `window` in flight.
        Returns (2xx answers, other answers)."""
        it = iter(items)
        ok = bad = 0

        async def worker() -> None:
            nonlocal ok, bad
            for item in it:
                resp = await fn(item)
                if resp[8:9] == b"2":
                    ok += 1
                else:
                    bad += 1

        await asyncio.gather(*(worker() for _ in range(window)))
        return ok, bad


def pidf(entity: str, basic: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:{entity}">\r\n'
        f'<tuple id="t1"><status><basic>{basic}</basic></status>'
        f'<contact priority="0.8">sip:{entity}</contact></tuple>\r\n'
        "</presence>\r\n"
    ).encode()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a benchmark's async main on uvloop when available."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


# --- profiling --------------------------------------------------------------------------------


class PySpy:
    """Sample the server with py-spy while the block runs (`--profile` in the scripts).

    py-spy is not a project dependency: `.venv/bin/pip install py-spy`. `report()` prints the
    functions with the largest share of samples, by own time (leaf frame) and inclusive.
    """

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpy:
        exe = shutil.which("py-spy", path=str(ROOT / ".venv" / "bin")) or shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--format",
                "raw",
                "--rate",
                str(self.rate),
                "--nonblocking",
                "-o",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def report(self, top: int = 25) -> None:
        print_collapsed(self.out, top)


def print_collapsed(path: Path, top: int = 25) -> None:
    """Summarise collapsed stacks ("frame;frame;frame COUNT" lines)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if not total:
        print("no samples")
        return
    print(f"\nprofile: {total:,} samples ({path})")
    print(f"{'own %':>6}  function (own time: the frame on top of the stack)")
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n * 100 / total:6.1f}  {name}")
    print(f"{'incl %':>6}  function (inclusive: anywhere on the stack)")
    for name, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n * 100 / total:6.1f}  {name}")


def _short(frame: str) -> str:
    """ "func (/path/to/presenced/sip/message.py:123)" -> "func (sip/message.py)" """
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("/presenced/", "/site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name
