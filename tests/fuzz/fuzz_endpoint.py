"""Endpoint-level fuzzer: mutated SIP messages through `Endpoint.receive` and the services.

Each input is a short scenario (1-5 steps) against a fresh server wired by server.py (see
endpoint_app.py): realistic REGISTER / SUBSCRIBE / PUBLISH (PIDF bodies) / NOTIFY / OPTIONS
requests and responses, and the RFC 4475 / RFC 5118 torture messages, with structured edits
(hostile header values, CR/LF and %0d%0a in the Request-URI user, foreign Record-Route and
Contact addresses, ...), optional byte-level damage, valid or invalid digest credentials
computed after the edits, in-dialog refreshes, answers to our NOTIFYs, a dropped TCP
connection and the passing of time (retransmissions, timeouts). After every step the
properties of `App.check()` must hold.

One generator (`generate`) decodes every input from a stream of choices, so three drivers
share it:

    # CI: tests/fuzz/test_fuzz_endpoint.py (Hypothesis, fixed budget, derandomized)
    # coverage-guided, with atheris (pip install atheris):
    python tests/fuzz/fuzz_endpoint.py -runs=100000 -max_len=2048
    # plain seeded random loop (no atheris needed):
    python tests/fuzz/fuzz_endpoint.py --iterations 20000 --seed 1 [--minutes 15]

The plain loop prints the seed of each failing scenario; `--replay SEED` runs it again, printing its steps.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import atheris  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - optional tool
    atheris = None

if atheris is not None and __name__ == "__main__":
    with atheris.instrument_imports():
        import presenced.pa.agent

        import presenced.services.dispatch
        import presenced.sip.endpoint  # noqa: F401

from endpoint_app import DOMAIN, KINDS, SOURCES, USERS, App, start_app

from presenced.sip.auth import compute_ha1, digest_response
from presenced.sip.errors import ParseError
from presenced.sip.message import Request, Response, make_response, parse_message

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
RAW_VECTORS = [p.read_bytes() for p in sorted(VECTORS.glob("rfc*/*.sip"))]
PIDF_VECTORS = [p.read_bytes() for p in sorted((VECTORS / "pidf").rglob("*.xml"))]
PIDF_NOTE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@example.com">'
    b'<tuple id="t1"><status><basic>open</basic></status>'
    b"<note>line one\r\nflush_all\r\nset k 0 0 1\r\nX-Injected: yes</note></tuple></presence>"
)
BODIES = [PIDF_NOTE, *PIDF_VECTORS, b"", b"not xml at all", PIDF_NOTE * 40]

# Values an attacker writes into headers: injections, third-party addresses, edge numbers.
NASTY = [
    "", ",",  # first: Hypothesis favours early entries, and empty lists break accessors
    "x%0d%0aX-Injected%3a%20yes%0d%0a",
    "x%0aX-Injected:yes",
    "x\r\nX-Injected: yes",
    "x%00y",
    "%0d%0aNOTIFY sip:victim@127.0.0.99 SIP/2.0",
    "<sip:127.0.0.99:9;lr>",
    "<sip:relay@192.0.2.99:11211;transport=tcp;lr>",
    "<sip:bob@127.0.0.99:9;transport=tcp>",
    "<sip:bob@192.0.2.99:5060>",
    "<sip:bob@[::1]:9>",
    "<sip:bob@victim.example.net:9;transport=tcp>",
    "SIP/2.0/UDP 127.0.0.99:9;branch=z9hG4bKvv;rport;received=192.0.2.99",
    "SIP/2.0/TCP 127.0.0.99:9;branch=z9hG4bKvm;maddr=127.0.0.99",
    "0", "1", "59", "4294967296", "-1", "99999999999999999999", "",
    "*", "presence.winfo", "presence;id=%0d%0a", "presence;id=x\x7f",
    "application/xpidf+xml", "text/lpidf", "application/cpim-pidf+xml, */*;q=0.1", "",
    '"quo\\"ted" <sip:alice@example.com>;tag=a', "<sips:alice@example.com>;tag=q", "<tel:+1234>;tag=t",
    "<sip:alice@example.com>;tag=1, <sip:bob@example.com>",
    "é\u2028\u0085", "\x00", "\x1b[31m", "a" * 3000, ";;;", "<>", "<sip:>;tag=",
    "z9hG4bK", "100rel", "Digest username=\"alice\"", "Digest realm=\"example.com\", nonce=\"x\"",
]
HEADERS = ["From", "To", "Contact", "Record-Route", "Via", "Event", "Expires", "Accept",
           "Content-Type", "Call-ID", "CSeq", "SIP-If-Match", "Max-Forwards", "Require",
           "Route", "Authorization", "Content-Length", "Subscription-State"]
USER_PARTS = ["alice", "bob", "carol", "x%0d%0aX-Injected%3a%20yes", "%61lice", "al%00ice",
              "alice;x=y", "", "a" * 300, "x%0d%0a%0d%0aNOTIFY sip:v@127.0.0.99 SIP/2.0"]
STATUSES = [100, 180, 200, 202, 302, 400, 404, 405, 408, 413, 423, 480, 481, 489, 500, 503, 603, 699]


class Choices(Protocol):
    def int(self, n: int) -> int:
        """A number in range(n) (n >= 1)."""
        ...


class RandomChoices:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, n: int) -> int:
        return self.rng.randrange(n)


class ProviderChoices:
    """Choices read from atheris' FuzzedDataProvider (0 once the data runs out)."""

    def __init__(self, fdp: Any) -> None:
        self.fdp = fdp

    def int(self, n: int) -> int:
        return int(self.fdp.ConsumeIntInRange(0, n - 1)) if n > 1 else 0


