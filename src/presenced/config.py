"""Typed configuration: TOML in, frozen msgspec structs out.

`parse_config` runs three stages. tomllib reads the text; `msgspec.convert` checks shapes, types and
per-key bounds against the structs below (unknown keys are refused); then cross-field checks that a
schema cannot express run (expiry ranges, listen strings, the storage URL, referenced files).
Whatever fails raises `ConfigError` whose text is one line naming the key path:
``pa.min_expires: must be an integer >= 0``. Relative paths are resolved against the config file's
directory while loading, so the returned `Config` holds only absolute paths.

docs/configuration.md is the reference for every key; keep it in step with this file.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import msgspec
import msgspec.inspect as mi

__all__ = [
    "AdminConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "HepConfig",
    "JabberConfig",
    "LimitsConfig",
    "ListenAddress",
    "PaConfig",
    "RegistrarConfig",
    "RoutingConfig",
    "ServerConfig",
    "StorageConfig",
    "TlsConfig",
    "XcapConfig",
    "exposed_without_auth",
    "load_config",
    "load_default_config",
    "parse_config",
    "parse_host_port",
    "parse_listen",
]

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
LogLevel = Literal["debug", "info", "warning", "error"]

_MASK = "'***'"


class ConfigError(Exception):
    """A configuration problem; `str()` is one line: ``"<key path>: <problem>"``.

    `key` is the dotted path of the offending key (``"server.listen[1]"``), or None when the
    problem is not about one key (unreadable file, TOML syntax).
    """

    def __init__(self, key: str | None, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


class _Shown:
    """Carries a pre-rendered repr through rich's pretty printer."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every section: immutable, keyword-only, refuses unknown keys.

    repr() goes through `_repr_value`, which sections holding secrets override, so passwords never
    reach a log line that prints a config.
    """

    def _repr_value(self, name: str, value: Any) -> str:
        return repr(value)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={self._repr_value(name, getattr(self, name))}"
            for name in self.__struct_fields__
        )
        return f"{type(self).__name__}({fields})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        # msgspec's own rich repr would bypass the masking.
        return [
            (name, _Shown(self._repr_value(name, getattr(self, name))))
            for name in self.__struct_fields__
        ]


# --------------------------------------------------------------------------------------------
# Address helpers


class ListenAddress(NamedTuple):
    """One `server.listen` entry; `host` has no brackets, `str()` gives the config form back."""

    transport: Literal["udp", "tcp", "tls", "ws", "wss"]
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _valid_host(host: str) -> bool:
    if _HOSTNAME.fullmatch(host) and len(host) <= 253:
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[IPv6]:PORT``; raise ValueError with the problem in words."""
    return _host_port(text, "HOST:PORT")


