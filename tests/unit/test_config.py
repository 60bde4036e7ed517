"""Config loading: defaults, one-line errors naming the key, cross-field checks, secrets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import pytest

from presenced.config import (
    Config,
    ConfigError,
    ListenAddress,
    load_config,
    load_default_config,
    parse_config,
    parse_listen,
)

BASE = Path("/srv/presenced")


def error_of(text: str, base: Path = BASE) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults -------------------------------------------------------------------------------


def test_empty_file_gives_every_default() -> None:
    config = parse_config("", BASE)
    server = config.server
    assert server.listen == ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    assert server.listen_addresses == (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    assert server.domains == ("localhost",)
    assert server.max_message_size == 65536
    assert server.max_tcp_connections == 1024
    assert server.log_level == "info"
    assert server.data_dir == "/srv/presenced/presenced-data"


def test_pa_defaults() -> None:
    pa = parse_config("", BASE).pa
    assert (pa.default_expires, pa.min_expires, pa.max_expires) == (3600, 60, 86400)
    assert pa.max_subscriptions_per_watcher == 1000


def test_registrar_defaults() -> None:
    registrar = parse_config("", BASE).registrar
    assert (registrar.default_expires, registrar.min_expires, registrar.max_expires) == (
        3600,
        60,
        86400,
    )
    assert registrar.max_contacts_per_aor == 32


def test_storage_default_is_sqlite_inside_data_dir() -> None:
    config = parse_config("", BASE)
    assert config.storage.url == "sqlite:///presenced.db"
    assert config.storage.backend == "sqlite"
    assert config.storage_path() == Path("/srv/presenced/presenced-data/presenced.db")


def test_optional_sections_are_absent_by_default() -> None:
    config = parse_config("", BASE)
    assert (config.jabber, config.auth, config.routing, config.admin) == (None, None, None, None)


def test_jabber_defaults_for_separator_and_domains() -> None:
    config = parse_config(JABBER, BASE)
    assert config.jabber is not None
    assert config.jabber.separator == "*"
    assert config.jabber.domains == {}
    assert config.jabber.server_address == ("xmpp.example.com", 5347)


def test_auth_defaults_realm_to_first_domain_and_nonce_ttl() -> None:
    config = parse_config(
        '[server]\ndomains = ["Example.COM", "b.org"]\n[auth.users]\na = "x"\n', BASE
    )
    assert config.auth is not None
    assert config.auth.realm == "example.com"
    assert config.auth.nonce_ttl == 300
    assert config.auth.users_file is None


def test_embedded_default_toml_equals_builtin_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_default_config() == parse_config("", tmp_path)
    assert load_default_config().server.data_dir == str(tmp_path / "presenced-data")


def test_config_is_frozen() -> None:
    config = parse_config("", BASE)
    with pytest.raises(AttributeError):
        config.pa.min_expires = 1  # type: ignore[misc]


# --- values and path resolution -------------------------------------------------------------


def test_full_config_round_trips_values(tmp_path: Path) -> None:
    (tmp_path / "route.py").write_text("")
    path = tmp_path / "presenced.toml"
    path.write_text(
        """
[server]
listen = ["udp:0.0.0.0:5070", "tcp:[::1]:5071", "tcp:sip.example.com:0"]
allow_anonymous = true
domains = ["example.com"]
max_message_size = 4096
max_tcp_connections = 10
log_level = "debug"
data_dir = "state"

[pa]
default_expires = 600
min_expires = 0
max_expires = 600
max_subscriptions_per_watcher = 5

[registrar]
max_contacts_per_aor = 2

[storage]
url = "memory:"

[routing]
script = "route.py"

