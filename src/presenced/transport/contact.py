"""Our Contact URI for a dialog: where the peer reaches this server over one flow.

Compiled with the services (setup.py): a subscribe cycle writes it into every 200 and NOTIFY.
"""

from __future__ import annotations

from presenced.sip.endpoint import Peer
from presenced.sip.uri import escape_user
from presenced.transport.driver import Driver


class ContactFor:
    """`contact_for(presentity, flow)`: the listener the flow came on (a Peer with `local`),
    else the first listener of its transport (a transport name). `via_hosts` (transport name
    -> "host:port") is the server's own dict, which gets the bound ports once listening;
    `advertise` ([cluster] advertise) names the node instead of any listener."""

    def __init__(self, driver: Driver, via_hosts: dict[str, str], advertise: str | None) -> None:
        self.driver = driver
        self.via_hosts = via_hosts
        self.advertise = advertise

    def __call__(self, presentity: str, flow: Peer | str) -> str:
        # The presentity holds the user part unescaped: escape it again, so no character
        # of it (a decoded CR LF) reaches our Contact header raw (issue 9 finding 2).
        user = escape_user(presentity.rsplit("@", 1)[0]) if "@" in presentity else ""
        hostport: str | None
        if isinstance(flow, Peer):
            transport = flow.transport
            hostport = flow.local or self.driver.bind(flow).local or self.via_hosts.get(transport)
        else:
            transport = flow
            hostport = self.via_hosts.get(transport)
        hostport = self.advertise or hostport or next(iter(self.via_hosts.values()))
        prefix = f"{user}@" if user else ""
        if transport == "tls":  # RFC 5630 §3.1.3: sips:, not the deprecated transport=tls
            return f"sips:{prefix}{hostport}"
        if transport in ("ws", "wss"):  # RFC 7118 §5.2: transport=ws for both, sips: for WSS
            scheme = "sips" if transport == "wss" else "sip"
            return f"{scheme}:{prefix}{hostport};transport=ws"
        return f"sip:{prefix}{hostport};transport={transport}"
