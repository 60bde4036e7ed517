"""Command-line entry point: ``presenced [--config FILE] [--check-config FILE] [--log-level L]``,
and ``presenced ctl [--config FILE] COMMAND`` (the admin API's client, presenced/admin/ctl.py),
and ``presenced ping ...`` (presenced/ping.py: one OPTIONS, the health check).

Exit codes: 0 normal stop or config ok, 1 --check-config found a problem, 2 bad usage or a bad
--config (argparse uses 2 for usage errors too), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from presenced import __version__
from presenced.config import Config, ConfigError, load_config, load_default_config

LOG_LEVELS = ("debug", "info", "warning", "error")
# Set by the supervisor in each worker's environment: the worker's index (0, 1, ...).
WORKER_ENV = "PRESENCED_WORKER"
# A worker that dies this many times within RESTART_WINDOW seconds stops the whole server.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class OneLineFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123Z INFO presenced.server message`` — one line per event.

    Newlines inside a message or traceback are escaped so that every event stays one grep-able
    line, and a log line cannot be forged by a peer-controlled string containing CRLF.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" in text or "\r" in text:
            text = text.replace("\r", "\\r").replace("\n", "\\n")
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the fields a line carries
    as keys (`record.presenced_fields`: a request line's method, aor, status, call_id, ...);
    a traceback goes in "exception". For log shippers ([server] log_format = "json")."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "presenced_fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(str(key), value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        # ensure_ascii: every byte a peer sent stays escaped, each object stays one line
        return json.dumps(out, default=str)


def configure_logging(level: str, stream: TextIO | None = None, fmt: str = "text") -> None:
    """Send every log record at `level` or above to `stream` (stderr), one line per record:
    the text format, or with `fmt="json"` one JSON object per line."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else OneLineFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="presenced",
        description="SIP presence server (SUBSCRIBE/NOTIFY, PUBLISH, registrar, XMPP gateway).",
        epilog="presenced ctl --help: ask a running server through its admin API.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (default: the built-in configuration)",
    )
    group.add_argument(
        "--check-config",
        metavar="FILE",
        help='validate FILE, print "FILE: ok" and exit 0, or print the problem and exit 1',
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="override server.log_level from the configuration",
    )
    parser.add_argument("--version", action="version", version=f"presenced {__version__}")
    return parser


def supervise(argv: Sequence[str], workers: int, log: logging.Logger) -> int:
    """`[server] workers` > 1: run that many `presenced` processes on the same addresses
    (SO_REUSEPORT), each its own cluster node, and watch them. SIGTERM/SIGINT stop them all.
    A worker that dies is started again (same node id: it takes back the dialogs it still
    owns, the others having adopted the rest); one dying MAX_RESTARTS times within
    RESTART_WINDOW seconds stops every worker and the supervisor exits 1."""
    def spawn(index: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ, **{WORKER_ENV: str(index)})
        return subprocess.Popen([sys.executable, "-m", "presenced", *argv], env=env)

    stopping = False
    failed = False

    def stop(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    procs = {i: spawn(i) for i in range(workers)}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("supervising %d workers: %s", workers, ", ".join(str(p.pid) for p in procs.values()))
    deaths: list[float] = []
    while not stopping:
        time.sleep(0.2)
        for i, p in list(procs.items()):
            if stopping or p.poll() is None:
                continue
            now = time.monotonic()
            deaths = [d for d in deaths if now - d < RESTART_WINDOW] + [now]
            if len(deaths) >= MAX_RESTARTS:
                log.error("worker %d exited with %s; too many restarts, stopping", i, p.returncode)
                failed = True
                stop()
                break
            log.error("worker %d exited with %s; starting it again", i, p.returncode)
            procs[i] = spawn(i)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    log.info("all workers stopped")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = raw_argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ctl"]:  # presenced ctl ...: a client of the admin API (admin/ctl.py)
        from presenced.admin.ctl import main as ctl_main

        return ctl_main(argv[1:])
    if argv[:1] == ["rules"]:  # the operator's presence rules (presenced/rules_cli.py)
        from presenced.rules_cli import main as rules_main

        return rules_main(argv[1:])
    if argv[:1] == ["ping"]:  # `presenced ping ...`: the health check (presenced/ping.py)
        from presenced.ping import main as ping_main

        return ping_main(argv[1:])
    args = build_parser().parse_args(argv)

    if args.check_config is not None:
        try:
            load_config(args.check_config)
        except ConfigError as exc:
            print(f"{args.check_config}: {exc}", file=sys.stderr)
            return 1
        print(f"{args.check_config}: ok")
        return 0

    config: Config
    try:
        config = load_config(args.config) if args.config else load_default_config()
    except ConfigError as exc:
        print(f"{args.config or 'default config'}: {exc}", file=sys.stderr)
        return 2

    configure_logging(args.log_level or config.server.log_level, fmt=config.server.log_format)
    log = logging.getLogger("presenced")
    log.info(
        "presenced %s starting config=%s listen=%s domains=%s storage=%s",
        __version__,
        args.config or "<built-in>",
        ",".join(config.server.listen),
        ",".join(config.server.domains),
        config.storage.backend,
    )

    worker_text = os.environ.get(WORKER_ENV)
    if config.server.workers > 1 and worker_text is None:
        return supervise(raw_argv, config.server.workers, log)
    worker = int(worker_text) if worker_text is not None and config.server.workers > 1 else None

    # Imported here so that config checking never pulls in the network stack.
    from presenced.server import run

    try:
        result = run(config, args.config, worker)
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    return result if isinstance(result, int) else 0
