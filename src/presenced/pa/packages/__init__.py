"""Event packages behind one interface (`base.EventPackage`) and their registry.

`registry()` lists every package served: it feeds Allow-Events (OPTIONS, 489), the Accept
negotiation and 406 of SUBSCRIBE, and the PUBLISH checks (489, 415). Adding a package is one
module with one `EventPackage` subclass and one line here.
"""

from __future__ import annotations

from presenced.pa.packages.base import EventPackage
from presenced.pa.packages.dialog_info import DialogPackage
from presenced.pa.packages.message_summary import MessageSummaryPackage
from presenced.pa.packages.presence import PresencePackage, RegistrarPolicy
from presenced.pa.packages.reginfo import RegPackage
from presenced.pa.packages.winfo import WinfoPackage

Registry = dict[str, EventPackage]


def registry(registrar_policy: RegistrarPolicy = "until-published") -> Registry:
    """Every package we serve, by event name, in the order Allow-Events lists them."""
    packages: list[EventPackage] = [
        PresencePackage(registrar_policy),
        DialogPackage(),
        MessageSummaryPackage(),
        RegPackage(),
        WinfoPackage(),
    ]
    return {p.name: p for p in packages}


__all__ = ["EventPackage", "Registry", "registry"]
