"""The parser against the RFC 4475 and RFC 5118 torture messages.

The messages are files under tests/vectors/rfc4475 and tests/vectors/rfc5118; what the RFCs say
about each one is in the `expected.py` beside them (its docstring explains the verdicts).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import pytest

from presenced.sip.errors import ParseError
from presenced.sip.headers import NameAddr, Via, parse_name_addr
from presenced.sip.message import Request, Response, parse_message
from presenced.sip.uri import SipUri

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

# Accessors every message kind has; each may only ever raise ParseError (docs/design.md).
ACCESSORS = (
    "vias",
    "top_via",
    "from_",
    "to",
    "call_id",
    "cseq",
    "contacts",
    "max_forwards",
    "expires",
    "event",
    "content_type",
)


def _load(folder: str) -> ModuleType:
    path = VECTORS / folder / "expected.py"
    spec = importlib.util.spec_from_file_location(f"torture_expected_{folder}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MANIFESTS = {folder: _load(folder).CASES for folder in ("rfc4475", "rfc5118")}
ALL = [(folder, name) for folder, cases in MANIFESTS.items() for name in cases]


def _ids(folder: str, name: str) -> str:
    return f"{folder}/{name}"


def _cases(*verdicts: str) -> list[Any]:
    return [
        _param(folder, name)
        for folder, name in ALL
        if MANIFESTS[folder][name]["verdict"] in verdicts
    ]


def _data(folder: str, name: str) -> bytes:
    return (VECTORS / folder / f"{name}.sip").read_bytes()


# ---- comparison helpers ---------------------------------------------------------------------


def _unq(value: str | None) -> str | None:
    """A param value without surrounding quotes."""
    if value is not None and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _uri_params(params: dict[str, str | None]) -> dict[str, str | None]:
    # URI params compare after one round of %-unescaping (RFC 3261 §19.1.4), names caseless.
    return {unquote(k).lower(): None if v is None else unquote(v) for k, v in params.items()}


def _header_params(params: dict[str, str | None]) -> dict[str, str | None]:
    return {k.lower(): _unq(v) for k, v in params.items()}


def _check_uri(uri: SipUri, want: dict[str, Any], where: str) -> None:
    assert uri.scheme.lower() == want["scheme"], where
    assert (unquote(uri.user) if uri.user else None) == want["user"], f"{where}: user {uri.user!r}"
    assert (unquote(uri.password) if uri.password else None) == want["password"], where
    assert uri.host.lower() == want["host"].lower(), f"{where}: host {uri.host!r}"
    assert uri.port == want["port"], f"{where}: port {uri.port!r}"
    want_params = {k.lower(): v for k, v in want["params"].items()}
    assert _uri_params(uri.params) == want_params, f"{where}: params {uri.params!r}"


def _check_name_addr(na: NameAddr, want: dict[str, Any], where: str) -> None:
    assert (na.display or None) == want["display"], f"{where}: display {na.display!r}"
    _check_uri(na.uri, want["uri"], f"{where} URI")
    want_params = {k.lower(): v for k, v in want["params"].items()}
    assert _header_params(na.params) == want_params, f"{where}: params {na.params!r}"


def _check_via(via: Via, want: dict[str, Any], where: str) -> None:
    assert via.transport.upper() == want["transport"], where
    assert via.host.lower() == want["host"].lower(), f"{where}: host {via.host!r}"
    assert via.port == want["port"], f"{where}: port {via.port!r}"
    want_params = {k.lower(): v for k, v in want["params"].items()}
    assert _header_params(via.params) == want_params, f"{where}: params {via.params!r}"


def _check(msg: Request | Response, expect: dict[str, Any], name: str) -> None:
    """Assert every expectation of one manifest entry against a parsed message."""
    for key, want in expect.items():
        where = f"{name}.{key}"
        if key in ("method", "uri"):
            assert isinstance(msg, Request), where
            assert getattr(msg, key) == want, where
        elif key in ("status", "reason"):
            assert isinstance(msg, Response), where
            assert getattr(msg, key) == want, where
        elif key == "ruri":
            assert isinstance(msg, Request), where
            _check_uri(msg.ruri, want, where)
        elif key == "ruri_host_any":
            assert isinstance(msg, Request), where
            assert msg.ruri.host.lower() in [h.lower() for h in want], where
        elif key in ("to", "from_"):
            _check_name_addr(getattr(msg, key), want, where)
        elif key == "contacts":
            got = msg.contacts
            assert len(got) == len(want), f"{where}: {len(got)} contacts"
            for i, (na, w) in enumerate(zip(got, want, strict=True)):
                _check_name_addr(na, w, f"{where}[{i}]")
        elif key == "contacts_uri_headers":
            got_headers = [{k: unquote(v) for k, v in c.uri.headers.items()} for c in msg.contacts]
            assert got_headers == want, where
        elif key == "vias":
            got_vias = msg.vias
            assert len(got_vias) == len(want), f"{where}: {len(got_vias)} vias"
            for i, (via, w) in enumerate(zip(got_vias, want, strict=True)):
                _check_via(via, w, f"{where}[{i}]")
            _check_via(msg.top_via, want[0], f"{name}.top_via")
        elif key == "via_count":
            assert len(msg.vias) == want, where
        elif key == "top_via":
            _check_via(msg.top_via, want, where)
        elif key == "last_via":
            _check_via(msg.vias[-1], want, where)
        elif key == "top_via_received":
            received = msg.top_via.received
            assert received is not None and received.strip("[]") == want, f"{where}: {received!r}"
        elif key == "top_via_host":
            assert msg.top_via.host.lower() == want.lower(), f"{where}: {msg.top_via.host!r}"
        elif key == "cseq":
            assert (msg.cseq.seq, msg.cseq.method) == want, where
        elif key in ("call_id", "max_forwards", "content_type"):
            assert getattr(msg, key) == want, where
        elif key == "headers":
            for hname, values in want.items():
                assert msg.headers.get_all(hname) == values, f"{where}[{hname}]"
        elif key == "header_lists":
            for hname, values in want.items():
                got_list = [v.strip() for v in msg.headers.get_list(hname)]
                assert got_list == values, f"{where}[{hname}]"
        elif key == "body_len":
            assert len(msg.body) == want, where
        elif key == "body":
            assert msg.body == want, where
        elif key == "body_contains":
            for chunk in want:
                assert chunk in msg.body, f"{where}: {chunk!r}"
        else:  # pragma: no cover - a typo in the manifest
            raise AssertionError(f"unknown expectation {key!r} for {name}")


def _touch_everything(msg: Request | Response) -> None:
    """Use every accessor and encode(); only ParseError may come out of an accessor."""
    names = (*ACCESSORS, "ruri") if isinstance(msg, Request) else ACCESSORS
    for accessor in names:
        try:
            getattr(msg, accessor)
        except ParseError:
            pass
    msg.encode()


def _reparse_fields(msg: Request | Response) -> tuple[Any, ...]:
    """What encode() must keep: start line, header (name, value) pairs, body."""
    headers = [(n.lower(), v) for n, v in msg.headers if n.lower() != "content-length"]
    start = (msg.method, msg.uri) if isinstance(msg, Request) else (msg.status, msg.reason)
    return (start, headers, msg.body)


# Temporary xfails (strict) for places where the parser disagrees with the RFC; the lead removes
# an entry when the parser is fixed (a strict xfail that starts passing fails the run).
KNOWN_DISAGREEMENTS: dict[str, str] = {}


def _param(folder: str, name: str) -> Any:
    reason = KNOWN_DISAGREEMENTS.get(_ids(folder, name))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(folder, name, id=_ids(folder, name), marks=marks)


# ---- the corpus itself ----------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["rfc4475", "rfc5118"])
def test_every_vector_file_has_a_manifest_entry_and_vice_versa(folder: str) -> None:
    files = {p.stem for p in (VECTORS / folder).glob("*.sip")}
    assert files == set(MANIFESTS[folder])


@pytest.mark.parametrize(("folder", "name"), [pytest.param(f, n, id=_ids(f, n)) for f, n in ALL])
def test_vector_header_lines_end_in_crlf(folder: str, name: str) -> None:
    """RFC 3261 §7: every start line and header line ends in CRLF; no bare LF or CR in the head."""
    data = _data(folder, name)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\n" in head
    assert b"\n" not in head.replace(b"\r\n", b"")
    assert b"\r" not in head.replace(b"\r\n", b"")


def test_rfc4475_vectors_carry_the_bytes_text_cannot_show() -> None:
    """§2.2: intmeth's BEL/NUL/DEL and UTF-8, mpart01's binary part, trws/noreason trailing SP."""
    intmeth = _data("rfc4475", "intmeth")
    assert b'"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"' in intmeth
    assert "大停電".encode() in intmeth
    assert _data("rfc4475", "trws").startswith(
        b"OPTIONS sip:remote-target@example.com SIP/2.0  \r\n"
    )
    assert _data("rfc4475", "noreason").startswith(b"SIP/2.0 100 \r\n")
    mpart = _data("rfc4475", "mpart01")
    assert len(mpart.split(b"\r\n\r\n", 1)[1]) == 553


# ---- verdicts -------------------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "name"), _cases("valid"))
def test_valid_message_parses_with_the_values_the_rfc_names(folder: str, name: str) -> None:
    case = MANIFESTS[folder][name]
    msg = parse_message(_data(folder, name))
    _check(msg, case["expect"], name)


@pytest.mark.parametrize(("folder", "name"), _cases("valid"))
def test_valid_message_survives_encode_and_reparse(folder: str, name: str) -> None:
    msg = parse_message(_data(folder, name))
    again = parse_message(msg.encode())
    assert _reparse_fields(again) == _reparse_fields(msg)
    _check(again, MANIFESTS[folder][name]["expect"], f"{name} (re-encoded)")


@pytest.mark.parametrize(("folder", "name"), _cases("invalid"))
def test_invalid_message_gives_parse_error_with_the_rfc_status(folder: str, name: str) -> None:
    case = MANIFESTS[folder][name]
    try:
        msg = parse_message(_data(folder, name))
    except ParseError as exc:
        assert exc.status in case["status"], f"{name}: status {exc.status} ({exc.reason})"
        return
    # The parser is lazy: the fault may surface on first use of the broken header.
    errors: list[ParseError] = []
    for accessor in case["broken"]:
        try:
            getattr(msg, accessor)
        except ParseError as err:
            errors.append(err)
    assert errors, f"{name} was accepted; RFC {case['section']} says it is invalid"
    statuses = {e.status for e in errors}
    assert statuses <= case["status"], f"{name}: statuses {statuses} ({errors})"


@pytest.mark.parametrize(("folder", "name"), _cases("either"))
def test_liberal_or_strict_message_gives_message_or_parse_error(folder: str, name: str) -> None:
    case = MANIFESTS[folder][name]
    try:
        msg = parse_message(_data(folder, name))
    except ParseError:
        return
    for accessor in case["broken"]:
        try:
            value = getattr(msg, accessor)
        except ParseError:
            continue
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, NameAddr):
            # A liberal element "must not propagate the error" (§3.1.2.15): what it would
            # write back out is well formed and means the same.
            text = str(value)
            assert re.search(r"<\s|\s>", text) is None, text
            again = parse_name_addr(text)
            assert (again.display, str(again.uri), again.params) == (
                value.display,
                str(value.uri),
                value.params,
            )
    # An element that accepts it must not forward the oddity (§3.1.2.9, §3.1.2.10).
    start_line = msg.encode().split(b"\r\n", 1)[0]
    assert b"  " not in start_line and not start_line.endswith(b" ")


@pytest.mark.parametrize(("folder", "name"), _cases("endpoint"))
def test_endpoint_decides_message_parses_or_gives_parse_error(folder: str, name: str) -> None:
    case = MANIFESTS[folder][name]
    try:
        msg = parse_message(_data(folder, name))
    except ParseError:
        return
    try:
        _check(msg, case["expect"], name)
    except ParseError:
        return


@pytest.mark.parametrize(("folder", "name"), [pytest.param(f, n, id=_ids(f, n)) for f, n in ALL])
def test_no_vector_raises_anything_but_parse_error(folder: str, name: str) -> None:
    try:
        msg = parse_message(_data(folder, name))
    except ParseError as exc:
        assert 300 <= exc.status <= 699
        return
    _touch_everything(msg)


# ---- details the RFCs single out ------------------------------------------------------------


def test_dblreq_ignores_the_invite_after_the_register_body() -> None:
    """RFC 4475 §3.1.1.8 / RFC 3261 §18.3: octets past Content-Length in a datagram are noise."""
    msg = parse_message(_data("rfc4475", "dblreq"))
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert b"INVITE" not in msg.encode()


def test_esc02_percent_in_method_is_not_an_escape() -> None:
    """RFC 4475 §3.1.1.5: RE%47IST%45R is an unknown method, not REGISTER."""
    msg = parse_message(_data("rfc4475", "esc02"))
    assert isinstance(msg, Request)
    assert msg.method != "REGISTER"
    assert msg.encode().startswith(b"RE%47IST%45R sip:registrar.example.com SIP/2.0\r\n")


def test_escnull_contacts_stay_distinct() -> None:
    """RFC 4475 §3.1.1.4: two Contacts, %00 and %00%00, are different URIs. Decoded, they
    would put NUL into AOR keys and headers we write (issue 9 finding 8): `aor` refuses them."""
    msg = parse_message(_data("rfc4475", "escnull"))
    users = [unquote(c.uri.user or "") for c in msg.contacts]
    assert users == ["\x00", "\x00\x00"]
    assert len({str(c.uri) for c in msg.contacts}) == 2
    for c in msg.contacts:
        with pytest.raises(ParseError) as exc:
            c.uri.aor  # noqa: B018
        assert exc.value.status == 400


def test_mpart01_body_is_framed_by_content_length_only() -> None:
    """RFC 4475 §3.1.1.11: NUL and bare CR in the binary part do not end the message."""
    data = _data("rfc4475", "mpart01")
    msg = parse_message(data)
    assert msg.body == data.split(b"\r\n\r\n", 1)[1]


def test_port_ambiguous_keeps_5070_inside_the_address() -> None:
    """RFC 5118 §4.3: the port inside ']' is part of the address; there is no port."""
    msg = parse_message(_data("rfc5118", "port-ambiguous"))
    assert isinstance(msg, Request)
    assert msg.ruri.port is None
    assert re.fullmatch(r"\[2001:db8::10:5070\]", msg.ruri.host, re.I)


# ---- ENDPOINT verdicts through the endpoint itself -----------------------------------------

# Who gives each "endpoint" vector its answer in presenced, and what that answer is.
#   "core": `Endpoint.receive` answers it; the status must be the RFC's `endpoint_status`.
#   "registrar" / "auth": the endpoint hands the request on (RequestReceived); the decision
#       the registrar (REGISTER) or digest auth makes on it must give the RFC's status.
#   (status, why): presenced answers otherwise, for the stated reason; asserted as such.
ENDPOINT_ROLES: dict[str, object] = {
    "unkscm": "core",  # §3.3.2: 416, the Request-URI scheme (RFC 3261 §8.2.2.1)
    "novelsc": "core",  # §3.3.3: 416
    "bext01": "core",  # §3.3.5: 420 with Unsupported (RFC 3261 §8.2.2.3)
    # §3.3.4 wants 400 for the non-SIP To; services/registrar.py answers 404 (the To names no
    # served domain), a refusal all the same. Asserted as it is, so a change shows here.
    "unksm2": ("registrar", 404, "registrar: a non-SIP To names no served domain: 404"),
    "regaut01": "auth",  # §3.3.7: 401, an unknown Authorization scheme is a fresh challenge
    "cparam01": "registrar",  # §3.3.12: 200
    "cparam02": "registrar",  # §3.3.13: 200
    "regescrt": "registrar",  # §3.3.14: 200
    # We are a UAS, not a proxy: RFC 4475 §3.3.11 says a UAS answers the OPTIONS normally.
    "zeromf": (200, "a UAS answers OPTIONS with Max-Forwards 0; 483 is a proxy's answer"),
    # We take no sessions: every INVITE gets 405 before its body or Accept matter (RFC 3261
    # §8.2.1), which is the refusal the RFC allows for a method the UAS does not serve.
    "invut": (405, "no INVITE served: 405 precedes 415"),
    "sdp01": (405, "no INVITE served: 405 precedes 406"),
    "inv2543": (405, "processed as any INVITE (RFC 2543 syntax accepted): 405"),
    # §3.3.10: a response matching none of our transactions is absorbed, never forwarded.
    "bcast": (None, "no client transaction matches: dropped"),
}


def _vector_endpoint() -> Any:
    from presenced.sip.endpoint import Endpoint, EndpointConfig

    counter = iter(range(1, 10_000))
    cfg = EndpointConfig(domains=frozenset({"example.com"}), rate_limits=None,
                         amplification=None, via_hosts={"udp": "127.0.0.1:5060"})
    return Endpoint(cfg, make_token=lambda: f"t{next(counter)}")


def _app_status(role: str, req: Request) -> int:
    """The status presenced's registrar / digest auth gives (services/registrar.py: the AOR
    from To, then `process_register`; services/dispatch.py: credentials parsed, else 401)."""
    if role == "auth":
        from presenced.sip.auth import parse_digest_credentials

        value = req.headers.get("Authorization") or ""
        try:
            parse_digest_credentials(value)
        except ParseError:
            return 401  # unusable credentials: challenged afresh (RFC 3261 §22.1)
        return 200  # pragma: no cover - the vector's scheme is unknown by design
    from presenced.registrar.bindings import RegistrarPolicy, process_register

    try:
        aor = req.to.uri.aor
        to_host = req.to.uri.host_key
    except ParseError:
        return 400
    if to_host != "example.com" or not req.to.uri.user:
        return 404
    return process_register(req, aor, [], RegistrarPolicy(), 1_000_000.0, "udp:192.0.2.1:5060").status


def test_every_endpoint_vector_has_a_role() -> None:
    endpoint_cases = {n for f, n in ALL if MANIFESTS[f][n]["verdict"] == "endpoint" and f == "rfc4475"}
    assert endpoint_cases == set(ENDPOINT_ROLES)


@pytest.mark.parametrize("name", sorted(ENDPOINT_ROLES))
def test_endpoint_vector_gets_the_rfc_endpoint_status(name: str) -> None:
    """RFC 4475 §3.3 / §3.4: each ENDPOINT vector through `Endpoint.receive` (and, where the
    application decides, its decision) gets `endpoint_status`, or the documented answer."""
    from presenced.sip.endpoint import Peer, RequestReceived, Transmit

    case = MANIFESTS["rfc4475"][name]
    role = ENDPOINT_ROLES[name]
    ep = _vector_endpoint()
    events = ep.receive(_data("rfc4475", name), Peer("udp", "192.0.2.1", 5060), 0.0)
    want: int | None = case["endpoint_status"]
    if isinstance(role, tuple):
        if role[0] == "registrar":
            role, want = role[0], role[1]
        else:
            role, want = "core", role[0]
    if role in ("registrar", "auth"):
        assert len(events) == 1 and isinstance(events[0], RequestReceived), events
        assert _app_status(str(role), events[0].request) == want
        return
    transmits = [e for e in events if isinstance(e, Transmit)]
    if want is None:
        assert events == []
        return
    assert len(transmits) == 1, events
    resp = parse_message(transmits[0].data)
    assert isinstance(resp, Response)
    assert resp.status == want, f"{name}: {resp.status} {resp.reason}"
    if want == 420:
        assert resp.headers.get("Unsupported") == "nothingSupportsThis, nothingSupportsThisEither"


def test_insuf_gets_400_through_the_endpoint() -> None:
    """RFC 4475 §3.3.1: no To, From or Call-ID; the Via survives, so a 400 goes back."""
    from presenced.sip.endpoint import Peer, Transmit

    ep = _vector_endpoint()
    (out,) = ep.receive(_data("rfc4475", "insuf"), Peer("udp", "192.0.2.95", 5060), 0.0)
    assert isinstance(out, Transmit)
    assert out.data.startswith(b"SIP/2.0 400 ")
    assert b"\r\nCSeq: 193942 INVITE\r\n" in out.data and b"branch=z9hG4bKkdj.insuf" in out.data
    assert out.peer == Peer("udp", "192.0.2.95", 5060)
