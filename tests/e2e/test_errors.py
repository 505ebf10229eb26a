"""A describe call that is denied or fails makes the checks that need it ERROR, never pass.

The denial is real: a moto server that enforces IAM, a reader whose policy denies rds:Describe*.
"""
from __future__ import annotations

import copy
import json
from typing import Iterator

import pytest

from support.moto import ALLOW_ALL, IamServer, iam_enforcing_server, policy_document

from support.suites import GOLDEN, run_suite

# Requirements judged on the RDS part of the snapshot, directly or through the alarms that watch it.
NEEDS_RDS = {"DB-01", "DB-02", "DB-03", "DB-04", "DB-05", "DB-06", "DB-07", "DB-08", "DB-09", "DB-10", "DB-11",
             "DB-12", "DB-13", "DR-01", "DR-02", "MON-02", "MON-03", "MON-04", "MON-05", "MON-06", "MON-07",
             "MON-08", "MON-09"}


@pytest.fixture(scope="module")
def iam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    """A moto server enforcing IAM, with an admin and a reader profile."""
    users = {"admin": policy_document(ALLOW_ALL),
             "reader": policy_document(ALLOW_ALL, {"Effect": "Deny", "Action": "rds:Describe*", "Resource": "*"})}
    with iam_enforcing_server(users, tmp_path_factory.mktemp("aws")) as server:
        yield server


def test_denied_describe_is_an_error_not_a_pass(iam_server, tmp_path):
    admin = iam_server.run("admin", tmp_path, "--provision")
    assert admin.returncode == 0 and admin.summary["counts"]["error"] == 0, admin.stdout[-3000:]
    reader = iam_server.run("reader", tmp_path)
    assert reader.returncode == 1
    # Live, NET-09 too: what lives in the VPC includes its DB instances, which the reader may not list.
    assert reader.ids_with("error") == NEEDS_RDS | {"NET-09"}, reader.summary["counts"]
    assert not reader.ids_with("pass", "fail") & (NEEDS_RDS | {"NET-09"})
    message = next(r["message"] for r in reader.summary["requirements"] if r["id"] == "DB-02")
    assert "rds:DescribeDBInstances failed: AccessDenied" in message, message


# A saved snapshot missing only its instances: DR-02 reads the export tasks and MON-09 the dashboards, parts
# of their own that were fetched whole (live, a denied rds:Describe* takes them too, since the dashboards are
# found through the resources they show).
NEEDS_DB_INSTANCES = NEEDS_RDS - {"DR-02", "MON-09"}
# The checks that read the load balancer itself: it exists (ALB-01), its security group (ALB-06, and which
# group is the ALB's for NET-08 and ECS-13), its attributes (ALB-07) and its web ACL (ALB-08). Listeners and
# target groups (ALB-02..05) are parts of their own.
NEEDS_LOAD_BALANCERS = {"ALB-01", "ALB-06", "ALB-07", "ALB-08", "ECS-13", "NET-08"}


@pytest.mark.parametrize("part, kind, status, message, affected", [
    ("db_instances", "error", "error", "rds:DescribeDBInstances failed: Throttling: Rate exceeded", NEEDS_DB_INSTANCES),
    ("load_balancers", "unavailable", "skip", "elbv2 is not available at this endpoint (HTTP 501)", NEEDS_LOAD_BALANCERS),
])
def test_failed_part_of_a_snapshot(part, kind, status, message, affected, tmp_path):
    snapshot = copy.deepcopy(json.loads(GOLDEN.read_text()))
    del snapshot["parts"][part]
    snapshot["failures"][part] = {"kind": kind, "message": message}
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot))
    run = run_suite("--snapshot", str(path), reports=tmp_path / "reports")
    rows = {r["id"]: r for r in run.summary["requirements"]}
    # The image checks skip on every saved snapshot (it does not hold the image): not this part's doing.
    assert {rid for rid, r in rows.items() if r["status"] == status and r["area"] != "image"} == affected, \
        run.summary["counts"]
    assert all(message in rows[rid]["message"] for rid in affected)
    assert run.ids_with("fail") == set()
    assert (run.returncode == 1) is (status == "error")
