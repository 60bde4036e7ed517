"""``presenced ping [--config FILE] [--timeout S] [TRANSPORT:HOST:PORT]``: is the server up?

Sends one OPTIONS (RFC 3261 §11) to a presenced listener and waits for its answer: the
container's HEALTHCHECK and a quick check for operators. A live process is not a healthy
server; an answer through the same socket, parser, transaction layer and event loop that
serve SIP is. The target is the first listener of the configuration (a wildcard address is
asked on the loopback of its family) unless one is named. Over UDP the request is resent
with Timer E's doubling (RFC 3261 §17.1.2.2) until `--timeout`.

Exit status: 0 when a 2xx came back, 1 otherwise (no answer in time, an error status, an
unreadable configuration), 2 for bad usage. Prints one line either way.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket
import sys
import time
from collections.abc import Sequence

from presenced.config import (
    Config,
    ConfigError,
    ListenAddress,
    load_config,
    load_default_config,
    parse_listen,
)
from presenced.sip.errors import ParseError
from presenced.sip.framing import KeepAlivePing, StreamFramer
from presenced.sip.message import Response, parse_message

T1 = 0.5
T2 = 4.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="presenced ping",
        description="Send one OPTIONS to a presenced listener; exit 0 when it answers 2xx.",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="configuration naming the listeners and domain (default: built-in)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="how long to wait for the answer (default: 3)")
    parser.add_argument("target", nargs="?", metavar="TRANSPORT:HOST:PORT",
                        help='e.g. "udp:127.0.0.1:5060" (default: the first configured listener)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config) if args.config else load_default_config()
    except ConfigError as exc:
        print(f"{args.config or 'default config'}: {exc}", file=sys.stderr)
        return 1
    try:
        target = parse_listen(args.target) if args.target else _first_listener(config)
    except ValueError as exc:
        print(f"presenced ping: {args.target}: {exc}", file=sys.stderr)
        return 2
    shown = str(target)
    try:
        resp, elapsed = ping(target, config.server.domains[0], args.timeout)
    except (OSError, ParseError) as exc:
        print(f"{shown}: no answer ({exc})")
        return 1
    if resp is None:
        print(f"{shown}: no answer within {args.timeout:g} s")
        return 1
    print(f"{shown}: {resp.status} {resp.reason} in {elapsed * 1000:.1f} ms")
    return 0 if 200 <= resp.status < 300 else 1


def _first_listener(config: Config) -> ListenAddress:
    a = config.server.listen_addresses[0]
    try:
        ip = ipaddress.ip_address(a.host)
    except ValueError:
        return a
    if ip.is_unspecified:  # 0.0.0.0 / [::] listen everywhere: ask the loopback
        return ListenAddress(a.transport, "::1" if ip.version == 6 else "127.0.0.1", a.port)
    return a


def options_request(domain: str, transport: str, local: tuple[str, int]) -> tuple[bytes, str]:
    """An OPTIONS for `domain` sent from `local`; returns (bytes, Call-ID)."""
    host = f"[{local[0]}]" if ":" in local[0] else local[0]
    call_id = f"{secrets.token_hex(8)}@presenced-ping"
    text = (
        f"OPTIONS sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {host}:{local[1]}"
        f";branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:ping@{domain}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{domain}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "User-Agent: presenced-ping\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return text.encode(), call_id


def ping(target: ListenAddress, domain: str, timeout: float) -> tuple[Response | None, float]:
    """The final answer to one OPTIONS (None when none came in `timeout`) and how long it took."""
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    start = time.monotonic()
    deadline = start + timeout
    if target.transport == "udp":
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((target.host, target.port))
            data, call_id = options_request(domain, "udp", sock.getsockname()[:2])
            interval = T1
            while time.monotonic() < deadline:
                sock.send(data)
                resend_at = min(deadline, time.monotonic() + interval)
                interval = min(2 * interval, T2)
                while (left := resend_at - time.monotonic()) > 0:
                    sock.settimeout(left)
                    try:
                        raw = sock.recv(65535)
                    except TimeoutError:
                        break
                    except ConnectionRefusedError:  # ICMP: nothing listens there (yet)
                        time.sleep(min(0.05, max(0.0, left)))
                        break
                    resp = _final(raw, call_id)
                    if resp is not None:
                        return resp, time.monotonic() - start
        return None, time.monotonic() - start
    with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
        data, call_id = options_request(domain, "tcp", sock.getsockname()[:2])
        sock.sendall(data)
        framer = StreamFramer(65536)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            for item in framer.feed(chunk):
                if isinstance(item, KeepAlivePing):
                    continue
                resp = _final(item, call_id)
                if resp is not None:
                    return resp, time.monotonic() - start
    return None, time.monotonic() - start


def _final(raw: bytes, call_id: str) -> Response | None:
    try:
        msg = parse_message(raw)
    except ParseError:
        return None
    if not isinstance(msg, Response) or msg.status < 200:
        return None
    return msg if msg.headers.get("Call-ID") == call_id else None
