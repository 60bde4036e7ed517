"""The ports: what the services need of the outside world, as small protocols.

A service never holds a transport or a driver; it holds a `Responder` (answer a request it was
handed), a `RequestSender` (send a request to a `Peer`), a `FlowCheck` (is a flow to that peer
still open?), a `Storage` and a `Clock`. The composition root (`server.py`) hands it the real
`transport.driver.Driver`, which provides all three network ports (or, with request logs on,
`services.reqlog.RequestLog` in front of it, which provides the same); the unit tests hand it a
fake that records what was sent (tests/unit/test_services_*.py). The registrar and the
publication service reach the notifier service through a `PartSink`.

Wiring, and the one cycle. Every required collaborator is a constructor argument, so a service
is whole once built. The dependencies form one cycle: the driver delivers requests to the
dispatcher, the dispatcher calls the services, the services answer through the driver. It is
cut at the adapter end, where a late binding is natural: the driver is built first without an
application, then the services (which need only its ports), then the dispatcher (which takes
the services' handlers in its constructor), and last `driver.attach(dispatcher)`, the single
registration step — made once, before any transport starts, so no request can arrive before
it. Optional listeners that several parties add (the jabber gateway's watch and change
listeners) stay lists that their owner appends to; they are not required for a service to work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from presenced.pa.records import Binding, Publication, Subscription
from presenced.sip.endpoint import Peer, RequestReceived
from presenced.sip.message import Request, Response, make_response
from presenced.storage.base import Storage

__all__ = [
    "Clock",
    "ClusterClaims",
    "FlowCheck",
    "Network",
    "PartSink",
    "RequestSender",
    "Responder",
    "RulesInvalid",
    "RulesPreconditionFailed",
    "RulesStore",
    "Storage",
    "failure_response",
]

# Wall-clock epoch seconds (expiry is persisted: it must mean the same after a restart).
Clock = Callable[[], float]


class Responder(Protocol):
    def respond(self, event: RequestReceived, response: Response) -> None:
        """Answer the request of `event` (through its server transaction)."""


class RequestSender(Protocol):
    def send_request(self, request: Request, peer: Peer, context: object,
                     validated: bool = False) -> None:
        """Send `request` to `peer` in a new client transaction; its final answer (or timeout)
        comes back to the dispatcher with `context`. `validated`: `peer` has proven it reads
        what we send (see `Endpoint.send_request`)."""


class FlowCheck(Protocol):
    def has_flow(self, peer: Peer) -> bool:
        """Whether a message to `peer` can leave without opening a new connection (UDP:
        always; a stream: its connection is still live)."""


class Network(Responder, RequestSender, FlowCheck, Protocol):
    """All the network ports: what the notifier service needs."""


class PartSink(Protocol):
    """What the registrar and the publication service need of the notifier service: set a
    source's part of a resource (kept narrow on purpose)."""

    async def set_part(self, presentity: str, key: str, part: object | None,
                       event: str = "presence", quiet: bool = False) -> None: ...

    def watching(self, presentity: str, event: str) -> bool:
        """Whether anyone watches that resource now."""
        ...


class ClusterClaims(Protocol):
    """What a cluster node offers the services (cluster/store.py), None on a single node: the
    atomic steps that make expiry happen once and in-dialog requests work on any node."""

    async def expire_binding(self, aor: str, contact: str, now: float) -> Binding | None:
        """Delete a due binding once in the cluster; a binding refreshed meanwhile (by any
        node) is returned instead, and stays."""
        ...

    async def expire_publication(self, etag: str, now: float) -> Publication | None:
        """The same for a publication."""
        ...

    async def claim(self, sub_id: str) -> Subscription | None:
        """Make this node the owner of a stored dialog (None: there is no such dialog)."""
        ...


def failure_response(req: Request, exc: BaseException) -> Response:
    """The answer to a request whose storage write did not commit: 503 with Retry-After when
    the store says the failure is transient (Redis unreachable: RFC 3261 §21.5.4), else 500.
    Never a 2xx for a write that did not commit."""
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int):
        resp = make_response(req, 503, "Storage Unavailable")
        resp.headers.add("Retry-After", str(retry_after))
        return resp
    return make_response(req, 500, "Storage Failure")


class RulesInvalid(Exception):
    """A presence-rules document that is not well-formed or does not follow RFC 4745/5025;
    `detail` says what, for the XCAP error body (RFC 4825 §11: schema-validation-error)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RulesPreconditionFailed(Exception):
    """The document's entity tag is not the one the caller expected (XCAP: 412)."""


class RulesStore(Protocol):
    """The presence-rules documents (RFC 5025 `pres-rules`), one per user AOR, as the XCAP
    server and the operator's tools see them: whole documents with an entity tag. A put is
    validated, committed to storage, and applied to the live subscriptions before it returns.

    `expect`: None = unconditional; an etag = the current document must carry it; "*" = a
    document must exist; "" = no document may exist (RFC 4825 §7.11, If-Match/If-None-Match)."""

    async def get_rules(self, aor: str) -> tuple[bytes, str] | None:
        """(document, etag), or None when the user has none."""
        ...

    async def put_rules(self, aor: str, document: bytes, expect: str | None = None) -> str:
        """Store `document` as the user's rules; returns the new etag. Raises RulesInvalid or
        RulesPreconditionFailed."""
        ...

    async def delete_rules(self, aor: str, expect: str | None = None) -> bool:
        """Remove the user's rules (the default policy applies again); False when there were
        none. Raises RulesPreconditionFailed."""
        ...
