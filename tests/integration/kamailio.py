"""A real Kamailio (Debian's kamailio package) as an edge proxy in front of presenced.

    proxy = KamailioProxy(tmp_path, target=srv.addr, record_route=False).start()
    ...  # send SUBSCRIBE/REGISTER/PUBLISH to proxy.addr; it relays them to presenced
    proxy.stop()

The script is the shape of Kamailio's default configuration, cut down to a relay: initial
requests go to presenced (with `record_route()` when asked); in-dialog requests are relayed
by `loose_route()`, and one without a Route naming the proxy gets "404 Not here", as the
default kamailio.cfg answers — which is exactly why a NOTIFY must not be aimed at a proxy that
did not Record-Route (docs/presence.md, "Where NOTIFYs go").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from harness import free_udp_port

KAMAILIO_HOST = "127.0.0.3"  # the proxy's own loopback address: not the watcher's, not ours

_SCRIPT = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
listen=udp:{host}:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ exit; }}
        xlog("L_INFO", "in-dialog $rm to $ru without a Route to me: 404\\n");
        sl_send_reply("404", "Not here");
        exit;
    }}
    {record_route}
    $du = "sip:{target_host}:{target_port}";
    t_relay();
}}
"""


def kamailio_path() -> str | None:
    return shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if os.path.exists("/usr/sbin/kamailio") else None
    )


class KamailioProxy:
    def __init__(self, root: Path, *, target: tuple[str, int], record_route: bool,
                 host: str = KAMAILIO_HOST) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = free_udp_port(host)
        self.target = target
        self.record_route = record_route
        self.log_path = self.root / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self, timeout: float = 10.0) -> KamailioProxy:
        binary = kamailio_path()
        assert binary is not None, "kamailio is not installed (apt-get install kamailio)"
        cfg = self.root / "kamailio.cfg"
        cfg.write_text(self.script())
        run = self.root / "run"
        run.mkdir(exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "-f", str(cfg), "-DD", "-E", "-Y", str(run), "-m", "32", "-M", "4"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self._log = log
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kamailio exited: {self.log_path.read_text()[-2000:]}")
            if self._answers_options():
                return self
            time.sleep(0.1)
        raise AssertionError(f"kamailio did not start: {self.log_path.read_text()[-2000:]}")

    def script(self) -> str:
        return _SCRIPT.format(
            host=self.host, port=self.port, target_host=self.target[0],
            target_port=self.target[1],
            record_route="record_route();" if self.record_route else "",
        )

    def _answers_options(self) -> bool:
        """Kamailio relays OPTIONS to presenced, which answers; any answer means it is up."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.3)
            port = s.getsockname()[1]
            msg = (
                f"OPTIONS sip:{self.host}:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{time.monotonic_ns()};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=p\r\n"
                f"To: <sip:{self.host}>\r\nCall-ID: probe{time.monotonic_ns()}\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            s.sendto(msg.encode(), self.addr)
            try:
                s.recvfrom(65535)
            except OSError:
                return False
            return True

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc is not None:
            self._log.close()
        self.proc = None


# A call proxy whose dialog module tracks the calls it relays and whose pua_dialoginfo PUBLISHes
# each call's state (RFC 4235 dialog-info, one document per dialog and side) to presenced.
_DIALOG_SCRIPT = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{host}:{port}
# pua_dialoginfo PUBLISHes only for AORs in a domain that is "myself" (its README, Known issues).
alias="{domain}"
loadmodule "db_text.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "dialog.so"
loadmodule "pua.so"
loadmodule "pua_dialoginfo.so"
# pua wants a database module even when it keeps everything in memory (db_mode 0): a copy of
# Debian's db_text schema, never written.
modparam("pua", "db_url", "text://{db}")
modparam("pua", "db_mode", 0)
# Every PUBLISH goes to presenced: nothing is resolved by DNS.
modparam("pua", "outbound_proxy", "sip:{target_host}:{target_port}")
modparam("pua_dialoginfo", "caller_confirmed", {caller_confirmed})
modparam("pua_dialoginfo", "callee_trying", {callee_trying})
modparam("pua_dialoginfo", "publish_dialog_req_within", 0)
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (!is_method("INVITE")) {{ sl_send_reply("405", "Calls only"); exit; }}
    dlg_manage();
    record_route();
    $du = "sip:{callee_host}:{callee_port}";
    xlog("L_INFO", "INVITE $ru from $fu relayed to $du\\n");
    t_relay();
}}
# Every PUBLISH pua sends, whole, in the log: what presenced was given (tests print it on failure).
event_route[tm:local-request] {{
    xlog("L_INFO", "local $rm $ru\n$mb\n");
}}
"""

DBTEXT_SCHEMA = Path("/usr/share/kamailio/dbtext/kamailio")


class DialogInfoProxy(KamailioProxy):
    """Kamailio relaying calls to `callee` and PUBLISHing their dialog state to `target`.

    `dlg_manage()` puts every INVITE under the dialog module; pua_dialoginfo then PUBLISHes
    `application/dialog-info+xml` for the caller (From) and the callee (To) at each state change
    (trying, early, confirmed, terminated) through pua, whose outbound proxy is presenced.
    """

    def __init__(self, root: Path, *, target: tuple[str, int], callee: tuple[str, int],
                 domain: str = "example.com", host: str = KAMAILIO_HOST,
                 caller_confirmed: bool = False, callee_trying: bool = True) -> None:
        super().__init__(root, target=target, record_route=True, host=host)
        self.callee = callee
        self.domain = domain
        self.caller_confirmed = caller_confirmed
        self.callee_trying = callee_trying

    def script(self) -> str:
        db = self.root / "dbtext"
        if not db.exists():
            shutil.copytree(DBTEXT_SCHEMA, db)
        return _DIALOG_SCRIPT.format(
            host=self.host, port=self.port, domain=self.domain, db=db,
            target_host=self.target[0], target_port=self.target[1],
            callee_host=self.callee[0], callee_port=self.callee[1],
            caller_confirmed=int(self.caller_confirmed), callee_trying=int(self.callee_trying),
        )
