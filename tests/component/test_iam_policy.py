"""The committed IAM policies (plan/iam/) are what the suites need, no more: derived from the calls they
make, enough on a server that enforces IAM, and each service's part of them really checked there.

The server is moto's, enforcing IAM after its first calls, with the corrections of conftest.py's
`_serve_as_aws_authorizes` so that it authorizes as AWS does for CloudWatch, S3 and Secrets Manager.

What moto still does not check: a dependent action a service evaluates on the caller's behalf, here
wafv2:GetWebACL behind GetWebACLForResource. That one is in the policy on the word of AWS's documentation
(harness/iam.py), and no test here can show it is needed. moto also answers a denied JSON-protocol call
(ECS, ECR, Logs, Secrets Manager, CloudTrail, WAF, Application Auto Scaling) with an XML body, which botocore
reports as the error code "403"; a denial is therefore any outcome other than "ok".
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Iterator

import boto3
import botocore.exceptions
import botocore.session
import pytest
from botocore import xform_name

from harness import cli, iam
from harness.compliance.inventory import take_snapshot
from harness.iam import IAM_PREFIX, DerivationError, actions_for, is_read, policy_for
from harness.plan import load_plan
from harness.target import Target
from support.moto import ALLOW_ALL, IamServer, corrections_missing, iam_enforcing_server, policy_document
from support.suites import ROOT, SuiteRun

PLAN = load_plan(ROOT / "plan" / "dougust.toml")
COMPLIANCE = ROOT / "plan" / "iam" / "compliance-readonly.json"
SMOKE = ROOT / "plan" / "iam" / "smoke-readonly.json"
LOAD = ROOT / "plan" / "iam" / "load-readonly.json"
DR = ROOT / "plan" / "iam" / "dr-drill.json"
ENV = "dev"
REGION = PLAN.environment(ENV).region

# The action taken away from the nightly policy in the one-action test. GetLifecyclePolicy is called while
# the repositories part is fetched, so without it that whole part is unknown: every check that reads it
# errors, not only ECR-03 (the lifecycle rule) but ECR-01 (private), ECR-02 (scan on push) and ECR-04 (the
# service's image is from the repository). TAG-01 reads the part only when it was fetched and reports it as
# not observable otherwise, so it keeps its verdict.
REMOVED_ACTION = "ecr:GetLifecyclePolicy"
NEEDS_LIFECYCLE_POLICY = {"ECR-01", "ECR-02", "ECR-03", "ECR-04"}


def _committed(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _without(policy: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    """The policy with the given actions taken out of every statement."""
    statements = [{**s, "Action": [a for a in s["Action"] if a not in drop]} for s in policy["Statement"]]
    return {**policy, "Statement": statements}


# --- the server --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iam_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    """The IAM-enforcing server with one user per role: the admin (everything), the nightly job (the
    committed compliance policy), the nightly job short of REMOVED_ACTION, a probe whose policy each test
    sets, and the deploy pipeline's smoke gate (the committed smoke policy)."""
    nightly = _committed(COMPLIANCE)
    users = {"admin": policy_document(ALLOW_ALL), "nightly": nightly,
             "nightly-without-lifecycle": _without(nightly, {REMOVED_ACTION}), "probe": nightly,
             "smoke": _committed(SMOKE)}
    with iam_enforcing_server(users, tmp_path_factory.mktemp("aws"), as_aws_authorizes=True) as server:
        yield server


def test_uncorrected_moto_fails_every_canary_of_the_corrections(tmp_path):
    """The check that guards the corrections on every start of the server catches each one's absence: moto as
    it is names CloudWatch and the tagging API by their signing names, S3 calls by their operations, and Secrets
    Manager's resource "*", so each canary allowed exactly what AWS checks is denied."""
    with iam_enforcing_server({"admin": policy_document(ALLOW_ALL)}, tmp_path) as server:
        key = server.admin_iam.create_access_key(UserName="admin")["AccessKey"]
        missing = corrections_missing(server.endpoint, (key["AccessKeyId"], key["SecretAccessKey"]))
    assert [line.split(",")[0] for line in missing] == [
        "CloudWatch is authorized by IAM's prefix cloudwatch",
        "the tagging API is authorized by IAM's prefix tag",
        "S3's HeadBucket is authorized as s3:ListBucket",
        "S3's ListObjects is authorized as s3:ListBucket",
        "Secrets Manager is authorized against the secret's ARN",
    ], missing


