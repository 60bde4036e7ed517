"""Integration harness: the real presenced process, a real-socket SIP client, and sipp.

    srv = ServerProcess(tmp_path, storage="memory:")    # writes presenced.toml, picks a port
    srv.start()                                         # returns once it answers OPTIONS (UDP)
    with SipClient(srv.addr, "tcp") as c:
        r = c.request("SUBSCRIBE", "sip:alice@example.com", headers={"Event": "presence"})
        notify = c.expect_request("NOTIFY")             # answered 200 automatically
        dlg = c.dialog(r)                               # in-dialog requests from here on
        c.request("SUBSCRIBE", dialog=dlg, headers={"Event": "presence", "Expires": "0"})
    srv.stop()                                          # SIGTERM; asserts exit code 0

Nothing here is a mock: the server is `python -m presenced --config FILE` in a subprocess and
the client speaks over kernel sockets. The client parses with the project's own parser
(`parse_message`, `StreamFramer`), so a server that emits unparseable bytes fails loudly
(`SipClient.errors`). A reader thread per client answers NOTIFYs (and any method in
`auto_answer`) at once, as a real user agent would, so the server never has to retransmit.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import presenced
from presenced.sip.errors import ParseError
from presenced.sip.framing import KeepAlivePing, StreamFramer
from presenced.sip.headers import Headers
from presenced.sip.message import Request, Response, make_response, parse_message

# The server runs the code these tests import: this checkout's src/ as a rule, or the mypyc build
# when the suite runs with PYTHONPATH pointing at it (.ci/run's compiled pass).
_SRC = Path(presenced.__file__).resolve().parents[1]
LOCALHOST = "127.0.0.1"
DEFAULT_DOMAIN = "example.com"
T1 = 0.5  # RFC 3261 §17.1.1.1
T2 = 4.0

HeaderSpec = Mapping[str, "str | None"] | Sequence[tuple[str, str]]

# For tests that load the server from 127.0.0.1 (sipp runs, connection storms): they measure the
# server, not the per-source limiter, so they opt out of it. The defaults stay the server's.
LOOPBACK_UNLIMITED: dict[str, dict[str, Any]] = {
    "limits": {"exempt": ["127.0.0.0/8"]},
}


def token(n: int = 8) -> str:
    return secrets.token_hex(n)


# --------------------------------------------------------------------------------------------
# Ports


def free_port_pair(host: str = LOCALHOST, attempts: int = 50) -> int:
    """A port number free for both UDP and TCP on `host` right now.

    The kernel picks a free UDP port; we then check TCP can bind the same number. The sockets
    close before the server binds, so a race is possible but unlikely on a test machine;
    `ServerProcess.start` retries on a bind failure (a port fixed in advance: `HeldPort`).
    """
    held = HeldPort(host, attempts)
    held.release()
    return held.port


class HeldPort:
    """A UDP+TCP port number kept bound until `release()`: for a server started later on a
    port fixed in advance, so that nothing started meanwhile (a baresip picking its own ports,
    TLS one above) is handed the same number by the kernel."""

    def __init__(self, host: str = LOCALHOST, attempts: int = 50) -> None:
        self._sockets: list[socket.socket] = []
        for _ in range(attempts):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind((host, 0))
            port = int(u.getsockname()[1])
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.bind((host, port))
            except OSError:
                u.close()
                t.close()
                continue
            self.port = port
            self._sockets = [u, t]
            return
        raise RuntimeError("no free UDP+TCP port pair found")

    def release(self) -> None:
        for s in self._sockets:
            s.close()
        self._sockets = []


def free_tcp_port(host: str = LOCALHOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind((host, 0))
        return int(t.getsockname()[1])


# --------------------------------------------------------------------------------------------
# TLS test certificates (made at test time with trustme)


@dataclass
class CertificateSet:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, as PEM files in
    `directory` (what a `[tls]` section names), plus what a client needs to trust them."""

    directory: Path
    ca_file: Path
    certificate: Path
    private_key: Path
    client_certificate: Path  # a client certificate from the same CA (mutual TLS), key included
    ca: Any = None

    def tls_section(self, **extra: Any) -> dict[str, Any]:
        return {"certificate": str(self.certificate), "private_key": str(self.private_key),
                "ca_file": str(self.ca_file), **extra}

    def client_context(self, with_certificate: bool = False) -> Any:
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if with_certificate:
            ctx.load_cert_chain(str(self.client_certificate))
        return ctx


def make_certificates(directory: Path, names: Sequence[str] = ("127.0.0.1", "localhost")) -> CertificateSet:
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert(*names)
    client = ca.issue_cert("watcher@example.com")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert = directory / "server.pem"
    key = directory / "server.key"
    for blob in server.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    server.private_key_pem.write_to_path(str(key))
    client_file = directory / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_file))
    return CertificateSet(directory, ca_file, cert, key, client_file, ca)


