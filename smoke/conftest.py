"""The smoke checks read one gate run: observed through the load balancer, re-checked up to --deadline."""
from __future__ import annotations

import pytest

from harness.smoke.gate import GateResult
from harness.verdict import Verdict


@pytest.fixture
def verdict(request: pytest.FixtureRequest, smoke_gate: GateResult) -> Verdict:
    """The gate's last verdict on the test's own requirement; a check the gate could not observe is an
    ERROR (failed in setup), never a pass and not a failure of the deployment."""
    found = smoke_gate.verdicts[request.node.get_closest_marker("requirement").args[0]]
    if not found.observed:
        pytest.fail(found.message, pytrace=False)
    return found
