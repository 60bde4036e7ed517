"""SIPVicious OSS (svmap, svwar, svcrack; `pip install sipvicious`) against the real server.

Issue 9, "Proof": the tools an attacker points at a SIP server first. The server runs with
`[auth]` and two users on 127.0.0.1; every tool is bound to 127.0.0.1, aimed at 127.0.0.1
only, and bounded in time.

- svmap must find the server (the tool works against us);
- svwar (REGISTER, OPTIONS, INVITE scans) must not tell the real users from made-up ones
  (finding 8: no user enumeration);
- svcrack must not find a password that comes after more than `[auth] max_failures` (5) wrong
  guesses from the same source (finding 4: the brute-force throttle). A control run with the
  right password first shows that svcrack does find it when nothing stops it.

svcrack 0.3.8 answers only the first challenge and knows only MD5; we offer SHA-256 first
(RFC 8760 §2.4: preferred first), which makes it crash before its first guess. A real
attacker picks the MD5 challenge, so the run below makes svcrack do the same (its
`getAuthHeader` is replaced by one that prefers the MD5 challenge) rather than test nothing.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ServerProcess

USERS = {"alice": "wonderland7", "bob": "builder42"}
MISSING = ["carol", "dave", "erin", "frank"]
TOOL_TIMEOUT = 90  # seconds per tool run; each finishes in a few seconds normally

# Runs one SIPVicious tool's main() in a fresh interpreter; argv[1] names the tool.
_RUNNER = r"""
import re, sys
tool = sys.argv.pop(1)
module = __import__("sipvicious." + tool, fromlist=["main"])
if tool == "svcrack":
    def md5_challenge(pkt):
        found = re.findall(r"(?im)^(?:www-authenticate|proxy-authenticate):[ \t]*([^\r\n]+)", pkt)
        md5 = [h for h in found if re.search(r"algorithm=MD5\b", h, re.I)]
        return (md5 or found or [None])[0]
    module.getAuthHeader = md5_challenge
sys.argv[0] = "sipvicious_" + tool
sys.exit(module.main())
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(tool: str, server: ServerProcess, home: Path, *args: str) -> str:
    """One tool run from its own 127.0.0.1 port to the server; returns stdout + stderr."""
    cmd = [sys.executable, "-c", _RUNNER, tool,
           "-b", "127.0.0.1", "-x", "127.0.0.1", "-P", str(_free_udp_port()),
           "-p", str(server.port), *args, "127.0.0.1"]
    env = {**os.environ, "HOME": str(home)}  # session files go to ~/.sipvicious
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env,
                          check=False)
    return proc.stdout + proc.stderr


def _table(output: str) -> dict[str, str]:
    """The rows of a SIPVicious result table: first column -> the rest."""
    rows: dict[str, str] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and line.lstrip().startswith("|") and cells[0] not in (
                "Extension", "SIP Device"):
            rows[cells[0]] = " | ".join(cells[1:])
    return rows


@pytest.fixture
def auth_server(server_factory) -> ServerProcess:
    return server_factory("sipvicious", storage="memory:", sections={"auth": {"users": USERS}})


def test_svmap_finds_the_server(auth_server: ServerProcess, tmp_path: Path) -> None:
    out = _run("svmap", auth_server, tmp_path)
    rows = _table(out)
    assert f"127.0.0.1:{auth_server.port}" in rows, out


@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS", "INVITE"])
def test_svwar_cannot_tell_real_users_from_missing_ones(
        auth_server: ServerProcess, tmp_path: Path, method: str) -> None:
    """RFC 3261 §22 lets a server challenge every request alike; whatever svwar reports, it
    must report the real users exactly as it reports users that do not exist."""
    names = [*USERS, *MISSING]
    wordlist = tmp_path / "extensions.txt"
    wordlist.write_text("\n".join(names) + "\n")
    out = _run("svwar", auth_server, tmp_path, "--domain", auth_server.domain, "-m", method,
               "-d", str(wordlist), "--force")
    assert "Traceback" not in out, out
    rows = _table(out)
    real = {name: rows.get(name) for name in USERS}
    missing = {name: rows.get(name) for name in MISSING}
    verdicts = set(real.values()) | set(missing.values())
    assert len(verdicts) == 1, f"svwar tells users apart ({method}): {rows}\n{out}"


def _crack(server: ServerProcess, home: Path, user: str, passwords: list[str]) -> str:
    wordlist = home / f"passwords-{user}-{len(passwords)}.txt"
    wordlist.write_text("\n".join(passwords) + "\n")
    return _run("svcrack", server, home, "--domain", server.domain, "-u", user,
                "-d", str(wordlist))


def test_svcrack_finds_nothing_once_it_has_failed_too_often(
        auth_server: ServerProcess, tmp_path: Path) -> None:
    # Control (bob): with the right password first, svcrack finds it -- the tool works here.
    control = _crack(auth_server, tmp_path, "bob", [USERS["bob"]])
    assert USERS["bob"] in _table(control).get("bob", ""), control
    # Attack (alice): 7 wrong guesses, then the right one. The throttle ([auth] max_failures,
    # 5 per source and user) must have refused her by then.
    wrong = [f"guess{i}" for i in range(7)]
    out = _crack(auth_server, tmp_path, "alice", [*wrong, USERS["alice"]])
    assert USERS["alice"] not in out, f"svcrack found alice's password:\n{out}"
    assert not re.search(r"\|\s*alice\s*\|", out), out