# --- message templates ------------------------------------------------------------------------


@dataclass
class Draft:
    """A message being built: start line, header lines, body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def set(self, name: str, value: str) -> None:
        for i, (n, _) in enumerate(self.headers):
            if n.lower() == name.lower():
                self.headers[i] = (n, value)
                return
        self.headers.append((name, value))

    def get(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def render(self) -> bytes:
        lines = [self.start, *(f"{n}: {v}" for n, v in self.headers)]
        if self.get("Content-Length") is None:
            lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        return head + b"\r\n\r\n" + self.body


@dataclass
class Ctx:
    app: App
    n: int = 0  # message counter: fresh branches, Call-IDs and tags

    def fresh(self) -> int:
        self.n += 1
        return self.n


def _request(ctx: Ctx, method: str, ruri: str, src: Any, from_user: str, to_user: str,
             extra: list[tuple[str, str]], body: bytes = b"", ctype: str | None = None) -> Draft:
    n = ctx.fresh()
    host = f"[{src.host}]" if ":" in src.host else src.host
    headers = [
        ("Via", f"SIP/2.0/{src.transport.upper()} {host}:{src.port};branch=z9hG4bKf{n};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{from_user}@{DOMAIN}>;tag=ft{n}"),
        ("To", f"<sip:{to_user}@{DOMAIN}>"),
        ("Call-ID", f"fuzz-{n}@{host}"),
        ("CSeq", f"{n} {method}"),
        *extra,
    ]
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    return Draft(f"{method} {ruri} SIP/2.0", headers, body)


def _contact(src: Any, user: str) -> str:
    host = f"[{src.host}]" if ":" in src.host else src.host
    return f"<sip:{user}@{host}:{src.port};transport={src.transport}>"


def t_register(ctx: Ctx, src: Any, c: Choices) -> Draft:
    user = USERS_LIST[c.int(len(USERS_LIST))]
    return _request(ctx, "REGISTER", f"sip:{DOMAIN}", src, user, user,
                    [("Contact", _contact(src, user) + ";expires=600"), ("Expires", "600")])


def t_subscribe(ctx: Ctx, src: Any, c: Choices) -> Draft:
    watcher = USERS_LIST[c.int(len(USERS_LIST))]
    target = USER_PARTS[c.int(len(USER_PARTS))] if c.int(4) == 0 else "alice"
    extra = [("Event", "presence"), ("Contact", _contact(src, watcher)), ("Expires", "600"),
             ("Accept", ["application/pidf+xml", "application/xpidf+xml", "text/lpidf",
                         "application/cpim-pidf+xml"][c.int(4)])]
    return _request(ctx, "SUBSCRIBE", f"sip:{target}@{DOMAIN}", src, watcher, target, extra)


def t_subscribe_routed(ctx: Ctx, src: Any, c: Choices) -> Draft:
    """A SUBSCRIBE that names a third party as its route or target (findings 1 and 3)."""
    d = t_subscribe(ctx, src, c)
    victim = ["<sip:127.0.0.99:9;lr>", "<sip:192.0.2.99:11211;transport=tcp;lr>",
              "<sip:[::1]:9;lr>"][c.int(3)]
    if c.int(2):
        d.headers.append(("Record-Route", victim))
    else:
        d.set("Contact", ["<sip:bob@127.0.0.99:9;transport=tcp>", "<sip:bob@192.0.2.99:5060>",
                          "<sip:bob@[::1]:9;transport=tcp>"][c.int(3)])
    return d


def t_fetch(ctx: Ctx, src: Any, c: Choices) -> Draft:
    d = t_subscribe(ctx, src, c)
    d.set("Expires", "0")
    return d


def t_publish(ctx: Ctx, src: Any, c: Choices) -> Draft:
    user = USERS_LIST[c.int(len(USERS_LIST))]
    body = BODIES[c.int(len(BODIES))]
    extra = [("Event", "presence"), ("Expires", "600")]
    if c.int(3) == 0:
        extra.append(("SIP-If-Match", ["nonexistent", "", "a" * 100][c.int(3)]))
    return _request(ctx, "PUBLISH", f"sip:{user}@{DOMAIN}", src, user, user, extra, body,
                    "application/pidf+xml")


def t_notify(ctx: Ctx, src: Any, c: Choices) -> Draft:
    return _request(ctx, "NOTIFY", f"sip:alice@{DOMAIN}", src, "bob", "alice",
                    [("Event", "presence"), ("Subscription-State", "active;expires=60")],
                    BODIES[c.int(len(BODIES))], "application/pidf+xml")


def t_options(ctx: Ctx, src: Any, c: Choices) -> Draft:
    method = ["OPTIONS", "INVITE", "MESSAGE", "CANCEL", "BYE", "FOO", "ACK"][c.int(7)]
    return _request(ctx, method, f"sip:alice@{DOMAIN}", src, "bob", "alice", [])


def t_response(ctx: Ctx, src: Any, c: Choices) -> Draft:
    n = ctx.fresh()
    status = STATUSES[c.int(len(STATUSES))]
    return Draft(f"SIP/2.0 {status} Whatever", [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{['tok', 'f', ''][c.int(3)]}{n}"),
        ("From", f"<sip:alice@{DOMAIN}>;tag=a{n}"), ("To", f"<sip:bob@{DOMAIN}>;tag=b{n}"),
        ("Call-ID", f"r-{n}"), ("CSeq", f"{n} NOTIFY")])


def t_refresh(ctx: Ctx, src: Any, c: Choices) -> Draft:
    """An in-dialog SUBSCRIBE for the latest dialog we accepted (refresh or Expires: 0)."""
    ok = _last(ctx.app, _dialog_ok)
    if not isinstance(ok, Response):
        return t_subscribe(ctx, src, c)
    n = ctx.fresh()
    try:
        target = str(ok.contacts[0].uri)
    except (ParseError, IndexError):
        target = f"sip:alice@{DOMAIN}"
    host = f"[{src.host}]" if ":" in src.host else src.host
    return Draft(f"SUBSCRIBE {target} SIP/2.0", [
        ("Via", f"SIP/2.0/{src.transport.upper()} {host}:{src.port};branch=z9hG4bKr{n};rport"),
        ("Max-Forwards", "70"),
        ("From", ok.headers.get("From") or ""), ("To", ok.headers.get("To") or ""),
        ("Call-ID", ok.headers.get("Call-ID") or ""), ("CSeq", f"{1000 + n} SUBSCRIBE"),
        ("Event", "presence"), ("Contact", _contact(src, "bob")),
        ("Expires", ["600", "0", "30"][c.int(3)])])


def _dialog_ok(m: Request | Response) -> bool:
    try:
        return (isinstance(m, Response) and 200 <= m.status < 300 and m.cseq.method == "SUBSCRIBE"
                and m.to.tag is not None)
    except ParseError:
        return False


USERS_LIST = [*USERS, "mallory"]
TEMPLATES: list[Callable[[Ctx, Any, Choices], Draft]] = [
    t_register, t_subscribe, t_subscribe_routed, t_fetch, t_publish, t_notify, t_options,
    t_response, t_refresh,
]


def _last(app: App, want: Callable[[Request | Response], bool]) -> Request | Response | None:
    for tx in reversed(app.transmits):
        try:
            msg = parse_message(tx.data)
        except ParseError:
            continue
        if want(msg):
            return msg
    return None


# --- edits --------------------------------------------------------------------------------------


def edit(d: Draft, c: Choices) -> None:
    op = c.int(6)
    payload = NASTY[c.int(len(NASTY))]
    if op == 0:  # the Request-URI user (finding 2: it ends up in our Contact)
        parts = d.start.split(" ")
        if len(parts) == 3 and "@" in parts[1]:
            user = USER_PARTS[c.int(len(USER_PARTS))] if c.int(2) else payload
            parts[1] = re.sub(r"^(sips?:)[^@]*@", lambda m: m.group(1) + user + "@", parts[1])
            d.start = " ".join(parts)
    elif op == 1:
        d.set(HEADERS[c.int(len(HEADERS))], payload)
    elif op == 2:
        name = HEADERS[c.int(len(HEADERS))]
        d.set(name, (d.get(name) or "") + payload)
    elif op == 3:
        d.headers.insert(c.int(len(d.headers) + 1), (HEADERS[c.int(len(HEADERS))], payload))
    elif op == 4 and d.headers:
        del d.headers[c.int(len(d.headers))]
    else:
        d.body = BODIES[c.int(len(BODIES))]


def sign(d: Draft, app: App, c: Choices) -> None:
    """Digest credentials (RFC 3261 §22.4, RFC 7616) for the draft as it now stands."""
    auth = app.server.dispatcher.auth
    if auth is None:
        return
    parts = d.start.split(" ")
    if len(parts) != 3:
        return
    method, uri = parts[0], parts[1]
    user = USERS_LIST[c.int(len(USERS_LIST))]
    password = USERS.get(user, "guess") if c.int(4) else "wrong-password"
    algorithm = ["MD5", "SHA-256"][c.int(2)]
    base = "SHA-256" if algorithm.startswith("SHA") else "MD5"
    challenge = auth.challenge(time.time())[0]
    nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
    opaque = re.search(r'opaque="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
    cnonce = hashlib.sha256(str(c.int(1 << 16)).encode()).hexdigest()[:16]
    nc = f"{1 + c.int(3):08x}"
    response = digest_response(algorithm, compute_ha1(base, user, auth.realm, password), nonce,
                               method, uri, qop="auth", nc=nc, cnonce=cnonce)
    d.headers.append(("Authorization", (
        f'Digest username="{user}", realm="{auth.realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, '
        f'cnonce="{cnonce}", opaque="{opaque}"')))


def damage(data: bytes, c: Choices) -> bytes:
    """Byte-level mutations, as the parser fuzzer does them."""
    buf = bytearray(data)
    for _ in range(1 + c.int(4)):
        op = c.int(5)
        i = c.int(len(buf) + 1)
        if op == 0 and buf:
            buf[min(i, len(buf) - 1)] = c.int(256)
        elif op == 1:
            del buf[i:]
        elif op == 2:
            buf[i:i] = bytes([c.int(256) for _ in range(1 + c.int(8))])
        elif op == 3:
            j = buf.find(b"\r\n", i)
            if j >= 0:
                buf[j:j + 2] = [b"", b"\n", b"\r", b"\r\n ", b"\r\n\r\n"][c.int(5)]
        else:
            buf[i:i] = [b";", b",", b"<", b">", b'"', b"\\", b"%0d%0a", b":", b"%", b"\x00"][c.int(10)]
    return bytes(buf)


# --- scenarios ----------------------------------------------------------------------------------


async def run_scenario(c: Choices, trace: list[str] | None = None,
                       kinds: frozenset[str] = frozenset(KINDS)) -> App:
    """Decode one scenario from `c` and run it; raises `Violation` when a property of `kinds`
    breaks (the others are collected in `App.ignored`)."""
    auth = bool(c.int(2))
    app = await start_app(auth)
    app.kinds = kinds
    note = trace.append if trace is not None else (lambda _s: None)
    note(f"auth={auth}")
    try:
        ctx = Ctx(app)
        for _ in range(1 + c.int(5)):
            kind = c.int(10)
            src = SOURCES[c.int(len(SOURCES))]
            if kind <= 5:
                d = TEMPLATES[c.int(len(TEMPLATES))](ctx, src, c)
                for _ in range(c.int(4)):
                    edit(d, c)
                if auth and c.int(4):
                    sign(d, app, c)
                data = d.render()
                if c.int(4) == 0:
                    data = damage(data, c)
            elif kind == 6:
                data = damage(RAW_VECTORS[c.int(len(RAW_VECTORS))], c) if c.int(2) else \
                    RAW_VECTORS[c.int(len(RAW_VECTORS))]
            elif kind == 7:
                notify = _last(app, lambda m: isinstance(m, Request) and m.method == "NOTIFY")
                if not isinstance(notify, Request):
                    continue
                try:
                    data = make_response(notify, STATUSES[c.int(len(STATUSES))]).encode()
                except ParseError:  # a NOTIFY we could not parse back is reported already
                    continue
            elif kind == 8:
                note(f"drop tcp {SOURCES[2]}")
                app.drop_connection(SOURCES[2])
                continue
            else:
                seconds = [0.6, 5.0, 40.0, 700.0][c.int(4)]
                note(f"wait {seconds}")
                await app.advance(seconds)
                app.check()
                continue
            note(f"from {src}: {data!r}")
            await app.feed(data, src)
            app.check()
        await app.advance(40.0)  # every retransmission and timeout of what we sent
        app.check()
    finally:
        await app.stop()
    return app


def run_once(c: Choices, kinds: frozenset[str] = frozenset(KINDS)) -> None:
    """One scenario on a fresh event loop; on a failure, print its steps."""
    trace: list[str] = []
    try:
        asyncio.run(run_scenario(c, trace, kinds))
    except BaseException:
        sys.stderr.write("scenario:\n  " + "\n  ".join(trace) + "\n")
        raise


# --- drivers ------------------------------------------------------------------------------------


def _atheris_one(data: bytes) -> None:
    run_once(ProviderChoices(atheris.FuzzedDataProvider(data)))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _key(v: AssertionError) -> str:
    """A violation's message with the numbers and quoted bytes taken out: its kind of failure."""
    # keep the first word of each quoted message (NOTIFY, SIP/2.0 ...), drop the rest
    text = re.sub(r"b(['\"])([A-Za-z/.0-9]{0,12})[^'\"]*['\"]", r"\2…", str(v))
    return re.sub(r"[0-9]+", "N", text.split("…")[0] + "…")[:110]


