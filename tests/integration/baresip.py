"""A headless baresip (Debian package `baresip`) for the integration tests.

    proc = BaresipProcess(binary, home, config_lines, accounts_line)   # starts it
    proc.output()        # its log so far (-s: SIP trace), colours stripped
    proc.stop()

`baresip_binary(module)` is the fixture body: the path, a skip locally when baresip (or the named
module) is missing, a failure under CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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


class BaresipProcess:
    """One baresip process with its own config dir (`-f home -s -v`)."""

    def __init__(self, binary: str, home: Path, listen: str, modules: Iterable[str],
                 account: str, contacts: str | None = None, extra_config: str = "") -> None:
        """`extra_config`: more config lines (e.g. `sip_cafile` for TLS)."""
        home.mkdir(parents=True, exist_ok=True)
        (home / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen {listen}\n"
            f"module_path {MODULES}\n"
            "module stdio.so\n"
            + "".join(f"module_app {m}\n" for m in modules)
            + "audio_player aufile,/dev/null\naudio_source aufile,/dev/null\n"
            + extra_config
        )
        (home / "accounts").write_text(account + "\n")
        if contacts is not None:
            (home / "contacts").write_text(contacts + "\n")
        self.log_path = home / "baresip.out"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "-f", str(home), "-s", "-v"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )

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
