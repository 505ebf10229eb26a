"""The whole suite against a real emulator: environments built from the plan pass, and a violation made
through the real API fails the requirement it breaks.

One moto server serves the module, in this process. Its prod environment is built under names nobody
in the harness chose (as another team's CDK app would name things) and its dev environment under the
provisioner's own names: discovery must find each by the tags alone, and one must not leak into the
other. The suite runs in a subprocess, as a user runs it, with `--target localstack` (an endpoint it
must not provision into).
"""
from __future__ import annotations

import re
import subprocess
import sys
from typing import Any
from unittest import mock

import pytest

from harness.util.net import free_port

from support.suites import ROOT, SuiteRun, run_suite
from harness.local import provision as provisioner
from harness.plan import load_plan
from harness.target import Target, endpoint_listening

FOREIGN = "acme-platform"



@pytest.fixture(scope="module")
def endpoint(moto_endpoint: str) -> str:
    return moto_endpoint


@pytest.fixture(scope="module")
def target(endpoint: str) -> Target:
    plan = load_plan(ROOT / "plan" / "dougust.toml")
    target = Target("localstack", "us-east-1", endpoint_url=endpoint)
    with mock.patch.object(provisioner.Run, "name", lambda run, suffix: f"{FOREIGN}-{run.env[0]}-{suffix}"):
        assert provisioner.provision(target.client, plan, "prod").skipped == {}
    assert provisioner.provision(target.client, plan, "dev").skipped == {}
    return target


def _suite(endpoint: str, env: str, tmp_path: Any, *extra: str) -> SuiteRun:
    return run_suite("--target", "localstack", "--endpoint-url", endpoint, "--env", env, *extra,
                     reports=tmp_path / f"reports-{env}")


def _assert_compliant(run: SuiteRun) -> None:
    assert run.returncode == 0, run.stdout[-4000:]
    counts = run.summary["counts"]
    assert counts["fail"] == counts["error"] == 0, counts
    assert run.summary["requirements_checked"] == 69
    for row in run.summary["requirements"]:
        if row["status"] == "skip":
            assert row["message"].startswith("not observable on this target: "), row


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_environments_built_from_the_plan_pass(target, endpoint, env, tmp_path):
    run = _suite(endpoint, env, tmp_path)
    _assert_compliant(run)
    names = [t["Value"] for row in run.summary["requirements"] if row["id"] == "NET-02"
             for test in row["tests"] for ev in test["evidence"] for s in ev["data"] for t in s["Tags"]
             if t["Key"] == "Name"]
    assert names and all(n.startswith(FOREIGN if env == "prod" else "dougust-dev") for n in names), names


def test_api_calls_do_not_grow_with_the_number_of_checks(target, endpoint, tmp_path):
    everything = _suite(endpoint, "prod", tmp_path)
    network_only = run_suite("--target", "localstack", "--endpoint-url", endpoint, "-k", "network",
                             reports=tmp_path / "network")
    assert network_only.summary["requirements_checked"] == 9
    assert everything.summary["api_calls"] == network_only.summary["api_calls"] <= 60


