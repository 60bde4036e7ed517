"""``presenced ctl [--config FILE] [--json] COMMAND ...``: the admin API from a shell.

Like kamcmd or opensips-cli: it reads `[admin] listen` and the token (`token` or `token_file`)
from the same configuration file the server runs with, calls /api/v1, and prints a table (or
the JSON the server sent, with --json). Exit codes: 0 done, 1 the server refused (its error
is printed), 2 bad usage or configuration, 3 no server answering.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode
from urllib.request import Request, urlopen

from presenced.config import ConfigError, load_config, load_default_config

TIMEOUT = 10.0


class CtlError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="presenced ctl",
                                description="Ask a running presenced through its admin API.")
    p.add_argument("--config", metavar="FILE", help="the server's configuration file "
                   "(its [admin] listen and token); default: the built-in configuration")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="version, uptime, storage health, counts")
    ls = sub.add_parser("presentities", help="list presentities (filters, paging)")
    ls.add_argument("--filter", "-q", default=None, help="substring of the AOR")
    ls.add_argument("--event", default=None, help="only those with state or watchers of EVENT")
    ls.add_argument("--watched", choices=("true", "false"), default=None)
    ls.add_argument("--offset", type=int, default=None)
    ls.add_argument("--limit", type=int, default=None)
    show = sub.add_parser("show", help="a presentity: documents, sources, publications")
    show.add_argument("aor")
    w = sub.add_parser("watchers", help="the watchers of a presentity")
    w.add_argument("aor")
    w.add_argument("--event", default=None)
    s = sub.add_parser("subscriptions", help="the subscriptions a watcher holds")
    s.add_argument("watcher")
    b = sub.add_parser("bindings", help="the registered contacts of an AOR")
    b.add_argument("aor")
    t = sub.add_parser("terminate", help="end a subscription (its watcher gets a final NOTIFY)")
    t.add_argument("id")
    t.add_argument("--reason", default=None, help="RFC 6665 reason (default deactivated)")
    u = sub.add_parser("unbind", help="remove a binding (every binding of AOR without --contact)")
    u.add_argument("aor")
    u.add_argument("--contact", default=None)
    up = sub.add_parser("unpublish", help="remove a publication by its entity-tag")
    up.add_argument("etag")
    r = sub.add_parser("reload", help="reload users file, routing script, log level ...")
    r.add_argument("what", nargs="*", help="what to reload (default: everything)")
    ru = sub.add_parser("rules", help="a user's presence rules: get, set HANDLING IDENTITY..., "
                        "set --file DOC, delete")
    ru.add_argument("action", choices=("get", "set", "delete"))
    ru.add_argument("aor")
    ru.add_argument("handling", nargs="?", choices=("allow", "confirm", "polite-block", "block"))
    ru.add_argument("identities", nargs="*", help="user@domain, *@domain or * (default *)")
    ru.add_argument("--file", default=None, help="set: a whole application/auth-policy+xml file")
    f = sub.add_parser("failures", help="recent NOTIFY failures")
    f.add_argument("--limit", type=int, default=None)
    return p


def _base_and_token(config_path: str | None) -> tuple[str, str]:
    try:
        cfg = load_config(config_path) if config_path else load_default_config()
    except ConfigError as exc:
        raise CtlError(f"{config_path or 'default config'}: {exc}", 2) from None
    if cfg.admin is None:
        raise CtlError(f"{config_path or 'default config'}: no [admin] section: the admin API "
                       "is off", 2)
    host, port = cfg.admin.address
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    try:
        token = cfg.admin.read_token()
    except ConfigError as exc:
        raise CtlError(str(exc), 2) from None
    return f"http://{shown}:{port}", token


def call(base: str, token: str, method: str, path: str,
         query: dict[str, Any] | None = None, body: Any = None) -> Any:
    q = {k: v for k, v in (query or {}).items() if v is not None}
    url = base + path + (f"?{urlencode(q)}" if q else "")
    data = None if body is None else json.dumps(body).encode()
    req = Request(url, data=data, method=method,
                  headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                           **({"Content-Type": "application/json"} if data else {})})
    try:
        with urlopen(req, timeout=TIMEOUT) as resp:
            return json.loads(resp.read() or b"null")
    except HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise CtlError(f"{exc.code}: {message}", 1) from None
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CtlError(f"cannot reach the admin API at {base}: {reason}", 3) from None


def _seg(text: str) -> str:
    return quote(text, safe="@:+")


def request_for(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None, Any]:
    c = args.command
    api = "/api/v1"
    if c == "status":
        return "GET", f"{api}/status", None, None
    if c == "presentities":
        return "GET", f"{api}/presentities", {"q": args.filter, "event": args.event,
                                              "watched": args.watched, "offset": args.offset,
                                              "limit": args.limit}, None
    if c == "show":
        return "GET", f"{api}/presentities/{_seg(args.aor)}", None, None
    if c == "watchers":
        return "GET", f"{api}/presentities/{_seg(args.aor)}/watchers", {"event": args.event}, None
    if c == "subscriptions":
        return "GET", f"{api}/watchers/{_seg(args.watcher)}/subscriptions", None, None
    if c == "bindings":
        return "GET", f"{api}/bindings/{_seg(args.aor)}", None, None
    if c == "terminate":
        return "DELETE", f"{api}/subscriptions/{quote(args.id, safe='')}", {"reason": args.reason}, None
    if c == "unbind":
        return "DELETE", f"{api}/bindings/{_seg(args.aor)}", {"contact": args.contact}, None
    if c == "unpublish":
        return "DELETE", f"{api}/publications/{quote(args.etag, safe='')}", None, None
    if c == "reload":
        return "POST", f"{api}/reload", None, {"what": args.what or None}
    if c == "failures":
        return "GET", f"{api}/failures", {"limit": args.limit}, None
    if c == "rules":
        path = f"{api}/rules/{_seg(args.aor)}"
        if args.action == "get":
            return "GET", path, None, None
        if args.action == "delete":
            return "DELETE", path, None, None
        if args.file:
            try:
                with open(args.file, encoding="utf-8") as fh:
                    return "PUT", path, None, {"document": fh.read()}
            except (OSError, UnicodeDecodeError) as exc:
                raise CtlError(f"{args.file}: {exc}", 2) from None
        if not args.handling:
            raise CtlError("rules set needs a handling and identities, or --file", 2)
        return "PUT", path, None, {"handling": args.handling, "identities": args.identities or ["*"]}
    raise CtlError(f"unknown command {c}", 2)


def table(rows: Sequence[Sequence[object]], headers: Sequence[str], out: TextIO) -> None:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, r in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
    if not rows:
        print("(none)", file=out)


def _subs(subs: list[dict[str, Any]], out: TextIO, who: str) -> None:
    table([(s[who], s["event"], s["state"], s["expires_in"], s["flow"],
            s["last_notify_status"], s["id"]) for s in subs],
          (who, "event", "state", "expires", "flow", "last NOTIFY", "id"), out)


def render(command: str, data: Any, out: TextIO) -> None:
    if command == "status":
        c = data["counts"]
        st = data["storage"]
        print(f"presenced {data['version']} ({data.get('core', 'python')} core) on {data['node']}, "
              f"up {data['uptime']:.0f} s", file=out)
        print(f"storage {st['backend']}: {'ok' if st.get('ok') else 'FAILING'}"
              + (f" (last error: {st['last_error']})" if st.get("last_error") else ""), file=out)
        table([(k, v if not isinstance(v, dict) else ", ".join(f"{e}={n}" for e, n in v.items()))
               for k, v in c.items()], ("count", "value"), out)
        if data.get("xmpp") is not None:
            print(f"xmpp component: {'connected' if data['xmpp']['connected'] else 'down'}", file=out)
        if data.get("cluster"):
            print(f"cluster: {json.dumps(data['cluster'])}", file=out)
    elif command == "presentities":
        table([(i["aor"], ", ".join(f"{e}={n}" for e, n in i["watchers"].items()) or "-",
                i["bindings"], i["publications"]) for i in data["items"]],
              ("aor", "watchers", "bindings", "publications"), out)
        print(f"{len(data['items'])} of {data['total']} (offset {data['offset']})", file=out)
    elif command == "show":
        print(data["aor"], file=out)
        for event, pkg in data["packages"].items():
            print(f"\n[{event}] watchers={pkg['watchers']} sources={','.join(pkg['sources']) or '-'} "
                  f"({pkg['content_type']})", file=out)
            print(pkg["document"].rstrip(), file=out)
        print("\nbindings:", file=out)
        table([(b["contact"], b["expires_in"], b["flow"]) for b in data["bindings"]],
              ("contact", "expires", "flow"), out)
        print("\npublications:", file=out)
        table([(p["etag"], p["event"], p["expires_in"], p["content_type"], p["size"])
               for p in data["publications"]], ("etag", "event", "expires", "type", "bytes"), out)
    elif command == "watchers":
        _subs(data["watchers"], out, "watcher")
    elif command == "subscriptions":
        _subs(data["subscriptions"], out, "presentity")
    elif command == "bindings":
        table([(b["contact"], b["expires_in"], b["q"], b["flow"], b["user_agent"])
               for b in data["bindings"]], ("contact", "expires", "q", "flow", "user agent"), out)
    elif command == "terminate":
        t = data["terminated"]
        print(f"terminated {t['id']} ({t['watcher']} -> {t['presentity']}, {t['event']}), "
              f"reason={data['reason']}", file=out)
    elif command == "unbind":
        print(f"removed {data['removed']} binding(s) of {data['aor']}", file=out)
    elif command == "unpublish":
        print(f"removed publication {data['removed']}", file=out)
    elif command == "reload":
        table(list(data["reloaded"].items()), ("reloaded", "result"), out)
    elif command == "rules":
        if "document" in data:
            out.write(data["document"] if data["document"].endswith("\n") else data["document"] + "\n")
        elif "etag" in data:
            print(f"rules of {data['aor']} set (etag {data['etag']}): live watchers re-decided", file=out)
        else:
            print(f"rules of {data['removed']} deleted: the default policy applies", file=out)
    elif command == "failures":
        table([(time.strftime("%H:%M:%S", time.localtime(f["at"])), f["status"], f["event"],
                f["watcher"], f["presentity"]) for f in data["failures"]],
              ("time", "status", "event", "watcher", "presentity"), out)


def main(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        base, token = _base_and_token(args.config)
        method, path, query, body = request_for(args)
        data = call(base, token, method, path, query, body)
    except CtlError as exc:
        print(f"presenced ctl: {exc}", file=err)
        return exc.code
    if args.json:
        print(json.dumps(data, indent=2), file=out)
    else:
        render(args.command, data, out)
    return 0
