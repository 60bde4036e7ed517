"""The XCAP server: an aiohttp application on the SIP server's own event loop (RFC 4825).

One route takes every request under the root; `XcapServer.handle` authenticates it (HTTP
digest, RFC 7616, with the SIP server's authenticator: the same users, realms, nonces and
guessing throttle), checks that the user touches only their own documents, and executes it
against the `RulesStore` port (services/ports.py). The XML work is the sans-IO modules'
(uri, selectors, conditions); this module only moves bytes and headers.

Element and attribute edits read the document and its entity tag, edit a fresh tree, and
write the result back on the condition that the tag is still the one read, so concurrent
edits never lose one another: a conflicting write is retried when the client set no
precondition of its own, and answered 412 when it did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from lxml import etree

from presenced.pa.documents.xml import DocumentError, parse_xml
from presenced.services.ports import RulesInvalid, RulesPreconditionFailed, RulesStore
from presenced.sip.auth import (
    AuthOutcome,
    AuthParseError,
    AuthThrottle,
    DigestAuthenticator,
    UnsupportedSchemeError,
    parse_digest_credentials,
)
from presenced.xcap.auids import AUIDS, PRES_RULES, XCAP_CAPS, Auid
from presenced.xcap.caps import caps_document, caps_etag
from presenced.xcap.conditions import evaluate, quote_etag
from presenced.xcap.errors import ERROR_MIME, XcapConflict, XcapError
from presenced.xcap.selectors import (
    ATT_MIME,
    EL_MIME,
    NodeSelector,
    delete_node,
    get_node,
    parse_attribute_value,
    parse_element_body,
    parse_node_selector,
    put_attribute,
    put_element,
    select_elements,
)
from presenced.xcap.uri import (
    DEFAULT_MAX_URI_LENGTH,
    DEFAULT_ROOT,
    XcapUri,
    parse_xcap_uri,
    xui_aor,
)

__all__ = ["XcapServer", "XcapSettings"]

log = logging.getLogger("presenced.xcap")

_ALLOWED = "GET, PUT, DELETE"
_RETRIES = 3  # conflicting writes retried for a client without preconditions

# An edit: the current document (None: there is none) -> (the new document, node created?)
_Edit = Callable[[bytes | None], tuple[bytes, bool]]


class _PeerErrorsOneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a request line over the limit, a broken
    header) with a traceback at ERROR: that is the peer's fault, one INFO line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "xcap: refused a malformed request: %s"
            record.args = (" ".join(str(exc).split())[:300],)
            record.exc_info = None
            record.exc_text = None
        return True


_HTTP_LOG = logging.getLogger("presenced.xcap.http")
_HTTP_LOG.addFilter(_PeerErrorsOneLine())


@dataclass(frozen=True, slots=True)
class XcapSettings:
    host: str = "127.0.0.1"
    port: int = 0
    root: str = DEFAULT_ROOT
    max_document_size: int = 64 * 1024
    max_uri_length: int = DEFAULT_MAX_URI_LENGTH


def _plain(status: int, reason: str, etag: str | None = None) -> web.Response:
    resp = web.Response(status=status, text=reason + "\n")
    if etag is not None:
        resp.headers["ETag"] = quote_etag(etag)
    return resp


def _serialize(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


class XcapServer:
    """The XCAP HTTP service. `auth` None: no authentication (only when the operator said
    `server.allow_anonymous`; every request then acts as the owner of the URI it names)."""

    def __init__(self, settings: XcapSettings, store: RulesStore,
                 auth: DigestAuthenticator | None, throttle: AuthThrottle | None) -> None:
        self.settings = settings
        self.store = store
        self.auth = auth
        self.throttle = throttle if throttle is not None or auth is None else AuthThrottle()
        self._caps = caps_document(AUIDS.values())
        self._caps_etag = caps_etag(self._caps)
        self._runner: web.AppRunner | None = None
        self.port = settings.port

    # --- lifecycle ---------------------------------------------------------------------

    def app(self) -> web.Application:
        # client_max_size: a bigger body is refused with 413 before it is read whole.
        app = web.Application(client_max_size=self.settings.max_document_size)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               max_line_size=self.settings.max_uri_length + 64,
                               logger=_HTTP_LOG)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        await site.start()
        self._runner = runner
        for addr in runner.addresses:
            if isinstance(addr, tuple):
                self.port = int(addr[1])
                break
        log.info("xcap: listening on http://%s:%d%s", self.settings.host, self.port,
                 self.settings.root)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- requests ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except XcapConflict as exc:
            log.info("xcap: %s %s -> 409 %s (source %s)", request.method,
                     request.raw_path[:200], exc.condition, request.remote)
            return web.Response(status=409, body=exc.body(), content_type=ERROR_MIME)
        except XcapError as exc:
            log.info("xcap: %s %s -> %d %s (source %s)", request.method,
                     request.raw_path[:200], exc.status, exc.reason, request.remote)
            resp = _plain(exc.status, exc.reason)
            if exc.status == 405:
                resp.headers["Allow"] = "GET" if exc.reason.startswith("read-only") else _ALLOWED
            return resp

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.method
        if method not in ("GET", "HEAD", "PUT", "DELETE"):
            raise XcapError(405, f"method {method} not allowed")
        s = self.settings
        uri = parse_xcap_uri(request.raw_path, s.root, s.max_uri_length)
        auid = AUIDS.get(uri.auid)
        if auid is None:
            raise XcapError(404, f"unknown AUID {uri.auid!r}")
        if auid.users == uri.is_global or uri.document != auid.document:
            raise XcapError(404, "no such document")
        aor = xui_aor(uri.xui) if uri.xui is not None else None
        if self.auth is not None:
            identity = self._authenticate(request, aor)
            if isinstance(identity, web.StreamResponse):
                return identity
            if aor is not None and identity != aor:
                log.info("xcap: %s as %s forbidden for %s's documents (source %s)", method,
                         identity, aor, request.remote)
                raise XcapError(403, "not your document")
        if uri.node is not None:
            self._selector(uri, auid)  # a broken selector is 400 before any document is read
        if auid is XCAP_CAPS:
            return self._caps_get(request, uri, auid)
        assert auid is PRES_RULES and aor is not None
        if method in ("GET", "HEAD"):
            return await self._get(request, uri, auid, aor)
        if method == "PUT":
            return await self._put(request, uri, auid, aor)
        return await self._delete(request, uri, auid, aor)

    # --- authentication (RFC 7616) -----------------------------------------------------

    def _authenticate(self, request: web.Request, aor: str | None) -> str | web.StreamResponse:
        auth, throttle = self.auth, self.throttle
        assert auth is not None and throttle is not None
        source = request.remote or "?"
        realm = auth.realm_for(aor.rpartition("@")[2]) if aor else auth.realm
        mono = time.monotonic()
        header = request.headers.get("Authorization")
        creds = None
        if header is not None:
            try:
                creds = parse_digest_credentials(header)
            except UnsupportedSchemeError:
                creds = None  # Basic and the like: offer Digest
            except AuthParseError as exc:
                raise XcapError(400, f"malformed credentials ({exc.reason})") from None
        if creds is None:
            if throttle.source_refused(source, mono):
                raise XcapError(403, "too many failed authentications")
            return self._challenge(realm, stale=False)
        if aor is None and creds.realm in auth.realms:
            realm = creds.realm  # the global tree: any of our realms
        claimed = f"{creds.username}@{realm}"
        if throttle.refused(source, claimed, mono):
            raise XcapError(403, "too many failed authentications")
        # The digest-uri names the request-target (RFC 7616 §3.4.6): as sent, or absolute.
        target = request.raw_path
        if creds.uri != target:
            parts = urlsplit(creds.uri)
            named = parts.path + (f"?{parts.query}" if parts.query else "")
            if not (parts.scheme in ("http", "https") and named == target):
                throttle.failed(source, claimed, mono)
                log.info("xcap: %s as %s failed (source %s): digest-uri is not the "
                         "request-target", request.method, claimed, source)
                return self._challenge(realm, stale=False)
        result = auth.verify(creds, request.method, creds.uri, time.time(), realm=realm)
        if result.outcome is AuthOutcome.STALE:
            return self._challenge(realm, stale=True)
        if result.outcome is not AuthOutcome.OK:
            locked = throttle.failed(source, claimed, mono)
            log.info("xcap: %s as %s failed (source %s): %s%s", request.method, claimed,
                     source, result.reason, "; locked out" if locked else "")
            return self._challenge(realm, stale=False)
        identity = result.identity
        assert identity is not None
        throttle.succeeded(source, identity)
        return identity

    def _challenge(self, realm: str, stale: bool) -> web.Response:
        assert self.auth is not None
        resp = _plain(401, "Unauthorized")
        for value in self.auth.challenge(time.time(), stale=stale, realm=realm):
            resp.headers.add("WWW-Authenticate", value)
        return resp

    # --- xcap-caps -----------------------------------------------------------------------

    def _caps_get(self, request: web.Request, uri: XcapUri, auid: Auid) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise XcapError(405, "read-only document")
        return self._read(request, uri, auid, self._caps, self._caps_etag)

    # --- reads -------------------------------------------------------------------------

    def _selector(self, uri: XcapUri, auid: Auid) -> NodeSelector:
        assert uri.node is not None
        return parse_node_selector(uri.node, dict(uri.namespaces), auid.default_ns,
                                   auid.prefixes)

    def _read(self, request: web.Request, uri: XcapUri, auid: Auid, document: bytes,
              etag: str) -> web.StreamResponse:
        status = evaluate(request.method, etag, request.headers.get("If-Match"),
                          request.headers.get("If-None-Match"))
        if status is not None:
            return _plain(status, "Not Modified" if status == 304 else "Precondition Failed",
                          etag)
        if uri.node is None:
            body, mime = document, auid.mime
        else:
            sel = self._selector(uri, auid)
            body, mime = get_node(self._parse_stored(document), sel)
        resp = web.Response(status=200, body=body, content_type=mime)
        resp.headers["ETag"] = quote_etag(etag)
        return resp

    async def _get(self, request: web.Request, uri: XcapUri, auid: Auid,
                   aor: str) -> web.StreamResponse:
        current = await self.store.get_rules(aor)
        if current is None:
            # Preconditions first: If-Match on a missing document is 412 (RFC 9110 §13.1.1).
            if evaluate(request.method, None, request.headers.get("If-Match"), None):
                raise XcapError(412, "Precondition Failed")
            raise XcapError(404, "no such document")
        return self._read(request, uri, auid, current[0], current[1])

    def _parse_stored(self, document: bytes) -> etree._Element:
        try:
            return parse_xml(document, max(len(document), 1))
        except DocumentError as exc:  # what we stored was checked; this is not the client's
            raise XcapError(500, f"stored document unreadable: {exc.reason}") from None

    # --- writes ------------------------------------------------------------------------

    async def _body(self, request: web.Request, expected_mime: str) -> bytes:
        if request.content_type != expected_mime:
            raise XcapError(415, f"Content-Type must be {expected_mime}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise XcapError(413, f"body larger than {self.settings.max_document_size} "
                                 "bytes") from None
        if len(body) > self.settings.max_document_size:
            raise XcapError(413, f"body larger than {self.settings.max_document_size} bytes")
        return body

    def _preconditions(self, request: web.Request, current: str | None) -> None:
        status = evaluate(request.method, current, request.headers.get("If-Match"),
                          request.headers.get("If-None-Match"))
        if status is not None:
            raise XcapError(412, "Precondition Failed")

    def _has_preconditions(self, request: web.Request) -> bool:
        return "If-Match" in request.headers or "If-None-Match" in request.headers

    async def _store(self, aor: str, document: bytes, expect: str) -> str:
        try:
            return await self.store.put_rules(aor, document, expect)
        except RulesInvalid as exc:
            raise XcapConflict("schema-validation-error", exc.detail) from None

    async def _put(self, request: web.Request, uri: XcapUri, auid: Auid,
                   aor: str) -> web.StreamResponse:
        s = self.settings
        if uri.node is None:
            body = await self._body(request, auid.mime)
            root = _parse_document(body, s.max_document_size)
            if auid.check is not None:
                auid.check(root)
            return await self._write(request, aor, lambda current: (body, current is None))
        sel = self._selector(uri, auid)
        if sel.namespaces:
            raise XcapError(405, "read-only: namespace bindings")
        doc_uri = uri.document_path(s.root)
        if sel.attribute is not None:
            value = parse_attribute_value(await self._body(request, ATT_MIME))
            attribute = sel.attribute

            def edit(current: bytes | None) -> tuple[bytes, bool]:
                root = self._existing(current, uri)
                found = select_elements(root, sel.steps)
                created = not (len(found) == 1 and found[0].get(attribute) is not None)
                put_attribute(root, sel, value, doc_uri)
                return self._checked(root, auid), created
        else:
            body = await self._body(request, EL_MIME)

            def edit(current: bytes | None) -> tuple[bytes, bool]:
                root = self._existing(current, uri)
                created = not select_elements(root, sel.steps)
                new = parse_element_body(body, _parent(root, sel), s.max_document_size,
                                         auid.prefixes, dict(uri.namespaces))
                return self._checked(put_element(root, sel, new, doc_uri), auid), created
        return await self._write(request, aor, edit)

    def _existing(self, current: bytes | None, uri: XcapUri) -> etree._Element:
        if current is None:
            # RFC 4825 §8.2.4: an element or attribute needs its document.
            raise XcapConflict("no-parent", "the document does not exist",
                               ancestor=f"{self.settings.root}/{uri.auid}/users/{uri.xui}")
        return self._parse_stored(current)

    def _checked(self, root: etree._Element, auid: Auid) -> bytes:
        if auid.check is not None:
            auid.check(root)
        document = _serialize(root)
        if len(document) > self.settings.max_document_size:
            raise XcapConflict("constraint-failure",
                               f"the document would exceed {self.settings.max_document_size} bytes")
        return document

    async def _write(self, request: web.Request, aor: str, edit: _Edit) -> web.StreamResponse:
        conditional = self._has_preconditions(request)
        for _ in range(_RETRIES):
            current = await self.store.get_rules(aor)
            etag = current[1] if current is not None else None
            self._preconditions(request, etag)
            document, created = edit(current[0] if current is not None else None)
            try:
                new_etag = await self._store(aor, document, etag if etag is not None else "")
            except RulesPreconditionFailed:
                if conditional:
                    raise XcapError(412, "Precondition Failed") from None
                continue  # someone wrote in between: start over from their document
            return _plain(201 if created else 200, "Created" if created else "OK", new_etag)
        raise XcapError(409, "the document kept changing; try again")

    async def _delete(self, request: web.Request, uri: XcapUri, auid: Auid,
                      aor: str) -> web.StreamResponse:
        if uri.node is None:
            conditional = self._has_preconditions(request)
            for _ in range(_RETRIES):
                current = await self.store.get_rules(aor)
                etag = current[1] if current is not None else None
                self._preconditions(request, etag)
                if current is None:
                    raise XcapError(404, "no such document")
                try:
                    removed = await self.store.delete_rules(aor, etag)
                except RulesPreconditionFailed:
                    if conditional:
                        raise XcapError(412, "Precondition Failed") from None
                    continue
                if not removed:
                    raise XcapError(404, "no such document")
                return _plain(200, "OK")
            raise XcapError(409, "the document kept changing; try again")
        sel = self._selector(uri, auid)

        def edit(current: bytes | None) -> tuple[bytes, bool]:
            if current is None:
                raise XcapError(404, "no such document")
            root = self._parse_stored(current)
            delete_node(root, sel)
            return self._checked(root, auid), False

        return await self._write(request, aor, edit)


def _parse_document(body: bytes, max_size: int) -> etree._Element:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise XcapConflict("not-utf-8") from None
    try:
        return parse_xml(body, max_size)
    except DocumentError as exc:
        raise XcapConflict("not-well-formed", exc.reason) from None


def _parent(root: etree._Element, sel: NodeSelector) -> etree._Element | None:
    """The element a PUT element body goes into (for the namespaces in scope), if one."""
    found = select_elements(root, sel.steps[:-1]) if len(sel.steps) > 1 else []
    return found[0] if len(found) == 1 else None
