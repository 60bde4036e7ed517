"""The command line: --check-config exit codes and messages, --help, bad --config, log format."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from presenced import __version__
from presenced.cli import configure_logging, main

GOOD = '[server]\nlisten = ["udp:127.0.0.1:5070"]\ndomains = ["example.com"]\n'
BAD = "[pa]\nmin_expires = -5\n"


def presenced(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "presenced", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=30,
    )


# --- as a real process ----------------------------------------------------------------------


def test_check_config_ok_exits_0(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text(GOOD)
    proc = presenced("--check-config", "good.toml", cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "good.toml: ok\n", "")


def test_check_config_bad_exits_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD)
    proc = presenced("--check-config", "bad.toml", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == "bad.toml: pa.min_expires: must be an integer >= 0\n"


def test_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[storage]\nurl = "mysql://x"\n')
    proc = presenced("--config", "bad.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        'bad.toml: storage.url: must be "memory:", "sqlite:///PATH" or '
        "\"redis://HOST[:PORT][/DB]\" (got 'mysql://x')\n"
    )


def test_help_works(tmp_path: Path) -> None:
    proc = presenced("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for option in ("--config", "--check-config", "--log-level", "--version"):
        assert option in proc.stdout


# --- in process (fast) ----------------------------------------------------------------------


def test_check_config_missing_file_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["--check-config", str(missing)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{missing}: cannot read {missing}: No such file or directory\n"


def test_check_config_reports_toml_syntax_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[server\n")
    assert main(["--check-config", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"{path}: invalid TOML: Expected ']' at the end of a table declaration "
        "(at line 1, column 8)\n"
    )


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["--config", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"{missing}: cannot read {missing}: No such file or directory\n"
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"presenced {__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "verbose"],
        ["--config", "a.toml", "--check-config", "a.toml"],
        ["--bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: presenced" in capsys.readouterr().err


# --- logging format -------------------------------------------------------------------------


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) (\S+) (.*)")


@pytest.mark.usefixtures("restore_root_logger")
def test_log_lines_are_time_level_logger_message() -> None:
    stream = io.StringIO()
    configure_logging("info", stream)
    logging.getLogger("presenced.transport.udp").info("bound %s", "udp:127.0.0.1:5060")
    logging.getLogger("presenced.x").debug("filtered out by level")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    m = LINE.fullmatch(lines[0])
    assert m is not None, lines[0]
    assert m.groups() == ("INFO", "presenced.transport.udp", "bound udp:127.0.0.1:5060")


@pytest.mark.usefixtures("restore_root_logger")
def test_multiline_messages_and_tracebacks_stay_on_one_line() -> None:
    stream = io.StringIO()
    configure_logging("debug", stream)
    log = logging.getLogger("presenced.sip")
    log.debug("peer sent %r", "INVITE\r\nX-Forged: 1")  # %r already escapes
    log.warning("raw %s", "line1\r\n2025-01-01T00:00:00.000Z ERROR forged")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert all(LINE.fullmatch(line) for line in lines)
    assert lines[1].endswith("raw line1\\r\\n2025-01-01T00:00:00.000Z ERROR forged")
    assert "handler failed\\nTraceback" in lines[2]
    assert "ValueError: boom" in lines[2]
