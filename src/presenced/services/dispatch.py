"""The application: turns the endpoint's events into service calls.

REGISTER goes to the registrar, SUBSCRIBE through routing (`handle_subscription`) to the
presence agent, PUBLISH to the publication service; responses to our NOTIFYs go back to the
presence service. A handler that fails answers 500 and logs; it never takes the server down.

Authentication (when `[auth]` is configured; RFC 3261 §22). Each request acts as one address:
REGISTER as its To AOR, PUBLISH as its Request-URI AOR, SUBSCRIBE as its From AOR (the watcher;
any other method as its Request-URI). That address's domain picks the realm, and the
authenticated identity user@realm must equal the address as a whole, else 403. Failures are
counted by an `AuthThrottle` per (source address, user@domain) and per source; while refused,
requests get 403 without their credentials being checked. Known and unknown users are answered
alike: same challenges, same failures, same lockouts, and a SUBSCRIBE to an unknown user of a
served domain gets 200 and a closed document like a known one who is offline. Every decision
logs one line with Call-ID and source (never a password or a response).

The presence source handlers are called as ``handler(event, presentity, source, identity)``:
`identity` is the authenticated "user@domain", or None without `[auth]`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from presenced.pa.routing import Router, RoutingError
from presenced.services.alarm import Background
from presenced.services.ports import Responder
from presenced.sip.auth import (
    AuthOutcome,
    AuthParseError,
    AuthThrottle,
    DigestAuthenticator,
    parse_digest_credentials,
)
from presenced.sip.endpoint import ClientTimedOut, RequestReceived, ResponseReceived
from presenced.sip.errors import ParseError
from presenced.sip.headers import header_key
from presenced.sip.message import Request, make_response
from presenced.sip.uri import SipUri

log = logging.getLogger("presenced.dispatch")

Handler = Callable[[RequestReceived], Awaitable[None]]
# handler(event, presentity, source name, authenticated "user@domain" or None)
SourceHandler = Callable[[RequestReceived, str, str, str | None], Awaitable[None]]

_LOCKED_OUT = "Forbidden (too many failed authentications)"


class Dispatcher:
    def __init__(self, responder: Responder, router: Router, *,
                 handlers: Mapping[str, Handler], sources: Mapping[str, SourceHandler],
                 notify_results: Callable[[str, int], None],
                 auth: DigestAuthenticator | None = None, throttle: AuthThrottle | None = None,
                 trusted: Callable[[str], bool] = lambda host: False) -> None:
        """`handlers`: per method (REGISTER, PUBLISH); `sources`: the SUBSCRIBE handler per
        routing source ("registrar" also takes every in-dialog SUBSCRIBE); `notify_results(
        sub_id, status)` hears the final answer to each NOTIFY (408 for a timeout).
        `trusted(ip)`: a `[server] trusted_proxies` address, whose failures count per user
        only (it speaks for many users)."""
        self.responder = responder
        self.router = router
        self.auth = auth
        self.trusted = trusted
        self.throttle = throttle if throttle is not None or auth is None else AuthThrottle()
        self.handlers: dict[str, Handler] = dict(handlers)
        self.sources: dict[str, SourceHandler] = dict(sources)
        self.notify_results = notify_results
        self.background = Background("dispatcher")
        self.errors = 0
        self.closing = False
        self.dropped = 0  # requests that arrived while shutting down

    def close(self) -> None:
        """Shutting down: new requests are dropped (the client retransmits or fails over);
        those in flight finish (`background.drain`), NOTIFY answers are still heard."""
        self.closing = True

    # --- endpoint events ---------------------------------------------------------------------

    def on_request(self, event: RequestReceived) -> None:
        if self.closing:
            self.dropped += 1
            return
        self.background.spawn(self._handle(event))

    def on_response(self, event: ResponseReceived) -> None:
        ctx = event.context
        status = event.response.status
        if status < 200:
            return  # provisional: the NOTIFY is still outstanding
        if isinstance(ctx, tuple) and ctx[0] == "notify":
            self.notify_results(ctx[1], status)

    def on_timeout(self, event: ClientTimedOut) -> None:
        ctx = event.context
        if isinstance(ctx, tuple) and ctx[0] == "notify":
            self.notify_results(ctx[1], 408)  # RFC 3261 §8.1.3.1: a timeout counts as 408

    # --- handling ------------------------------------------------------------------------------

    async def _handle(self, event: RequestReceived) -> None:
        req = event.request
        bad = _not_utf8(req)
        if bad is not None:
            # These values become dialog and binding identities and are stored: text only.
            self.responder.respond(event, make_response(req, 400, f"Bad Request ({bad} is not UTF-8)"))
            return
        try:
            identity = None
            if self.auth is not None:
                identity = self._authenticate(event)
                if identity is None:
                    return
            if req.method == "SUBSCRIBE":
                await self._subscribe(event, identity)
                return
            handler = self.handlers.get(req.method)
            if handler is None:
                self.responder.respond(event, make_response(req, 501))
                return
            await handler(event)
        except ParseError as exc:
            self.responder.respond(event, make_response(req, exc.status, f"Bad Request ({exc.reason})"))
        except Exception:
            self.errors += 1
            log.exception("%s failed (Call-ID %s)", req.method, req.headers.get("Call-ID"))
            self.responder.respond(event, make_response(req, 500))

    async def _subscribe(self, event: RequestReceived, identity: str | None) -> None:
        req = event.request
        if req.to.tag:
            # In-dialog: the dialog already knows its source.
            await self.sources["registrar"](event, req.ruri.aor, "registrar", identity)
            return
        try:
            route = self.router.route(req)
        except RoutingError as exc:
            log.error("routing failed for SUBSCRIBE %s (Call-ID %s): %s", req.uri, req.call_id, exc)
            self.responder.respond(event, make_response(req, 500, "Routing Script Failed"))
            return
        handler = self.sources.get(route.source)
        if handler is None:
            self.responder.respond(event, make_response(req, 404, f"No {route.source} Source"))
            return
        if route.source == "jabber" and (req.event is None or req.event.package != "presence"):
            # The XMPP gateway serves presence only (RFC 6665 §4.1.2.1: 489 names what it does).
            refusal = make_response(req, 489)
            refusal.headers.add("Allow-Events", "presence")
            self.responder.respond(event, refusal)
            return
        # No known-user check: with [auth], a 404 for unknown users and a 200 for known ones
        # would let any user enumerate accounts. An unknown presentity of a served domain
        # gets what an offline known one gets: 200 and a closed document.
        await handler(event, req.ruri.aor, route.source, identity)

    def _authenticate(self, event: RequestReceived) -> str | None:
        """The authenticated "user@domain" acting for the request, or None once answered
        (401 challenge, 403 forbidden or locked out, 400 malformed credentials)."""
        req = event.request
        auth = self.auth
        throttle = self.throttle
        assert auth is not None and throttle is not None
        source = event.peer.host
        call_id = req.headers.get("Call-ID")
        acting = _acting_as(req)
        realm = auth.realm_for(acting.host_key)
        mono = time.monotonic()
        header = _credentials_for(req, realm)
        if header is None:
            if throttle.source_refused(source, mono):
                log.info("auth: %s refused, source locked out (Call-ID %s, source %s)",
                         req.method, call_id, source)
                self.responder.respond(event, make_response(req, 403, _LOCKED_OUT))
                return None
            log.debug("auth: %s challenged in realm %s (Call-ID %s, source %s)",
                      req.method, realm, call_id, source)
            self._challenge(event, realm, stale=False)
            return None
        try:
            creds = parse_digest_credentials(header)
        except AuthParseError as exc:
            log.info("auth: %s malformed credentials (Call-ID %s, source %s): %s",
                     req.method, call_id, source, exc.reason)
            self.responder.respond(event, make_response(req, 400, f"Bad Request ({exc.reason})"))
            return None
        claimed = f"{creds.username}@{realm}"
        if throttle.refused(source, claimed, mono):
            log.info("auth: %s as %s refused, locked out (Call-ID %s, source %s)",
                     req.method, claimed, call_id, source)
            self.responder.respond(event, make_response(req, 403, _LOCKED_OUT))
            return None
        result = auth.verify(creds, req.method, req.ruri, time.time(), realm=realm)
        if result.outcome is AuthOutcome.STALE:
            log.info("auth: %s as %s stale (Call-ID %s, source %s): %s",
                     req.method, claimed, call_id, source, result.reason)
            self._challenge(event, realm, stale=True)
            return None
        if result.outcome is not AuthOutcome.OK:
            locked = throttle.failed(source, claimed, mono, per_source=not self.trusted(source))
            log.info("auth: %s as %s failed (Call-ID %s, source %s): %s%s",
                     req.method, claimed, call_id, source, result.reason,
                     "; locked out" if locked else "")
            self._challenge(event, realm, stale=False)
            return None
        identity = result.identity
        assert identity is not None
        throttle.succeeded(source, identity)
        if identity != _address(acting):
            log.info("auth: %s as %s forbidden for %s (Call-ID %s, source %s)",
                     req.method, identity, _address(acting), call_id, source)
            self.responder.respond(event, make_response(req, 403, "Forbidden (not your AOR)"))
            return None
        log.debug("auth: %s as %s ok (Call-ID %s, source %s)", req.method, identity, call_id, source)
        return identity

    def _challenge(self, event: RequestReceived, realm: str, stale: bool) -> None:
        assert self.auth is not None
        resp = make_response(event.request, 401)
        for value in self.auth.challenge(time.time(), stale=stale, realm=realm):
            resp.headers.add("WWW-Authenticate", value)
        self.responder.respond(event, resp)


def _acting_as(req: Request) -> SipUri:
    """The address a request acts as: the identity its credentials must prove."""
    if req.method == "REGISTER":
        return req.to.uri
    if req.method == "SUBSCRIBE":
        # A watcher subscribes as itself: the From names who reads the presence (and whose
        # per-watcher limit counts, and whose dialog a later refresh may end).
        return req.from_.uri
    return req.ruri  # PUBLISH: the presentity published for; other methods alike


def _address(uri: SipUri) -> str:
    """user@host as compared with an identity (host lower-cased, user as unescaped)."""
    return f"{uri.user_unescaped}@{uri.host_key}" if uri.is_sip and uri.user is not None else ""


_IDENTITY_HEADERS = ("From", "To", "Call-ID", "Contact", "Record-Route", "Event", "SIP-If-Match")
_IDENTITY_KEYS = {header_key(n): i for i, n in enumerate(_IDENTITY_HEADERS)}


def _not_utf8(req: Request) -> str | None:
    """The first identity-bearing field that holds bytes which are not UTF-8, if any.

    The parser keeps such bytes as surrogates so nothing is lost; they cannot be stored."""
    if not req.uri.isascii() and _surrogates(req.uri):
        return "Request-URI"
    # One pass over the header lines; almost every value is ASCII and costs one C call.
    first: int | None = None
    for key, _, value in req.headers._items:
        if not value.isascii():
            rank = _IDENTITY_KEYS.get(key)
            if rank is not None and (first is None or rank < first) and _surrogates(value):
                first = rank
    return None if first is None else _IDENTITY_HEADERS[first]


def _surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _credentials_for(req: Request, realm: str) -> str | None:
    """The Authorization header for our realm (RFC 3261 §22.4: there may be several)."""
    values = req.headers.get_all("Authorization")
    for value in values:
        if f'realm="{realm}"' in value.replace(" ", "") or f"realm={realm}" in value:
            return value
    return values[0] if values else None
