"""The composition root: builds every part from the configuration, wires them, runs the loop.

Start-up order matters: storage opens, state loads (subscriptions, then bindings), transports
start, and only then do the notifications the restart owes go out (final NOTIFYs for
subscriptions that expired while we were down, a fresh NOTIFY for presentities whose bindings or
publications did).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import ipaddress
import logging
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

from presenced.config import Config, exposed_without_auth
from presenced.pa.model import PresenceDoc
from presenced.pa.packages import registry
from presenced.pa.packages.presence import PUBLISHED, PUBLISHED_MARK
from presenced.pa.publish import Publications, PublishPolicy
from presenced.pa.routing import Router, compile_script
from presenced.pa.subscription import PRESENCE, Notifier, PaPolicy
from presenced.registrar.bindings import RegistrarPolicy
from presenced.services.alarm import drain_all
from presenced.services.dispatch import Dispatcher, SourceHandler
from presenced.services.jabber import JabberGateway
from presenced.services.notifier import NotifierService
from presenced.services.publish import PublishService
from presenced.services.registrar import RegistrarService
from presenced.sip.auth import (
    AuthThrottle,
    DigestAuthenticator,
    StaticCredentials,
    ThrottlePolicy,
    load_users_file,
)
from presenced.sip.endpoint import Endpoint, EndpointConfig, Peer
from presenced.sip.limits import AmplificationLimits, RateLimits, parse_networks
from presenced.sip.message import Limits
from presenced.storage import open_storage
from presenced.transport.driver import Driver
from presenced.transport.tcp import ConnectionTable, TcpTransport
from presenced.transport.udp import UdpTransport

log = logging.getLogger("presenced.server")


def make_token() -> str:
    return secrets.token_hex(8)


def _reachable_host(host: str) -> str:
    """The address we put in Via and Contact for a listen host (a wildcard is no address)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.is_unspecified:
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    return f"[{host}]" if ip.version == 6 else host


def trusted_predicate(entries: Iterable[str]) -> Callable[[str], bool]:
    """`[server] trusted_proxies` as a test on an IP address text (cached: a handful of
    proxies, asked once per SUBSCRIBE and per outbound connection)."""
    networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)
    if not networks:
        return lambda host: False

    @functools.lru_cache(maxsize=4096)
    def trusted(host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in n for n in networks)

    return trusted


# How long stop() waits for in-flight handlers and NOTIFY runs before the storage closes.
SHUTDOWN_DRAIN_TIMEOUT = 5.0

# user-unreserved and unreserved characters (RFC 3261 §25.1) stay as they are in our Contact
_USER_SAFE = "-_.!~*'()&=+$,;?/"


