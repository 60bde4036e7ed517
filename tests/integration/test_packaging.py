"""Packaging: the systemd unit (systemd-analyze verify; READY=1 over $NOTIFY_SOCKET from the
real server), `presenced ping` (the health check), and the Containerfile's own commands run
on this machine (no container engine here: its install steps run into a scratch venv, its
ENTRYPOINT/CMD start the server, its HEALTHCHECK asks it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import ServerProcess, free_port_pair, free_udp_port, wait_until

Factory = Callable[..., ServerProcess]
ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "presenced.service"
CONTAINERFILE = ROOT / "Containerfile"
EXAMPLE = ROOT / "packaging" / "presenced.toml"
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        if _IN_CI:
            pytest.fail(f"{name} is not installed (apt-get install {package}); CI must run this")
        pytest.skip(f"{name} is not installed")
    return path


# --- systemd --------------------------------------------------------------------------------


def _unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_is_hardened_and_type_notify() -> None:
    s = _unit_settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["ExecStart"] == ["/opt/presenced/bin/presenced --config /etc/presenced/presenced.toml"]
    assert s["User"] == ["presenced"] and s["StateDirectory"] == ["presenced"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    # The example config keeps its state where the unit gives it a writable directory.
    assert 'data_dir = "/var/lib/presenced"' in EXAMPLE.read_text()


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "systemd")
    # verify checks that ExecStart's program exists: point it at this machine's install.
    program = Path(sys.executable).with_name("presenced")
    assert program.exists(), f"{program}: pip install -e . puts the presenced script there"
    unit = tmp_path / "presenced.service"
    unit.write_text(UNIT.read_text().replace("/opt/presenced/bin/presenced", str(program)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    # Unknown keys and bad values are only warnings (exit 0): any output fails the test too.
    assert result.returncode == 0, result.stderr + result.stdout
    assert (result.stderr + result.stdout).strip() == ""


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    short = tempfile.mkdtemp(prefix="sdn", dir="/tmp")  # sun_path holds 108 bytes
    path = os.path.join(short, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    try:
        yield path, sock
    finally:
        sock.close()
        shutil.rmtree(short, ignore_errors=True)


def _messages(sock: socket.socket, until: str) -> list[str]:
    seen: list[str] = []
    while not any(until in m.split("\n") for m in seen):
        seen.append(sock.recv(4096).decode())
    return seen


def test_ready_is_sent_once_the_sockets_are_bound_and_stopping_on_sigterm(
    server_factory: Factory, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    srv = server_factory(env={"NOTIFY_SOCKET": path})
    (ready,) = _messages(sock, "READY=1")
    fields = ready.split("\n")
    assert fields[0] == "READY=1"
    # The status names the bound ports: it can only be written once they are bound.
    assert f"STATUS=serving on udp:127.0.0.1:{srv.port}, tcp:127.0.0.1:{srv.port}" in fields
    srv.stop()
    assert _messages(sock, "STOPPING=1")[-1] == "STOPPING=1"


def test_ready_goes_to_an_abstract_notify_socket(server_factory: Factory) -> None:
    name = f"presenced-test-{os.getpid()}-{free_udp_port()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(15)
        server_factory(env={"NOTIFY_SOCKET": "@" + name})
        assert _messages(sock, "READY=1")[0].startswith("READY=1\n")


def test_without_a_notify_socket_nothing_is_sent_and_the_server_runs(server: ServerProcess) -> None:
    server.assert_running()
    assert "NOTIFY_SOCKET" not in server.log_text()


# --- presenced ping -----------------------------------------------------------------------------


def _ping(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "presenced", "ping", *args], env=env,
                          capture_output=True, text=True, timeout=30)


def test_ping_answers_0_with_the_status_over_udp_and_tcp_and_1_when_nobody_answers(
    server: ServerProcess,
) -> None:
    by_config = _ping("--config", str(server.config_path))
    assert by_config.returncode == 0, by_config
    assert by_config.stdout.startswith(f"udp:127.0.0.1:{server.port}: 200 OK in "), by_config
    tcp = _ping("--config", str(server.config_path), f"tcp:127.0.0.1:{server.port}")
    assert tcp.returncode == 0 and ": 200 OK in " in tcp.stdout, tcp
    nobody = _ping("--timeout", "1", f"udp:127.0.0.1:{free_udp_port()}")
    assert nobody.returncode == 1 and "no answer" in nobody.stdout, nobody
    refused = _ping("--timeout", "1", f"tcp:127.0.0.1:{free_port_pair()}")
    assert refused.returncode == 1 and "no answer" in refused.stdout, refused
    assert _ping("udp:nonsense").returncode == 2


# --- the Containerfile ------------------------------------------------------------------------------


def containerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        word, _, rest = whole.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.mark.timeout(900)
def test_containerfile_commands_install_run_and_health_check_the_server(tmp_path: Path) -> None:
    steps = containerfile_instructions(CONTAINERFILE.read_text())
    assert steps[0] == ("FROM", "debian:12-slim")
    # The image's paths, here under tmp_path.
    image = {"/opt/presenced": tmp_path / "opt" / "presenced", "/src": tmp_path / "src",
             "/etc/presenced": tmp_path / "etc" / "presenced",
             "/var/lib/presenced": tmp_path / "var" / "lib" / "presenced"}

    def here(text: str) -> str:
        """`text` with the image's absolute paths (at the start of a word) moved here."""
        for inside, outside in image.items():
            text = re.sub(r"(?<![^\s\"'=])" + re.escape(inside) + r"(?=[/\s\"']|$)",
                          str(outside).replace("\\", "\\\\"), text)
        return text

    healthcheck: list[str] | None = None
    entrypoint: list[str] = []
    cmd: list[str] = []
    ran: list[str] = []
    for word, args in steps[1:]:
        if word == "RUN" and "apt-get" in args:
            # System packages: present on this Debian 12 machine already (not reinstalled).
            for pkg in ("python3", "python3-venv"):
                assert pkg in args.split()
            continue
        if word == "RUN" and "useradd" in args:
            continue  # a system user is not created on the test machine (the test runs as is)
        if word == "RUN":
            subprocess.run(["bash", "-euo", "pipefail", "-c", here(args)], check=True,
                           timeout=600)
            ran.append(args)
        elif word == "COPY":
            *sources, dest = args.split()
            target = Path(here(dest))
            for src in sources:
                origin = ROOT / src
                into = target / origin.name if dest.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                if origin.is_dir():
                    shutil.copytree(origin, into, dirs_exist_ok=True)
                else:
                    shutil.copy(origin, into)
        elif word == "HEALTHCHECK":
            options, _, rest = args.partition(" CMD ")
            assert "--interval=" in options and "--timeout=" in options
            healthcheck = [here(a) for a in _exec_form(rest)]
        elif word == "ENTRYPOINT":
            entrypoint = [here(a) for a in _exec_form(args)]
        elif word == "CMD":
            cmd = [here(a) for a in _exec_form(args)]
    assert any("pip install" in r for r in ran), ran
    assert healthcheck is not None and healthcheck[1] == "ping", healthcheck
    assert Path(entrypoint[0]).exists(), entrypoint

    # The image's configuration, on a free loopback port with a users file as the operator mounts.
    config = image["/etc/presenced"] / "presenced.toml"
    text = config.read_text()
    port = free_port_pair()
    for old, new in (('"udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"',
                      f'"udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"'),
                     ('"/var/lib/presenced"', json.dumps(str(image["/var/lib/presenced"])))):
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)
    (config.parent / "users.txt").write_text("alice:plain:secret\n")
    image["/var/lib/presenced"].mkdir(parents=True)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log = (tmp_path / "container.log").open("wb")
    proc = subprocess.Popen(entrypoint + cmd, cwd=image["/var/lib/presenced"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def healthy() -> bool:
            return subprocess.run(healthcheck, env=env, capture_output=True,
                                  timeout=30).returncode == 0
        assert wait_until(healthy, 30, interval=0.5), (tmp_path / "container.log").read_text()
        # The installed program is the image's own, not this checkout's sources.
        assert str(image["/opt/presenced"]) in entrypoint[0]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, (tmp_path / "container.log").read_text()
        log.close()
    unhealthy = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=30)
    assert unhealthy.returncode == 1, unhealthy
    assert "Traceback" not in (tmp_path / "container.log").read_text()


# --- the wheel's core: compiled where it can be, else pure (setup.py) ---------------------------


def _build_wheel(tmp_path: Path, env_changes: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`pip wheel .` of a copy of the checkout, with this venv's setuptools, wheel and mypy
    (no build isolation: the decision under test is setup.py's, not pip's downloads)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PRESENCED_MYPYC")}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(tree)],
        env=env, capture_output=True, text=True, timeout=300)


def test_without_a_working_c_compiler_the_wheel_is_pure_python(tmp_path: Path) -> None:
    # CC=false: a compiler that fails on everything, as where no C toolchain works.
    built = _build_wheel(tmp_path, {"CC": "false"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = [p.name for p in (tmp_path / "dist").iterdir()]
    assert len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl"), wheels
    assert "building the pure-Python package: the C compiler failed on a probe" in (
        built.stdout + built.stderr)


def test_presenced_mypyc_1_fails_the_build_when_it_cannot_compile(tmp_path: Path) -> None:
    built = _build_wheel(tmp_path, {"CC": "false", "PRESENCED_MYPYC": "1"})
    assert built.returncode != 0
    assert "PRESENCED_MYPYC=1, but the compiled core cannot be built" in (
        built.stdout + built.stderr)
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_presenced_mypyc_0_builds_pure_python_without_running_mypyc(tmp_path: Path) -> None:
    built = _build_wheel(tmp_path, {"PRESENCED_MYPYC": "0"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels = [p.name for p in (tmp_path / "dist").iterdir()]
    assert len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl"), wheels
    assert "mypyc" not in built.stdout.lower().replace("presenced_mypyc", "")