def _host_port(text: str, form: str) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError("expected [IPV6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            host = str(ipaddress.IPv6Address(host))  # canonical form, so duplicates compare equal
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected {form}")
        if ":" in host:
            raise ValueError("an IPv6 address needs brackets, as in [::1]:5060")
        if not _valid_host(host):
            raise ValueError(f"invalid host {host!r}")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("port must be an integer between 0 and 65535")
    return host, int(port_text)


_TRANSPORTS: dict[str, Literal["udp", "tcp", "tls", "ws", "wss"]] = {
    "udp": "udp", "tcp": "tcp", "tls": "tls", "ws": "ws", "wss": "wss"}
# Listeners that need [tls] certificate and private_key.
SECURE_TRANSPORTS = frozenset({"tls", "wss"})


def parse_listen(text: str) -> ListenAddress:
    """Parse ``TRANSPORT:HOST:PORT`` with TRANSPORT one of udp, tcp, tls, ws, wss (IPv6 as
    ``udp:[::1]:5060``)."""
    transport, sep, rest = text.partition(":")
    if not sep:
        raise ValueError("expected TRANSPORT:HOST:PORT")
    name = _TRANSPORTS.get(transport)
    if name is None:
        raise ValueError('transport must be "udp", "tcp", "tls", "ws" or "wss"')
    host, port = _host_port(rest, "TRANSPORT:HOST:PORT")
    return ListenAddress(name, host, port)


# --------------------------------------------------------------------------------------------
# Sections


class ServerConfig(_Section, frozen=True):
    listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    domains: tuple[str, ...] = ("localhost",)  # lowercased while loading
    max_message_size: Annotated[int, msgspec.Meta(ge=1024)] = 65536
    max_tcp_connections: PosInt = 1024
    # Stream connections one source IP may hold at once (connections we open are not counted).
    max_connections_per_source: PosInt = 32
    connection_idle_timeout: PosInt = 300  # seconds without a byte before a connection is closed
    # A connection that has not delivered one complete SIP message by then is closed.
    connection_first_message_timeout: PosInt = 20
    # Proxies whose Record-Route and Contact may choose where NOTIFYs go, and the only
    # addresses presenced opens connections to ("IP" or "IP/prefix"; docs/presence.md).
    trusted_proxies: tuple[str, ...] = ()
    log_level: LogLevel = "info"
    # One line per REGISTER, SUBSCRIBE, PUBLISH and NOTIFY outcome at info (at debug they are
    # on anyway, as debug lines); off, they cost nothing (docs/operations.md).
    log_requests: bool = False
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for shippers
    data_dir: NonEmptyStr = "presenced-data"  # absolute after loading
    # Serve a non-loopback address without [auth] (anyone may act as anyone): opt-in only.
    allow_anonymous: bool = False
    # WebSocket listeners (RFC 7118): seconds between our pings; a peer that misses the pong
    # is closed (docs/transports.md).
    websocket_ping_interval: PosInt = 30
    # Processes serving the same listen addresses (SO_REUSEPORT); > 1 needs Redis storage,
    # and each worker is a cluster node (docs/design.md "Running a cluster").
    workers: PosInt = 1

    @property
    def listen_addresses(self) -> tuple[ListenAddress, ...]:
        """The parsed `listen` entries (validated while loading, so this cannot fail)."""
        return tuple(parse_listen(entry) for entry in self.listen)


class PaConfig(_Section, frozen=True):
    # Bounds for a SUBSCRIBE's Expires (RFC 6665 §4.2.1.1; below min_expires gets 423).
    default_expires: NonNegInt = 3600
    min_expires: NonNegInt = 60
    max_expires: NonNegInt = 86400
    max_subscriptions_per_watcher: PosInt = 1000
    max_publications: PosInt = 100_000  # live publications in the whole process (503 beyond)
    max_publication_bytes: PosInt = 64 * 1024 * 1024  # their bodies' total bytes (503 beyond)
    max_presentity_bytes: PosInt = 64 * 1024  # one presentity's live bodies' total (413 beyond)
    # PUBLISH's own minimum (RFC 3903 §6 step 4: 423 below it). Kamailio's pua_dialoginfo
    # publishes a terminated dialog for 10 s and does not retry after a 423.
    min_publish_expires: NonNegInt = 5
    # How a registration counts for presence beside publications (docs/presence.md).
    registrar_presence: Literal["until-published", "fallback", "always", "never"] = "until-published"
    max_subscriptions: PosInt = 500_000  # in this process; beyond: 503 with Retry-After
    max_presentities: PosInt = 100_000  # watched or with parts, in memory; beyond: 503
    # Authorization (docs/presence.md "Authorization"): what applies to a watcher no rule of
    # the presentity matches. "allow" is today's behaviour; "confirm" suits public services.
    default_policy: Literal["allow", "confirm", "polite-block", "block"] = "allow"
    # Registrar tuples carry the registered contact (the device's IP:port) only when a rule
    # grants provide-devices, or when this is true for every watcher.
    expose_contacts: bool = False


class RegistrarConfig(_Section, frozen=True):
    # Bounds for a REGISTER's expiry (RFC 3261 §10.3 steps 7-8; 423 below min_expires).
    default_expires: NonNegInt = 3600
    min_expires: NonNegInt = 60
    max_expires: NonNegInt = 86400
    max_contacts_per_aor: PosInt = 32
    max_bindings: PosInt = 100_000  # bindings in the whole process (503 beyond)


class LimitsConfig(_Section, frozen=True):
    # Per source IP, pike-like: over a rate, one 503 with Retry-After, then silence.
    requests_per_second: PosInt = 100
    request_burst: PosInt = 200
    dialogs_per_second: PosInt = 10  # REGISTER, initial SUBSCRIBE, initial PUBLISH
    dialog_burst: PosInt = 50
    block_time: PosInt = 10  # seconds below the rate before a blocked source is served again
    exempt: tuple[str, ...] = ()  # IPs or CIDRs never limited
    max_sources: PosInt = 100_000  # sources tracked; the least recently seen are forgotten
    # Bytes sent to an unproven UDP address <= amplification_factor x bytes received from it.
    amplification_factor: PosInt = 10
    proven_ttl: PosInt = 3600  # seconds an address stays proven after its last response
    # Bytes waiting in a UDP listener's receive queue (kernel accounting: ~1.3 KB for a 500-byte
    # datagram, ~2.3 KB for a 700-byte one) above which new REGISTER, SUBSCRIBE and PUBLISH get
    # 503 until it is under half of it; 0 = never.
    # Half the 16 MiB receive buffer (docs/performance.md "Overload" measured 4 and 8 MiB).
    overload_backlog: NonNegInt = 8_388_608


class StorageConfig(_Section, frozen=True):
    url: NonEmptyStr = "sqlite:///presenced.db"

    @property
    def backend(self) -> Literal["sqlite", "memory", "redis"]:
        if self.url == "memory:":
            return "memory"
        if self.url.startswith("redis://"):
            return "redis"
        return "sqlite"

    def _repr_value(self, name: str, value: Any) -> str:
        return repr(_redact_url(value)) if name == "url" else repr(value)


class ClusterConfig(_Section, frozen=True):
    """Several presenced processes or machines on one Redis (docs/design.md "Running a
    cluster"). Present (or `server.workers > 1`) means clustering is on."""

    node_id: str = ""  # unique per node; "" = the host name (workers add "-<index>")
    lease_time: Annotated[float, msgspec.Meta(ge=1.0, le=60.0)] = 5.0  # seconds; death detection
    advertise: str | None = None  # "host:port" put in our Contacts instead of the listener's


class JabberConfig(_Section, frozen=True):
    gateway_domain: NonEmptyStr  # SIP domain that stands for the XMPP world
    component: NonEmptyStr  # our XEP-0114 component JID
    server: NonEmptyStr  # XMPP server's component port, "host:port"
    secret: NonEmptyStr  # XEP-0114 handshake secret
    separator: NonEmptyStr = "*"
    domains: dict[str, str] = {}  # SIP domain -> XMPP domain
    # Bounds on what SIP watchers can make the gateway ask of the XMPP world (issue 9 #7).
    max_contacts_per_user: PosInt = 100  # remote XMPP users one SIP watcher may watch
    max_contacts: PosInt = 10000  # remote XMPP users watched through the gateway in total
    allowed_domains: tuple[str, ...] = ()  # XMPP domains SIP users may watch; () = any
    subscribe_rate: PosInt = 20  # new XMPP subscription requests per SIP watcher per minute
    resubscribe_rate: PosInt = 20  # subscribe stanzas per second re-sent after a reconnection

    def _repr_value(self, name: str, value: Any) -> str:
        return _MASK if name == "secret" else repr(value)

    @property
    def server_address(self) -> tuple[str, int]:
        return parse_host_port(self.server)


class AuthConfig(_Section, frozen=True):
    realm: str | None = None  # None in the file means the first of server.domains
    users: dict[str, str] = {}  # user -> plain-text password
    users_file: str | None = None  # absolute after loading; format: sip.auth.load_users_file
    nonce_ttl: PosInt = 300
    max_failures: PosInt = 5  # failed authentications per (source, user@domain) before a lockout
    max_failures_per_source: PosInt = 20  # ... per source across users, within `lockout` seconds
    lockout: PosInt = 30  # seconds of the first lockout; doubles with each further one
    max_lockout: PosInt = 3600  # longest lockout
    # Challenges offered, preferred first (RFC 8760 §2.4); clients pick the first they know,
    # but some (baresip 1.0's libre) give up when SHA-256 is offered at all: ["MD5"] for them.
    algorithms: tuple[Literal["SHA-256", "MD5"], ...] = ("SHA-256", "MD5")

    def _repr_value(self, name: str, value: Any) -> str:
        if name == "users":
            return "{" + ", ".join(f"{user!r}: {_MASK}" for user in value) + "}"
        return repr(value)


class TlsConfig(_Section, frozen=True):
    """Certificates for `tls:` and `wss:` listeners and outbound TLS (docs/transports.md)."""

    certificate: NonEmptyStr  # PEM chain, ours first; absolute after loading
    private_key: NonEmptyStr  # PEM; absolute after loading
    ca_file: str | None = None  # PEM CAs for client certificates and outbound servers
    verify_client: bool = False  # mutual TLS: a client without a certificate from ca_file is refused
    # Outbound TLS (to trusted proxies only): check the server's certificate and name against
    # ca_file or the system store. false is for labs with self-signed proxies.
    verify_server: bool = True


class RoutingConfig(_Section, frozen=True):
    script: NonEmptyStr  # absolute after loading


# A bearer token shorter than this is refused: it guards terminating anyone's subscriptions.
MIN_ADMIN_TOKEN = 16


class AdminConfig(_Section, frozen=True):
    listen: NonEmptyStr  # "127.0.0.1:8080"
    token: str | None = None  # the bearer token itself (or token_file; one is required)
    token_file: str | None = None  # absolute after loading; first line is the token
    metrics_public: bool = False  # /metrics without the token (scrapers on a trusted network)

    @property
    def address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    def read_token(self) -> str:
        """The bearer token: `token`, or the first line of `token_file` (read now, so a
        rotated file takes effect at the next reload or start). Raises ConfigError."""
        if self.token is not None:
            return self.token
        assert self.token_file is not None
        return _read_token_file(self.token_file)

    def _repr_value(self, name: str, value: Any) -> str:
        if name == "token" and value is not None:
            return _MASK
        return repr(value)


class XcapConfig(_Section, frozen=True):
    """The XCAP server (RFC 4825; docs/xcap.md): presence rules over HTTP."""

    listen: NonEmptyStr  # "127.0.0.1:8090"
    root: NonEmptyStr = "/xcap-root"
    max_document_size: Annotated[int, msgspec.Meta(ge=1024, le=256 * 1024)] = 64 * 1024
    max_uri_length: Annotated[int, msgspec.Meta(ge=256, le=65536)] = 4096

    @property
    def address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)


