"""Which build of the sans-IO core is running: "mypyc" (compiled) or "python" (pure).

`pip install .` compiles `sip/`, `pa/` and the per-request services with mypyc where a C
compiler and the Python headers are present (setup.py), else it gives the pure-Python package,
as `pip install -e .` always does. The `.py` files ship beside the extension modules, which
Python imports first. See docs/performance.md for what the compiled core buys.
"""

from __future__ import annotations

import importlib.machinery

import presenced.pa.subscription
import presenced.sip.message


def core_build() -> str:
    """"mypyc" when the parser and the notifier are extension modules, else "python"."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = [m.__file__ is not None and m.__file__.endswith(suffixes)
                for m in (presenced.sip.message, presenced.pa.subscription)]
    return "mypyc" if all(compiled) else "python"
