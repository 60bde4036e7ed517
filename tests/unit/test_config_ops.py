"""The operations keys: [hep], [server] log_requests and log_format, and the JSON log
formatter they select (cli.JsonFormatter)."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from presenced.cli import JsonFormatter, OneLineFormatter
from presenced.config import ConfigError, parse_config

BASE = Path("/srv/presenced")


def test_hep_is_off_and_request_logs_are_off_in_text_by_default() -> None:
    config = parse_config("", BASE)
    assert config.hep is None
    assert (config.server.log_requests, config.server.log_format) == (False, "text")


def test_hep_section_defaults_and_masked_password() -> None:
    config = parse_config('[hep]\naddress = "127.0.0.1:9060"\npassword = "s3cret"\n', BASE)
    assert config.hep is not None
    assert config.hep.target == ("127.0.0.1", 9060)
    assert config.hep.capture_id == 2001
    assert "s3cret" not in repr(config)
    six = parse_config('[hep]\naddress = "[::1]:9060"\ncapture_id = 7\n', BASE).hep
    assert six is not None and six.target == ("::1", 9060) and six.capture_id == 7


@pytest.mark.parametrize(("text", "key"), [
    ('[hep]\naddress = "127.0.0.1"\n', "hep.address"),
    ('[hep]\naddress = "::1:9060"\n', "hep.address"),
    ("[hep]\ncapture_id = 1\n", "hep.address"),  # required
    ('[hep]\naddress = "127.0.0.1:9060"\ncapture_id = -1\n', "hep.capture_id"),
    ('[hep]\naddress = "127.0.0.1:9060"\nport = 1\n', "hep.port"),  # unknown key
    ('[server]\nlog_format = "xml"\n', "server.log_format"),
    ('[server]\nlog_requests = "yes"\n', "server.log_requests"),
])
def test_bad_operations_keys_are_refused_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, BASE)
    assert err.value.key == key, str(err.value)


def _record(msg: str, *args: object, fields: dict[str, object] | None = None,
            exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom\r\nforged line")
        except ValueError:
            info = sys.exc_info()
    record = logging.LogRecord("presenced.requests", logging.INFO, __file__, 1, msg, args, info)
    if fields is not None:
        record.presenced_fields = fields
    return record


def test_json_lines_carry_time_level_logger_message_and_the_fields_as_keys() -> None:
    fields = {"method": "REGISTER", "aor": "a@b", "status": 200, "call_id": "x\r\ny"}
    line = JsonFormatter().format(_record("REGISTER %s", "a@b", fields=fields))
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["level"] == "INFO" and obj["logger"] == "presenced.requests"
    assert obj["message"] == "REGISTER a@b" and obj["time"].endswith("Z")
    assert obj["status"] == 200 and obj["call_id"] == "x\r\ny"  # escaped, not a new line
    # A field never overwrites the four standard keys.
    clash = json.loads(JsonFormatter().format(_record("m", fields={"message": "forged"})))
    assert clash["message"] == "m"


def test_json_and_text_lines_keep_a_traceback_on_one_line() -> None:
    obj = json.loads(JsonFormatter().format(_record("failed", exc=True)))
    assert "ValueError: boom" in obj["exception"]
    text = OneLineFormatter().format(_record("failed", exc=True))
    assert "\n" not in text and "\r" not in text


def test_configure_logging_selects_the_json_formatter() -> None:
    from presenced.cli import configure_logging

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("info", stream, fmt="json")
        logging.getLogger("presenced.test").info("hello %s", "there")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert json.loads(stream.getvalue())["message"] == "hello there"