class HepConfig(_Section, frozen=True):
    # The capture server (Homer's heplify-server, sngrep -L) every SIP message is copied to
    # over UDP as HEP3: "HOST:PORT" or "[IPv6]:PORT".
    address: NonEmptyStr
    capture_id: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)] = 2001  # names this node
    password: str | None = None  # sent in the HEP3 authentication key chunk when set

    def _repr_value(self, name: str, value: Any) -> str:
        return _MASK if name == "password" and value else repr(value)

    @property
    def target(self) -> tuple[str, int]:
        return parse_host_port(self.address)


class Config(_Section, frozen=True):
    server: ServerConfig = ServerConfig()
    pa: PaConfig = PaConfig()
    registrar: RegistrarConfig = RegistrarConfig()
    storage: StorageConfig = StorageConfig()
    limits: LimitsConfig = LimitsConfig()
    jabber: JabberConfig | None = None
    auth: AuthConfig | None = None
    routing: RoutingConfig | None = None
    admin: AdminConfig | None = None
    xcap: XcapConfig | None = None
    tls: TlsConfig | None = None
    hep: HepConfig | None = None
    cluster: ClusterConfig | None = None

    @property
    def clustered(self) -> bool:
        """Several nodes share the Redis state: [cluster] is set, or workers > 1."""
        return self.cluster is not None or self.server.workers > 1

    def storage_path(self) -> Path | None:
        """The absolute SQLite database path, or None for the memory and Redis backends."""
        if self.storage.backend != "sqlite":
            return None
        return Path(self.server.data_dir) / self.storage.url[len("sqlite:///") :]


