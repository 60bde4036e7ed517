"""The admin HTTP server: JSON API under /api/v1, /metrics, the dashboard at / (docs/admin.md).

An aiohttp application on the server's own event loop. It only reads the state through the
services' query methods and changes it through their operator entry points (terminate a
subscription, remove a binding or a publication, reload); it never touches a private attribute.

Authentication: every route but the dashboard's static files (which hold no data) needs
``Authorization: Bearer <token>``: none -> 401, a wrong one -> 403, compared in constant time.
/metrics is open when `[admin] metrics_public` says so. The live feed (SSE) cannot carry a header
(EventSource has no way to set one): the page trades its bearer token for a one-time ticket
(POST /api/v1/events/ticket, 30 s), so the long-lived token never appears in a URL.

Errors are JSON ``{"error": "..."}`` with a 4xx status; an unexpected exception is logged and
answered 500 with no traceback in the body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from presenced.admin.metrics import Histograms, MeteredStorage, StateCollector
from presenced.pa.policy.rules import SUB_HANDLING_VALUE, simple_rules
from presenced.pa.records import Binding, Publication
from presenced.pa.subscription import PRESENCE, SubscriptionInfo
from presenced.services.notifier import NotifierService
from presenced.services.ports import RulesInvalid, RulesPreconditionFailed, RulesStore
from presenced.services.publish import PublishService
from presenced.services.registrar import RegistrarService
from presenced.sip.endpoint import Endpoint

log = logging.getLogger("presenced.admin")

API = "/api/v1"
MAX_LIMIT = 1000  # rows per page at most
DEFAULT_LIMIT = 100
TICKET_TTL = 30.0  # seconds a live-feed ticket may wait for its EventSource
MAX_TICKETS = 100
FEED_INTERVAL = 1.0  # seconds between two live-feed snapshots
TOP = 10  # busiest presentities in a snapshot
# RFC 6665 §4.1.3 reasons an operator may end a subscription with.
REASONS = frozenset({"deactivated", "probation", "rejected", "noresource", "giveup", "invariant"})

Reload = Callable[[list[str] | None], Awaitable[dict[str, str]]]


class BadRequest(Exception):
    """The operator's request is wrong (answered 400, or `status`)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AdminState:
    """What the admin server reads and acts on, handed over by the composition root."""

    endpoint: Endpoint
    notifications: NotifierService
    registrar: RegistrarService
    publish: PublishService
    storage: MeteredStorage | None
    storage_backend: str
    version: str
    reload: Reload
    core: str = "python"  # which build of the sans-IO core runs: "python" or "mypyc"
    started: float = field(default_factory=time.time)
    node: str = field(default_factory=socket.gethostname)
    domains: tuple[str, ...] = ()
    # XMPP component: None without a gateway, else whether its stream is up.
    xmpp_up: Callable[[], bool | None] = lambda: None
    # Cluster status (nodes, leases) for /status: filled in by the cluster adapter.
    cluster: Callable[[], Mapping[str, object] | None] = lambda: None
    # The users' presence rules (the same store XCAP and `presenced rules` write).
    rules: RulesStore | None = None


def _aor(text: str) -> str:
    """An AOR as records hold it ("alice@example.com"); "sip:" in front is accepted."""
    value = unquote(text).strip()
    for scheme in ("sip:", "sips:"):
        if value.lower().startswith(scheme):
            value = value[len(scheme):]
    if not value or len(value) > 512 or not value.isprintable() or " " in value:
        raise BadRequest("not an address of record (user@domain)")
    user, at, host = value.rpartition("@")
    return f"{user}@{host.lower()}" if at else value.lower()


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: not an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}")
    return value


def _sub_json(info: SubscriptionInfo, now: float) -> dict[str, object]:
    r = info.record
    return {
        "id": r.id, "event": r.event, "event_id": r.event_id, "presentity": r.presentity,
        "watcher": r.watcher, "state": info.status, "expires_at": r.expires_at,
        "expires_in": max(0, int(r.expires_at - now)), "flow": info.flow,
        "target": r.remote_target, "content_type": r.content_type, "source": r.source,
        "notify_outstanding": info.outstanding, "last_notify_status": info.last_notify_status,
        "cseq": info.cseq,
    }


def _binding_json(b: Binding, now: float) -> dict[str, object]:
    return {"contact": b.contact, "expires_at": b.expires_at,
            "expires_in": max(0, int(b.expires_at - now)), "q": b.q, "flow": b.peer,
            "call_id": b.call_id, "cseq": b.cseq, "instance": b.instance,
            "user_agent": b.user_agent}