def test_local_target_starts_provisions_and_stops_its_emulator(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    run = run_suite("--endpoint-url", endpoint, "--env", "dev", reports=tmp_path / "r")
    _assert_compliant(run)
    assert run.summary["target"] == "local" and run.summary["provision_api_calls"] > 0
    assert run.summary["api_calls"] <= 60
    assert not endpoint_listening(endpoint), "the emulator outlived the session that started it"


def _break_prod(target: Target) -> tuple[str, str]:
    """Four violations, made the way an operator would make them; returns the ids of the security group and
    the instance made by hand in the VPC."""
    rds, ec2, ecr = target.client("rds"), target.client("ec2"), target.client("ecr")
    db = rds.describe_db_instances(DBInstanceIdentifier=f"{FOREIGN}-p-db")["DBInstances"][0]
    vpc = db["DBSubnetGroup"]["VpcId"]
    group = ec2.create_security_group(GroupName="debugging", Description="made by hand", VpcId=vpc)["GroupId"]
    instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1,
                                 SubnetId=db["DBSubnetGroup"]["Subnets"][0]["SubnetIdentifier"])["Instances"][0]
    rds.modify_db_instance(DBInstanceIdentifier=db["DBInstanceIdentifier"], MultiAZ=False, ApplyImmediately=True)
    ec2.authorize_security_group_ingress(GroupId=db["VpcSecurityGroups"][0]["VpcSecurityGroupId"],
                                         IpPermissions=[{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                                                         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    ecr.delete_lifecycle_policy(repositoryName=f"{FOREIGN}-p-backend")
    return group, instance["InstanceId"]


def test_violations_made_through_the_api_fail_their_requirements(target, endpoint, tmp_path):
    group, instance = _break_prod(target)
    prod = _suite(endpoint, "prod", tmp_path)
    assert prod.returncode == 1
    # A world-open DB group breaks DB-08 and, being open to the internet, NET-08; the group made by hand has
    # none of the plan's tags (TAG-01) and, with the instance, is not the deployment's (NET-09).
    assert prod.ids_with("fail", "error") == {"DB-02", "DB-08", "NET-08", "ECR-03", "NET-09", "TAG-01"}, \
        prod.summary["counts"]
    assert "Multi-AZ is off" in prod.message("DB-02")
    assert re.search(rf"^2 of \d+ resources in the VPC are not the deployment's .*: security group {group} "
                     rf"\(debugging\), EC2 instance {instance}$", prod.message("NET-09")), prod.message("NET-09")
    _assert_compliant(_suite(endpoint, "dev", tmp_path))


def test_a_secret_in_plain_environment_is_caught_and_never_shown(target, endpoint, tmp_path):
    """ECS-05 fails on a DATABASE_URL set in plain environment; its value appears in no output at all."""
    ecs = target.client("ecs")
    cluster = f"{FOREIGN}-p-cluster"
    service = ecs.describe_services(cluster=cluster, services=[f"{FOREIGN}-p-backend"])["services"][0]
    current = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    leaked = "postgres://app:Leaked-Pa55word@db.internal:5432/dougust"
    container = current["containerDefinitions"][0]
    container["environment"].append({"name": "DATABASE_URL", "value": leaked})
    container["secrets"] = [s for s in container["secrets"] if s["name"] != "DATABASE_URL"]
    keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions",
            "requiresCompatibilities", "cpu", "memory")
    revision = ecs.register_task_definition(**{k: current[k] for k in keep})["taskDefinition"]
    ecs.update_service(cluster=cluster, service=service["serviceName"],
                       taskDefinition=revision["taskDefinitionArn"])
    out = tmp_path / "out"
    run = _suite(endpoint, "prod", tmp_path, "--snapshot-out", str(out / "snapshot.json"),
                 "--alluredir", str(out / "allure"), "--junitxml", str(out / "junit.xml"), "-rA")
    assert run.status("ECS-05") == "fail"
    assert "DATABASE_URL is set in plain environment" in run.stdout
    written = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
    written.append((tmp_path / "reports-prod" / "summary.json").read_text())
    assert len(written) > 60
    for text in [run.stdout, run.stderr, *written]:
        assert "Leaked-Pa55word" not in text


def test_cli_snapshot_is_judged_offline_like_a_live_run(target, endpoint, tmp_path):
    """`harness snapshot` then `pytest --snapshot`: the nightly job keeps what it judged, to judge it again."""
    out = tmp_path / "prod.json"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "snapshot", "--target", "localstack",
                           "--endpoint-url", endpoint, "--env", "prod", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, discovery, *fallbacks = done.stdout.strip().splitlines()
    assert re.match(r"snapshot of prod written to .*: \d+ API calls$", first), done.stdout
    # moto's tagging API knows every tagged type but ECR repositories, which are listed instead.
    assert discovery.startswith("discovery: 5 tagged resource(s) in 1 tagging call(s); ") and \
        [line.split(":")[0] for line in fallbacks] == ["  fallback ecr"], done.stdout
    replay = run_suite("--snapshot", str(out), reports=tmp_path / "replay")
    live = _suite(endpoint, "prod", tmp_path)
    assert replay.summary["api_calls"] == 0
    assert {r["id"]: r["status"] for r in replay.summary["requirements"]} == \
        {r["id"]: r["status"] for r in live.summary["requirements"]}
    report = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--reports-dir", str(tmp_path / "replay")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and report.stdout.startswith("target localstack env prod: ")