def _redact_url(url: str) -> str:
    """Hide the password of ``redis://user:pw@host`` for display."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return url


# --------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; relative paths inside resolve against its directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(None, f"cannot read {path}: {_os_reason(exc)}") from None
    return parse_config(text, path.resolve().parent)


def load_default_config() -> Config:
    """The embedded default.toml; its relative paths resolve against the current directory."""
    text = resources.files("presenced").joinpath("default.toml").read_text(encoding="utf-8")
    return parse_config(text, Path.cwd())


def parse_config(text: str, base_dir: Path) -> Config:
    """Validate TOML text; `base_dir` anchors relative paths (data_dir, users_file, script)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(None, f"invalid TOML: {exc}") from None
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise _translate(str(exc), data) from None
    return _check(config, Path(base_dir).absolute())


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _resolve(base: Path, value: str) -> str:
    return str(base / Path(value).expanduser())


def _check(config: Config, base: Path) -> Config:
    """Cross-field checks and path resolution; returns the finished Config."""
    replace = msgspec.structs.replace
    server = config.server

    if not server.listen:
        raise ConfigError("server.listen", "must list at least one address")
    seen: dict[ListenAddress, int] = {}
    for i, entry in enumerate(server.listen):
        try:
            addr = parse_listen(entry)
        except ValueError as exc:
            raise ConfigError(f"server.listen[{i}]", f"{exc} (got {entry!r})") from None
        if addr in seen:
            raise ConfigError(f"server.listen[{i}]", f"duplicates server.listen[{seen[addr]}]")
        if addr.transport in SECURE_TRANSPORTS and config.tls is None:
            raise ConfigError("tls", f"server.listen[{i}] ({entry!r}) needs a [tls] section with "
                              "certificate and private_key")
        seen[addr] = i

    if not server.domains:
        raise ConfigError("server.domains", "must list at least one domain")
    domains: list[str] = []
    for i, domain in enumerate(server.domains):
        if not _valid_host(domain):
            raise ConfigError(f"server.domains[{i}]", f"not a valid host name (got {domain!r})")
        domains.append(domain.lower().rstrip("."))
    for i, entry in enumerate(server.trusted_proxies):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"server.trusted_proxies[{i}]", f"not an IP address or CIDR network (got {entry!r})"
            ) from None
    server = replace(
        server,
        domains=tuple(dict.fromkeys(domains)),
        data_dir=_resolve(base, server.data_dir),
    )

    _check_expires("pa", config.pa)
    _check_expires("registrar", config.registrar)

    _check_storage_url(config.storage.url)

    for i, entry in enumerate(config.limits.exempt):
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"limits.exempt[{i}]", f"not an IP address or CIDR (got {entry!r})") from None

    jabber = config.jabber
    if jabber is not None:
        _check_jabber(jabber)
        allowed = tuple(dict.fromkeys(d.lower().rstrip(".") for d in jabber.allowed_domains))
        jabber = replace(jabber, allowed_domains=allowed)

    auth = config.auth
    if auth is not None:
        if not auth.users and auth.users_file is None:
            raise ConfigError("auth", "must set users or users_file")
        if auth.realm is not None and not auth.realm:
            raise ConfigError("auth.realm", "must be a non-empty string")
        # Every served domain is its own realm; [auth] realm names the one whose users are
        # written without "@domain".
        realm = (auth.realm or server.domains[0]).lower().rstrip(".")
        if realm not in server.domains:
            raise ConfigError("auth.realm", f"must be one of server.domains (got {auth.realm!r})")
        for user in auth.users:
            name, at, domain = user.rpartition("@")
            if not user or ":" in user or (at and not name):
                raise ConfigError("auth.users", f"invalid user name {user!r}")
            if at and domain.lower().rstrip(".") not in server.domains:
                raise ConfigError(f"auth.users.{user}", "domain is not one of server.domains")
        if not auth.algorithms or len(set(auth.algorithms)) != len(auth.algorithms):
            raise ConfigError("auth.algorithms", 'must list "SHA-256" and/or "MD5", each once')
        if auth.lockout > auth.max_lockout:
            raise ConfigError(
                "auth.lockout", f"must be <= auth.max_lockout ({auth.max_lockout}), got {auth.lockout}"
            )
        users_file = None
        if auth.users_file is not None:
            users_file = _resolve(base, auth.users_file)
            _check_users_file(users_file, realm, server.domains)
        auth = replace(auth, realm=realm, users_file=users_file)

    routing = config.routing
    if routing is not None:
        script = Path(_resolve(base, routing.script))
        if not script.is_file():
            raise ConfigError("routing.script", f"no such file: {script}")
        routing = replace(routing, script=str(script))

    tls = config.tls
    if tls is not None:
        tls = replace(tls, certificate=_resolve(base, tls.certificate),
                      private_key=_resolve(base, tls.private_key),
                      ca_file=_resolve(base, tls.ca_file) if tls.ca_file else None)
        check_tls_files(tls)

    admin = config.admin
    if admin is not None:
        try:
            parse_host_port(admin.listen)
        except ValueError as exc:
            raise ConfigError("admin.listen", f"{exc} (got {admin.listen!r})") from None
        if (admin.token is None) == (admin.token_file is None):
            raise ConfigError("admin", "must set exactly one of token or token_file")
        if admin.token is not None:
            _check_token("admin.token", admin.token)
        else:
            assert admin.token_file is not None
            admin = replace(admin, token_file=_resolve(base, admin.token_file))
            assert admin.token_file is not None
            _read_token_file(admin.token_file)

    if config.xcap is not None:
        _check_xcap(config.xcap, auth is not None, server.allow_anonymous)

    if config.hep is not None:
        try:
            parse_host_port(config.hep.address)
        except ValueError as exc:
            raise ConfigError("hep.address", f"{exc} (got {config.hep.address!r})") from None

    _check_cluster(config)

    if auth is None and not server.allow_anonymous:
        exposed = _exposed(server)
        if exposed:
            raise ConfigError(
                "server.allow_anonymous",
                f"refusing to serve {', '.join(exposed)} without [auth]: anyone could register "
                "and publish as anyone; configure [auth], listen on loopback only, or set "
                "server.allow_anonymous = true",
            )

    return replace(config, server=server, jabber=jabber, auth=auth, routing=routing, admin=admin, tls=tls)