class Server:
    """Everything one presenced process runs. `start()` then `stop()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.transports: list[UdpTransport | TcpTransport] = []
        self.stopped = asyncio.Event()
        self.jabber: JabberGateway | None = None

    async def start(self) -> None:
        cfg = self.config
        exposed = exposed_without_auth(cfg)
        if exposed:  # only reachable with server.allow_anonymous = true (config.py refuses)
            log.warning("serving %s without [auth] (server.allow_anonymous = true): anyone can "
                        "register, publish and subscribe as anyone", ", ".join(exposed))
        data_dir = Path(cfg.server.data_dir)
        self.storage = open_storage(cfg.storage.url, data_dir)
        await self.storage.open()

        addresses = cfg.server.listen_addresses
        # The first listener's address per transport: what a message names when the flow it
        # answers says no listener (transports fill in bound ports below).
        via_hosts: dict[str, str] = {}
        local_hosts = {"127.0.0.1", "localhost", "[::1]"}
        for a in addresses:
            host = _reachable_host(a.host)
            local_hosts.add(host.lower())
            local_hosts.add(a.host.lower())
            via_hosts.setdefault(a.transport, f"{host}:{a.port}")
        domains = frozenset(cfg.server.domains)
        if cfg.jabber is not None:
            domains |= {cfg.jabber.gateway_domain.lower()}
        packages = registry(cfg.pa.registrar_presence)
        lim = cfg.limits
        # Trusted proxies speak for many users: they are never rate-limited.
        rate_limits = RateLimits(
            requests_per_second=lim.requests_per_second, request_burst=lim.request_burst,
            dialogs_per_second=lim.dialogs_per_second, dialog_burst=lim.dialog_burst,
            block_time=lim.block_time, max_sources=lim.max_sources,
            exempt=parse_networks((*lim.exempt, *cfg.server.trusted_proxies)),
        )
        amplification = AmplificationLimits(factor=lim.amplification_factor,
                                            proven_ttl=lim.proven_ttl,
                                            max_addresses=lim.max_sources)
        self.endpoint = Endpoint(
            EndpointConfig(
                domains=domains,
                local_hosts=frozenset(local_hosts),
                allow_events=tuple(packages),
                # What we read in request bodies: the formats PUBLISH takes.
                accept=tuple(dict.fromkeys(f for p in packages.values() for f in p.publish_formats)),
                user_agent="presenced",
                # A body is bounded by the message size here; each body's consumer has its own
                # cap (PUBLISH documents: 64 KiB, answered 400 beyond it).
                limits=Limits(max_message_size=max(65535, cfg.server.max_message_size),
                              max_body_size=max(65535, cfg.server.max_message_size)),
                via_hosts=via_hosts,
                rate_limits=rate_limits,
                amplification=amplification,
            ),
            make_token,
        )
        self.driver = Driver(self.endpoint)

        def contact_for(presentity: str, flow: Peer | str) -> str:
            """Our Contact for a dialog over `flow`: the listener the flow came on (a Peer
            with `local`), else the first listener of its transport (a transport name)."""
            # The presentity holds the user part unescaped: escape it again, so no character
            # of it (a decoded CR LF) reaches our Contact header raw (issue 9 finding 2).
            user = quote(presentity.rsplit("@", 1)[0], safe=_USER_SAFE) if "@" in presentity else ""
            if isinstance(flow, Peer):
                transport = flow.transport
                hostport = flow.local or self.driver.bind(flow).local or via_hosts.get(transport)
            else:
                transport = flow
                hostport = via_hosts.get(transport)
            hostport = hostport or next(iter(via_hosts.values()))
            prefix = f"{user}@" if user else ""
            return f"sip:{prefix}{hostport};transport={transport}"

        pa = cfg.pa
        trusted = trusted_predicate(cfg.server.trusted_proxies)
        self.notifier = Notifier(
            PaPolicy(pa.default_expires, pa.min_expires, pa.max_expires, pa.max_subscriptions_per_watcher,
                     max_subscriptions=pa.max_subscriptions, max_presentities=pa.max_presentities,
                     max_notify_size=cfg.server.max_message_size),
            make_token,
            contact_for,
            trusted,
            packages,
        )
        self.notifications = NotifierService(self.notifier, self.driver, self.storage,
                                             may_connect=trusted)
        reg = cfg.registrar
        self.registrar = RegistrarService(
            RegistrarPolicy(reg.default_expires, reg.min_expires, reg.max_expires, reg.max_contacts_per_aor),
            self.driver, self.storage, self.notifications, frozenset(cfg.server.domains),
            max_bindings=reg.max_bindings,
        )
        self.publish = PublishService(
            Publications(PublishPolicy(pa.default_expires, pa.min_publish_expires, pa.max_expires,
                                       max_presentity_bytes=pa.max_presentity_bytes,
                                       max_publications=pa.max_publications,
                                       max_total_bytes=pa.max_publication_bytes), make_token,
                         packages=packages),
            self.driver, self.storage, self.notifications, frozenset(cfg.server.domains),
        )

        script = None
        if cfg.routing is not None and cfg.routing.script:
            path = Path(cfg.routing.script)
            script = compile_script(path.read_text(), str(path))
        router = Router(cfg.jabber.gateway_domain.lower() if cfg.jabber else None, script)

        auth = None
        throttle = None
        if cfg.auth is not None:
            # One realm per served domain; plain user names belong to [auth] realm's domain.
            realm = cfg.auth.realm or cfg.server.domains[0]
            realms = (realm, *(d for d in cfg.server.domains if d != realm))
            creds = (load_users_file(Path(cfg.auth.users_file).read_text(), realm, realms)
                     if cfg.auth.users_file else StaticCredentials(realm))
            for user, password in cfg.auth.users.items():
                creds.add_password(user, password)
            auth = DigestAuthenticator(realms, secrets.token_bytes(32), creds, cfg.auth.nonce_ttl,
                                       algorithms=cfg.auth.algorithms)
            throttle = AuthThrottle(ThrottlePolicy(
                max_failures=cfg.auth.max_failures,
                max_source_failures=cfg.auth.max_failures_per_source,
                lockout=cfg.auth.lockout, max_lockout=cfg.auth.max_lockout))

        # --- jabber gateway (begin) ---
        # Built before state loads so the loaded subscriptions' WatchStarted reach it.
        if cfg.jabber is not None:
            self.jabber = JabberGateway.from_config(cfg.jabber, self.notifications, cfg.server.domains,
                                                    authenticated=cfg.auth is not None)
        # --- jabber gateway (end) ---
        sources: dict[str, SourceHandler] = {"registrar": self.notifications.subscribe}
        if self.jabber is not None:
            # The gateway admits (caps, rate, faithful addresses) before the presence service.
            sources["jabber"] = self.jabber.subscribe
        self.dispatcher = Dispatcher(
            self.driver, router,
            handlers={"REGISTER": self.registrar.register, "PUBLISH": self.publish.publish},
            sources=sources, notify_results=self.notifications.on_notify_result,
            auth=auth, throttle=throttle, trusted=trusted)
        self.driver.attach(self.dispatcher)  # the one late binding (services/ports.py)

        # State first, network second, owed notifications last. Bindings load before the
        # subscriptions, so a restored reg watcher's resource starts from them. The loaded
        # records are long-lived and free of cycles: collecting while millions of them arrive
        # only walks them again and again, so the collector is off until they are frozen.
        gc.disable()
        try:
            closed = {(PRESENCE, aor) for aor in await self.registrar.load()}
            self.notifier.provide("reg", self.registrar.reg_parts)
            effects = self.notifier.load(await self.storage.load_subscriptions(),
                                         self.notifications.clock())
            for aor in self.registrar.bindings:
                self.notifier.seed_part(aor, "registrar", self.registrar.part(aor))
            published, unpublished = await self.publish.load()
            for event, presentity in published:
                part = self.publish.part(presentity, event)
                self.notifier.seed_part(presentity, "publish", part, event)
                if isinstance(part, PresenceDoc) and part.tuples:
                    self.notifier.seed_part(presentity, PUBLISHED, PUBLISHED_MARK)
            closed |= unpublished
        finally:
            gc.freeze()  # what loaded stays; the collector never walks it
            gc.enable()

        started: set[str] = set()
        tcp_table = ConnectionTable()  # the TCP caps count every TCP listener together
        for a in addresses:
            advertised = _reachable_host(a.host)
            if a.transport == "udp":
                t: UdpTransport | TcpTransport = UdpTransport(self.driver.receive, a.host, a.port,
                                                              advertised)
            else:
                t = TcpTransport(self.driver.receive, a.host, a.port,
                                 advertised_host=advertised, table=tcp_table,
                                 max_message_size=cfg.server.max_message_size,
                                 max_connections=cfg.server.max_tcp_connections,
                                 max_connections_per_source=cfg.server.max_connections_per_source,
                                 idle_timeout=cfg.server.connection_idle_timeout,
                                 first_message_timeout=cfg.server.connection_first_message_timeout)
                t.may_connect = trusted  # outbound connections: trusted proxies only
            await t.start()
            if a.transport not in started:  # the bound port (a configured 0 gets one)
                started.add(a.transport)
                via_hosts[a.transport] = t.local
            self.driver.add_transport(t)
            self.transports.append(t)
            log.info("listening on %s:%s:%d", a.transport, a.host, t.port)
        # --- jabber gateway start (begin) ---
        if self.jabber is not None:
            await self.jabber.start()  # connects in the background, re-announces on Connected
        # --- jabber gateway start (end) ---
        log.info("serving domains %s with %d subscriptions and %d registered AORs",
                 ", ".join(sorted(domains)), len(self.notifier.dialogs), len(self.registrar.bindings))
        await self.notifications.run(effects)
        for event, presentity in closed:  # their state changed while we were down
            await self.notifications.renotify(presentity, event)
        # The loaded state lives as long as the process: keep it out of the cyclic collector,
        # and collect young objects less often. Every SIP message allocates many short-lived
        # objects; with the default thresholds the collector took ~15% of CPU under load
        # (docs/performance.md).
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        # A storage writer thread (SQLite with synchronous FULL, the checkpointer) needs the
        # GIL briefly per commit; the default 5 ms switch interval makes every durable write
        # wait behind the loop (docs/performance.md).
        sys.setswitchinterval(0.0005)

    async def stop(self) -> None:
        # --- jabber gateway stop (begin) ---
        if self.jabber is not None:
            await self.jabber.stop()
        # --- jabber gateway stop (end) ---
        # No new work: requests are dropped, expiry timers stop. What is in flight finishes
        # (its answers still go out) before the storage closes; what overstays is cancelled.
        self.dispatcher.close()
        self.notifications.close()
        self.registrar.close()
        self.publish.close()
        cancelled = await drain_all(
            (self.dispatcher.background, self.registrar.background, self.publish.background,
             self.notifications.background), SHUTDOWN_DRAIN_TIMEOUT)
        if cancelled:
            log.warning("shutdown: %d task(s) did not finish within %.0f s and were cancelled",
                        cancelled, SHUTDOWN_DRAIN_TIMEOUT)
        for t in self.transports:
            await t.stop()
        self.driver.close()
        await self.storage.close()
        log.info("stopped")


async def serve(config: Config) -> int:
    server = Server(config)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    return 0


def run(config: Config) -> int:
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(config))
