"""A headless baresip (Debian package `baresip`) for the integration tests.

    proc = BaresipProcess(binary, home, "127.0.0.1", modules, account)   # starts it
    proc.output()        # its log so far (-s: SIP trace), colours stripped
    proc.stop()

`baresip_binary(module)` is the fixture body: the path, a skip locally when baresip (or the named
module) is missing, a failure under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

MODULES = Path("/usr/lib/baresip/modules")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def baresip_binary(module: str | None = None) -> str:
    path = shutil.which("baresip")
    if path is None or not MODULES.is_dir() or (module and not (MODULES / module).exists()):
        if _IN_CI:
            pytest.fail("baresip is not installed (apt-get install baresip); CI must run this")
        pytest.skip("baresip is not installed")
    return path


def _free_baresip_port(host: str) -> int:
    """A port P where baresip can bind UDP and TCP on P and its built-in TLS transport on P+1
    (baresip 1.0 always adds TLS one port above `sip_listen`, with no way to turn it off)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t1, \
                        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t2:
                    t1.bind((host, port))
                    t2.bind((host, port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free for baresip on {host}")


class BaresipProcess:
    """One baresip process with its own config dir (`-f home -s -v`), listening on `host` at a
    port it picks; a start that loses the port to another process (the sockets close before
    baresip binds) is retried on another port."""

    def __init__(self, binary: str, home: Path, host: str, modules: Iterable[str],
                 account: str, contacts: str | None = None, extra_config: str = "") -> None:
        """`extra_config`: more config lines (e.g. `sip_cafile` for TLS)."""
        home.mkdir(parents=True, exist_ok=True)
        modules = tuple(modules)
        (home / "accounts").write_text(account + "\n")
        if contacts is not None:
            (home / "contacts").write_text(contacts + "\n")
        self.log_path = home / "baresip.out"
        for _attempt in range(5):
            self.port = _free_baresip_port(host)
            (home / "config").write_text(
                "poll_method epoll\n"
                f"sip_listen {host}:{self.port}\n"
                f"module_path {MODULES}\n"
                "module stdio.so\n"
                + "".join(f"module_app {m}\n" for m in modules)
                + "audio_player aufile,/dev/null\naudio_source aufile,/dev/null\n"
                + extra_config
            )
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
            self.proc = subprocess.Popen(
                [binary, "-f", str(home), "-s", "-v"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            )
            if self._started():
                return
            self.stop()
        raise RuntimeError("baresip could not bind a port in 5 attempts:\n" + self.output())

    def _started(self, timeout: float = 10.0) -> bool:
        """True once baresip says it is ready; False if it failed to bind its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if "Address already in use" in out:
                return False
            if "baresip is ready" in out or self.proc.poll() is not None:
                return True  # a start that failed otherwise shows in the test's own assertion
            time.sleep(0.02)
        return True

    def output(self) -> str:
        return _ANSI.sub("", self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