def _check_token(key: str, token: str) -> None:
    if len(token) < MIN_ADMIN_TOKEN or not token.isprintable() or token != token.strip():
        raise ConfigError(key, f"must be at least {MIN_ADMIN_TOKEN} printable characters without "
                               "surrounding spaces (e.g. python3 -c 'import secrets; "
                               "print(secrets.token_urlsafe(32))')")


def _read_token_file(path: str) -> str:
    """The first line of a token file that only its owner (and group) may read, like a users
    file with passwords in it (docs/security.md)."""
    key = "admin.token_file"
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"cannot read {path}: {_os_reason(exc)}") from None
    if mode & 0o004:
        raise ConfigError(key, f"{path} is readable by every user: chmod o-r (e.g. 0600)")
    token = (text.splitlines() or [""])[0].strip()
    _check_token(key, token)
    return token


def _check_xcap(xcap: XcapConfig, authenticated: bool, anonymous_ok: bool) -> None:
    try:
        parse_host_port(xcap.listen)
    except ValueError as exc:
        raise ConfigError("xcap.listen", f"{exc} (got {xcap.listen!r})") from None
    root = xcap.root
    if not root.startswith("/") or root.endswith("/") or "?" in root or "#" in root or "//" in root:
        raise ConfigError("xcap.root", f'must be a path like "/xcap-root" (got {root!r})')
    if not authenticated and not anonymous_ok:
        raise ConfigError("xcap", "needs [auth]: without it anyone could read and rewrite "
                          "anyone's presence rules (or set server.allow_anonymous = true)")



