"""Disaster-recovery drills, quarterly: the plan's recovery targets measured by probes from the client
side, never assumed. Each test judges its drill's run (harness/drills)."""
from __future__ import annotations

import pytest


@pytest.mark.requirement("DRILL-01")
def test_database_failover_within_rto_without_losing_acknowledged_writes(drill_result, conclude) -> None:
    conclude(drill_result)


@pytest.mark.requirement("DRILL-03")
def test_service_replaces_a_lost_task_within_rto(drill_result, conclude) -> None:
    conclude(drill_result)
