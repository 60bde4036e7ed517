"""[admin]: listen, token or token_file (exactly one; a token file readable by everyone is
refused, like a users file), metrics_public; the token never shows in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from presenced.config import ConfigError, parse_config

TOKEN = "a-long-enough-admin-token"


def admin(tmp_path: Path, body: str) -> str:
    return f'[admin]\nlisten = "127.0.0.1:8080"\n{body}\n'


def error_of(text: str, base: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base)
    return str(info.value)


def test_admin_token_inline_and_defaults(tmp_path: Path) -> None:
    cfg = parse_config(admin(tmp_path, f'token = "{TOKEN}"'), tmp_path)
    assert cfg.admin is not None
    assert cfg.admin.address == ("127.0.0.1", 8080)
    assert cfg.admin.read_token() == TOKEN
    assert cfg.admin.metrics_public is False
    assert TOKEN not in repr(cfg) and "'***'" in repr(cfg.admin)


def test_admin_needs_exactly_one_of_token_and_token_file(tmp_path: Path) -> None:
    assert error_of(admin(tmp_path, ""), tmp_path).startswith("admin: must set exactly one")
    (tmp_path / "t").write_text(TOKEN)
    (tmp_path / "t").chmod(0o600)
    both = admin(tmp_path, f'token = "{TOKEN}"\ntoken_file = "t"')
    assert error_of(both, tmp_path).startswith("admin: must set exactly one")


def test_admin_token_too_short_is_refused(tmp_path: Path) -> None:
    assert error_of(admin(tmp_path, 'token = "short"'), tmp_path).startswith("admin.token: must be")


def test_admin_token_file_relative_private_and_first_line(tmp_path: Path) -> None:
    f = tmp_path / "admin.token"
    f.write_text(f"{TOKEN}\n# comment\n")
    f.chmod(0o640)
    cfg = parse_config(admin(tmp_path, 'token_file = "admin.token"'), tmp_path)
    assert cfg.admin is not None and cfg.admin.token_file == str(f)
    assert cfg.admin.read_token() == TOKEN


def test_admin_world_readable_token_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "admin.token"
    f.write_text(TOKEN)
    f.chmod(0o644)
    err = error_of(admin(tmp_path, 'token_file = "admin.token"'), tmp_path)
    assert err.startswith("admin.token_file:") and "readable by every user" in err


def test_admin_missing_token_file_names_the_key(tmp_path: Path) -> None:
    err = error_of(admin(tmp_path, 'token_file = "nope"'), tmp_path)
    assert err.startswith("admin.token_file: cannot read")


def test_admin_unknown_key_and_bad_listen(tmp_path: Path) -> None:
    assert "admin.colour" in error_of(admin(tmp_path, f'token = "{TOKEN}"\ncolour = 1'), tmp_path)
    text = f'[admin]\nlisten = "nowhere"\ntoken = "{TOKEN}"\n'
    assert error_of(text, tmp_path).startswith("admin.listen:")
