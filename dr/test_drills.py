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


@pytest.mark.requirement("DRILL-02")
def test_point_in_time_restore_holds_the_data_within_rto_and_rpo(drill_result, conclude) -> None:
    conclude(drill_result)


@pytest.mark.requirement("DRILL-04")
def test_rollback_to_the_previous_revision_and_forward_again(drill_result, conclude) -> None:
    conclude(drill_result)