def check_tls_files(tls: TlsConfig) -> None:
    """Load the [tls] files as a listener would; raise ConfigError naming the key at fault.

    Also what a reload (SIGHUP) runs before it touches a live context."""
    files = [("tls.certificate", tls.certificate, b"-----BEGIN CERTIFICATE-----"),
             ("tls.private_key", tls.private_key, b"PRIVATE KEY-----")]
    if tls.ca_file:
        files.append(("tls.ca_file", tls.ca_file, b"-----BEGIN CERTIFICATE-----"))
    for key, path, marker in files:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(key, f"cannot read {path}: {_os_reason(exc)}") from None
        if marker not in data:
            raise ConfigError(key, f"{path} holds no PEM {marker.decode().strip('-')}")
    if tls.verify_client and not tls.ca_file:
        raise ConfigError("tls.verify_client", "needs tls.ca_file (the CAs client certificates "
                          "must come from)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
    except ssl.SSLError as exc:
        raise ConfigError("tls.private_key", f"does not load with tls.certificate "
                          f"({exc.reason or exc}): wrong key, or a broken file") from None
    if tls.ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.ca_file)
        except ssl.SSLError as exc:
            raise ConfigError("tls.ca_file", f"cannot load {tls.ca_file}: {exc.reason or exc}") from None


def _is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": nobody off this machine can reach them.

    Any other host name counts as exposed: it may resolve to a public address.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed_without_auth(config: Config) -> list[str]:
    """The listen entries reachable from other machines when `[auth]` is off (else empty)."""
    return [] if config.auth is not None else _exposed(config.server)


def _exposed(server: ServerConfig) -> list[str]:
    return [str(a) for a in server.listen_addresses if not _is_loopback(a.host)]


