"""The compliance suite against a real LocalStack (community, on the host, started by scripts/localstack):
what it emulates is provisioned and passes, the services it answers 501 for are skipped with that reason.
"""
from __future__ import annotations

import os
import re
import subprocess
from typing import Iterator

import pytest

from harness.util.net import free_port

from support.suites import ROOT, run_suite
from harness.target import endpoint_listening

pytestmark = pytest.mark.localstack

SCRIPT = ROOT / "scripts" / "localstack"
NOT_EMULATED = {"rds", "ecs", "elbv2", "ecr", "cloudtrail"}



@pytest.fixture(scope="module")
def localstack() -> Iterator[str]:
    port = str(free_port())
    env = {**os.environ, "LS_PORT": port}
    subprocess.run([str(SCRIPT), "start"], env=env, check=True, timeout=180)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield endpoint
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=True, timeout=60)
    assert not endpoint_listening(endpoint), "LocalStack still listens after its stop"


def test_suite_on_localstack_has_no_failure_and_no_error(localstack, tmp_path):
    run = run_suite("--target", "localstack", "--endpoint-url", localstack, "--provision",
                    reports=tmp_path / "reports")
    assert run.returncode == 0, run.stdout[-4000:]
    counts = run.summary["counts"]
    assert counts["fail"] == counts["error"] == 0, counts
    assert counts["pass"] >= 10, counts
    unavailable = set()
    for row in run.summary["requirements"]:
        if row["status"] == "skip":
            match = re.fullmatch(r"(\S+) is not available at this endpoint \(HTTP 501\)", row["message"])
            assert match or row["message"].startswith("not observable on this target"), row
            unavailable |= {match.group(1)} if match else set()
    assert unavailable == NOT_EMULATED
    # LocalStack's tagging API finds the VPC; the services it does not emulate are not in its answers, so
    # their types fall back, and the fallback's own call finds them unavailable.
    types = run.summary["discovery"]["types"]
    assert (types["ec2:vpc"]["path"], types["ec2:vpc"]["found"]) == ("tagging", 1), types["ec2:vpc"]
    service_of = {"rds:db": "rds", "ecs:cluster": "ecs", "ecs:service": "ecs",
                  "elasticloadbalancing:loadbalancer": "elbv2", "ecr:repository": "ecr"}
    assert {t: (e["failure"], e["reason"].startswith(f"the tagging API returned no {t}"))
            for t, e in types.items() if e["path"] == "fallback"} == \
        {t: (f"{service} is not available at this endpoint (HTTP 501)", True) for t, service in service_of.items()}
    assert "harness: provisioning skipped rds: rds is not available at this endpoint (HTTP 501)" in run.stdout


def test_ready_hook_provisions_the_plan(localstack, tmp_path):
    hook = ROOT / "localstack" / "init" / "ready.d" / "provision-plan.sh"
    env = {**os.environ, "LOCALSTACK_ENDPOINT": localstack, "HARNESS_ENV": "dev"}
    done = subprocess.run([str(hook)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"provisioned dev at .*: \d+ created", done.stdout), done.stdout
    assert "skipped rds: rds is not available at this endpoint (HTTP 501)" in done.stdout
    # No --endpoint-url: found through LOCALSTACK_HOST, as LocalStack's own clients find it.
    run = run_suite("--target", "localstack", "--env", "dev", reports=tmp_path / "reports",
                    env={"LOCALSTACK_HOST": localstack.removeprefix("http://"), "AWS_ENDPOINT_URL": None})
    assert run.returncode == 0 and run.summary["counts"]["pass"] >= 10, run.stdout[-3000:]
