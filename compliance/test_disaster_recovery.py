"""Disaster Recovery and the Backup Strategy, as far as the live configuration shows them."""
from __future__ import annotations

import datetime as dt

import pytest

from harness.compliance.facts import not_observable, the_one


def _time(value):
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


@pytest.mark.requirement("DR-01")
def test_point_in_time_recovery_is_current(db_instances, inventory, expect, evidence):
    db = the_one(db_instances, "RDS instance")
    latest = db.get("LatestRestorableTime")
    evidence("restorable", {"LatestRestorableTime": latest, "snapshot taken at": inventory.meta["taken_at"]})
    if not latest:
        not_observable("the RDS instance reports no LatestRestorableTime")
    lag = (inventory.taken_at - _time(latest)).total_seconds()
    assert lag <= expect["max_lag_s"], \
        f"the latest restorable time is {lag:.0f} s old, the RPO target is {expect['max_lag_s']} s"


@pytest.mark.requirement("DR-02")
def test_weekly_export_to_s3(db_exports, inventory, expect, evidence):
    evidence("exports", db_exports)
    done = [t for t in db_exports if str(t.get("Status", "")).upper() == "COMPLETE"]
    assert done, "no database export to S3 has completed"
    ended = [_time(t.get("TaskEndTime") or t.get("SnapshotTime")) for t in done
             if t.get("TaskEndTime") or t.get("SnapshotTime")]
    if not ended:
        not_observable("the completed export tasks report no completion time")
    age = inventory.taken_at - max(ended)
    assert age <= dt.timedelta(days=expect["max_age_days"]), f"the last export completed {age.days} days ago"
