"""The composition root: builds every part from the configuration, wires them, runs the loop.

Start-up order matters: storage opens, state loads (subscriptions, then bindings), transports
start, and only then do the notifications the restart owes go out (final NOTIFYs for
subscriptions that expired while we were down, a fresh NOTIFY for presentities whose bindings or
publications did).
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import gc
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from presenced import __version__, sdnotify
from presenced.build import core_build
from presenced.cluster.leader import ComponentLease, JabberLink
from presenced.cluster.node import ClusterNode
from presenced.cluster.store import ClusterStore, ClusterUnavailable
from presenced.config import (
    Config,
    ConfigError,
    exposed_without_auth,
    load_config,
    load_default_config,
)
from presenced.pa.model import PresenceDoc
from presenced.pa.packages import registry
from presenced.pa.packages.presence import PUBLISHED, PUBLISHED_MARK
from presenced.pa.policy.evaluate import Policy
from presenced.pa.publish import Publications, PublishPolicy
from presenced.pa.routing import Router, compile_script
from presenced.pa.subscription import PRESENCE, Notifier, PaPolicy
from presenced.registrar.bindings import RegistrarPolicy
from presenced.services.alarm import drain_all
from presenced.services.cluster import ClusterReplica
from presenced.services.dispatch import Dispatcher, SourceHandler
from presenced.services.jabber import JabberGateway
from presenced.services.notifier import NotifierService
from presenced.services.publish import PublishService
from presenced.services.registrar import RegistrarService
from presenced.services.reqlog import RequestLog
from presenced.services.rules import RulesService
from presenced.sip.auth import (
    AuthThrottle,
    DigestAuthenticator,
    StaticCredentials,
    ThrottlePolicy,
    load_users_file,
)
from presenced.sip.endpoint import Endpoint, EndpointConfig
from presenced.sip.limits import AmplificationLimits, RateLimits, parse_networks
from presenced.sip.message import Limits
from presenced.sip.tokens import make_token
from presenced.storage import Storage, open_storage
from presenced.storage.redis import DEFAULT_PREFIX, split_prefix
from presenced.tasks import where
from presenced.transport.contact import ContactFor
from presenced.transport.driver import Driver
from presenced.transport.mirror import HepMirror
from presenced.transport.tcp import ConnectionTable, TcpTransport
from presenced.transport.tls import Certificates, TlsFiles, TlsTransport
from presenced.transport.udp import UdpTransport
from presenced.transport.ws import WsTransport
from presenced.xcap.server import XcapServer, XcapSettings

if TYPE_CHECKING:  # the admin adapter (aiohttp, prometheus-client) loads only when configured
    from presenced.admin.metrics import Histograms, MeteredStorage
    from presenced.admin.server import AdminServer

log = logging.getLogger("presenced.server")


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
# The whole of stop(): the drain, then the cluster's lease, the transports and the storage.
# What overstays is logged (each task and where it waits) and the process exits with 1: every
# write was committed before its answer went out, so nothing acknowledged is lost, and an
# operator's SIGTERM always ends the process (a supervisor's own timeout would SIGKILL it).
SHUTDOWN_TIMEOUT = 10.0


class Server:
    """Everything one presenced process runs. `start()` then `stop()`."""

    def __init__(self, config: Config, config_path: str | None = None,
                 worker: int | None = None) -> None:
        """`worker`: this process's index when `[server] workers` > 1 (cli.supervise)."""
        self.config = config
        self.worker = worker
        self.config_path = config_path  # what `reload()` reads again (None: the built-in one)
        self.transports: list[UdpTransport | TcpTransport | WsTransport] = []
        self.stopped = asyncio.Event()
        self.jabber: JabberGateway | None = None
        self.admin: AdminServer | None = None
        self.certificates: Certificates | None = None
        self.auth: DigestAuthenticator | None = None
        # What `reload()` can apply without a restart: name -> hook(new config) -> what it did.
        # ("tls": the certificate files again, as SIGHUP does.)
        self.reload_hooks: dict[str, Callable[[Config], Awaitable[str]]] = {
            "users": self._reload_users, "routing": self._reload_routing,
            "log_level": self._reload_log_level, "tls": self._reload_tls,
        }
        self.xcap: XcapServer | None = None
        self.request_log: RequestLog | None = None
        self.cluster: ClusterNode | None = None
        self.jabber_lease: ComponentLease | None = None

    async def start(self) -> None:
        cfg = self.config
        exposed = exposed_without_auth(cfg)
        if exposed:  # only reachable with server.allow_anonymous = true (config.py refuses)
            log.warning("serving %s without [auth] (server.allow_anonymous = true): anyone can "
                        "register, publish and subscribe as anyone", ", ".join(exposed))
        data_dir = Path(cfg.server.data_dir)
        store: ClusterStore | None = None
        self.storage: Storage
        if cfg.clustered:
            # --- cluster (begin) ---
            url, prefix = split_prefix(cfg.storage.url)
            store = ClusterStore(url, prefix or DEFAULT_PREFIX, node_id(cfg, self.worker))
            self.storage = store
            # --- cluster (end) ---
        else:
            self.storage = open_storage(cfg.storage.url, data_dir)
        metered: MeteredStorage | None = None
        histograms: Histograms | None = None
        if cfg.admin is not None:
            # Metrics only when served: then every storage write is timed (admin/metrics.py).
            from prometheus_client import CollectorRegistry

            from presenced.admin.metrics import Histograms, MeteredStorage
            histograms = Histograms(CollectorRegistry())
            metered = MeteredStorage(self.storage, histograms.storage_latency)
            self.storage = metered
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
        if cfg.hep is not None:
            self.driver.mirror = await _hep_mirror(cfg)
        # What the services answer and send through: the driver, or the request log in front
        # of it ([server] log_requests, or debug); off, the services hold the driver itself.
        net: Driver | RequestLog = self.driver
        requests_level = logging.INFO if cfg.server.log_requests else logging.DEBUG
        if logging.getLogger("presenced.requests").isEnabledFor(requests_level):
            net = self.request_log = RequestLog(self.driver, requests_level)

        advertise = cfg.cluster.advertise if cfg.cluster is not None else None
        if advertise is not None:
            local_hosts.add(advertise.rpartition(":")[0].lower())

        contact_for = ContactFor(self.driver, via_hosts, advertise)

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
        # Authorization (docs/presence.md "Authorization"): the policy the notifier asks per
        # watcher, and the rules service (ports.RulesStore: XCAP and `presenced rules`).
        self.policy = Policy(pa.default_policy, pa.expose_contacts)
        self.notifier.authz = self.policy
        self.notifications = NotifierService(self.notifier, net, self.storage,
                                             may_connect=trusted)
        self.rules = RulesService(self.storage, self.policy, self.notifications.reauthorize)
        reg = cfg.registrar
        self.registrar = RegistrarService(
            RegistrarPolicy(reg.default_expires, reg.min_expires, reg.max_expires, reg.max_contacts_per_aor),
            net, self.storage, self.notifications, frozenset(cfg.server.domains),
            max_bindings=reg.max_bindings,
        )
        self.publish = PublishService(
            Publications(PublishPolicy(pa.default_expires, pa.min_publish_expires, pa.max_expires,
                                       max_presentity_bytes=pa.max_presentity_bytes,
                                       max_publications=pa.max_publications,
                                       max_total_bytes=pa.max_publication_bytes), make_token,
                         packages=packages),
            net, self.storage, self.notifications, frozenset(cfg.server.domains),
        )

        script = None
        if cfg.routing is not None and cfg.routing.script:
            path = Path(cfg.routing.script)
            script = compile_script(path.read_text(), str(path))
        router = Router(cfg.jabber.gateway_domain.lower() if cfg.jabber else None, script)
        self.router = router

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
            self.auth = auth
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
            net, router,
            handlers={"REGISTER": self.registrar.register, "PUBLISH": self.publish.publish},
            sources=sources, notify_results=self.notifications.on_notify_result,
            auth=auth, throttle=throttle, trusted=trusted)
        # The one late binding (services/ports.py); the request log sees the events first.
        self.driver.attach(net.wrap(self.dispatcher) if isinstance(net, RequestLog)
                           else self.dispatcher)

        if store is not None:
            # --- cluster (begin) ---
            self.registrar.claims = self.publish.claims = self.notifications.claims = store
            replica = ClusterReplica(self.notifications, self.registrar, self.publish,
                                     self.endpoint.accept_hosts, self.rules.reload)
            node_hosts = {_reachable_host(a.host).lower() for a in addresses}
            if advertise is not None:
                node_hosts.add(advertise.rpartition(":")[0].lower())
            assert cfg.cluster is not None or cfg.server.workers > 1
            lease = cfg.cluster.lease_time if cfg.cluster is not None else 5.0
            self.cluster = ClusterNode(store, replica, node_hosts, lease)
            if self.jabber is not None:
                # One component connection per domain: the lease holder connects, the others
                # hand it their watches on the feed (docs/jabber.md "In a cluster").
                self.jabber.cluster = JabberLink(store)
                replica.jabber_handler = self.jabber.on_feed
                self.jabber_lease = ComponentLease(store, lease, self.jabber.become_leader,
                                                   self.jabber.lose_leadership)
            await self.cluster.join()  # the feed first: no change after the load is missed
            # --- cluster (end) ---
        # State first, network second, owed notifications last. Bindings load before the
        # subscriptions, so a restored reg watcher's resource starts from them. The loaded
        # records are long-lived and free of cycles: collecting while millions of them arrive
        # only walks them again and again, so the collector is off until they are frozen.
        await self.rules.load()  # before the subscriptions: they are re-decided against it
        gc.disable()
        try:
            closed = {(PRESENCE, aor) for aor in await self.registrar.load()}
            self.notifier.provide("reg", self.registrar.reg_parts)
            await self.notifications.load_ended()  # offline winfo: before the dialogs load
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
        # The rules may have changed while we were down (`presenced rules` on a stopped server).
        effects += self.notifier.reauthorize_all(self.notifications.clock())

        if self.cluster is not None:
            self.cluster.ready()
        started: set[str] = set()
        reuse_port = cfg.server.workers > 1  # the workers share each listen address
        # The stream caps count every TCP, TLS and WebSocket listener together.
        tcp_table = ConnectionTable()
        if cfg.tls is not None:
            tls = cfg.tls
            self.certificates = Certificates(TlsFiles(tls.certificate, tls.private_key, tls.ca_file,
                                                      tls.verify_client, tls.verify_server))
        srv = cfg.server
        for a in addresses:
            advertised = _reachable_host(a.host)
            t: UdpTransport | TcpTransport | WsTransport
            # What every stream listener (TCP, TLS, WS, WSS) shares: one table, the same caps.
            stream: dict[str, Any] = {
                "advertised_host": advertised, "table": tcp_table,
                "max_message_size": srv.max_message_size,
                "max_connections": srv.max_tcp_connections,
                "max_connections_per_source": srv.max_connections_per_source,
                "idle_timeout": srv.connection_idle_timeout,
                "first_message_timeout": srv.connection_first_message_timeout,
            }
            if a.transport == "udp":
                t = UdpTransport(self.driver.receive, a.host, a.port, advertised,
                                 reuse_port=reuse_port,
                                 backlog_limit=cfg.limits.overload_backlog,
                                 on_backlog=self.driver.set_backlog)
            elif a.transport in ("ws", "wss"):
                secure = a.transport == "wss"
                t = WsTransport(self.driver.receive, a.host, a.port, secure=secure,
                                ssl_context=self.certificates.server if secure and self.certificates else None,
                                ping_interval=srv.websocket_ping_interval, **stream)
            else:
                t = TcpTransport(self.driver.receive, a.host, a.port, reuse_port=reuse_port,
                                 **stream)
                if a.transport == "tls":
                    assert self.certificates is not None  # config.py refuses tls without [tls]
                    t = TlsTransport.over(t, self.certificates)
                t.may_connect = trusted  # outbound connections: trusted proxies only
            await t.start()
            if a.transport not in started:  # the bound port (a configured 0 gets one)
                started.add(a.transport)
                via_hosts[a.transport] = t.local
            self.driver.add_transport(t)
            self.transports.append(t)
            log.info("listening on %s:%s", a.transport, _hostport(a.host, t.port))
        # --- xcap server start (begin) ---
        if cfg.xcap is not None:  # HTTP on this loop, over the rules service (docs/xcap.md)
            host, port = cfg.xcap.address
            self.xcap = XcapServer(XcapSettings(host, port, cfg.xcap.root,
                                                cfg.xcap.max_document_size,
                                                cfg.xcap.max_uri_length),
                                   self.rules, auth, throttle)
            await self.xcap.start()
        # --- xcap server start (end) ---
        # --- jabber gateway start (begin) ---
        if self.jabber is not None:
            await self.jabber.start()  # connects in the background, re-announces on Connected
            if self.jabber_lease is not None:
                self.jabber_lease.start()  # the leader connects (become_leader)
        # --- jabber gateway start (end) ---
        # --- admin server start (begin) ---
        if cfg.admin is not None:
            from presenced.admin.server import AdminServer, AdminState

            jabber = self.jabber
            state = AdminState(
                endpoint=self.endpoint, notifications=self.notifications, registrar=self.registrar,
                publish=self.publish, storage=metered, storage_backend=cfg.storage.backend,
                version=__version__, core=core_build(), reload=self.reload,
                domains=tuple(sorted(domains)),
                xmpp_up=(lambda: None) if jabber is None else (lambda: jabber.component.connected),
                rules=self.rules,
                cluster=(lambda: None) if self.cluster is None else self.cluster.status)
            host, port = cfg.admin.address
            self.admin = AdminServer(state, host, port, cfg.admin.read_token(),
                                     metrics_public=cfg.admin.metrics_public, histograms=histograms)
            await self.admin.start()
        # --- admin server start (end) ---
        log.info("serving domains %s with %d subscriptions and %d registered AORs (%s core)",
                 ", ".join(sorted(domains)), len(self.notifier.dialogs), len(self.registrar.bindings),
                 core_build())
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

    # --- reload (POST /api/v1/reload) -----------------------------------------------------------

    async def reload(self, what: list[str] | None = None) -> dict[str, str]:
        """Read the configuration file again and apply `what` (every hook when None) without a
        restart. Raises ValueError (nothing applied) for an unknown name or a bad file."""
        names = list(self.reload_hooks) if what is None else what
        unknown = [n for n in names if n not in self.reload_hooks]
        if unknown:
            raise ValueError(f"cannot reload {', '.join(unknown)} (can: {', '.join(self.reload_hooks)})")
        try:
            cfg = load_config(self.config_path) if self.config_path else load_default_config()
        except ConfigError as exc:
            raise ValueError(f"configuration: {exc}") from None
        done: dict[str, str] = {}
        for name in names:
            done[name] = await self.reload_hooks[name](cfg)
            log.info("reload %s: %s", name, done[name])
        if self.admin is not None and cfg.admin is not None:
            self.admin.set_token(cfg.admin.read_token())  # a rotated token_file
        self.config = cfg
        return done

    async def _reload_users(self, cfg: Config) -> str:
        if self.auth is None or cfg.auth is None:
            return "unchanged: [auth] is switched on or off only by a restart"
        realm = cfg.auth.realm or cfg.server.domains[0]
        realms = (realm, *(d for d in cfg.server.domains if d != realm))
        creds = (load_users_file(Path(cfg.auth.users_file).read_text(), realm, realms)
                 if cfg.auth.users_file else StaticCredentials(realm))
        for user, password in cfg.auth.users.items():
            creds.add_password(user, password)
        self.auth.replace_credentials(creds)
        return "users file and [auth] users loaded"

    async def _reload_routing(self, cfg: Config) -> str:
        if cfg.routing is None or not cfg.routing.script:
            self.router.script = None
            return "no routing script: the default rule"
        path = Path(cfg.routing.script)
        try:
            self.router.script = compile_script(path.read_text(), str(path))
        except Exception as exc:  # the operator's script: its error, named, nothing replaced
            raise ValueError(f"routing script: {exc}") from None
        return f"routing script {path} loaded"

    async def _reload_log_level(self, cfg: Config) -> str:
        logging.getLogger().setLevel(cfg.server.log_level.upper())
        return f"log level {cfg.server.log_level}"

    async def _reload_tls(self, cfg: Config) -> str:
        if self.certificates is None:
            return "unchanged: no tls: or wss: listener"
        try:
            self.certificates.reload()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ValueError(f"TLS certificates (the old ones keep serving): {exc}") from None
        return "TLS certificates loaded: new connections use them"

    def reload_tls(self) -> bool:
        """SIGHUP: load the [tls] files again; new handshakes use them. False (the old
        certificate still serving) when they do not load."""
        if self.certificates is None:
            return True
        try:
            self.certificates.reload()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.error("TLS reload failed, keeping the old certificate: %s", exc)
            return False
        return True

    async def stop(self) -> None:
        # --- admin server stop (begin) ---
        if self.admin is not None:
            await self.admin.stop()
        # --- admin server stop (end) ---
        # --- xcap server stop (begin) ---
        if self.xcap is not None:  # first: its writes need the storage
            await self.xcap.stop()
        # --- xcap server stop (end) ---
        # --- jabber gateway stop (begin) ---
        if self.jabber_lease is not None:
            await self.jabber_lease.stop()  # drops the component, then the lease
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
        if self.cluster is not None:
            await self.cluster.leave()
        for t in self.transports:
            await t.stop()
        self.driver.close()
        if self.driver.mirror is not None:
            self.driver.mirror.close()
        await self.storage.close()
        log.info("stopped")


