"""The [xcap] section (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from presenced.config import ConfigError, parse_config

AUTH = '[auth]\nusers = { alice = "pw" }\n'


def test_xcap_is_off_by_default() -> None:
    assert parse_config("", Path("/tmp")).xcap is None


def test_xcap_defaults(tmp_path: Path) -> None:
    cfg = parse_config(AUTH + '[xcap]\nlisten = "127.0.0.1:8090"\n', tmp_path)
    assert cfg.xcap is not None
    assert cfg.xcap.address == ("127.0.0.1", 8090)
    assert (cfg.xcap.root, cfg.xcap.max_document_size, cfg.xcap.max_uri_length) == (
        "/xcap-root", 65536, 4096)


def test_xcap_needs_auth_unless_anonymous_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config('[xcap]\nlisten = "127.0.0.1:8090"\n', tmp_path)
    assert exc.value.key == "xcap"
    cfg = parse_config('[server]\nallow_anonymous = true\n[xcap]\nlisten = "127.0.0.1:8090"\n',
                       tmp_path)
    assert cfg.xcap is not None


@pytest.mark.parametrize(("body", "key"), [
    ('listen = "8090"', "xcap.listen"),
    ('listen = "127.0.0.1:8090"\nroot = "xcap-root"', "xcap.root"),
    ('listen = "127.0.0.1:8090"\nroot = "/xcap-root/"', "xcap.root"),
    ('listen = "127.0.0.1:8090"\nmax_document_size = 10', "xcap.max_document_size"),
    ('listen = "127.0.0.1:8090"\nmax_document_size = 1048576', "xcap.max_document_size"),
    ('listen = "127.0.0.1:8090"\nmax_uri_length = 10', "xcap.max_uri_length"),
    ('listen = "127.0.0.1:8090"\nbogus = 1', "xcap.bogus"),
])
def test_bad_xcap_keys_are_named(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(AUTH + "[xcap]\n" + body + "\n", tmp_path)
    assert exc.value.key == key, str(exc.value)