def _check_users_file(path: str, realm: str, domains: tuple[str, ...]) -> None:
    """Parse the users file now so a broken one fails at startup and under --check-config.

    The format belongs to presenced.sip.auth.load_users_file; reusing it keeps one definition.
    """
    from presenced.sip.auth import load_users_file

    key = "auth.users_file"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"cannot read {path}: {_os_reason(exc)}") from None
    try:
        load_users_file(text, realm, domains)
    except ValueError as exc:
        # Its messages name the line but never echo a password or hash.
        raise ConfigError(key, str(exc).removeprefix("users file ")) from None


def _check_expires(section: str, cfg: PaConfig | RegistrarConfig) -> None:
    if cfg.min_expires > cfg.max_expires:
        raise ConfigError(
            f"{section}.min_expires",
            f"must be <= {section}.max_expires ({cfg.max_expires}), got {cfg.min_expires}",
        )
    if not cfg.min_expires <= cfg.default_expires <= cfg.max_expires:
        raise ConfigError(
            f"{section}.default_expires",
            f"must be between {section}.min_expires ({cfg.min_expires}) and "
            f"{section}.max_expires ({cfg.max_expires}), got {cfg.default_expires}",
        )


_STORAGE_FORMS = 'must be "memory:", "sqlite:///PATH" or "redis://HOST[:PORT][/DB]"'


def _check_storage_url(url: str) -> None:
    key = "storage.url"
    if url == "memory:":
        return
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise ConfigError(key, f"{_STORAGE_FORMS} (got {url!r})")
        return
    if url.startswith("redis://"):
        shown = _redact_url(url)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError when out of range or not a number
        except ValueError:
            raise ConfigError(key, f"invalid Redis port (got {shown!r})") from None
        if not parts.hostname:
            raise ConfigError(key, f"Redis URL needs a host (got {shown!r})")
        db = parts.path.lstrip("/")
        if db and not (db.isascii() and db.isdigit()):
            raise ConfigError(key, f"Redis database must be a number (got {shown!r})")
        return
    raise ConfigError(key, f"{_STORAGE_FORMS} (got {_redact_url(url)!r})")


def _check_cluster(config: Config) -> None:
    cluster = config.cluster
    if config.server.workers > 1 and config.storage.backend != "redis":
        raise ConfigError(
            "server.workers",
            f"workers = {config.server.workers} needs a shared store: set storage.url to a "
            f"redis:// URL ({config.storage.backend} storage belongs to one process)")
    if cluster is None:
        return
    if config.storage.backend != "redis":
        raise ConfigError("cluster", "a cluster shares its state through Redis: set storage.url "
                                     f"to a redis:// URL (got {config.storage.backend} storage)")
    if cluster.node_id and not all(c.isalnum() or c in "-_." for c in cluster.node_id):
        raise ConfigError("cluster.node_id", "letters, digits, '-', '_' and '.' only "
                                             f"(got {cluster.node_id!r})")
    if cluster.advertise is not None:
        try:
            parse_host_port(cluster.advertise)
        except ValueError as exc:
            raise ConfigError("cluster.advertise", f"{exc} (got {cluster.advertise!r})") from None
    # [jabber] in a cluster: one node at a time holds the component (cluster/leader.py).


def _check_jabber(jabber: JabberConfig) -> None:
    try:
        parse_host_port(jabber.server)
    except ValueError as exc:
        raise ConfigError("jabber.server", f"{exc} (got {jabber.server!r})") from None
    if "@" in jabber.separator or ":" in jabber.separator:
        raise ConfigError("jabber.separator", 'must not contain "@" or ":"')
    for name in ("gateway_domain", "component"):
        value = getattr(jabber, name)
        if not _valid_host(value):
            raise ConfigError(f"jabber.{name}", f"not a valid domain name (got {value!r})")
    for i, domain in enumerate(jabber.allowed_domains):
        if not _valid_host(domain):
            raise ConfigError(
                f"jabber.allowed_domains[{i}]", f"not a valid domain name (got {domain!r})"
            )
    for sip_domain, xmpp_domain in jabber.domains.items():
        if not _valid_host(xmpp_domain):
            raise ConfigError(
                f"jabber.domains.{_toml_key(sip_domain)}",
                f"not a valid domain name (got {xmpp_domain!r})",
            )