def free_udp_port(host: str = LOCALHOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind((host, 0))
        return int(u.getsockname()[1])


# --------------------------------------------------------------------------------------------
# TOML rendering (tests pass plain dicts; only the shapes presenced's config uses)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return _toml_value(key)


def render_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """``{"server": {"listen": [...]}, "auth": {"users": {"alice": "pw"}}}`` -> TOML text."""
    out: list[str] = []

    def table(name: str, body: Mapping[str, Any]) -> None:
        out.append(f"[{name}]")
        subtables = []
        for key, value in body.items():
            if isinstance(value, Mapping):
                subtables.append((key, value))
            else:
                out.append(f"{_toml_key(key)} = {_toml_value(value)}")
        out.append("")
        for key, value in subtables:
            table(f"{name}.{_toml_key(key)}", value)

    for name, body in sections.items():
        table(_toml_key(name), body)
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# The server process


class ServerError(AssertionError):
    """The server did not start, crashed, or stopped uncleanly; the message has its log tail."""


class ServerProcess:
    """One `presenced --config FILE` subprocess listening on UDP and TCP 127.0.0.1:`port`.

    `sections` are merged over the harness defaults (``server`` keys are merged key by key, other
    sections replace or add); `extra_toml` is appended verbatim for anything else. The data
    directory and config stay in `root`, so `restart()` and `kill9()` + `start()` see the same
    state (what a sqlite-backed server must survive).
    """

    def __init__(
        self,
        root: Path,
        *,
        storage: str = "memory:",
        domains: Sequence[str] = (DEFAULT_DOMAIN,),
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        extra_toml: str = "",
        log_level: str = "debug",
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        extra_listen: Sequence[str] = (),
    ) -> None:
        """`extra_listen`: stream transports ("tls", "ws", "wss") to serve beside UDP and TCP,
        each on a free port of its own (`ports[transport]`, `addr_of(transport)`)."""
        self.root = Path(root)
        self.extra_listen = tuple(extra_listen)
        self.ports: dict[str, int] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "data"
        self.config_path = self.root / "presenced.toml"
        self.log_path = self.root / "presenced.log"
        self.storage = storage
        self.domains = tuple(domains)
        self.sections = dict(sections or {})
        self.extra_toml = extra_toml
        self.log_level = log_level
        self.host = LOCALHOST
        self.port = port or 0
        self._fixed_port = port is not None
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.starts = 0
        # Teardown fails the test when the log holds a traceback, unless a test expects one.
        self.allow_tracebacks = False

    # --- addresses ----------------------------------------------------------------------------

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def domain(self) -> str:
        return self.domains[0]

    def addr_of(self, transport: str) -> tuple[str, int]:
        """Where `transport` is served ("udp"/"tcp": the main port; "tls", "ws", "wss": theirs)."""
        return (self.host, self.ports.get(transport, self.port))

    def ws_url(self, transport: str = "ws") -> str:
        return f"{transport}://{self.host}:{self.ports[transport]}/"

    def uri(self, user: str | None = None) -> str:
        """``sip:user@domain`` (or ``sip:domain``) for this server's first domain."""
        return f"sip:{user}@{self.domain}" if user else f"sip:{self.domain}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # --- configuration ------------------------------------------------------------------------

    def config_text(self) -> str:
        for transport in self.extra_listen:
            if transport not in self.ports:
                self.ports[transport] = free_tcp_port(self.host)
        server: dict[str, Any] = {
            "listen": [f"udp:{self.host}:{self.port}", f"tcp:{self.host}:{self.port}",
                       *(f"{t}:{self.host}:{self.ports[t]}" for t in self.extra_listen)],
            "domains": list(self.domains),
            "data_dir": str(self.data_dir),
            "log_level": self.log_level,
        }
        server.update(self.sections.get("server", {}))
        sections: dict[str, Mapping[str, Any]] = {
            "server": server,
            "storage": {"url": self.storage},
        }
        for name, body in self.sections.items():
            if name != "server":
                sections[name] = body
        text = render_toml(sections)
        if self.extra_toml:
            text += "\n" + self.extra_toml.strip() + "\n"
        return text

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    # --- lifecycle ----------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [sys.executable, "-m", "presenced", "--config", str(self.config_path)]

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start and wait until the server answers OPTIONS over UDP and accepts TCP."""
        assert not self.running, "server already running"
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self._fixed_port and (self.starts == 0 or attempt > 0):
                self.port = free_port_pair(self.host)
                self.ports = {t: free_tcp_port(self.host) for t in self.extra_listen}
            self.write_config()
            self._spawn()
            try:
                self.wait_ready(timeout)
                return self
            except ServerError:
                # A lost race for the port: the process exits complaining; try another port.
                lost_race = (
                    self.proc is not None
                    and self.proc.poll() is not None
                    and ("in use" in self.log_text().lower())
                )
                if not lost_race or attempt == attempts - 1:
                    self._reap()
                    raise
                self._reap()
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        env = dict(os.environ)
        # The server runs the code the tests import, whatever the venv's editable install points
        # at (a relative PYTHONPATH would not survive the child's cwd, the test's tmp dir).
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_SRC), env.get("PYTHONPATH", "")) if p
        )
        env.update(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        banner = f"--- harness: start #{self.starts + 1} on port {self.port} ---\n"
        self._log_file.write(banner.encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        self.starts += 1

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        probe = (
            f"OPTIONS sip:{self.domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{{port}};branch=z9hG4bK{{branch}};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:harness@{self.domain}>;tag=ready\r\n"
            f"To: <sip:{self.domain}>\r\n"
            "Call-ID: {branch}@harness\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((self.host, 0))
            s.settimeout(0.1)
            lport = s.getsockname()[1]
            while True:
                self._check_alive("while starting")
                s.sendto(probe.format(port=lport, branch=token()).encode(), self.addr)
                try:
                    data = s.recv(65535)
                except (TimeoutError, ConnectionRefusedError):
                    data = b""
                if data.startswith(b"SIP/2.0 "):
                    break
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"server did not answer OPTIONS within {timeout}s\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        # UDP answers first; TCP (and TLS, WS listeners) may come up a moment later.
        for addr in (self.addr, *(self.addr_of(t) for t in self.extra_listen)):
            while True:
                try:
                    socket.create_connection(addr, timeout=1).close()
                    break
                except OSError:
                    self._check_alive("while starting")
                    if time.monotonic() > deadline:
                        raise ServerError(f"server port {addr[1]} not accepting\n"
                                          f"{self.log_tail()}") from None
                    time.sleep(0.05)
        # The first listener answers while the rest of start() runs (more listeners, XCAP,
        # admin, the gateway): at info level and below its last line says it is done.
        if self.log_level in ("debug", "info"):
            while "serving domains" not in self.log_text().rpartition("--- harness: start #")[2]:
                self._check_alive("while starting")
                if time.monotonic() > deadline:
                    raise ServerError(f"server did not finish starting\n{self.log_tail()}")
                time.sleep(0.02)

    def _check_alive(self, when: str) -> None:
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
            raise ServerError(f"server exited (code {rc}) {when}\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def assert_running(self) -> None:
        self._check_alive("unexpectedly")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0, expect_code: int = 0) -> int:
        """SIGTERM, wait, and assert the exit code (0: a clean stop)."""
        assert self.proc is not None, "server was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_log()
                raise ServerError(
                    f"server did not stop within {timeout}s of SIGTERM\n{self.log_tail()}"
                ) from None
        rc = self.proc.returncode
        self._close_log()
        if rc != expect_code:
            raise ServerError(f"server exit code {rc}, expected {expect_code}\n{self.log_tail()}")
        return rc

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs (what write-through persistence must survive)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def restart(self, timeout: float = 20.0) -> ServerProcess:
        """Clean stop, then start again on the same port with the same config and data dir."""
        if self.running:
            self.stop()
        return self.start_again(timeout)

    def start_again(self, timeout: float = 20.0) -> ServerProcess:
        """Start after stop()/kill9() keeping the port (clients' addresses stay valid)."""
        fixed = self._fixed_port
        self._fixed_port = True
        try:
            return self.start(timeout)
        finally:
            self._fixed_port = fixed

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        """Teardown without assertions (the fixture asserts separately)."""
        self._reap()

    # --- logs ---------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tracebacks(self) -> list[str]:
        """Log lines carrying a traceback (the log format escapes newlines: one event, one line)."""
        return [line for line in self.log_text().splitlines() if "Traceback" in line]

    async def wait_log(self, text: str, timeout: float = 10.0, after: int = 0) -> None:
        """Wait (without blocking the test's event loop) until the log shows `text` after the
        offset `after`; fails when the server dies or the time runs out."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text()[after:]:
            self.assert_running()
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged in {timeout} s\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()[-lines:]
        return "--- presenced log (tail) ---\n" + "\n".join(text)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running:
            self.stop()
        self._close_log()


# --------------------------------------------------------------------------------------------
# The SIP client


@dataclass
class ClientDialog:
    """The UAC side of a dialog (RFC 3261 §12.1.2), enough for in-dialog SUBSCRIBE."""

    call_id: str
    local_uri: str
    local_tag: str
    remote_uri: str
    remote_tag: str | None
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq


class SipTimeout(AssertionError):
    pass


class SipClient:
    """A user agent on a real socket (UDP, one TCP or TLS connection, or one WebSocket) for
    integration tests.

    TLS: `ssl_context` (e.g. `CertificateSet.client_context()`) wraps the TCP connection.
    WS/WSS (RFC 7118): `server` is the listener's address; an aiohttp client WebSocket with the
    `sip` subprotocol runs on a loop thread of its own, one SIP message per text frame; Via
    and Contact name a `.invalid` host as browsers do (RFC 7118 §5.2).

    Messages are parsed with `parse_message`; a reader thread sorts them into responses
    (matched by top-Via branch) and requests (a FIFO for `expect_request`). Requests whose
    method is in `auto_answer` get a 200 at once, retransmissions of answered requests get
    the same answer again (a minimal server transaction), and everything is kept for
    inspection: `requests_seen`, `responses_seen`, `errors` (bytes that failed to parse).
    """

    def __init__(
        self,
        server: tuple[str, int],
        transport: str = "udp",
        *,
        user: str = "alice",
        domain: str = DEFAULT_DOMAIN,
        auto_answer: Iterable[str] = ("NOTIFY",),
        retransmit: bool = True,
        connect_timeout: float = 5.0,
        local_host: str = LOCALHOST,
        ssl_context: Any = None,
        ws_protocols: Sequence[str] = ("sip",),
        connect: bool = True,
    ) -> None:
        """`local_host`: the address the client's socket binds (its family follows).
        `connect=False` (UDP): the socket takes datagrams from any address (a cluster's
        nodes) and sends to `self.server`, which a test may point at another node."""
        if transport not in ("udp", "tcp", "tls", "ws", "wss"):
            raise ValueError(f"transport must be udp, tcp, tls, ws or wss, not {transport!r}")
        self._stream = transport in ("tcp", "tls")
        self._ws: Any = None
        self._ws_host = f"{token(4)}.invalid"  # RFC 7118 §5.2: a client has no reachable host
        self.server = server
        self.transport = transport
        self.user = user
        self.domain = domain
        self.auto_answer = {m.upper() for m in auto_answer}
        self.retransmit = retransmit and transport == "udp"
        self._cseq = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._send_lock = threading.Lock()
        self._responses: list[Response] = []
        self._requests: list[Request] = []
        self._answers: dict[tuple[str, str], bytes] = {}  # (branch, method) -> response sent
        self._seen_requests: set[tuple[str, str]] = set()
        self.requests_seen: list[Request] = []
        self.responses_seen: list[Response] = []
        self.errors: list[tuple[bytes, str]] = []
        self.raw_received = bytearray()  # every byte from the server (TCP: the stream)
        self.pongs = 0  # RFC 5626 §4.4.1 CRLF answers to our CRLFCRLF pings (TCP)
        self.closed = threading.Event()  # the server closed the connection (TCP)
        self._stopping = False
        # TLS: the reader thread and senders take turns on the one SSL object (see _read_loop);
        # other transports need no turns, and a no-op lock keeps one code path.
        self._tls_lock: Any = threading.Lock() if transport == "tls" else contextlib.nullcontext()
        self.local_host = local_host
        family = socket.AF_INET6 if ":" in local_host else socket.AF_INET
        self._framer = StreamFramer(1 << 20)
        self._connected = connect or transport != "udp"
        if transport in ("ws", "wss"):
            self._ws_start(connect_timeout, ssl_context, tuple(ws_protocols))
            return
        if transport == "udp":
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.bind((local_host, 0))
            if connect:
                self.sock.connect(server)  # also filters datagrams from anyone else
        else:
            self.sock = socket.create_connection(server, timeout=connect_timeout,
                                                 source_address=(local_host, 0))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if transport == "tls":
                import ssl

                ctx = ssl_context or ssl.create_default_context()
                self.sock = ctx.wrap_socket(self.sock, server_hostname=server[0])
        self.sock.settimeout(0.2)
        self.local_port = int(self.sock.getsockname()[1])
        self._reader = threading.Thread(
            target=self._read_loop, name=f"sipclient-{transport}", daemon=True
        )
        self._reader.start()

    # --- WebSocket flavour ----------------------------------------------------------------------

    def _ws_start(self, timeout: float, ssl_context: Any, protocols: tuple[str, ...]) -> None:
        self._loop = asyncio.new_event_loop()
        self._reader = threading.Thread(target=self._loop.run_forever,
                                        name=f"sipclient-{self.transport}", daemon=True)
        self._reader.start()
        url = f"{'wss' if self.transport == 'wss' else 'ws'}://{self.server[0]}:{self.server[1]}/"
        fut = asyncio.run_coroutine_threadsafe(self._ws_open(url, ssl_context, protocols), self._loop)
        try:
            fut.result(timeout)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._reader.join(2)
            raise

    async def _ws_open(self, url: str, ssl_context: Any, protocols: tuple[str, ...]) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(self.local_host, 0)))
        try:
            self._ws = await self._session.ws_connect(
                url, protocols=protocols, ssl=ssl_context if ssl_context is not None else True,
                max_msg_size=1 << 20, autoping=True)
        except BaseException:
            await self._session.close()
            raise
        self.ws_protocol = self._ws.protocol
        self.local_port = int(self._ws.get_extra_info("sockname")[1])
        self._ws_task = asyncio.get_running_loop().create_task(self._ws_read())

    async def _ws_read(self) -> None:
        import aiohttp

        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = msg.data.encode()
            elif msg.type == aiohttp.WSMsgType.BINARY:
                data = msg.data
            else:
                break
            with self._cond:
                self.raw_received += data
                self._cond.notify_all()
            self._on_message(data)  # one frame, one message (RFC 7118 §5.1)
        with self._cond:
            self.closed.set()
            self._cond.notify_all()

    def _ws_send(self, data: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise OSError("WebSocket closed")
        coro = ws.send_str(data.decode())
        if threading.current_thread() is self._reader:  # answering from the reader itself
            self._loop.create_task(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    def _ws_close(self) -> None:
        async def shut() -> None:
            if self._ws is not None:
                await self._ws.close()
            await self._session.close()

        if self._reader.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._reader.join(2)

    # --- identity -----------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact_uri(self) -> str:
        if self.transport in ("ws", "wss"):
            return f"sip:{self.user}@{self._ws_host};transport=ws"
        if self.transport == "tls":
            return f"sips:{self.user}@{self._host_ref}:{self.local_port}"
        t = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.user}@{self._host_ref}:{self.local_port}{t}"

    @property
    def _host_ref(self) -> str:
        return f"[{self.local_host}]" if ":" in self.local_host else self.local_host

    @property
    def contact(self) -> str:
        return f"<{self.contact_uri}>"

    def via(self, branch: str) -> str:
        if self.transport in ("ws", "wss"):
            return f"SIP/2.0/{self.transport.upper()} {self._ws_host};branch={branch}"
        return (
            f"SIP/2.0/{self.transport.upper()} {self._host_ref}:{self.local_port};branch={branch};rport"
        )

    # --- sending ------------------------------------------------------------------------------

    def send_raw(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        """`to`: where an unconnected UDP socket sends (default `self.server`)."""
        if self._ws is not None:
            self._ws_send(data)
            return
        with self._send_lock, self._tls_lock:
            if not self._connected:
                self.sock.sendto(data, to or self.server)
            elif self.transport == "udp":
                self.sock.send(data)
            else:
                self.sock.sendall(data)

    def send(self, msg: Request | Response) -> None:
        self.send_raw(msg.encode())

    def build_request(
        self,
        method: str,
        uri: str | None = None,
        *,
        headers: HeaderSpec | None = None,
        body: bytes = b"",
        dialog: ClientDialog | None = None,
        from_: str | None = None,
        to: str | None = None,
        call_id: str | None = None,
        cseq: int | None = None,
    ) -> Request:
        """A request with every mandatory header filled in; `headers` add or override.

        A header given as None in a mapping is left out (to test missing headers); give a list
        of pairs to repeat a header. Within a `dialog`, the Request-URI, From/To tags, Call-ID,
        CSeq and Route come from it (RFC 3261 §12.2.1.1).
        """
        method = method.upper()
        branch = "z9hG4bK" + token()
        route: list[str] = []
        if dialog is not None:
            uri = uri or dialog.remote_target
            remote_tag = f";tag={dialog.remote_tag}" if dialog.remote_tag else ""
            from_ = from_ or f"<{dialog.local_uri}>;tag={dialog.local_tag}"
            to = to or f"<{dialog.remote_uri}>{remote_tag}"
            call_id = call_id or dialog.call_id
            cseq = cseq if cseq is not None else dialog.next_cseq()
            route = dialog.route_set
        if uri is None:
            raise ValueError("a Request-URI or a dialog is needed")
        if cseq is None:
            self._cseq += 1
            cseq = self._cseq
        defaults: list[tuple[str, str | None]] = [
            ("Via", self.via(branch)),
            ("Max-Forwards", "70"),
            ("From", from_ or f"<{self.aor}>;tag={token(4)}"),
            ("To", to or f"<{uri.split(';', 1)[0]}>"),
            ("Call-ID", call_id or f"{token()}@{LOCALHOST}"),
            ("CSeq", f"{cseq} {method}"),
        ]
        defaults.extend(("Route", r) for r in route)
        if method in ("SUBSCRIBE", "REGISTER", "NOTIFY", "REFER", "INVITE"):
            defaults.append(("Contact", self.contact))
        extra: list[tuple[str, str | None]]
        if headers is None:
            extra = []
        elif isinstance(headers, Mapping):
            extra = list(headers.items())
        else:
            extra = list(headers)
        overridden = {k.lower() for k, _ in extra} if isinstance(headers, Mapping) else set()
        h = Headers()
        for name, value in defaults:
            if name.lower() not in overridden and value is not None:
                h.add(name, value)
        for name, value in extra:
            if value is not None:
                h.add(name, value)
        return Request(method, uri, h, body)

    def send_request(self, method: str, uri: str | None = None, **kw: Any) -> Request:
        """Build and send; do not wait. Pair with `wait_response(req)`."""
        req = self.build_request(method, uri, **kw)
        self.send(req)
        return req

    def request(
        self,
        method: str,
        uri: str | None = None,
        *,
        timeout: float = 5.0,
        **kw: Any,
    ) -> Response:
        """Send a request and return its final response (retransmitting over UDP, §17.1.2.2)."""
        req = self.build_request(method, uri, **kw)
        self.send(req)
        return self.wait_response(req, timeout)

    def wait_response(self, req: Request, timeout: float = 5.0, final: bool = True) -> Response:
        """The (final) response to `req`, matched by top-Via branch and CSeq method."""
        branch = req.top_via.branch or ""
        method = req.method
        data = req.encode() if self.retransmit else b""
        deadline = time.monotonic() + timeout
        interval = T1
        while True:
            wake = min(deadline, time.monotonic() + interval) if self.retransmit else deadline
            with self._cond:
                while True:
                    r = self._take_response(branch, method, final)
                    if r is not None:
                        return r
                    remaining = wake - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            if time.monotonic() >= deadline:
                what = "final response" if final else "response"
                raise SipTimeout(f"no {what} to {method} {req.uri} within {timeout}s")
            self.send_raw(data)  # Timer E: T1 doubling up to T2 (RFC 3261 §17.1.2.2)
            interval = min(interval * 2, T2)

    def _take_response(self, branch: str, method: str, final: bool) -> Response | None:
        for i, r in enumerate(self._responses):
            try:
                ok = r.top_via.branch == branch and r.cseq.method == method
            except ParseError:
                ok = False
            if ok and (r.status >= 200 or not final):
                del self._responses[i]
                return r
        return None

    def dialog(self, response: Response, request: Request | None = None) -> ClientDialog:
        """The dialog a 2xx to our SUBSCRIBE created (RFC 3261 §12.1.2; RFC 6665 §4.1.2.1)."""
        contacts = response.contacts
        from_ = response.from_
        to = response.to
        target = str(contacts[0].uri) if contacts else str(to.uri)
        cseq = response.cseq.seq
        return ClientDialog(
            call_id=response.call_id,
            local_uri=str(from_.uri),
            local_tag=from_.tag or "",
            remote_uri=str(to.uri),
            remote_tag=to.tag,
            remote_target=target,
            route_set=list(reversed(response.headers.get_list("Record-Route"))),
            local_cseq=cseq,
        )

    # --- receiving ----------------------------------------------------------------------------

    def expect_request(
        self,
        method: str | None = None,
        timeout: float = 5.0,
        where: Callable[[Request], bool] | None = None,
    ) -> Request:
        """Pop the oldest received request with this method (and matching `where`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, req in enumerate(self._requests):
                    if (method is None or req.method == method.upper()) and (
                        where is None or where(req)
                    ):
                        del self._requests[i]
                        return req
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pending = [f"{r.method} {r.uri}" for r in self._requests]
                    raise SipTimeout(
                        f"no {method or 'request'} within {timeout}s (queued: {pending or 'none'})"
                    )
                self._cond.wait(remaining)

    def expect_no_request(self, method: str | None = None, timeout: float = 1.0) -> None:
        """Assert no (such) request arrives within `timeout`."""
        try:
            req = self.expect_request(method, timeout)
        except SipTimeout:
            return
        raise AssertionError(f"unexpected request {req.method} {req.uri}")

    def pending_requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def reply(
        self,
        req: Request,
        status: int = 200,
        reason: str | None = None,
        *,
        headers: HeaderSpec | None = None,
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> Response:
        """Answer a request the server sent us; retransmissions of it get the same answer."""
        if to_tag is None and req.to.tag is None:
            to_tag = token(4)
        resp = make_response(req, status, reason, to_tag=to_tag)
        if headers is not None:
            items = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in items:
                if value is not None:
                    resp.headers.add(name, value)
        resp.body = body
        data = resp.encode()
        with self._lock:
            self._answers[(req.top_via.branch or "", req.method)] = data
        self.send_raw(data, self._answer_to(req))
        return resp

    def _answer_to(self, req: Request) -> tuple[str, int] | None:
        """An unconnected socket answers the node that sent the request: its Via sent-by
        (RFC 3261 §18.2.2), since several nodes send to this client."""
        if self._connected:
            return None
        via = req.top_via
        return (via.host.strip("[]"), via.port or 5060)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True when the server closed our TCP connection within `timeout`."""
        return self.closed.wait(timeout)

    def wait_raw(self, predicate: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
        """Wait until the received byte stream satisfies `predicate`; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(bytes(self.raw_received)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SipTimeout(
                        f"condition on received bytes not met: {bytes(self.raw_received)[:200]!r}"
                    )
                self._cond.wait(remaining)
            return bytes(self.raw_received)

    def _read_loop(self) -> None:
        tls = self.transport == "tls"
        while not self._stopping:
            if tls and not self.sock.pending():  # type: ignore[attr-defined]
                try:
                    readable, _, _ = select.select([self.sock], [], [], 0.2)
                except (OSError, ValueError):
                    break  # closed under us
                if not readable:
                    continue
            try:
                # One SSL object must never be read and written by two threads at once
                # (OpenSSL): a TLS read here and a send from the test thread take turns.
                # Without it a fresh connection's first request, written while this thread
                # read the server's TLS 1.3 session tickets, was lost now and then under load.
                with self._tls_lock:
                    data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                if self.transport == "udp":
                    continue  # ICMP port unreachable: the server is down (maybe restarting)
                break
            except OSError:
                break  # RST from the server, or our own close()
            if self._stream and not data:
                break
            self._on_data(data)
        if self._stream:
            with self._cond:
                self.closed.set()
                self._cond.notify_all()

    def _on_data(self, data: bytes) -> None:
        with self._cond:
            self.raw_received += data
            self._cond.notify_all()
        if self.transport == "udp":
            self._on_message(data)
            return
        # A lone CRLF from the server is a pong (RFC 5626 §4.4.1); the framer would hold it
        # back waiting for a possible second CRLF, so count pongs before framing.
        if (
            self._framer.buffered == 0
            and data.startswith(b"\r\n")
            and not data.startswith(b"\r\n\r\n")
        ):
            with self._cond:
                self.pongs += 1
                self._cond.notify_all()
            data = data[2:]
        try:
            items = self._framer.feed(data)
        except ParseError as exc:
            with self._cond:
                self.errors.append((data, f"framing: {exc.reason}"))
            return
        for item in items:
            if isinstance(item, KeepAlivePing):
                with contextlib.suppress(OSError):
                    self.send_raw(b"\r\n")  # the server pinged us
            else:
                self._on_message(item)

    def _on_message(self, data: bytes) -> None:
        try:
            msg = parse_message(data)
        except ParseError as exc:
            with self._cond:
                self.errors.append((data, exc.reason))
                self._cond.notify_all()
            return
        if isinstance(msg, Response):
            with self._cond:
                self.responses_seen.append(msg)
                self._responses.append(msg)
                self._cond.notify_all()
            return
        try:
            key = (msg.top_via.branch or "", msg.method)
        except ParseError as exc:
            with self._cond:
                self.errors.append((data, exc.reason))
            return
        with self._cond:
            answer = self._answers.get(key)
            duplicate = key in self._seen_requests
            self._seen_requests.add(key)
            if not duplicate:
                self.requests_seen.append(msg)
                self._requests.append(msg)
                self._cond.notify_all()
        with contextlib.suppress(OSError):  # the connection may be going away under us
            if answer is not None:
                self.send_raw(answer, self._answer_to(msg))  # a retransmission of a request we answered (§17.2.2)
            elif not duplicate and msg.method in self.auto_answer:
                self.reply(msg, 200)

    # --- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        self._stopping = True
        if self.transport in ("ws", "wss"):
            self._ws_close()
            return
        with contextlib.suppress(OSError, ValueError):
            if self._stream:
                self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(2)
        self.sock.close()

    def __enter__(self) -> SipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_tcp(server: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A bare TCP connection to the server (for framing abuse)."""
    s = socket.create_connection(server, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def connection_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the peer closes (FIN or RST) `sock` within `timeout`; reads and drops data."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            if not sock.recv(65535):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True


# --------------------------------------------------------------------------------------------
# sipp

SCENARIOS = Path(__file__).parent / "scenarios"


def sipp_path() -> str | None:
    return shutil.which("sipp")


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    stats: dict[str, str]
    output: str
    errors: str
    elapsed: float

    def describe(self) -> str:
        return (
            f"sipp exit code {self.returncode}, successful {self.successful}, failed {self.failed}\n"
            f"--- sipp errors ---\n{self.errors[-4000:]}\n--- sipp output (tail) ---\n{self.output[-2000:]}"
        )


def run_sipp(
    sipp: str,
    scenario: str | Path,
    server: tuple[str, int],
    workdir: Path,
    *,
    calls: int = 1,
    rate: float = 10,
    transport: str = "udp",
    max_concurrent: int | None = None,
    timeout: float = 30.0,
    recv_timeout_ms: int = 5000,
    domain: str = DEFAULT_DOMAIN,
    service: str = "alice",
    extra_args: Sequence[str] = (),
) -> SippResult:
    """Run a sipp scenario against `server` to completion and collect its verdict and counts.

    sipp writes its files (error trace, statistics CSV) into `workdir`, never next to the
    scenario. Exit code 0 means every call succeeded; the counts come from the CSV statistics
    (``SuccessfulCall(C)`` / ``FailedCall(C)``), not from sipp's screen.
    """
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS / path
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{path.stem}-{token(3)}"
    stats_file = workdir / f"{tag}-stats.csv"
    err_file = workdir / f"{tag}-errors.log"
    out_file = workdir / f"{tag}-out.log"
    args = [
        sipp,
        "-sf",
        str(path),
        f"{server[0]}:{server[1]}",
        "-i",
        LOCALHOST,
        "-p",
        str(free_port_pair() if transport == "tcp" else free_udp_port()),
        "-t",
        "t1" if transport == "tcp" else "u1",
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-key",
        "domain",
        domain,
        "-s",
        service,
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-recv_timeout",
        str(recv_timeout_ms),
        "-trace_err",
        "-error_file",
        str(err_file),
        "-trace_stat",
        "-stf",
        str(stats_file),
        "-fd",
        "1",
    ]
    if max_concurrent is not None:
        args += ["-l", str(max_concurrent)]
    args += list(extra_args)
    started = time.monotonic()
    with open(out_file, "wb") as out:
        try:
            proc = subprocess.run(
                args,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout + 30,
                check=False,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -9
    elapsed = time.monotonic() - started
    stats = _last_stats_row(stats_file)
    return SippResult(
        returncode=rc,
        successful=int(stats.get("SuccessfulCall(C)", "0") or 0),
        failed=int(stats.get("FailedCall(C)", "0") or 0),
        stats=stats,
        output=out_file.read_text(errors="replace"),
        errors=err_file.read_text(errors="replace") if err_file.exists() else "",
        elapsed=elapsed,
    )


def _last_stats_row(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {k: v for k, v in zip(header, last, strict=False) if k}


# --------------------------------------------------------------------------------------------
# Digest authentication, computed independently of the server's code (RFC 3261 §22.4, RFC 7616)

_DIGEST_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def parse_auth_params(header: str) -> dict[str, str]:
    """``Digest realm="x", nonce="y", stale=true`` -> {"scheme": "Digest", "realm": "x", ...}.

    Parameter names are lowercased; quotes (with backslash escapes) removed.
    """
    scheme, _, rest = header.strip().partition(" ")
    out = {"scheme": scheme}
    for m in re.finditer(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?', rest):
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[m.group(1).lower()] = value
    return out


def digest_authorization(
    challenge: str | Mapping[str, str],
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """The Authorization value answering one WWW-Authenticate `challenge` (qop=auth when offered).

    `challenge` is the header value or what `parse_auth_params` made of it.
    """
    ch = parse_auth_params(challenge) if isinstance(challenge, str) else challenge
    algorithm = ch.get("algorithm", "MD5")
    h = _DIGEST_HASHES[algorithm.upper()]

    def kd(text: str) -> str:
        return h(text.encode()).hexdigest()

    realm, nonce = ch["realm"], ch["nonce"]
    ha1 = kd(f"{username}:{realm}:{password}")
    ha2 = kd(f"{method}:{uri}")
    parts = [
        f'username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f"algorithm={algorithm}",
    ]
    qops = [q.strip() for q in ch.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = cnonce or token(8)
        ncs = f"{nc:08x}"
        response = kd(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', "qop=auth", f"nc={ncs}", f'cnonce="{cnonce}"']
    else:  # RFC 2069 compatibility form (RFC 3261 §22.4)
        parts.append(f'response="{kd(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in ch:
        parts.append(f'opaque="{ch["opaque"]}"')
    return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Presence documents, read with lxml in the test (not with the server's own codecs)

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
CPIM_PIDF_NS = "urn:ietf:params:xml:ns:cpim-pidf"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@dataclass
class PidfView:
    """What a watcher reads from a PIDF (or cpim-pidf) body."""

    entity: str
    tuples: list[tuple[str, str, str | None]]  # (id, basic, contact)
    notes: list[tuple[str, str | None]]  # every <note>/<dm:note>: (text, xml:lang)
    activities: set[str]  # RPID activity element names, anywhere in the document

    @property
    def basics(self) -> list[str]:
        return [basic for _, basic, _ in self.tuples]

    @property
    def contacts(self) -> list[str]:
        return [c for _, _, c in self.tuples if c]


def parse_pidf(body: bytes, ns: str = PIDF_NS) -> PidfView:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(body, parser)
    assert root.tag == f"{{{ns}}}presence", root.tag
    tuples = []
    for t in root.iter(f"{{{ns}}}tuple"):
        basic = t.findtext(f"{{{ns}}}status/{{{ns}}}basic")
        contact = t.findtext(f"{{{ns}}}contact")
        tuples.append(
            (t.get("id") or "", (basic or "").strip(), contact.strip() if contact else None)
        )
    notes = [
        ((n.text or ""), n.get(XML_LANG)) for n in root.iter(f"{{{ns}}}note", f"{{{DM_NS}}}note")
    ]
    activities = {
        etree.QName(child).localname
        for acts in root.iter(f"{{{RPID_NS}}}activities")
        for child in acts
        if etree.QName(child).localname != "note"
    }
    return PidfView(root.get("entity") or "", tuples, notes, activities)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true (returns True) or `timeout` passes (returns False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# REGISTER


def register(
    c: SipClient,
    *,
    user: str | None = None,
    contacts: list[str] | None = None,
    expires: int | None = None,
    call_id: str | None = None,
    cseq: int | None = None,
    headers: dict[str, str | None] | None = None,
) -> Response:
    """REGISTER `user`'s AOR (To = From = sip:user@domain), return the final response.

    `contacts` default to the client's own Contact; `contacts=[]` sends a query (RFC 3261 §10.2.3).
    """
    user = user or c.user
    aor = f"sip:{user}@{c.domain}"
    req = c.build_request(
        "REGISTER",
        f"sip:{c.domain}",
        from_=f"<{aor}>;tag={token(4)}",
        to=f"<{aor}>",
        call_id=call_id,
        cseq=cseq,
    )
    req.headers.remove("Contact")  # the client's default; ours follow
    for contact in [c.contact] if contacts is None else contacts:
        req.headers.add("Contact", contact)
    if expires is not None:
        req.headers.add("Expires", str(expires))
    for name, value in (headers or {}).items():
        if value is not None:
            req.headers.add(name, value)
    c.send(req)
    return c.wait_response(req)


def bindings(resp: Response) -> dict[str, int]:
    """Contact URI -> remaining expires, as the 200 lists them (RFC 3261 §10.3 step 8)."""
    out = {}
    for c in resp.contacts:
        expires = c.params.get("expires")
        assert expires is not None and expires.isdigit(), f"binding without expires: {c}"
        out[str(c.uri)] = int(expires)
    return out


def parse_xpidf(body: bytes) -> list[tuple[str, str | None, str | None]]:
    """An `application/xpidf+xml` body -> [(status, msnsubstatus, address uri)] per address.

    The document's DOCTYPE names a DTD by public id; it is neither loaded nor resolved here.
    """
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(body, parser)
    assert root.tag == "presence", root.tag
    out = []
    for address in root.iter("address"):
        status = address.find("status")
        sub = address.find("msnsubstatus")
        out.append(
            (
                status.get("status", "") if status is not None else "",
                sub.get("substatus") if sub is not None else None,
                address.get("uri"),
            )
        )
    return out


def xpidf_presentity(body: bytes) -> str | None:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    el = etree.fromstring(body, parser).find("presentity")
    return None if el is None else el.get("uri")


def finish_servers(servers: list[ServerProcess]) -> None:
    """Stop every still-running server cleanly; a crash or unclean exit fails the test (the
    fixtures' teardown: tests/integration and tests/cluster)."""
    import pytest  # only the fixtures call this; the bench scripts import the harness too

    problems: list[str] = []
    for srv in servers:
        try:
            if srv.running:
                srv.stop()
        except ServerError as exc:
            problems.append(str(exc))
        finally:
            srv.close()
        if not srv.allow_tracebacks and srv.tracebacks():
            shown = "\n".join(line[:2000] for line in srv.tracebacks()[:3])
            problems.append(f"server logged a traceback ({srv.root}):\n{shown}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
