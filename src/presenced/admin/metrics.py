"""Prometheus metrics of one server: collected from the counters the parts already keep.

The SIP path pays nothing for them: the endpoint, the notifier and the services count in plain
ints and dicts they keep anyway, and `StateCollector` reads them only when /metrics is scraped.
Three things have no counter to read and are observed as they happen, into histograms of this
server's own `CollectorRegistry`: the fan-out of one change (set_part to the last NOTIFY handed
to the network), a NOTIFY's round trip (sent to final answer), and a storage write (through
`MeteredStorage`, which exists only when the admin server is configured).

Labels are bounded sets: method (KNOWN_METHODS or OTHER), status class, event package, state,
storage operation. Never a URI, a user or a Call-ID.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from presenced.pa.records import Binding, EndedWatchers, Publication, Subscription
from presenced.services.notifier import NotifierService
from presenced.services.ports import Storage
from presenced.services.publish import PublishService
from presenced.services.registrar import RegistrarService
from presenced.sip.endpoint import Endpoint

STATES = ("active", "pending", "terminated")
_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx", 6: "6xx"}
# EndpointStats fields exported as presenced_sip_events_total{kind=...}
_ENDPOINT_KINDS = ("received", "dropped", "bad_requests", "retransmissions_absorbed",
                   "late_responses", "unanswered", "overloaded", "shed", "rate_refused",
                   "rate_dropped", "amplification_dropped")


class MeteredStorage:
    """A `Storage` that times and counts every write of the one it wraps (the admin server's
    storage latency histogram and error counters; `health()` for /api/v1/status)."""

    def __init__(self, inner: Storage, latency: Histogram) -> None:
        self.inner = inner
        self.latency = latency
        self.writes: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_ok_at: float | None = None

    async def _write(self, op: str, call: Any) -> None:
        started = time.perf_counter()
        try:
            await call
        except Exception as exc:
            self.errors[op] = self.errors.get(op, 0) + 1
            self.last_error = f"{op}: {type(exc).__name__}"
            self.last_error_at = time.time()
            raise
        finally:
            self.writes[op] = self.writes.get(op, 0) + 1
            self.latency.labels(op).observe(time.perf_counter() - started)
        self.last_ok_at = time.time()

    def health(self) -> dict[str, object]:
        """ok: the latest write succeeded (or none failed yet)."""
        failed = self.last_error_at is not None and (
            self.last_ok_at is None or self.last_error_at > self.last_ok_at)
        return {"ok": not failed, "writes": sum(self.writes.values()),
                "errors": sum(self.errors.values()), "last_error": self.last_error,
                "last_error_at": self.last_error_at}

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def put_binding(self, binding: Binding) -> None:
        await self._write("put_binding", self.inner.put_binding(binding))

    async def delete_binding(self, aor: str, contact: str) -> None:
        await self._write("delete_binding", self.inner.delete_binding(aor, contact))

    async def load_bindings(self) -> list[Binding]:
        return await self.inner.load_bindings()

    async def put_subscription(self, sub: Subscription) -> None:
        await self._write("put_subscription", self.inner.put_subscription(sub))

    async def delete_subscription(self, sub_id: str) -> None:
        await self._write("delete_subscription", self.inner.delete_subscription(sub_id))

    async def load_subscriptions(self) -> list[Subscription]:
        return await self.inner.load_subscriptions()

    async def put_publication(self, pub: Publication, replaces: str | None = None) -> None:
        await self._write("put_publication", self.inner.put_publication(pub, replaces))

    async def delete_publication(self, etag: str) -> None:
        await self._write("delete_publication", self.inner.delete_publication(etag))

    async def load_publications(self) -> list[Publication]:
        return await self.inner.load_publications()

    async def put_ended_watchers(self, ended: EndedWatchers) -> None:
        await self._write("put_ended_watchers", self.inner.put_ended_watchers(ended))

    async def delete_ended_watchers(self, presentity: str) -> None:
        await self._write("delete_ended_watchers", self.inner.delete_ended_watchers(presentity))

    async def load_ended_watchers(self) -> list[EndedWatchers]:
        return await self.inner.load_ended_watchers()

    def __getattr__(self, name: str) -> Any:
        # Whatever else a backend offers (the rules store, cluster hooks) passes through.
        return getattr(self.inner, name)


class Histograms:
    """The observed metrics, registered in one server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.fanout = Histogram(
            "presenced_fanout_seconds",
            "From a resource's change to its last NOTIFY handed to the network",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry)
        self.fanout_size = Histogram(
            "presenced_fanout_notifies", "NOTIFYs sent for one change of a resource",
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000), registry=registry)
        self.notify_latency = Histogram(
            "presenced_notify_latency_seconds",
            "From a NOTIFY sent to its final answer (timeouts included)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 32),
            registry=registry)
        self.storage_latency = Histogram(
            "presenced_storage_write_seconds", "Duration of one storage write, by operation",
            ["op"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
            registry=registry)

    def observe_fanout(self, seconds: float, notifies: int) -> None:
        self.fanout.observe(seconds)
        self.fanout_size.observe(notifies)


class StateCollector(Collector):
    """Reads the servers' own counters at scrape time."""

    def __init__(self, endpoint: Endpoint, notifications: NotifierService,
                 registrar: RegistrarService, publish: PublishService,
                 storage: MeteredStorage | None, started: float,
                 xmpp_up: Callable[[], bool | None]) -> None:
        self.endpoint = endpoint
        self.notifications = notifications
        self.registrar = registrar
        self.publish = publish
        self.storage = storage
        self.started = started
        self.xmpp_up = xmpp_up

    def collect(self) -> Iterable[Metric]:
        stats = self.endpoint.stats
        req = CounterMetricFamily("presenced_sip_requests", "New SIP requests received, by method",
                                  labels=["method"])
        for method, n in sorted(stats.requests.items()):
            req.add_metric([method], n)
        yield req
        resp = CounterMetricFamily("presenced_sip_responses",
                                   "SIP responses sent, by request method and status class",
                                   labels=["method", "class"])
        for (method, cls), n in sorted(stats.responses.items()):
            resp.add_metric([method, _CLASSES.get(cls, "other")], n)
        yield resp
        ev = CounterMetricFamily("presenced_sip_events",
                                 "What the SIP endpoint received, dropped, refused or absorbed",
                                 labels=["kind"])
        for kind in _ENDPOINT_KINDS:
            ev.add_metric([kind], getattr(stats, kind))
        yield ev

        svc = self.notifications
        notifier = svc.notifier
        yield CounterMetricFamily("presenced_notify_sent", "NOTIFYs sent (first copies)",
                                  value=svc.notifies_sent)
        yield CounterMetricFamily("presenced_notify_failed",
                                  "NOTIFYs answered >= 300, timed out or with no flow",
                                  value=svc.notify_failures)
        yield CounterMetricFamily("presenced_notify_retransmitted",
                                  "Retransmissions of our requests (NOTIFYs) by Timer E",
                                  value=stats.retransmitted)
        yield CounterMetricFamily("presenced_notify_coalesced",
                                  "Changes folded into a later NOTIFY (one in flight per dialog)",
                                  value=notifier.coalesced)
        subs = GaugeMetricFamily("presenced_subscriptions", "Subscriptions, by event package and state",
                                 labels=["event", "state"])
        counts = notifier.counts()
        for event in notifier.packages:
            for state in STATES:
                subs.add_metric([event, state], counts.get((event, state), 0))
        yield subs
        yield GaugeMetricFamily("presenced_resources",
                                "Resources (event package, AOR) held: watched or with state",
                                value=len(notifier.resources))
        yield GaugeMetricFamily("presenced_bindings", "Registered contacts", value=self.registrar.total)
        yield GaugeMetricFamily("presenced_registered_aors", "AORs with at least one binding",
                                value=len(self.registrar.bindings))
        yield GaugeMetricFamily("presenced_publications", "Live publications (RFC 3903)",
                                value=len(self.publish.pubs))
        txns = GaugeMetricFamily("presenced_transactions", "Live SIP transactions", labels=["kind"])
        txns.add_metric(["server"], self.endpoint.txns.server_count)
        txns.add_metric(["client"], self.endpoint.txns.client_count)
        yield txns
        yield GaugeMetricFamily("presenced_overloaded",
                                "1 while new work is shed ([limits] overload_backlog)",
                                value=int(self.endpoint.backlogged))
        if self.storage is not None:
            writes = CounterMetricFamily("presenced_storage_writes", "Storage writes, by operation",
                                         labels=["op"])
            errors = CounterMetricFamily("presenced_storage_errors", "Failed storage writes, by operation",
                                         labels=["op"])
            for op, n in sorted(self.storage.writes.items()):
                writes.add_metric([op], n)
                errors.add_metric([op], self.storage.errors.get(op, 0))
            yield writes
            yield errors
        up = self.xmpp_up()
        if up is not None:
            yield GaugeMetricFamily("presenced_xmpp_component_up",
                                    "1 when the XMPP component stream is established", value=int(up))
        yield GaugeMetricFamily("presenced_uptime_seconds", "Seconds since the server started",
                                value=time.time() - self.started)
