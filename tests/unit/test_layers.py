"""The allowed-imports matrix (docs/design.md): sip <- pa <- registrar, jabber <- services <-
server. Adapters (transport, storage, jabber.component) never import one another; the core
imports no adapter; only the composition root (server.py, cli.py) wires everything."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "presenced"

# layer -> the layers its modules may import (each layer may import itself).
ALLOWED: dict[str, frozenset[str]] = {
    "sip": frozenset(),
    "pa": frozenset({"sip"}),
    "registrar": frozenset({"sip", "pa"}),
    "jabber": frozenset({"sip", "pa"}),  # addressing and mapping: pure
    "jabber.component": frozenset({"jabber"}),  # the slixmpp adapter
    "transport": frozenset({"sip"}),
    "storage": frozenset({"pa"}),  # it stores the core's records
    "config": frozenset({"sip"}),
    # The admin HTTP adapter reads the services through their query methods (issue 15).
    "admin": frozenset({"sip", "pa", "services", "config"}),
    # The XCAP server: its sans-IO core and its aiohttp adapter, over the RulesStore port.
    "xcap": frozenset({"sip", "pa", "services"}),
    "sdnotify": frozenset(),  # systemd readiness (a datagram)
    "tasks": frozenset(),  # stopping asyncio tasks, and where a stuck one waits
    "ping": frozenset({"sip", "config"}),  # `presenced ping`: the health check
    "cluster": frozenset({"pa", "tasks"}),  # the multi-node adapter on Redis: it stores the core's records
    # Services reach the network only through their ports (services/ports.py): no transport.
    "services": frozenset({"sip", "pa", "registrar", "jabber", "jabber.component", "config",
                           "storage", "tasks"}),
}
# Of the adapters, services may use only the ports: the Storage protocol, and only through
# services/ports.py (one place says what a service may ask of the outside world).
PORTS = {"storage": {"presenced.storage.base"}}
PORT_MODULES = {"storage": {"presenced.services.ports"}}
ROOT = frozenset({"server", "cli", "rules_cli", "__main__", "__init__", "build"})  # the composition root: anything


def layer_of(module: str) -> str:
    """'presenced.sip.uri' -> 'sip'; the XMPP adapter is a layer of its own."""
    parts = module.split(".")
    if parts[:3] == ["presenced", "jabber", "component"]:
        return "jabber.component"
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return [(line, m) for line, m in found if m == "presenced" or m.startswith("presenced.")]


def violations() -> list[str]:
    out: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        module = "presenced." + path.relative_to(SRC).with_suffix("").as_posix().replace("/", ".")
        layer = layer_of(module)
        if layer in ROOT:
            continue
        allowed = ALLOWED.get(layer)
        assert allowed is not None, f"{module}: layer {layer!r} is missing from the matrix"
        for line, target in imports_of(path):
            to = layer_of(target)
            if to == layer:
                continue
            if to not in allowed:
                out.append(f"{path.relative_to(SRC)}:{line}: {layer} must not import {target}")
            elif layer == "services" and to in PORTS and target not in PORTS[to]:
                out.append(f"{path.relative_to(SRC)}:{line}: services may use only the ports of "
                           f"{to} ({', '.join(sorted(PORTS[to]))}), not {target}")
            elif layer == "xcap" and to == "services" and target != "presenced.services.ports":
                out.append(f"{path.relative_to(SRC)}:{line}: xcap may use only the ports of "
                           f"services (presenced.services.ports), not {target}")
            elif layer == "services" and to in PORT_MODULES and module not in PORT_MODULES[to]:
                out.append(f"{path.relative_to(SRC)}:{line}: services reach {to} through "
                           f"{', '.join(sorted(PORT_MODULES[to]))}, not directly")
    return out


def test_every_import_follows_the_layer_matrix() -> None:
    assert violations() == []


def test_every_layer_on_disk_is_in_the_matrix() -> None:
    layers = {layer_of("presenced." + p.relative_to(SRC).with_suffix("").as_posix().replace("/", "."))
              for p in SRC.rglob("*.py")}
    assert layers - ROOT - set(ALLOWED) == set()


def test_the_matrix_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from presenced.services.notifier import NotifierService\n")
    assert imports_of(bad) == [(1, "presenced.services.notifier")]
    assert layer_of("presenced.services.notifier") not in ALLOWED["pa"]
    assert layer_of("presenced.jabber.component") == "jabber.component"
    assert "transport" not in ALLOWED["storage"] and "storage" not in ALLOWED["transport"]
    assert "transport" not in ALLOWED["services"]  # the network is a port (services/ports.py)