def _pub_json(p: Publication, now: float) -> dict[str, object]:
    return {"etag": p.etag, "event": p.event, "expires_at": p.expires_at,
            "expires_in": max(0, int(p.expires_at - now)), "content_type": p.content_type,
            "size": len(p.body)}


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1), status=status,
                        content_type="application/json")


class AdminServer:
    def __init__(self, state: AdminState, host: str, port: int, token: str,
                 metrics_public: bool = False, histograms: Histograms | None = None) -> None:
        """`histograms`: made beforehand when the storage was wrapped in them (their registry
        is this server's)."""
        self.state = state
        self.host = host
        self.port = port
        self._token = token.encode()
        self.metrics_public = metrics_public
        self.histograms = histograms if histograms is not None else Histograms(CollectorRegistry())
        self.registry = self.histograms.registry
        self.registry.register(StateCollector(
            state.endpoint, state.notifications, state.registrar, state.publish, state.storage,
            state.started, state.xmpp_up))
        self._tickets: dict[str, float] = {}
        self._snapshot: tuple[float, dict[str, object]] | None = None
        self._runner: web.AppRunner | None = None
        self._feeds: set[asyncio.Task[None]] = set()
        self.app = self._build()

    def set_token(self, token: str) -> None:
        """A new token (a reload of token_file)."""
        self._token = token.encode()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        svc = self.state.notifications
        svc.fanout_observer = self.histograms.observe_fanout
        svc.latency_observer = self.histograms.notify_latency.observe
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        if self.port == 0 and runner.addresses:
            self.port = int(runner.addresses[0][1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        log.info("admin API listening on http://%s:%d", shown, self.port)

    async def stop(self) -> None:
        for task in list(self._feeds):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- routes -------------------------------------------------------------------------------

    def _build(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/static/{name}", self.static)
        r.add_get("/metrics", self.metrics)
        r.add_get(f"{API}/status", self.status)
        r.add_get(f"{API}/presentities", self.presentities)
        r.add_get(API + "/presentities/{aor}", self.presentity)
        r.add_get(API + "/presentities/{aor}/watchers", self.watchers)
        r.add_get(API + "/watchers/{aor}/subscriptions", self.subscriptions_of)
        r.add_get(API + "/subscriptions/{id:.+}", self.subscription)
        r.add_delete(API + "/subscriptions/{id:.+}", self.terminate)
        r.add_get(API + "/bindings/{aor}", self.bindings)
        r.add_delete(API + "/bindings/{aor}", self.unbind)
        r.add_delete(API + "/publications/{etag}", self.unpublish)
        r.add_get(API + "/rules/{aor}", self.get_rules)
        r.add_put(API + "/rules/{aor}", self.put_rules)
        r.add_delete(API + "/rules/{aor}", self.delete_rules)
        r.add_post(f"{API}/reload", self.reload)
        r.add_get(f"{API}/failures", self.failures)
        r.add_get(f"{API}/top", self.top)
        r.add_post(f"{API}/events/ticket", self.ticket)
        r.add_get(f"{API}/events", self.events)
        return app

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return _json({"error": str(exc)}, exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
            resp = _json({"error": exc.reason}, exc.status)
            resp.headers.update(headers)
            return resp
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("admin API: %s %s failed", request.method, request.path)
            return _json({"error": "internal error (see the server log)"}, 500)

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        path = request.path
        if path == "/" or path.startswith("/static/"):
            return await handler(request)
        if path == "/metrics" and self.metrics_public:
            return await handler(request)
        if path == f"{API}/events" and request.method == "GET":
            ticket = request.query.get("ticket", "")
            expires = self._tickets.pop(ticket, None)
            if expires is None or expires < time.monotonic():
                raise BadRequest("a fresh ticket is needed (POST /api/v1/events/ticket)", 403)
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None:
            resp = _json({"error": "a bearer token is needed (Authorization: Bearer ...)"}, 401)
            resp.headers["WWW-Authenticate"] = 'Bearer realm="presenced"'
            return resp
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8", "surrogateescape"), self._token):
            return _json({"error": "wrong token"}, 403)
        return await handler(request)

    # --- dashboard ----------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html", "text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        types = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
        if name not in types:
            raise BadRequest("no such file", 404)
        return self._file(name, types[name])

    @staticmethod
    def _file(name: str, content_type: str) -> web.Response:
        data = resources.files("presenced.admin").joinpath("static", name).read_bytes()
        resp = web.Response(body=data, content_type=content_type)
        # The page runs only its own script, talks only to this server, and is never framed.
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def ticket(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        for t, exp in list(self._tickets.items()):
            if exp < now:
                del self._tickets[t]
        if len(self._tickets) >= MAX_TICKETS:
            raise BadRequest("too many tickets waiting", 429)
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = now + TICKET_TTL
        return _json({"ticket": ticket, "expires_in": TICKET_TTL})

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._feeds.add(task)
        try:
            while True:
                data = json.dumps(self.snapshot())
                await resp.write(f"event: snapshot\ndata: {data}\n\n".encode())
                await asyncio.sleep(FEED_INTERVAL)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._feeds.discard(task)
        return resp

    def snapshot(self) -> dict[str, object]:
        """Counters, gauges, the busiest presentities and the latest failures; computed at
        most once per half-interval however many dashboards watch."""
        mono = time.monotonic()
        cached = self._snapshot
        if cached is not None and mono - cached[0] < FEED_INTERVAL / 2:
            return cached[1]
        st = self.state
        stats = st.endpoint.stats
        svc = st.notifications
        counts = svc.notifier.counts()
        snap: dict[str, object] = {
            "time": time.time(),
            "counters": {
                "requests": sum(stats.requests.values()),
                "responses": sum(stats.responses.values()),
                "notifies_sent": svc.notifies_sent,
                "notify_failed": svc.notify_failures,
                "retransmitted": stats.retransmitted,
                "coalesced": svc.notifier.coalesced,
                "storage_errors": sum(st.storage.errors.values()) if st.storage else 0,
            },
            "gauges": {
                "subscriptions": sum(counts.values()),
                "bindings": st.registrar.total,
                "publications": len(st.publish.pubs),
                "resources": len(svc.notifier.resources),
                "transactions": st.endpoint.txns.server_count + st.endpoint.txns.client_count,
            },
            "top": self._top(TOP),
            "failures": self._failures(10),
        }
        self._snapshot = (mono, snap)
        return snap

    # --- metrics ------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- queries ------------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        st = self.state
        notifier = st.notifications.notifier
        counts = notifier.counts()
        health: dict[str, object] = {"backend": st.storage_backend}
        health.update(st.storage.health() if st.storage is not None else {"ok": True})
        return _json({
            "version": st.version,
            "core": st.core,
            "node": st.node,
            "started_at": st.started,
            "uptime": round(time.time() - st.started, 3),
            "domains": list(st.domains),
            "storage": health,
            "counts": {
                "subscriptions": sum(counts.values()),
                "subscriptions_by_event": {ev: sum(n for (e, _), n in counts.items() if e == ev)
                                           for ev in notifier.packages},
                "resources": len(notifier.resources),
                "registered_aors": len(st.registrar.bindings),
                "bindings": st.registrar.total,
                "publications": len(st.publish.pubs),
                "server_transactions": st.endpoint.txns.server_count,
                "client_transactions": st.endpoint.txns.client_count,
                "shed": st.endpoint.stats.shed,
                "notifies_sent": st.notifications.notifies_sent,
                "notify_failures": st.notifications.notify_failures,
            },
            # True while a UDP receive queue is over [limits] overload_backlog: new work is shed.
            "overloaded": st.endpoint.backlogged,
            "xmpp": None if st.xmpp_up() is None else {"connected": st.xmpp_up()},
            "cluster": st.cluster(),  # None on a single node
        })

    def _names(self) -> dict[str, dict[str, int]]:
        """Every AOR the server holds something of -> watchers per package."""
        out: dict[str, dict[str, int]] = {}
        notifier = self.state.notifications.notifier
        for event, name in notifier.resource_keys():
            out.setdefault(name, {})[event] = notifier.watcher_count(name, event)
        for name in self.state.registrar.bindings:
            out.setdefault(name, {})
        for _, name in self.state.publish.pubs.resources():
            out.setdefault(name, {})
        return out

    async def presentities(self, request: web.Request) -> web.Response:
        q = request.query
        offset = _int(q, "offset", 0, 0, 10**9)
        limit = _int(q, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        needle = q.get("q", "").lower()
        event = q.get("event")
        notifier = self.state.notifications.notifier
        if event is not None and event not in notifier.packages:
            raise BadRequest(f"event: not a served package ({', '.join(notifier.packages)})")
        watched = q.get("watched")
        if watched not in (None, "true", "false"):
            raise BadRequest("watched: true or false")
        rows = []
        bindings = self.state.registrar.bindings
        pubs = self.state.publish.pubs
        for name, watchers in sorted(self._names().items()):
            if needle and needle not in name.lower():
                continue
            if event is not None and event not in watchers and not pubs.of(name, event):
                continue
            total = sum(watchers.values()) if event is None else watchers.get(event, 0)
            if watched is not None and (total > 0) != (watched == "true"):
                continue
            rows.append((name, watchers))
        items = [{"aor": name, "watchers": watchers, "bindings": len(bindings.get(name, {})),
                  "publications": len(pubs.of(name))}
                 for name, watchers in rows[offset:offset + limit]]
        return _json({"total": len(rows), "offset": offset, "limit": limit, "items": items})

    async def presentity(self, request: web.Request) -> web.Response:
        aor = _aor(request.match_info["aor"])
        st = self.state
        notifier = st.notifications.notifier
        now = st.notifications.clock()
        bindings = st.registrar.bindings.get(aor, {})
        pubs = st.publish.pubs.of(aor)
        keys = {ev for ev, name in notifier.resource_keys() if name == aor}
        if not keys and not bindings and not pubs:
            raise BadRequest(f"nothing is known of {aor}", 404)
        packages: dict[str, object] = {}
        for event, pkg in notifier.packages.items():
            if event not in keys and not (event == PRESENCE and bindings):
                continue
            ctype = pkg.formats[0]
            body = notifier.body(aor, ctype, now, event)
            packages[event] = {
                "watchers": notifier.watcher_count(aor, event),
                "sources": notifier.sources_of(aor, event),
                "content_type": ctype,
                "document": body.decode("utf-8", "replace"),
            }
        return _json({
            "aor": aor,
            "packages": packages,
            "bindings": [_binding_json(b, now) for b in bindings.values()],
            "publications": [_pub_json(p, now) for p in pubs],
        })

    async def watchers(self, request: web.Request) -> web.Response:
        aor = _aor(request.match_info["aor"])
        event = request.query.get("event")
        notifier = self.state.notifications.notifier
        if event is not None and event not in notifier.packages:
            raise BadRequest(f"event: not a served package ({', '.join(notifier.packages)})")
        now = self.state.notifications.clock()
        subs = sorted(notifier.watchers_of(aor, event), key=lambda i: (i.record.event, i.record.watcher))
        return _json({"aor": aor, "watchers": [_sub_json(i, now) for i in subs]})

    async def subscriptions_of(self, request: web.Request) -> web.Response:
        aor = _aor(request.match_info["aor"])
        now = self.state.notifications.clock()
        subs = sorted(self.state.notifications.notifier.subscriptions_of(aor),
                      key=lambda i: (i.record.presentity, i.record.event))
        return _json({"watcher": aor, "subscriptions": [_sub_json(i, now) for i in subs]})

    async def subscription(self, request: web.Request) -> web.Response:
        info = self.state.notifications.notifier.info(request.match_info["id"])
        if info is None:
            raise BadRequest("no such subscription", 404)
        return _json(_sub_json(info, self.state.notifications.clock()))

    async def bindings(self, request: web.Request) -> web.Response:
        aor = _aor(request.match_info["aor"])
        now = self.state.registrar.clock()
        table = self.state.registrar.bindings.get(aor, {})
        return _json({"aor": aor, "bindings": [_binding_json(b, now) for b in table.values()]})

    async def failures(self, request: web.Request) -> web.Response:
        limit = _int(request.query, "limit", 50, 1, 1000)
        return _json({"failures": self._failures(limit)})

    def _failures(self, limit: int) -> list[dict[str, object]]:
        recent = list(self.state.notifications.recent_failures)[-limit:]
        return [{"at": f.at, "event": f.event, "presentity": f.presentity, "watcher": f.watcher,
                 "status": f.status, "id": f.sub_id} for f in reversed(recent)]

    async def top(self, request: web.Request) -> web.Response:
        return _json({"top": self._top(_int(request.query, "limit", TOP, 1, 100))})

    def _top(self, n: int) -> list[dict[str, object]]:
        """The presentities with the most watchers (all packages)."""
        notifier = self.state.notifications.notifier
        totals: dict[str, int] = {}
        for event, name in notifier.resource_keys():
            count = notifier.watcher_count(name, event)
            if count:
                totals[name] = totals.get(name, 0) + count
        best = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [{"aor": name, "watchers": count} for name, count in best]

    # --- actions ------------------------------------------------------------------------------

    async def terminate(self, request: web.Request) -> web.Response:
        reason = request.query.get("reason", "deactivated")
        if reason not in REASONS:
            raise BadRequest(f"reason: one of {', '.join(sorted(REASONS))}")
        info = await self.state.notifications.terminate(request.match_info["id"], reason)
        if info is None:
            raise BadRequest("no such subscription", 404)
        return _json({"terminated": _sub_json(info, self.state.notifications.clock()),
                      "reason": reason})

    async def unbind(self, request: web.Request) -> web.Response:
        aor = _aor(request.match_info["aor"])
        contact = request.query.get("contact")
        removed = await self.state.registrar.remove(aor, contact)
        if not removed:
            what = f"binding {contact!r}" if contact else "binding"
            raise BadRequest(f"{aor} has no such {what}", 404)
        return _json({"aor": aor, "removed": removed})

    async def unpublish(self, request: web.Request) -> web.Response:
        etag = request.match_info["etag"]
        if not await self.state.publish.remove(etag):
            raise BadRequest("no such publication", 404)
        return _json({"removed": etag})

    # --- presence rules (docs/presence.md "Authorization") -----------------------------------

    def _rules(self) -> RulesStore:
        if self.state.rules is None:
            raise BadRequest("presence rules are not served here", 404)
        return self.state.rules

    async def get_rules(self, request: web.Request) -> web.Response:
        aor = _aor(request.match_info["aor"])
        found = await self._rules().get_rules(aor)
        if found is None:
            raise BadRequest(f"{aor} has no rules (the default policy applies)", 404)
        return _json({"aor": aor, "etag": found[1],
                      "document": found[0].decode("utf-8", "replace")})

    async def put_rules(self, request: web.Request) -> web.Response:
        """Body: {"document": "<cp:ruleset ...>"} (a whole RFC 5025 document), or
        {"handling": "allow", "identities": ["bob@example.com", "*@example.org", "*"]} (one
        rule that replaces the user's document); optional "expect": the etag it must replace."""
        aor = _aor(request.match_info["aor"])
        try:
            body: Any = await request.json()
        except ValueError:
            raise BadRequest("body: not JSON") from None
        if not isinstance(body, dict) or set(body) - {"document", "handling", "identities", "expect"}:
            raise BadRequest('body: {"document": XML} or {"handling": ..., "identities": [...]}')
        expect = body.get("expect")
        if expect is not None and not isinstance(expect, str):
            raise BadRequest("expect: an entity tag")
        if isinstance(body.get("document"), str):
            document = body["document"].encode()
        elif body.get("handling") in SUB_HANDLING_VALUE:
            identities = body.get("identities") or ["*"]
            if not isinstance(identities, list) or not all(
                    isinstance(i, str) and 0 < len(i) <= 256 for i in identities):
                raise BadRequest("identities: a list of user@domain, *@domain or *")
            document = simple_rules([("admin", body["handling"], identities)])
        else:
            raise BadRequest(f"document (XML text) or handling ({', '.join(SUB_HANDLING_VALUE)})")
        try:
            etag = await self._rules().put_rules(aor, document, expect)
        except RulesInvalid as exc:
            raise BadRequest(f"invalid rules: {exc.detail}") from None
        except RulesPreconditionFailed as exc:
            raise BadRequest(str(exc), 412) from None
        return _json({"aor": aor, "etag": etag})

    async def delete_rules(self, request: web.Request) -> web.Response:
        aor = _aor(request.match_info["aor"])
        try:
            removed = await self._rules().delete_rules(aor, request.query.get("expect"))
        except RulesPreconditionFailed as exc:
            raise BadRequest(str(exc), 412) from None
        if not removed:
            raise BadRequest(f"{aor} has no rules", 404)
        return _json({"removed": aor})

    async def reload(self, request: web.Request) -> web.Response:
        what: list[str] | None = None
        if request.can_read_body:
            try:
                body: Any = await request.json()
            except ValueError:
                raise BadRequest("body: not JSON") from None
            if not isinstance(body, dict) or set(body) - {"what"}:
                raise BadRequest('body: {"what": ["users", "routing", "log_level", ...]}')
            items = body.get("what")
            if items is not None:
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise BadRequest("what: a list of names")
                what = items
        try:
            done = await self.state.reload(what)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return _json({"reloaded": done})