async def _hep_mirror(cfg: Config) -> HepMirror:
    """The `[hep]` capture copy; its address is resolved once, here (a name that does not
    resolve stops the start-up, like a listen address that cannot be bound)."""
    assert cfg.hep is not None
    host, port = cfg.hep.target
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    address = infos[0][4]
    mirror = HepMirror((str(address[0]), int(address[1])), cfg.hep.capture_id, cfg.hep.password)
    log.info("hep: mirroring every SIP message to %s as capture id %d",
             _hostport(mirror.address[0], mirror.address[1]), cfg.hep.capture_id)
    return mirror


def _hostport(host: str, port: int) -> str:
    """"host:port", an IPv6 address in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def node_id(config: Config, worker: int | None) -> str:
    """This process's cluster node id: `[cluster] node_id` (or the host name), and the worker
    index when there are several workers."""
    base = (config.cluster.node_id if config.cluster is not None else "") or socket.gethostname()
    return base if worker is None else f"{base}-{worker}"


async def serve(config: Config, config_path: str | None = None,
                worker: int | None = None) -> int:
    server = Server(config, config_path, worker)
    try:
        await server.start()
    except ClusterUnavailable as exc:
        log.error("cannot start: %s", exc)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # `presenced rules` writes to storage; SIGUSR1 makes a running server read it again.
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: server.notifications.background.spawn(server.rules.reload()))
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    # Sockets bound, state loaded, owed NOTIFYs sent: systemd's Type=notify may go on.
    listening = ", ".join(f"{t.name}:{_hostport(t.host, t.port)}" for t in server.transports)
    sdnotify.notify(f"READY=1\nSTATUS=serving on {listening}")
    await stop.wait()
    log.info("shutting down")
    sdnotify.notify("STOPPING=1")
    # If the event loop itself is stuck (a call that blocks it), the asyncio bound below never
    # fires: faulthandler's own thread then dumps every thread's stack and exits with 1.
    faulthandler.dump_traceback_later(SHUTDOWN_TIMEOUT + 2, exit=True)
    # A task of its own, so that where it waits can be shown if it overstays.
    stopping = loop.create_task(server.stop(), name="shutdown")
    done, _ = await asyncio.wait({stopping}, timeout=SHUTDOWN_TIMEOUT)
    if done:
        faulthandler.cancel_dump_traceback_later()
    else:
        current = asyncio.current_task()
        stuck = [where(t) for t in asyncio.all_tasks() if t is not current]
        log.error("shutdown did not finish within %g s; exiting anyway. Still running: %s",
                  SHUTDOWN_TIMEOUT, "; ".join(stuck))
        logging.shutdown()
        os._exit(1)  # not through asyncio.Runner: it would wait for the same tasks again
    await stopping
    return 0


def run(config: Config, config_path: str | None = None, worker: int | None = None) -> int:
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(config, config_path, worker))
