"""systemd's readiness protocol (sd_notify(3)), written out: one datagram to $NOTIFY_SOCKET.

The unit (packaging/presenced.service) is `Type=notify`: systemd counts presenced as started
only when "READY=1" arrives, which the server sends once its sockets are bound and its state
is loaded, so units ordered after it (and `systemctl start`) wait for a server that answers.
"STOPPING=1" says a shutdown has begun. Outside systemd (no $NOTIFY_SOCKET) nothing happens.

The variable names a Unix datagram socket: a path, or "@name" in the abstract namespace
(sd_notify(3)). AF_VSOCK addresses (vsock:CID:PORT, for virtual machines) are not supported.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("presenced.systemd")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` ("READY=1", "STATUS=...", newline-separated) to the service manager;
    False when there is none or it cannot be reached (never raises)."""
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):
        address = "\0" + path[1:]  # the abstract namespace
    elif path.startswith("/"):
        address = path
    else:
        log.warning("NOTIFY_SOCKET %r is not a Unix socket path: not notifying", path)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", path, exc)
        return False
    return True