[admin]
listen = "[::1]:8080"
token = "an-admin-token-of-some-length"
"""
    )
    config = load_config(path)
    assert config.server.listen_addresses == (
        ListenAddress("udp", "0.0.0.0", 5070),
        ListenAddress("tcp", "::1", 5071),
        ListenAddress("tcp", "sip.example.com", 0),
    )
    assert config.server.log_level == "debug"
    assert config.server.data_dir == str(tmp_path / "state")
    assert (config.pa.default_expires, config.pa.min_expires, config.pa.max_expires) == (
        600,
        0,
        600,
    )
    assert config.registrar.max_contacts_per_aor == 2
    assert config.storage_path() is None
    assert config.storage.backend == "memory"
    assert config.routing is not None
    assert config.routing.script == str(tmp_path / "route.py")
    assert config.admin is not None
    assert config.admin.address == ("::1", 8080)


def test_load_config_resolves_relative_paths_against_the_file_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "p.toml").write_text('[server]\ndata_dir = "var"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/p.toml")
    assert config.server.data_dir == str(conf_dir / "var")


def test_absolute_sqlite_url_ignores_data_dir() -> None:
    config = parse_config('[storage]\nurl = "sqlite:////var/lib/p/presence.db"\n', BASE)
    assert config.storage_path() == Path("/var/lib/p/presence.db")


def test_redis_url_is_accepted() -> None:
    config = parse_config('[storage]\nurl = "redis://127.0.0.1:6379/2"\n', BASE)
    assert config.storage.backend == "redis"
    assert config.storage_path() is None


def test_domains_are_lowercased_and_deduplicated() -> None:
    config = parse_config('[server]\ndomains = ["A.example", "a.example", "127.0.0.1"]\n', BASE)
    assert config.server.domains == ("a.example", "127.0.0.1")


def test_listen_address_str_gives_the_config_form_back() -> None:
    for text in ("udp:127.0.0.1:5060", "tcp:[2001:db8::1]:5061", "udp:localhost:0"):
        assert str(parse_listen(text)) == text


# --- type, key and range errors (msgspec translated) ----------------------------------------


def test_out_of_range_names_the_key() -> None:
    assert error_of("[pa]\nmin_expires = -1\n") == "pa.min_expires: must be an integer >= 0"


def test_wrong_type_names_what_the_key_must_be() -> None:
    assert error_of('[pa]\nmin_expires = "60"\n') == "pa.min_expires: must be an integer >= 0"
    assert error_of("[pa]\nmin_expires = 1.5\n") == "pa.min_expires: must be an integer >= 0"
    assert error_of("[pa]\nmin_expires = true\n") == "pa.min_expires: must be an integer >= 0"


def test_other_type_errors() -> None:
    assert error_of('[server]\nlisten = "udp:1.2.3.4:5060"\n') == (
        "server.listen: must be an array of strings"
    )
    assert error_of("[server]\nlisten = [5060]\n") == "server.listen[0]: must be a string"
    assert error_of("[server]\nmax_message_size = 100\n") == (
        "server.max_message_size: must be an integer >= 1024"
    )
    assert error_of("[server]\nmax_tcp_connections = 0\n") == (
        "server.max_tcp_connections: must be an integer >= 1"
    )
    assert error_of('[server]\nlog_level = "verbose"\n') == (
        'server.log_level: must be one of "debug", "error", "info", "warning"'
    )
    assert error_of('[server]\ndata_dir = ""\n') == "server.data_dir: must be a non-empty string"
    assert error_of("pa = 3\n") == "pa: must be a table"
    assert error_of("[[pa]]\n") == "pa: must be a table"


def test_wrong_type_inside_a_table_names_the_entry() -> None:
    assert error_of("[auth.users]\nalice = 'pw'\nbob = 42\n") == "auth.users.bob: must be a string"
    assert error_of(JABBER + '[jabber.domains]\n"sip.example.com" = 1\n') == (
        'jabber.domains."sip.example.com": must be a string'
    )


def test_unknown_key_in_a_section() -> None:
    assert error_of("[pa]\nfoo = 1\n") == "pa.foo: unknown key"


def test_unknown_top_level_key_or_section() -> None:
    assert error_of("[presence]\nx = 1\n") == "presence: unknown key"
    assert error_of("debug = true\n") == "debug: unknown key"


def test_incomplete_jabber_section_names_the_missing_key() -> None:
    text = '[jabber]\ngateway_domain = "g.example.com"\ncomponent = "c.example.com"\nserver = "x:5347"\n'
    assert error_of(text) == "jabber.secret: missing required key"


def test_invalid_toml_is_one_line() -> None:
    assert (
        error_of("[pa\n")
        == "invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 4)"
    )


# --- cross-field checks ---------------------------------------------------------------------


def test_min_expires_above_max_expires() -> None:
    assert error_of("[pa]\nmin_expires = 100\nmax_expires = 50\ndefault_expires = 60\n") == (
        "pa.min_expires: must be <= pa.max_expires (50), got 100"
    )


def test_default_expires_outside_min_max() -> None:
    assert error_of("[registrar]\ndefault_expires = 30\n") == (
        "registrar.default_expires: must be between registrar.min_expires (60) and "
        "registrar.max_expires (86400), got 30"
    )
    assert error_of("[pa]\ndefault_expires = 90000\n") == (
        "pa.default_expires: must be between pa.min_expires (60) and "
        "pa.max_expires (86400), got 90000"
    )


def test_at_least_one_domain_and_one_listen_address() -> None:
    assert error_of("[server]\ndomains = []\n") == "server.domains: must list at least one domain"
    assert error_of("[server]\nlisten = []\n") == "server.listen: must list at least one address"


def test_bad_domain() -> None:
    assert error_of('[server]\ndomains = ["bad domain"]\n') == (
        "server.domains[0]: not a valid host name (got 'bad domain')"
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("udp:1.2.3.4", "expected TRANSPORT:HOST:PORT"),
        ("udp", "expected TRANSPORT:HOST:PORT"),
        ("sctp:1.2.3.4:5060", 'transport must be "udp", "tcp", "tls", "ws" or "wss"'),
        ("UDP:1.2.3.4:5060", 'transport must be "udp", "tcp", "tls", "ws" or "wss"'),
        ("udp:1.2.3.4:65536", "port must be an integer between 0 and 65535"),
        ("udp:1.2.3.4:", "port must be an integer between 0 and 65535"),
        ("udp:1.2.3.4:-1", "port must be an integer between 0 and 65535"),
        ("udp:::1:5060", "an IPv6 address needs brackets, as in [::1]:5060"),
        ("udp:[::1:5060", "expected [IPV6]:PORT"),
        ("udp:[zz::1]:5060", "invalid IPv6 address 'zz::1'"),
        ("tcp:bad_host:5060", "invalid host 'bad_host'"),
        ("tcp::5060", "invalid host ''"),
    ],
)
def test_bad_listen_string(entry: str, problem: str) -> None:
    text = f'[server]\nlisten = ["udp:127.0.0.1:5060", "{entry}"]\n'
    assert error_of(text) == f"server.listen[1]: {problem} (got {entry!r})"


def test_duplicate_listen_entry() -> None:
    text = '[server]\nlisten = ["udp:[::1]:5060", "tcp:[::1]:5060", "udp:[0:0::1]:5060"]\n'
    assert error_of(text) == "server.listen[2]: duplicates server.listen[0]"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "postgres://db/presence",
            'must be "memory:", "sqlite:///PATH" or "redis://HOST[:PORT][/DB]" (got \'postgres://db/presence\')',
        ),
        (
            "memory",
            'must be "memory:", "sqlite:///PATH" or "redis://HOST[:PORT][/DB]" (got \'memory\')',
        ),
        (
            "sqlite://presence.db",
            'must be "memory:", "sqlite:///PATH" or "redis://HOST[:PORT][/DB]" (got \'sqlite://presence.db\')',
        ),
        (
            "sqlite:///",
            'must be "memory:", "sqlite:///PATH" or "redis://HOST[:PORT][/DB]" (got \'sqlite:///\')',
        ),
        ("redis://host:99999/0", "invalid Redis port (got 'redis://host:99999/0')"),
        ("redis:///0", "Redis URL needs a host (got 'redis:///0')"),
        ("redis://host/x", "Redis database must be a number (got 'redis://host/x')"),
    ],
)
def test_bad_storage_url(url: str, problem: str) -> None:
    assert error_of(f'[storage]\nurl = "{url}"\n') == f"storage.url: {problem}"


def test_bad_storage_url_does_not_echo_the_redis_password() -> None:
    message = error_of('[storage]\nurl = "redis://:hunter2@host:99999/0"\n')
    assert message == "storage.url: invalid Redis port (got 'redis://:***@host:99999/0')"


JABBER = """
[jabber]
gateway_domain = "xmpp.gw.example.com"
component = "sip.example.com"
server = "xmpp.example.com:5347"
secret = "s3cret-component"
"""


def test_jabber_server_must_be_host_port() -> None:
    text = JABBER.replace("xmpp.example.com:5347", "xmpp.example.com")
    assert error_of(text) == "jabber.server: expected HOST:PORT (got 'xmpp.example.com')"


def test_jabber_separator_cannot_be_at_sign() -> None:
    assert error_of(JABBER + 'separator = "@"\n') == (
        'jabber.separator: must not contain "@" or ":"'
    )


def test_jabber_empty_secret() -> None:
    text = JABBER.replace('"s3cret-component"', '""')
    assert error_of(text) == "jabber.secret: must be a non-empty string"


def test_auth_needs_users_or_users_file() -> None:
    assert error_of("[auth]\nrealm = 'example.com'\n") == "auth: must set users or users_file"


def test_routing_script_must_exist(tmp_path: Path) -> None:
    assert error_of("[routing]\nscript = 'nope.py'\n", tmp_path) == (
        f"routing.script: no such file: {tmp_path / 'nope.py'}"
    )


def test_admin_listen_must_be_host_port() -> None:
    assert error_of("[admin]\nlisten = '8080'\ntoken = 'an-admin-token-of-some-length'\n") == (
        "admin.listen: expected HOST:PORT (got '8080')")


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert str(info.value) == f"cannot read {tmp_path / 'missing.toml'}: No such file or directory"


# --- users file (format owned by presenced.sip.auth.load_users_file) -----------------------


def ha1(user: str, realm: str, password: str, algo: str = "md5") -> str:
    # RFC 7616 §3.4.2: A1 = username ":" realm ":" passwd
    return hashlib.new(algo, f"{user}:{realm}:{password}".encode()).hexdigest()


def test_users_file_is_resolved_against_config_dir_and_checked(tmp_path: Path) -> None:
    md5 = ha1("alice", "example.com", "pw")
    sha = ha1("alice", "example.com", "pw", "sha256")
    (tmp_path / "users").write_text(f"# comment\n\nalice:{md5}:{sha}\nbob:plain:x:y\n")
    config = parse_config(
        "[server]\ndomains = ['example.com']\n[auth]\nusers_file = 'users'\n", tmp_path
    )
    assert config.auth is not None
    assert config.auth.users_file == str(tmp_path / "users")
    assert config.auth.realm == "example.com"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alice", "line 2: expected user:md5-ha1:sha256-ha1 or user:plain:password"),
        ("alice:notahash:", "line 2: MD5 HA1 for 'alice' must be 32 hex digits"),
        ("bob:plain:again", "line 2: duplicate user 'bob'"),
    ],
)
def test_bad_users_file_line_names_the_line_not_its_content(
    tmp_path: Path, line: str, problem: str
) -> None:
    (tmp_path / "users").write_text("bob:plain:secret\n" + line + "\n")
    message = error_of("[auth]\nusers_file = 'users'\n", tmp_path)
    assert message == f"auth.users_file: {problem}"
    assert "secret" not in message


def test_missing_users_file(tmp_path: Path) -> None:
    assert error_of("[auth]\nusers_file = 'users'\n", tmp_path) == (
        f"auth.users_file: cannot read {tmp_path / 'users'}: No such file or directory"
    )


# --- secrets stay out of repr ---------------------------------------------------------------


def test_secrets_do_not_appear_in_repr() -> None:
    text = (
        JABBER
        + "[auth.users]\nalice = 'alice-password'\n"
        + "[storage]\nurl = 'redis://user:redis-password@127.0.0.1:6379/0'\n"
    )
    config = parse_config(text, BASE)
    shown = repr(config) + str(config) + f"{config}"
    for secret in ("s3cret-component", "alice-password", "redis-password"):
        assert secret not in shown
    assert "'alice': '***'" in shown
    assert "redis://user:***@127.0.0.1:6379/0" in shown
    assert "secret='***'" in shown
    # ...while the values themselves stay usable.
    assert config.jabber is not None and config.jabber.secret == "s3cret-component"
    assert config.storage.url == "redis://user:redis-password@127.0.0.1:6379/0"


def test_config_struct_defaults_match_documented_contract() -> None:
    # The bare struct is what code gets without a file; it must agree with parse_config("").
    bare = msgspec.structs.asdict(Config())
    parsed = msgspec.structs.asdict(parse_config("", Path("/")))
    bare["server"] = msgspec.structs.replace(bare["server"], data_dir="/presenced-data")
    assert bare == parsed
