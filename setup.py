"""Build hook: everything else is in pyproject.toml.

Only with PRESENCED_MYPYC=1 does this compile the typed sans-IO core (sip/ and pa/) with mypyc:

    .venv/bin/pip install mypy==2.4.1 wheel==0.48.0
    PRESENCED_MYPYC=1 .venv/bin/pip install --no-build-isolation .

Never for an editable install: compiled modules beside the sources would shadow every edit
of a .py file. Without the variable the package is pure Python, as everywhere else.
"""

import os
from pathlib import Path

from setuptools import setup

# Left out: __init__ files; errors.py (its exceptions are subclassed by uncompiled modules,
# which a compiled class forbids); auth.py (a subclass of errors.py's ParseError, and only on
# the [auth] path); records.py and pa/model.py (plain records that msgspec decodes by their
# field types, which it cannot read off a compiled class: nested records came back as dicts).
_NOT_COMPILED = {"__init__.py", "errors.py", "auth.py", "records.py", "model.py"}


def compiled_modules() -> list[str]:
    root = Path("src/presenced")
    return sorted(str(p) for d in ("sip", "pa") for p in (root / d).rglob("*.py")
                  if p.name not in _NOT_COMPILED)


ext_modules = []
if os.environ.get("PRESENCED_MYPYC") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(compiled_modules(), opt_level="3")

setup(ext_modules=ext_modules)
