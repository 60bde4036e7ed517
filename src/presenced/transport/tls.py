"""TLS transport (RFC 3261 §26.2, RFC 5630): the TCP machinery with an SSL context each way.

Framing, the connection table, per-source caps, idle and first-message timeouts and bounded
buffers are TcpTransport's (transport/tcp.py); this module only builds the contexts:

- inbound: our certificate chain and key, TLS 1.2 at least, and with `verify_client` a client
  certificate from `ca_file` required (mutual TLS: a client without one fails the handshake
  and never reaches SIP);
- outbound (only ever to trusted proxies, as for TCP): the server's certificate verified
  against `ca_file` or the system store, and its name against the address dialled, unless
  `verify_server` is off (labs with self-signed proxies).

`Certificates.reload()` loads the files into the live contexts (SIGHUP): connections already
up keep their session, new handshakes use the new certificate. The files are checked first,
so a broken file on reload leaves the old certificate serving.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from presenced.transport.tcp import TcpTransport

log = logging.getLogger("presenced.transport.tls")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    certificate: str
    private_key: str
    ca_file: str | None = None
    verify_client: bool = False
    verify_server: bool = True


class Certificates:
    """The server and client contexts every TLS and WSS listener of the process shares."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server.options |= ssl.OP_NO_COMPRESSION
        if files.verify_client:
            self.server.verify_mode = ssl.CERT_REQUIRED
        self.client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.client.minimum_version = ssl.TLSVersion.TLSv1_2
        if not files.verify_server:
            self.client.check_hostname = False
            self.client.verify_mode = ssl.CERT_NONE
        self._load(self.server, self.client)
        self.reloads = 0

    def _load(self, server: ssl.SSLContext, client: ssl.SSLContext) -> None:
        f = self.files
        server.load_cert_chain(f.certificate, f.private_key)
        if f.ca_file:
            server.load_verify_locations(cafile=f.ca_file)
            client.load_verify_locations(cafile=f.ca_file)
        # A client certificate for proxies that ask for one (mutual TLS both ways).
        client.load_cert_chain(f.certificate, f.private_key)

    def reload(self) -> None:
        """Read the files again into the live contexts; raises (ssl.SSLError, OSError) and
        changes nothing when they do not load."""
        self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        self._load(self.server, self.client)
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.files.certificate)


class TlsTransport(TcpTransport):
    """`tls:HOST:PORT`: Via `SIP/2.0/TLS`, flows named "tls"."""

    name = "tls"

    @classmethod
    def over(cls, tcp: TcpTransport, certificates: Certificates) -> TlsTransport:
        """A TLS listener with `tcp`'s address and limits (built but not started)."""
        t = cls(tcp.receiver, tcp.host, tcp.port, max_message_size=tcp.max_message_size,
                max_connections=tcp.max_connections,
                max_connections_per_source=tcp.max_connections_per_source,
                idle_timeout=tcp.idle_timeout, partial_timeout=tcp.partial_timeout,
                first_message_timeout=tcp.first_message_timeout,
                advertised_host=tcp._advertised, table=tcp.table)
        t.ssl_server = certificates.server
        t.ssl_client = certificates.client
        return t
