"""The endpoint-level fuzzer (fuzz_endpoint.py) for a fixed, derandomized budget in CI.

One test per property, so a run names every property that breaks rather than the first: each
explores the same scenarios (derandomized: the same ones on every run) and asserts one kind of
`endpoint_app.Violation`. Longer runs: `python tests/fuzz/fuzz_endpoint.py --minutes 15`.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from endpoint_app import KINDS
from fuzz_endpoint import run_scenario
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

EXAMPLES = 1500  # per property; ~2-4 ms each on the CI machine


class DataChoices:
    """The fuzzer's choices drawn from Hypothesis, so failures shrink to a minimal scenario."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def int(self, n: int) -> int:
        return self.data.draw(st.integers(0, n - 1)) if n > 1 else 0


@pytest.mark.parametrize("kind", KINDS)
# No shrink phase: the failing scenario is printed as readable steps (note()), and shrinking
# thousands of draws costs minutes of CI per broken property.
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          report_multiple_bugs=False, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_endpoint_fuzz_property_holds(kind: str, data: st.DataObject) -> None:
    """exception: nothing escapes Endpoint.receive, no handler answers 500, nothing logs ERROR;
    parse: everything we send parses with our parser, within max_message_size;
    injection: no CR/LF in a header line we send, no header the input injected;
    destination: nothing goes anywhere but back to a source (no third-party traffic)."""
    logging.getLogger("presenced").propagate = False  # the harness reads ERROR records itself
    trace: list[str] = []
    try:
        asyncio.run(run_scenario(DataChoices(data), trace, frozenset({kind})))
    except BaseException:
        note("scenario:\n  " + "\n  ".join(trace))  # shown for the shrunk example only
        raise
    finally:
        logging.getLogger("presenced").propagate = True
