"""The [auth] keys of issue 9: realms per served domain, users of other domains, the throttle."""

from __future__ import annotations

from pathlib import Path

import pytest

from presenced.config import ConfigError, parse_config

BASE = Path("/srv/presenced")
TWO = '[server]\ndomains = ["a.example", "B.Example"]\n'


def error_of(text: str, base: Path = BASE) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base)
    return str(info.value)


def test_throttle_defaults() -> None:
    auth = parse_config(TWO + "[auth.users]\nalice = 'x'\n", BASE).auth
    assert auth is not None
    assert (auth.max_failures, auth.max_failures_per_source, auth.lockout, auth.max_lockout) == (
        5, 20, 30, 3600
    )


def test_realm_must_be_a_served_domain() -> None:
    auth = parse_config(TWO + "[auth]\nrealm = 'B.EXAMPLE'\nusers = {alice = 'x'}\n", BASE).auth
    assert auth is not None and auth.realm == "b.example"
    message = error_of(TWO + "[auth]\nrealm = 'My Company'\nusers = {alice = 'x'}\n")
    assert message.startswith("auth.realm: must be one of server.domains")


def test_users_may_name_users_of_other_served_domains() -> None:
    auth = parse_config(TWO + "[auth.users]\nalice = 'x'\n'alice@b.example' = 'y'\n", BASE).auth
    assert auth is not None and set(auth.users) == {"alice", "alice@b.example"}
    message = error_of(TWO + "[auth.users]\n'alice@c.example' = 'y'\n")
    assert message == "auth.users.alice@c.example: domain is not one of server.domains"
    assert error_of(TWO + "[auth.users]\n'@b.example' = 'y'\n").startswith("auth.users: invalid")


def test_lockout_must_not_exceed_max_lockout() -> None:
    text = TWO + "[auth]\nusers = {alice = 'x'}\nlockout = 600\nmax_lockout = 60\n"
    assert error_of(text) == "auth.lockout: must be <= auth.max_lockout (60), got 600"
    assert error_of(TWO + "[auth]\nusers = {alice = 'x'}\nmax_failures = 0\n").startswith(
        "auth.max_failures"
    )


def test_users_file_user_of_an_unserved_domain_is_refused(tmp_path: Path) -> None:
    (tmp_path / "users").write_text("alice:plain:x\nbob@c.example:plain:y\n")
    message = error_of(TWO + "[auth]\nusers_file = 'users'\n", tmp_path)
    assert message == "auth.users_file: line 2: 'c.example' is not a served domain"


def test_auth_algorithms_are_ordered_and_validated() -> None:
    from presenced.config import ConfigError, parse_config

    base = '[server]\ndomains = ["example.com"]\n[auth]\nusers = {alice = "pw"}\n'
    cfg = parse_config(base + 'algorithms = ["MD5", "SHA-256"]\n', Path("/srv"))
    assert cfg.auth is not None and cfg.auth.algorithms == ("MD5", "SHA-256")
    assert parse_config(base, Path("/srv")).auth.algorithms == ("SHA-256", "MD5")  # type: ignore[union-attr]
    for bad in ('algorithms = []\n', 'algorithms = ["MD5", "MD5"]\n', 'algorithms = ["SHA-1"]\n'):
        with pytest.raises(ConfigError) as err:
            parse_config(base + bad, Path("/srv"))
        assert err.value.key is not None and err.value.key.startswith("auth.algorithms")