def plain_loop(iterations: int, seed: int, minutes: float | None) -> int:
    """Seeded random scenarios, every property collected, nothing stopping the run; prints a
    tally of the distinct failures (with the first scenario seed of each) and returns how many
    scenarios failed."""
    import logging

    logging.getLogger("presenced").propagate = False  # the checks read ERRORs themselves
    rng = random.Random(seed)
    start = time.monotonic()
    failing = 0
    done = 0
    tally: dict[str, list[int]] = {}  # key -> [count, first seed]
    for done in range(1, iterations + 1):
        case_seed = rng.randrange(1 << 62)
        found: list[AssertionError] = []
        try:
            app = asyncio.run(run_scenario(RandomChoices(random.Random(case_seed)), kinds=frozenset()))
            found.extend(app.ignored)
        except Exception as exc:  # escaped the endpoint or the harness: a crash
            found.append(AssertionError(f"[crash] {exc!r}"))
        failing += bool(found)
        for v in found:
            entry = tally.setdefault(_key(v), [0, case_seed])
            if entry[0] == 0:
                print(f"NEW (seed {case_seed}): {str(v)[:300]}", flush=True)
            entry[0] += 1
        if done % 1000 == 0:
            print(f"{done} scenarios, {failing} failing, {time.monotonic() - start:.0f} s, "
                  f"peak RSS {_rss_mib():.0f} MiB", flush=True)
        if minutes is not None and time.monotonic() - start > minutes * 60:
            break
    print(f"done: {done} scenarios in {time.monotonic() - start:.0f} s, {failing} failing, "
          f"peak RSS {_rss_mib():.0f} MiB")
    for key, (count, first) in sorted(tally.items(), key=lambda kv: -kv[1][0]):
        print(f"  {count:7d}  seed {first:<20d} {key}")
    return failing


def main() -> None:
    if atheris is not None and not any(a.startswith("--") for a in sys.argv[1:]):
        import logging

        logging.getLogger("presenced").propagate = False
        atheris.Setup(sys.argv, _atheris_one)
        atheris.Fuzz()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--replay", type=int, default=None, help="run one scenario seed, verbosely")
    args = parser.parse_args()
    if args.replay is not None:
        trace: list[str] = []
        app = asyncio.run(run_scenario(RandomChoices(random.Random(args.replay)), trace,
                                       frozenset()))
        print("scenario:\n  " + "\n  ".join(trace))
        for v in app.ignored:
            print(f"VIOLATION {v}")
        print(f"{len(app.ignored)} violations")
        return
    sys.exit(1 if plain_loop(args.iterations, args.seed, args.minutes) else 0)


if __name__ == "__main__":
    main()