# --------------------------------------------------------------------------------------------
# msgspec error -> one friendly line

_AT = re.compile(r" - at `\$(.*)`$")
_PATH_TOKEN = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(.*)`")
_MISSING = re.compile(r"^Object missing required field `(.*)`")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'


def _translate(message: str, data: Any) -> ConfigError:
    """Turn msgspec's ``Expected `int` >= 0 - at `$.pa.min_expires``` into our one-line form.

    The expected type is read from the schema (msgspec.inspect), not from msgspec's wording, so a
    wrong type and a value out of range get the same description of what the key must be.
    """
    at = _AT.search(message)
    raw_path = at.group(1) if at else ""
    head = message[: at.start()] if at else message

    keys: list[str] = []  # dotted display pieces
    info: mi.Type | None = mi.type_info(Config)
    node: Any = data
    for m in _PATH_TOKEN.finditer(raw_path):
        name, index = m.group(1), m.group(2)
        info = _unwrap(info)
        if name is not None:
            keys.append(name)
            info = _field_type(info, name)
            node = node.get(name) if isinstance(node, dict) else None
        elif index is not None:
            keys.append(f"[{index}]")
            info = info.item_type if isinstance(info, mi.ListType | mi.VarTupleType) else None
            node = node[int(index)] if isinstance(node, list) else None
        else:  # `[...]`: a table value; find which key msgspec refused
            value_type = info.value_type if isinstance(info, mi.DictType) else None
            bad = _first_bad_key(node, value_type)
            keys.append(_toml_key(bad) if bad is not None else "*")
            info = value_type
            node = node.get(bad) if isinstance(node, dict) and bad is not None else None

    unknown = _UNKNOWN.match(head)
    missing = _MISSING.match(head)
    if unknown or missing:
        keys.append((unknown or missing).group(1))  # type: ignore[union-attr]
        problem = "unknown key" if unknown else "missing required key"
    elif info is not None:
        problem = "must be " + _describe(info)
    else:  # a shape this translator does not know; still one line
        problem = head[:1].lower() + head[1:]
    path = "".join(k if k.startswith("[") or i == 0 else "." + k for i, k in enumerate(keys))
    return ConfigError(path or None, problem)


def _unwrap(info: mi.Type | None) -> mi.Type | None:
    """Drop NoneType from an optional section so the walk can continue into the struct."""
    if isinstance(info, mi.UnionType):
        rest = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return info


def _field_type(info: mi.Type | None, name: str) -> mi.Type | None:
    if isinstance(info, mi.StructType):
        for f in info.fields:
            if f.encode_name == name:
                return f.type
    return None


def _first_bad_key(node: Any, value_type: mi.Type | None) -> str | None:
    if not isinstance(node, dict) or value_type is None:
        return None
    target = _python_type(value_type)
    for key, value in node.items():
        if target is not None and type(value) is not target:
            return str(key)
    return None


def _python_type(info: mi.Type) -> type | None:
    return {mi.StrType: str, mi.IntType: int, mi.BoolType: bool}.get(type(info))


def _describe(info: mi.Type, plural: bool = False) -> str:
    """A noun phrase for what a value must be: "an integer >= 0", "an array of strings"."""
    if isinstance(info, mi.UnionType):
        alts = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return " or ".join(_describe(t, plural) for t in alts)
    if isinstance(info, mi.IntType):
        noun = "integers" if plural else "an integer"
        if info.ge is not None and info.le is not None:
            return f"{noun} between {info.ge} and {info.le}"
        if info.ge is not None:
            return f"{noun} >= {info.ge}"
        if info.le is not None:
            return f"{noun} <= {info.le}"
        return noun
    if isinstance(info, mi.StrType):
        if info.min_length:
            return "non-empty strings" if plural else "a non-empty string"
        return "strings" if plural else "a string"
    if isinstance(info, mi.BoolType):
        return "booleans" if plural else "true or false"
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(f'"{v}"' for v in info.values)
    if isinstance(info, mi.ListType | mi.VarTupleType):
        return ("arrays" if plural else "an array") + " of " + _describe(info.item_type, True)
    if isinstance(info, mi.DictType):
        return ("tables" if plural else "a table") + " of " + _describe(info.value_type, True)
    if isinstance(info, mi.StructType):
        return "tables" if plural else "a table"
    return "valid"
