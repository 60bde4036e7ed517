"""The sans-IO rule (docs/design.md, STYLE.md lessons 1 and 11), enforced on the source.

The SIP core, the presence decisions and the pure registrar/gateway helpers take time as a
`now` argument and randomness as an injected callable; they own no sockets, loops or threads
and log nothing. Walk their syntax trees and fail, naming file, line and module, on any import
(static or through importlib/__import__) of a module that would break that.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "presenced"

FORBIDDEN = frozenset(
    {"asyncio", "socket", "time", "random", "threading", "selectors", "logging", "secrets"}
)

SANS_IO_PATHS = (
    "sip",
    "pa",
    "registrar/bindings.py",
    "jabber/addressing.py",
    "jabber/mapping.py",
    "transport/hep.py",
    "xcap/auids.py",
    "xcap/caps.py",
    "xcap/conditions.py",
    "xcap/errors.py",
    "xcap/selectors.py",
    "xcap/uri.py",
)


def sans_io_files() -> list[Path]:
    files: list[Path] = []
    for rel in SANS_IO_PATHS:
        path = SRC / rel
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def _root(module: str) -> str:
    return module.split(".", 1)[0]


def forbidden_imports(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """(line, module) for each import of a forbidden module, dynamic ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if _root(a.name) in FORBIDDEN)
        elif isinstance(node, ast.ImportFrom):
            # level > 0 is a relative import of our own package, never the stdlib.
            if node.level == 0 and node.module and _root(node.module) in FORBIDDEN:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = (
                func.id if isinstance(func, ast.Name)
                else func.attr if isinstance(func, ast.Attribute)
                else None
            )  # fmt: skip
            first = node.args[0]
            if (
                name in ("__import__", "import_module")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and _root(first.value) in FORBIDDEN
            ):
                found.append((node.lineno, first.value))
    return found


def test_the_walk_covers_the_sans_io_modules() -> None:
    files = {p.relative_to(SRC).as_posix() for p in sans_io_files()}
    for expected in (
        "sip/endpoint.py",
        "sip/message.py",
        "sip/transaction.py",
        "pa/model.py",
        "registrar/bindings.py",
        "jabber/addressing.py",
        "jabber/mapping.py",
    ):
        assert expected in files
    assert all((SRC / f).is_file() for f in files)


def test_sans_io_modules_import_no_io_clock_randomness_threads_or_logging() -> None:
    offenders = [
        f"{path.relative_to(SRC).as_posix()}:{line}: imports {module}"
        for path in sans_io_files()
        for line, module in forbidden_imports(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not offenders, "sans-IO rule broken:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("import time", "time"),
        ("import os, asyncio.events", "asyncio.events"),
        ("from random import choice", "random"),
        ("from logging.handlers import X", "logging.handlers"),
        ("def f():\n    import socket", "socket"),
        ("if TYPE_CHECKING:\n    import selectors", "selectors"),
        ("threading = __import__('threading')", "threading"),
        ("import importlib\nimportlib.import_module('secrets')", "secrets"),
    ],
)
def test_the_checker_catches_every_import_form(source: str, module: str) -> None:
    assert [m for _, m in forbidden_imports(source)] == [module]


@pytest.mark.parametrize(
    "source",
    [
        "import datetime",
        "from . import time",  # a sibling module that happens to be named like the stdlib one
        "from presenced.pa.timers import DeadlineHeap",
        "import timeit",
        "x = import_module(name)",
    ],
)
def test_the_checker_lets_harmless_imports_pass(source: str) -> None:
    assert forbidden_imports(source) == []
