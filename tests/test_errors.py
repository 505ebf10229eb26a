"""A describe call that is denied or fails makes the checks that need it ERROR, never pass.

The denial is real: a moto server that enforces IAM, a reader whose policy denies rds:Describe*.
"""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from conftest import GOLDEN, SuiteRun, free_port, run_suite

# Requirements judged on the RDS part of the snapshot, directly or through the alarms that watch it.
NEEDS_RDS = {"DB-01", "DB-02", "DB-03", "DB-04", "DB-05", "DB-06", "DB-07", "DB-08", "DB-09", "DB-10", "DB-11",
             "DB-12", "DB-13", "DR-01", "DR-02", "MON-02", "MON-03", "MON-04", "MON-05", "MON-06", "MON-07",
             "MON-08", "MON-09"}
USERS = 2  # admin, reader
UNAUTHENTICATED_CALLS = 3 * USERS  # create_user, put_user_policy, create_access_key per user



def _policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture(scope="module")
def iam_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server enforcing IAM after its first few calls, with an admin and a reader profile."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(UNAUTHENTICATED_CALLS)}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "moto server did not start"
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        credentials = tmp_path_factory.mktemp("aws") / "credentials"
        lines = []
        for user, statements in (("admin", [everything]),
                                 ("reader", [everything, {"Effect": "Deny", "Action": "rds:Describe*",
                                                          "Resource": "*"}])):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="harness-test", PolicyDocument=_policy(*statements))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            lines += [f"[{user}]", f"aws_access_key_id = {key['AccessKeyId']}",
                      f"aws_secret_access_key = {key['SecretAccessKey']}"]
        credentials.write_text("\n".join(lines) + "\n")
        yield endpoint, {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": "/nonexistent"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _run(endpoint: str, env: dict[str, str], profile: str, tmp_path: Path, *extra: str) -> SuiteRun:
    return run_suite("--target", "localstack", "--endpoint-url", endpoint, "--profile", profile, "--env", "dev",
                     *extra, reports=tmp_path / profile, env=env)


def test_denied_describe_is_an_error_not_a_pass(iam_endpoint, tmp_path):
    endpoint, env = iam_endpoint
    admin = _run(endpoint, env, "admin", tmp_path, "--provision")
    assert admin.returncode == 0 and admin.summary["counts"]["error"] == 0, admin.stdout[-3000:]
    reader = _run(endpoint, env, "reader", tmp_path)
    assert reader.returncode == 1
    assert reader.ids_with("error") == NEEDS_RDS, reader.summary["counts"]
    assert not reader.ids_with("pass", "fail") & NEEDS_RDS
    message = next(r["message"] for r in reader.summary["requirements"] if r["id"] == "DB-02")
    assert "rds:DescribeDBInstances failed: AccessDenied" in message, message


@pytest.mark.parametrize("part, kind, status, message", [
    ("db_instances", "error", "error", "rds:DescribeDBInstances failed: Throttling: Rate exceeded"),
    ("load_balancers", "unavailable", "skip", "elbv2 is not available at this endpoint (HTTP 501)"),
])
def test_failed_part_of_a_snapshot(part, kind, status, message, tmp_path):
    snapshot = copy.deepcopy(json.loads(GOLDEN.read_text()))
    del snapshot["parts"][part]
    snapshot["failures"][part] = {"kind": kind, "message": message}
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot))
    run = run_suite("--snapshot", str(path), reports=tmp_path / "reports")
    rows = {r["id"]: r for r in run.summary["requirements"]}
    affected = {rid for rid, r in rows.items() if r["status"] == status}
    assert affected, run.summary["counts"]
    assert all(message in rows[rid]["message"] for rid in affected)
    assert run.ids_with("fail") == set()
    assert (run.returncode == 1) is (status == "error")
