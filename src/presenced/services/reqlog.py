"""Request logs: one line per REGISTER, SUBSCRIBE, PUBLISH and NOTIFY outcome.

`RequestLog` stands between the driver and everyone who uses it: the services answer and
send through it (it is their `Network` port) and the driver hands it the endpoint's events
(it is the driver's application, passing them on to the dispatcher). So it sees each final
answer to a REGISTER, SUBSCRIBE or PUBLISH with the request it answers, and each final answer
(or timeout, as 408) to a NOTIFY we sent with that NOTIFY. The composition root puts it in
only when `[server] log_requests = true` (lines at INFO) or the log level is debug (lines at
DEBUG); otherwise the services hold the driver itself, and the cost is nothing at all.

Each line names method, AOR, status, Call-ID and the peer (`source` for what we received,
`destination` for a NOTIFY), plus the event package, the watcher and the NOTIFY's
subscription state where they apply. The same fields ride on the log record
(`record.presenced_fields`), so the JSON format (cli.JsonFormatter) emits them as keys. The
values come from peers: the text format escapes CR and LF, JSON escapes everything else.

Answers the endpoint gives on its own (a 404 for a domain we do not serve, a 503 from the
rate limiter, a retransmitted answer) do not reach the application and are not logged here;
HEP mirroring ([hep]) shows those.
"""

from __future__ import annotations

import logging
from typing import Protocol

from presenced.services.ports import Network
from presenced.sip.endpoint import ClientTimedOut, Peer, RequestReceived, ResponseReceived
from presenced.sip.errors import ParseError
from presenced.sip.message import Request, Response

log = logging.getLogger("presenced.requests")

LOGGED = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH"})


class Application(Protocol):
    """What the driver hands events to (transport.driver.Application)."""

    def on_request(self, event: RequestReceived) -> None: ...

    def on_response(self, event: ResponseReceived) -> None: ...

    def on_timeout(self, event: ClientTimedOut) -> None: ...


class RequestLog:
    def __init__(self, network: Network, level: int = logging.INFO,
                 max_pending: int = 100_000) -> None:
        """`network`: the driver; `max_pending`: NOTIFYs awaiting their answer that are
        remembered for their log line (beyond it, a NOTIFY's outcome goes unlogged)."""
        self.network = network
        self.level = level
        self.max_pending = max_pending
        self.app: Application | None = None
        self._pending: dict[object, tuple[Request, Peer]] = {}

    def wrap(self, app: Application) -> RequestLog:
        """Pass the driver's events on to `app`; returns self, for `driver.attach`."""
        self.app = app
        return self

    # --- the Network port ---------------------------------------------------------------------

    def respond(self, event: RequestReceived, response: Response) -> None:
        self.network.respond(event, response)
        if response.status >= 200 and event.request.method in LOGGED:
            self._answered(event.request, response, event.peer)

    def send_request(self, request: Request, peer: Peer, context: object,
                     validated: bool = False) -> None:
        if request.method == "NOTIFY" and len(self._pending) < self.max_pending:
            try:
                self._pending[context] = (request, peer)
            except TypeError:  # an unhashable context: no line for it
                pass
        self.network.send_request(request, peer, context, validated)

    def has_flow(self, peer: Peer) -> bool:
        return self.network.has_flow(peer)

    # --- the driver's application -------------------------------------------------------------

    def on_request(self, event: RequestReceived) -> None:
        assert self.app is not None
        self.app.on_request(event)

    def on_response(self, event: ResponseReceived) -> None:
        assert self.app is not None
        self.app.on_response(event)
        if event.response.status >= 200:
            self._notified(event.context, event.response.status, event.response.reason)

    def on_timeout(self, event: ClientTimedOut) -> None:
        assert self.app is not None
        self.app.on_timeout(event)
        self._notified(event.context, 408, "Request Timeout (no answer)")

    # --- lines --------------------------------------------------------------------------------

    def _answered(self, req: Request, resp: Response, peer: Peer) -> None:
        if not log.isEnabledFor(self.level):
            return
        method = req.method
        fields: dict[str, object] = {
            "method": method,
            "aor": _aor(req, "to" if method == "REGISTER" else "ruri"),
            "status": resp.status,
            "call_id": req.headers.get("Call-ID") or "",
            "source": str(peer),
        }
        if method != "REGISTER":
            fields["event"] = _event(req)
        if method == "SUBSCRIBE":
            fields["watcher"] = _aor(req, "from")
            expires = resp.headers.get("Expires")
            if expires is not None:
                fields["expires"] = expires
        self._emit(fields, resp.reason)

    def _notified(self, context: object, status: int, reason: str) -> None:
        try:
            sent = self._pending.pop(context, None)
        except TypeError:
            return
        if sent is None or not log.isEnabledFor(self.level):
            return
        req, peer = sent
        fields: dict[str, object] = {
            "method": "NOTIFY",
            "aor": _aor(req, "from"),  # we notify as the presentity
            "status": status,
            "call_id": req.headers.get("Call-ID") or "",
            "destination": str(peer),
            "event": _event(req),
            "watcher": _aor(req, "to"),
            "state": (req.headers.get("Subscription-State") or "").split(";", 1)[0].strip(),
        }
        self._emit(fields, reason)

    def _emit(self, fields: dict[str, object], reason: str) -> None:
        peer_key = "destination" if "destination" in fields else "source"
        extra = "".join(f" {k}={fields[k]}" for k in ("event", "watcher", "state", "expires")
                        if fields.get(k))
        log.log(self.level, "%s %s %s %s call-id=%s %s=%s%s", fields["method"], fields["aor"],
                fields["status"], reason, fields["call_id"], peer_key, fields[peer_key], extra,
                extra={"presenced_fields": fields})


def _aor(req: Request, which: str) -> str:
    try:
        uri = req.to.uri if which == "to" else req.from_.uri if which == "from" else req.ruri
        return uri.aor
    except (ParseError, AttributeError):
        return "-"


def _event(req: Request) -> str:
    try:
        ev = req.event
    except ParseError:
        return "-"
    return ev.package if ev is not None else "-"
