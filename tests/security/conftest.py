"""Security regression tests: each sends an attack from the audit (issue 9) over real sockets to
the real server and asserts it fails. They reuse the integration harness and its fixtures
(`server_factory`, `server`, `sip_client`, `sipp`), and are marked `integration` and `security`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(_INTEGRATION) not in sys.path:
    sys.path.insert(0, str(_INTEGRATION))

_spec = importlib.util.spec_from_file_location("_integration_fixtures", _INTEGRATION / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

server_factory = _fixtures.server_factory
server = _fixtures.server
sqlite_server = _fixtures.sqlite_server
sip_client = _fixtures.sip_client
sipp = _fixtures.sipp


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.security)
