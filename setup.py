"""Build hook: everything else is in pyproject.toml.

A wheel (`pip install .`) compiles the typed core -- sip/, pa/ and the services and transport
code every request runs through -- with mypyc wherever it can be built: mypyc comes with the
build requirements (pyproject.toml), and a probe compiles a C file that includes Python.h
first. Where that probe fails (no C compiler, no Python headers: `apt-get install gcc
python3-dev`), the package is pure Python, as it is for an editable install (`pip install
-e .`: compiled modules beside the sources would shadow every edit of a .py file).

    PRESENCED_MYPYC=1   compile, and fail the build if that cannot be done
    PRESENCED_MYPYC=0   pure Python, never compile
    (unset)             compile where the probe passes, else pure Python with a warning
"""

import os
import sys
import sysconfig
import tempfile
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


# The setup.py commands that put modules into a wheel or an installation. Metadata (egg_info,
# dist_info) and editable installs (editable_wheel, develop) never compile.
_BUILDS = {"bdist_wheel", "build", "build_ext", "install"}
_EDITABLE = {"editable_wheel", "develop"}


def _probe_compiler() -> str | None:
    """None when a C file that includes Python.h compiles here, else why not."""
    from setuptools._distutils.ccompiler import new_compiler  # vendored since setuptools 60
    from setuptools._distutils.sysconfig import customize_compiler
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").is_file():
        return f"no Python headers in {include} (apt-get install python3-dev)"
    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory(prefix="presenced-probe-") as d:
        src = Path(d, "probe.c")
        src.write_text("#include <Python.h>\nint presenced_probe(void) { return 0; }\n")
        try:
            compiler.compile([str(src)], output_dir=d, include_dirs=[include])
        except Exception as exc:  # CompileError, or the compiler is not there at all
            return f"the C compiler failed on a probe ({type(exc).__name__}: {exc})"
    return None


def _want_mypyc() -> bool:
    mode = os.environ.get("PRESENCED_MYPYC", "")
    commands = set(sys.argv[1:])
    if mode == "0" or commands & _EDITABLE or not commands & _BUILDS:
        return False
    why_not = None
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        why_not = "mypyc is not installed (it comes with mypy)"
    if why_not is None:
        why_not = _probe_compiler()
    if why_not is None:
        return True
    if mode == "1":
        raise SystemExit(f"PRESENCED_MYPYC=1, but the compiled core cannot be built: {why_not}")
    print(f"presenced: building the pure-Python package: {why_not}", file=sys.stderr)
    return False


ext_modules = []
if _want_mypyc():
    from mypyc.build import mypycify

    # multi_file: one C file per module, compiled in parallel (above). Measured: the same
    # instructions per cycle as one C file, in half the build time on two cores.
    ext_modules = mypycify(compiled_modules(), opt_level="3", multi_file=True)

setup(ext_modules=ext_modules, cmdclass={"build_ext": ParallelBuildExt})