@pytest.fixture(scope="module")
def admin_run(iam_server: IamServer, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """The admin builds the plan's dev environment and judges it: the verdicts any reader should reach."""
    run = iam_server.run("admin", tmp_path_factory.mktemp("admin"), "--provision", environment=ENV)
    assert run.summary and run.summary["counts"]["error"] == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return run


def _statuses(run: SuiteRun) -> dict[str, str]:
    return {r["id"]: r["status"] for r in (run.summary or {}).get("requirements", [])}


# --- the derivation, in process ----------------------------------------------------------------------------


@pytest.mark.parametrize("calls, actions", [
    ([("ec2", "DescribeVpcs")], ["ec2:DescribeVpcs"]),
    ([("elbv2", "DescribeTargetGroups")], ["elasticloadbalancing:DescribeTargetGroups"]),
    ([("cloudwatch", "DescribeAlarms")], ["cloudwatch:DescribeAlarms"]),
    ([("application-autoscaling", "DescribeScalableTargets")], ["application-autoscaling:DescribeScalableTargets"]),
    ([("s3", "HeadBucket")], ["s3:ListBucket"]),
    ([("wafv2", "GetWebACLForResource")], ["wafv2:GetWebACL", "wafv2:GetWebACLForResource"]),
    ([("cloudtrail", "GetTrailStatus"), ("cloudtrail", "DescribeTrails"), ("cloudtrail", "GetTrailStatus")],
     ["cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus"]),
    ([("sts", "GetCallerIdentity"), ("ecr", "GetLifecyclePolicy")], ["ecr:GetLifecyclePolicy"]),
])
def test_policy_for_maps_each_call_to_its_action(calls, actions):
    policy = policy_for(calls)
    assert policy == {"Version": "2012-10-17", "Statement": [
        {"Sid": "ComplianceSnapshotRead", "Effect": "Allow", "Action": actions, "Resource": "*"}]}


def test_policy_for_grants_nothing_for_calls_that_need_no_permission():
    assert policy_for([("sts", "GetCallerIdentity")]) == {"Version": "2012-10-17", "Statement": []}


def test_policy_for_refuses_a_service_nobody_mapped():
    with pytest.raises(DerivationError, match="no IAM prefix known for the service 'kms'"):
        policy_for([("ec2", "DescribeVpcs"), ("kms", "DescribeKey")])


@pytest.mark.parametrize("suite, path", [("compliance", COMPLIANCE), ("smoke", SMOKE), ("load", LOAD),
                                         ("dr", DR)])
def test_committed_policy_is_the_current_derivation(suite, path, capsys):
    assert cli.main(["iam-policy", "--suite", suite]) == 0
    derived = capsys.readouterr().out
    assert path.read_text(encoding="utf-8") == derived, (
        f"{path.relative_to(ROOT)} is not what the suite needs now; regenerate it: "
        f"harness iam-policy --suite {suite} > {path.relative_to(ROOT)}")


@pytest.mark.parametrize("path, writes", [
    (COMPLIANCE, {}), (SMOKE, {}), (LOAD, {}),
    (DR, {"DrillFaults": ["ecs:StopTask", "ecs:UpdateService", "rds:AddTagsToResource", "rds:DeleteDBInstance",
                          "rds:RebootDBInstance", "rds:RestoreDBInstanceToPointInTime"]}),
], ids=["compliance", "smoke", "load", "dr"])
def test_committed_policies_write_only_the_drill_faults(path, writes):
    """Every action of the committed policies reads, but the DR drills' own writes (the faults, the temporary
    instance, the deploys), which stand in a statement of their own."""
    found = {s["Sid"]: [a for a in s["Action"] if not is_read(a)] for s in _committed(path)["Statement"]}
    assert {sid: actions for sid, actions in found.items() if actions} == writes


# Functions of harness/compliance/inventory/*.py that take the operation name of one fixed service.
OPERATION_HELPERS = {"per_vpc": "ec2"}


def _named_call(node: ast.AST) -> tuple[str, str] | None:
    """(service, snake_case operation) of `f.call("svc", "op")`, `f.paginate("svc", "op")` or a helper's
    `per_vpc("op")`, when they are written as string literals."""
    if not isinstance(node, ast.Call):
        return None
    literals = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if isinstance(node.func, ast.Attribute) and node.func.attr in ("call", "paginate") and len(literals) >= 2:
        return literals[0], literals[1]
    if isinstance(node.func, ast.Name) and node.func.id in OPERATION_HELPERS and literals:
        return OPERATION_HELPERS[node.func.id], literals[0]
    return None


def _ecr_calls() -> set[tuple[str, str]]:
    """The image checks' calls, read off harness/image/ecr.py (every client there is ECR's): methods called on
    `client("ecr")` and the operations of its paginators."""
    tree = ast.parse((ROOT / "harness" / "image" / "ecr.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        if node.func.attr == "get_paginator" and isinstance(node.args[0], ast.Constant):
            found.add(("ecr", node.args[0].value))
        elif isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute) and target.func.attr == "client":
            found.add(("ecr", node.func.attr))
    return found


def test_policy_covers_every_call_the_snapshot_code_can_make():
    """The derivation sees the calls a compliant environment leads to; this reads them off the code, so a
    call made only on some other branch (a missing resource, a second page) cannot be left out."""
    modules = sorted((ROOT / "harness" / "compliance" / "inventory").glob("*.py"))
    written = {call for module in modules for node in ast.walk(ast.parse(module.read_text(encoding="utf-8")))
               if (call := _named_call(node))} | _ecr_calls()
    assert {("ecr", "get_authorization_token"), ("ecr", "describe_image_scan_findings")} <= written
    session = botocore.session.get_session()
    operations = {}
    for service in {s for s, _ in written}:
        model = session.get_service_model(service)
        operations.update({(service, xform_name(op)): op for op in model.operation_names})
    calls = [(service, operations[(service, method)]) for service, method in written]
    assert set(actions_for(calls)) == set(_committed(COMPLIANCE)["Statement"][0]["Action"])


def test_iam_policy_command_refuses_an_unknown_environment(capsys):
    assert cli.main(["iam-policy", "--env", "staging"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: unknown environment 'staging'") and err.count("\n") == 1, err


# --- the committed policies on the IAM-enforcing server ------------------------------------------------------


def test_nightly_policy_is_enough(iam_server, admin_run, tmp_path):
    nightly = iam_server.run("nightly", tmp_path, environment=ENV)
    assert _statuses(nightly) == _statuses(admin_run), nightly.stdout[-3000:]
    assert nightly.summary["counts"]["error"] == 0
    seen = nightly.stdout + nightly.stderr + json.dumps(nightly.summary)
    assert "AccessDenied" not in seen and "not authorized" not in seen


def test_one_missing_action_errors_exactly_the_checks_that_need_it(iam_server, admin_run, tmp_path):
    short = iam_server.run("nightly-without-lifecycle", tmp_path, environment=ENV)
    assert short.returncode == 1
    assert short.ids_with("error") == NEEDS_LIFECYCLE_POLICY, short.summary["counts"]
    assert all(f"{REMOVED_ACTION} failed" in short.message(rid) for rid in NEEDS_LIFECYCLE_POLICY), short.stdout
    unchanged = {rid: status for rid, status in _statuses(admin_run).items() if rid not in NEEDS_LIFECYCLE_POLICY}
    assert {rid: s for rid, s in _statuses(short).items() if rid not in NEEDS_LIFECYCLE_POLICY} == unchanged


@pytest.fixture(scope="module")
def probe(iam_server: IamServer, admin_run: SuiteRun) -> Iterator[Target]:
    """A session as the probe user, reused so its clients are built once; each test sets the probe's policy."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in iam_server.env.items():
            mp.setenv(name, value)
        yield Target("localstack", REGION, endpoint_url=iam_server.endpoint, profile="probe")


PREFIXES = sorted({action.split(":")[0] for action in _committed(COMPLIANCE)["Statement"][0]["Action"]})


@pytest.mark.parametrize("prefix", PREFIXES)
def test_server_enforces_each_service_of_the_policy(prefix, iam_server, probe):
    """Without its actions, every call to that service is denied and every other call still succeeds: the
    server checks this service, under this prefix."""
    services = {service for service, iam_prefix in IAM_PREFIX.items() if iam_prefix == prefix}
    nightly = _committed(COMPLIANCE)
    iam_server.grant("probe", _without(nightly, {a for a in nightly["Statement"][0]["Action"]
                                                 if a.startswith(f"{prefix}:")}))
    mark = probe.recorder.mark()
    take_snapshot(probe, PLAN, ENV)
    calls = probe.recorder.since(mark)
    denied = {(service, op) for service, op, outcome in calls if outcome != "ok"}
    assert denied and {service for service, _ in denied} == services, calls
    assert all(outcome != "ok" for service, _, outcome in calls if service in services), calls


def test_smoke_policy_reads_the_smoke_account_and_nothing_else(iam_server, monkeypatch):
    for name, value in iam_server.env.items():
        monkeypatch.setenv(name, value)
    admin = boto3.Session(profile_name="admin", region_name=REGION).client("secretsmanager",
                                                                             endpoint_url=iam_server.endpoint)
    account = PLAN.requirements["SMK-06"].expected("prod")["account_secret"]
    prefix = PLAN.secret_prefix("prod")
    readable = f"{prefix}{account}"
    unreadable = [f"{prefix}database-url", f"{prefix}{account}ant", f"staging/dougust/{account}"]
    for name in (readable, *unreadable):
        admin.create_secret(Name=name, SecretString=json.dumps({"email": "smoke@example.com", "password": name}))
    secrets = Target("localstack", REGION, endpoint_url=iam_server.endpoint, profile="smoke").client("secretsmanager")
    assert json.loads(secrets.get_secret_value(SecretId=readable)["SecretString"])["password"] == readable
    for name in unreadable:
        with pytest.raises(botocore.exceptions.ClientError, match="not authorized to perform: "
                                                                   "secretsmanager:GetSecretValue"):
            secrets.get_secret_value(SecretId=name)
    with pytest.raises(botocore.exceptions.ClientError, match="secretsmanager:ListSecrets"):
        secrets.list_secrets()


def test_load_policy_reads_the_stop_alarms_a_profile_names_and_no_other(tmp_path):
    text = (ROOT / "plan" / "dougust.toml").read_text(encoding="utf-8")
    assert "[load.launch]\n" in text
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(text.replace("[load.launch]\n", '[load.launch]\nstop = { alarms = ["prod-alb-5xx"] }\n'),
                         encoding="utf-8")
    statements = {s["Sid"]: s for s in iam.load_policy(load_plan(plan_path), [ENV])["Statement"]}
    assert statements["LoadStopAlarmsRead"]["Action"] == ["cloudwatch:DescribeAlarms"]
    assert statements["LoadStopAlarmsRead"]["Resource"] == ["arn:aws:cloudwatch:*:*:alarm:prod-alb-5xx"]
    assert "LoadStopAlarmsRead" not in {s["Sid"] for s in iam.load_policy(PLAN, [ENV])["Statement"]}


SMOKE_TASK_READS = next(s["Action"] for s in _committed(SMOKE)["Statement"] if s["Sid"] == "SmokeTasksRead")


@pytest.fixture(scope="module")
def stopped_task(iam_server: IamServer, probe: Target) -> str:
    """One task of dev's service run and stopped by the admin, as ECS would record a crash (last in the module:
    the environment no longer looks as the compliance runs above found it)."""
    admin = Target("localstack", REGION, endpoint_url=iam_server.endpoint, profile="admin")
    service = iam._EcsStandIn(admin, PLAN, ENV)
    task = service.running()[0]["taskArn"]
    service.ecs.stop_task(cluster=service.cluster, task=task, reason="Essential container in task exited")
    return task


@pytest.mark.parametrize("dropped", [None, *SMOKE_TASK_READS])
def test_smoke_policy_reads_the_stopped_tasks_and_each_of_its_ecs_actions_is_needed(dropped, iam_server, probe,
                                                                                     stopped_task):
    """SMK-10's reader, as the smoke gate's role, sees the stopped task with the committed policy, and is
    denied without any one of its ECS actions."""
    from harness.smoke.tasks import EcsTasks

    policy = _committed(SMOKE)
    iam_server.grant("probe", _without(policy, {dropped}) if dropped else policy)
    if dropped is None:
        seen = EcsTasks(probe, PLAN, ENV)()
        assert [t.task for t in seen.stopped] == [stopped_task.rsplit("/", 1)[-1]], seen
        assert seen.stopped[0].reason == "Essential container in task exited"
        return
    with pytest.raises(botocore.exceptions.ClientError):
        EcsTasks(probe, PLAN, ENV)()
