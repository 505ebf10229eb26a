"""The drill checks judge the session's drills (run before the first test, see harness/plugin.py)."""
from __future__ import annotations

import allure
import pytest

from harness.drills.engine import DrillResult


@pytest.fixture
def conclude(request: pytest.FixtureRequest, evidence):
    """Attach the drill's journal and timeline, record its figures, then pass, fail (inconclusive fails
    too), skip with its reason (a dry run), or ERROR (it could not be measured, or it was refused)."""
    def settle(result: DrillResult) -> None:
        verdict = result.verdict
        evidence("figures", {**verdict.figures, "platform_events": result.events, "cleanup": result.cleanup})
        if result.chart and result.chart.exists():
            allure.attach.file(str(result.chart), name="timeline", attachment_type=allure.attachment_type.PNG)
        if result.journal and result.journal.exists():
            allure.attach.file(str(result.journal), name="journal", attachment_type=allure.attachment_type.JSON)
        if verdict.status == "skip":
            pytest.skip(verdict.message)
        if verdict.status == "error":
            pytest.fail(f"{result.drill.id} could not be measured: {verdict.message}", pytrace=False)
        if not verdict.ok:
            pytest.fail(verdict.message, pytrace=False)
    return settle
