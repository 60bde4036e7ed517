"""The application: turns the endpoint's events into service calls.

REGISTER goes to the registrar, SUBSCRIBE through routing (`handle_subscription`) to the
presence agent, PUBLISH to the publication service; responses to our NOTIFYs go back to the
presence service. When `[auth]` is configured, these requests must carry valid digest
credentials (RFC 3261 §22): REGISTER and PUBLISH as the AOR's own user, SUBSCRIBE as the
user its From names (any known user may watch any user of a served domain). A handler that fails answers 500 and logs; it never takes the server down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from presenced.pa.routing import Router, RoutingError
from presenced.services.alarm import Background
from presenced.sip.auth import (
    AuthOutcome,
    AuthParseError,
    DigestAuthenticator,
    parse_digest_credentials,
)
from presenced.sip.endpoint import ClientTimedOut, RequestReceived, ResponseReceived
from presenced.sip.errors import ParseError
from presenced.sip.message import Request, make_response
from presenced.transport.driver import Driver

log = logging.getLogger("presenced.dispatch")

Handler = Callable[[RequestReceived], Awaitable[None]]


class Dispatcher:
    def __init__(self, driver: Driver, router: Router, auth: DigestAuthenticator | None = None,
                 known_user: Callable[[str], bool] | None = None) -> None:
        self.driver = driver
        self.router = router
        self.auth = auth
        self.known_user = known_user
        self.handlers: dict[str, Handler] = {}
        self.sources: dict[str, Callable[[RequestReceived, str, str], Awaitable[None]]] = {}
        self.notify_results: Callable[[str, int], None] | None = None
        self._background = Background()
        self.errors = 0

    # --- endpoint events ---------------------------------------------------------------------

    def on_request(self, event: RequestReceived) -> None:
        self._background.spawn(self._handle(event))

    def on_response(self, event: ResponseReceived) -> None:
        ctx = event.context
        status = event.response.status
        if status < 200:
            return  # provisional: the NOTIFY is still outstanding
        if isinstance(ctx, tuple) and ctx[0] == "notify" and self.notify_results is not None:
            self.notify_results(ctx[1], status)

    def on_timeout(self, event: ClientTimedOut) -> None:
        ctx = event.context
        if isinstance(ctx, tuple) and ctx[0] == "notify" and self.notify_results is not None:
            self.notify_results(ctx[1], 408)  # RFC 3261 §8.1.3.1: a timeout counts as 408

    # --- handling ------------------------------------------------------------------------------

    async def _handle(self, event: RequestReceived) -> None:
        req = event.request
        bad = _not_utf8(req)
        if bad is not None:
            # These values become dialog and binding identities and are stored: text only.
            self.driver.respond(event, make_response(req, 400, f"Bad Request ({bad} is not UTF-8)"))
            return
        try:
            if self.auth is not None and not self._authorized(event):
                return
            if req.method == "SUBSCRIBE":
                await self._subscribe(event)
                return
            handler = self.handlers.get(req.method)
            if handler is None:
                self.driver.respond(event, make_response(req, 501))
                return
            await handler(event)
        except ParseError as exc:
            self.driver.respond(event, make_response(req, exc.status, f"Bad Request ({exc.reason})"))
        except Exception:
            self.errors += 1
            log.exception("%s failed (Call-ID %s)", req.method, req.headers.get("Call-ID"))
            self.driver.respond(event, make_response(req, 500))

    async def _subscribe(self, event: RequestReceived) -> None:
        req = event.request
        if req.to.tag:
            # In-dialog: the dialog already knows its source.
            await self.sources["registrar"](event, req.ruri.aor, "registrar")
            return
        try:
            route = self.router.route(req)
        except RoutingError as exc:
            log.error("routing failed for SUBSCRIBE %s (Call-ID %s): %s", req.uri, req.call_id, exc)
            self.driver.respond(event, make_response(req, 500, "Routing Script Failed"))
            return
        handler = self.sources.get(route.source)
        if handler is None:
            self.driver.respond(event, make_response(req, 404, f"No {route.source} Source"))
            return
        presentity = req.ruri.aor
        if route.source == "registrar" and self.known_user is not None and not self.known_user(presentity):
            self.driver.respond(event, make_response(req, 404))
            return
        await handler(event, presentity, route.source)

    def _authorized(self, event: RequestReceived) -> bool:
        """Check digest credentials; answer 401/403/400 and return False when they fail."""
        req = event.request
        auth = self.auth
        assert auth is not None
        header = _credentials_for(req, auth.realm)
        if header is None:
            self._challenge(event, stale=False)
            return False
        try:
            creds = parse_digest_credentials(header)
        except AuthParseError as exc:
            self.driver.respond(event, make_response(req, 400, f"Bad Request ({exc.reason})"))
            return False
        result = auth.verify(creds, req.method, time.time())
        if result.outcome == AuthOutcome.STALE:
            self._challenge(event, stale=True)
            return False
        if result.outcome != AuthOutcome.OK:
            log.info("authentication failed for %s %s (Call-ID %s): %s",
                     req.method, req.uri, req.headers.get("Call-ID"), result.reason)
            self._challenge(event, stale=False)
            return False
        user = result.username
        if req.method == "REGISTER":
            owner = req.to.uri.user_unescaped
        elif req.method == "PUBLISH":
            owner = req.ruri.user_unescaped
        elif req.method == "SUBSCRIBE":
            # A watcher subscribes as itself: the From names who reads the presence (and whose
            # per-watcher limit counts, and whose dialog a later refresh may end).
            owner = req.from_.uri.user_unescaped
        else:
            return True
        if owner != user:
            self.driver.respond(event, make_response(req, 403, "Forbidden (not your AOR)"))
            return False
        return True

    def _challenge(self, event: RequestReceived, stale: bool) -> None:
        assert self.auth is not None
        resp = make_response(event.request, 401)
        for value in self.auth.challenge(time.time(), stale=stale):
            resp.headers.add("WWW-Authenticate", value)
        self.driver.respond(event, resp)


_IDENTITY_HEADERS = ("From", "To", "Call-ID", "Contact", "Record-Route", "Event", "SIP-If-Match")


def _not_utf8(req: Request) -> str | None:
    """The first identity-bearing field that holds bytes which are not UTF-8, if any.

    The parser keeps such bytes as surrogates so nothing is lost; they cannot be stored."""
    if not req.uri.isascii() and _surrogates(req.uri):
        return "Request-URI"
    for name in _IDENTITY_HEADERS:
        for value in req.headers.get_all(name):
            if not value.isascii() and _surrogates(value):
                return name
    return None


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
