"""The engine's check after the rollback, in-process against a backend that scripts what the system looks
like (no stand-in): the steady state back in time passes; a preflight that keeps finding something wrong,
or a red smoke gate, fails "not restored" though the RTO was met; what cannot be read is an error."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.drills.backends import FaultBackend, Journal
from harness.drills.engine import run_drill
from harness.drills.model import DrillRefused, DrillSpec, Unreadable


class Scripted(FaultBackend):
    """A service that recovers at once; its preflight after the rollback raises `after_rollback[i]` on the
    i-th call (None: fine), the last entry standing for every later call."""

    name = "scripted"

    def __init__(self, after_rollback: list[Exception | None]) -> None:
        self.after_rollback = after_rollback
        self.rolled_back = False
        self.calls = 0

    def preflight(self, drill: DrillSpec, journal: Journal) -> None:
        if not self.rolled_back:
            return
        problem = self.after_rollback[min(self.calls, len(self.after_rollback) - 1)]
        self.calls += 1
        if problem is not None:
            raise problem

    def inject(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        return {"task": "task-1"}

    def service_state(self) -> tuple[bool, str]:
        return True, "running 2/2"

    def rollback(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        self.rolled_back = True
        return {"ok": True, "detail": "nothing to undo"}


DRILL = DrillSpec("DRILL-03", "Application failure", "task_loss", ("service",), {"rto_s": 60},
                  recovery_window_s=0.5, steady_state_s=0.5, restored_within_s=3.0)


def drilled(tmp_path: Path, backend: Scripted, gate: Any = None) -> Any:
    return run_drill(DRILL, backend, None, None, tmp_path, lambda line: None, "drill-03-test", {},
                     service_interval_s=0.1, steady_gate=gate)


@pytest.mark.parametrize("after_rollback, gate, status, message", [
    ([DrillRefused("no standby"), None], None, "pass", "RTO"),
    ([DrillRefused("service runs 1 of 2 desired tasks")], None, "fail",
     "not restored within 3 s after the rollback: service runs 1 of 2 desired tasks"),
    ([Unreadable("cannot read the prod deployment: Throttling")], None, "error",
     "not known to be restored after the rollback: cannot read the prod deployment: Throttling"),
    ([None], lambda: [(True, "SMK-01: GET /api/health answered 503")], "fail",
     "not restored within 3 s after the rollback: smoke gate red: SMK-01: GET /api/health answered 503"),
    ([None], lambda: [(False, "SMK-06: SMK-06 could not be observed: boom")], "error", "smoke gate red: SMK-06"),
], ids=["back after one look", "preflight keeps failing", "unreadable", "smoke gate red", "smoke gate unknown"])
def test_the_steady_state_is_checked_again_after_the_rollback(tmp_path, after_rollback, gate, status, message):
    result = drilled(tmp_path, Scripted(after_rollback), gate)
    assert result.verdict.status == status and message in result.verdict.message, result.verdict
    assert result.restored["ok"] is (status == "pass"), result.restored
    assert result.verdict.figures["rto_s"] is not None and result.verdict.figures["rto_s"] <= 60
