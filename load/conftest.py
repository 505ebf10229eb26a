"""The load checks judge the session's one load run (made before the first test, see harness/plugin.py)."""
from __future__ import annotations

import pytest

from harness.verdict import Verdict


@pytest.fixture
def conclude(request: pytest.FixtureRequest, load_run):
    """Record the check's verdict for the summary, then pass, fail (inconclusive fails too: a measurement
    the generator may have spoiled is never a pass), skip with its reason, or ERROR."""
    def settle(verdict: Verdict) -> None:
        rid = request.node.get_closest_marker("requirement").args[0]
        load_run.verdicts[rid] = verdict
        if verdict.status == "skip":
            pytest.skip(verdict.message)
        if verdict.status == "error":
            pytest.fail(f"{rid} could not be measured: {verdict.message}", pytrace=False)
        if not verdict.ok:
            pytest.fail(verdict.message, pytrace=False)
        if not load_run.result.complete:
            pytest.fail(f"the run is incomplete ({load_run.result.problem}); its figures passed: {verdict.message}",
                        pytrace=False)
    return settle


@pytest.fixture
def compared(load_run) -> Verdict:
    """LOAD-04's comparison with --load-baseline, made once the run was; SKIP without a baseline, and an
    ERROR (in set-up, as a check that could not observe is) when the runs are not comparable."""
    if load_run.baseline is None:
        load_run.verdicts["LOAD-04"] = Verdict("skip", NO_BASELINE)
        pytest.skip(NO_BASELINE)
    verdict = load_run.baseline_verdict
    if verdict.status == "error":
        load_run.verdicts["LOAD-04"] = verdict
        pytest.fail(f"LOAD-04 could not be judged: {verdict.message}", pytrace=False)
    return verdict


NO_BASELINE = ("no baseline to compare with: pass --load-baseline FILE (an earlier run's "
               "reports/load/results.json)")
