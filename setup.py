"""Build hook: everything else is in pyproject.toml.

Only with PRESENCED_MYPYC=1 does this compile the typed core (sip/, pa/ and the services and
transport code every request runs through) with mypyc:

    .venv/bin/pip install mypy==2.4.1 wheel==0.48.0
    PRESENCED_MYPYC=1 .venv/bin/pip install --no-build-isolation .

Never for an editable install: compiled modules beside the sources would shadow every edit
of a .py file. Without the variable the package is pure Python, as everywhere else.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

# Left out: __init__ files; errors.py (its exceptions are subclassed by uncompiled modules,
# which a compiled class forbids); auth.py (a subclass of errors.py's ParseError, and only on
# the [auth] path); records.py and pa/model.py (msgspec Structs: their __init__, __eq__ and
# __hash__ are C already, and a Struct cannot be a compiled class).
_NOT_COMPILED = {"__init__.py", "errors.py", "auth.py", "records.py", "model.py"}
# Beyond sip/ and pa/: what every REGISTER, SUBSCRIBE, PUBLISH and NOTIFY answer runs through
# (docs/performance.md, "Eighth pass"), our Contact for each dialog ("Ninth pass"), and the
# registrar's decision on each REGISTER ("Tenth pass"). The
# gateway, the cluster, the admin API and storage stay pure: they are not per request, or
# (storage) spend their time in SQLite or Redis.
_ALSO_COMPILED = ("services/dispatch.py", "services/notifier.py", "services/alarm.py",
                  "services/registrar.py", "services/publish.py",
                  "transport/driver.py", "transport/udp.py", "transport/contact.py",
                  "registrar/bindings.py")


def compiled_modules() -> list[str]:
    root = Path("src/presenced")
    core = [p for d in ("sip", "pa") for p in (root / d).rglob("*.py")
            if p.name not in _NOT_COMPILED]
    return sorted(str(p) for p in [*core, *(root / m for m in _ALSO_COMPILED)])


class ParallelBuildExt(build_ext):
    """Compiles the C files of one extension on every CPU: mypyc writes one per module
    (`multi_file`), which setuptools would compile one after another."""

    def build_extensions(self) -> None:
        serial = self.compiler.compile
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1

        def compile_all(sources, *args, **kwargs):  # type: ignore[no-untyped-def]
            if workers < 2 or len(sources) < 2:
                return serial(sources, *args, **kwargs)
            # The first one alone: it creates the object directory the others share.
            objects = serial(sources[:1], *args, **kwargs)
            with ThreadPoolExecutor(workers) as pool:
                for objs in pool.map(lambda src: serial([src], *args, **kwargs), sources[1:]):
                    objects.extend(objs)
            return objects

        self.compiler.compile = compile_all
        super().build_extensions()


ext_modules = []
if os.environ.get("PRESENCED_MYPYC") == "1":
    from mypyc.build import mypycify

    # multi_file: one C file per module, compiled in parallel (above). Measured: the same
    # instructions per cycle as one C file, in half the build time on two cores.
    ext_modules = mypycify(compiled_modules(), opt_level="3", multi_file=True)

setup(ext_modules=ext_modules, cmdclass={"build_ext": ParallelBuildExt})
