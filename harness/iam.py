"""Least-privilege IAM policies for the suites, derived from the AWS calls they make.

A hand-written policy drifts from the code: a new describe call fails the nightly run with AccessDenied, a
call that is gone leaves a permission nobody needs. So the compliance policy is derived: the plan's
compliant environment is built into moto inside this process, the suite's session (the reachability check,
then the one snapshot it judges) runs on it, the snapshot once more as an endpoint whose tagging API misses
every tagged type leads to (each type's fallback), and every call it records is mapped to the IAM action
that authorizes it. The smoke gate reads one secret per environment, so its policy is that one action on those
secrets, and the reads of SMK-10 (the service's deployment and stopped tasks), derived the same way.

The load suite reads its accounts secret per environment, and while it runs reads the service's counts and
CPU metric (LOAD-03); those calls are derived the same way, from the observer run against the emulator.

The disaster-recovery drills (`pytest dr --target aws`) read the smoke account for their canary writes, and
their backend discovers the deployment, watches it and acts: DRILL-01 and DRILL-03 are run whole against the
emulator, DRILL-02 and DRILL-04 step by step, and a sweep. Their writes (the failover, the stopped task, the
restore into a tagged instance and its deletion, the deploys) are a statement of their own (DrillFaults), so
a reviewer sees at a glance everything the role may change. They apply to any resource ("*"): the harness
itself deletes only instances carrying its drill tag; an account that wants IAM to enforce that too can
add tag conditions to the statement.

`policy_for` is the pure mapping from calls to a policy; `compliance_policy`, `smoke_policy`, `load_policy`
and `dr_policy` do the rest.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import botocore.exceptions

from harness.compliance.inventory import Inventory, tagging_blind_to, take_snapshot
from harness.plan import Plan
from harness.target import READ_ONLY_PREFIXES, Target

POLICY_VERSION = "2012-10-17"

# boto3 service name -> IAM service prefix, for every service a session calls. Explicit on purpose: a new
# service stops the derivation until its prefix is checked in the AWS Service Authorization Reference.
# CloudWatch signs its requests as "monitoring", but its IAM prefix is "cloudwatch".
IAM_PREFIX: dict[str, str] = {
    "application-autoscaling": "application-autoscaling",
    "cloudtrail": "cloudtrail",
    "cloudwatch": "cloudwatch",
    "ec2": "ec2",
    "ecr": "ecr",
    "ecs": "ecs",
    "elbv2": "elasticloadbalancing",
    "logs": "logs",
    "rds": "rds",
    "resourcegroupstaggingapi": "tag",
    "s3": "s3",
    "secretsmanager": "secretsmanager",
    "sns": "sns",
    "sts": "sts",
    "wafv2": "wafv2",
}

# Operations that are not authorized by exactly the action of their own name.
ACTIONS_OF: dict[tuple[str, str], tuple[str, ...]] = {
    # IAM has no HeadBucket action: S3 authorizes a HEAD on a bucket as listing it.
    ("s3", "HeadBucket"): ("s3:ListBucket",),
    # WAF checks wafv2:GetWebACL on the web ACL it finds, on the caller's behalf, before returning it.
    ("wafv2", "GetWebACLForResource"): ("wafv2:GetWebACLForResource", "wafv2:GetWebACL"),
    # Answers any valid credentials, even under an explicit Deny: there is nothing to grant.
    ("sts", "GetCallerIdentity"): (),
    # The token is only ever used to pull the service's image through the registry API, which ECR
    # authorizes as BatchGetImage (the manifest) and GetDownloadUrlForLayer (each blob).
    ("ecr", "GetAuthorizationToken"): ("ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                       "ecr:GetDownloadUrlForLayer"),
}


class DerivationError(Exception):
    """The calls cannot be mapped, or the emulator run did not make all of them; the policy would be short."""


def actions_for(calls: Iterable[tuple[str, str]]) -> list[str]:
    """The IAM actions that authorize (boto3 service, PascalCase operation) calls, sorted, each once."""
    actions: set[str] = set()
    for service, operation in calls:
        if service not in IAM_PREFIX:
            raise DerivationError(f"no IAM prefix known for the service '{service}' ({service}:{operation}); "
                                  f"look it up in the Service Authorization Reference and add it to IAM_PREFIX")
        actions.update(ACTIONS_OF.get((service, operation), (f"{IAM_PREFIX[service]}:{operation}",)))
    return sorted(actions)


def policy_for(calls: Iterable[tuple[str, str]], sid: str = "ComplianceSnapshotRead") -> dict[str, Any]:
    """The identity policy allowing exactly those calls. Resource is "*": the suite finds its resources by
    tags, so it cannot name them in advance, and most Describe/List actions take no resource anyway."""
    actions = actions_for(calls)
    statements = [{"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": "*"}]
    return {"Version": POLICY_VERSION, "Statement": statements if actions else []}


def secret_read(sid: str, names: Iterable[str]) -> dict[str, Any]:
    """GetSecretValue on exactly these secrets. One ARN per name, rather than a wildcard over environments:
    a `*/dougust/...` pattern would also match names outside the plan. Secrets Manager appends '-' and six
    characters to the name."""
    return {"Sid": sid, "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [f"arn:aws:secretsmanager:*:*:secret:{name}-*" for name in names]}


def smoke_policy(plan: Plan, envs: Sequence[str]) -> dict[str, Any]:
    """GetSecretValue on each environment's smoke-account secret, and SMK-10's reads of the service's
    deployment and stopped tasks (derived)."""
    names = [plan.secret_prefix(env) + plan.requirements["SMK-06"].expected(env)["account_secret"] for env in envs]
    tasks = policy_for(smoke_calls(plan, envs), sid="SmokeTasksRead")["Statement"]
    return {"Version": POLICY_VERSION, "Statement": [secret_read("SmokeAccountRead", names), *tasks]}


def smoke_calls(plan: Plan, envs: Sequence[str]) -> list[tuple[str, str]]:
    """The calls of SMK-10's reader (find the service, its deployment, its stopped tasks and their revision's
    essential containers) on each environment built as the plan asks, with one of its tasks stopped, in
    moto's in-process mock. The task is run and stopped through a second Target, not counted, as ECS would."""
    from moto import mock_aws

    from harness.local.provision import provision
    from harness.smoke.tasks import EcsTasks

    calls: list[tuple[str, str]] = []
    with _shell_settings_ignored(), mock_aws():
        for env in envs:
            region = plan.environment(env).region
            platform, smoke = Target("local", region), Target("local", region)
            provision(platform.client, plan, env)
            service = _EcsStandIn(platform, plan, env)
            task = service.running()[0]["taskArn"]
            service.ecs.stop_task(cluster=service.cluster, task=task, reason="Essential container in task exited")
            if not EcsTasks(smoke, plan, env)().stopped:
                raise DerivationError(f"SMK-10's reader did not see the stopped task of {env} in the emulator")
            calls += [(service_, operation) for service_, operation, _ in smoke.recorder.calls]
    return calls


def load_policy(plan: Plan, envs: Sequence[str]) -> dict[str, Any]:
    """The load accounts secret of each environment, what LOAD-03 reads while the load runs, and the states of
    the CloudWatch alarms a profile names as stop conditions (those alarms only)."""
    from harness.load.accounts import secret_name
    from harness.load.profile import resolve

    scaling = policy_for(load_calls(plan, envs), sid="LoadScalingRead")["Statement"]
    alarms = sorted({name for env in envs for profile in plan.load for name in resolve(plan, env, profile).stop.alarms})
    brakes = [{"Sid": "LoadStopAlarmsRead", "Effect": "Allow", "Action": ["cloudwatch:DescribeAlarms"],
               "Resource": [f"arn:aws:cloudwatch:*:*:alarm:{name}" for name in alarms]}] if alarms else []
    return {"Version": POLICY_VERSION,
            "Statement": [secret_read("LoadAccountsRead", [secret_name(plan, env) for env in envs]), *scaling,
                          *brakes]}


def load_calls(plan: Plan, envs: Sequence[str]) -> list[tuple[str, str]]:
    """The calls of LOAD-03's observer (find the service, sample its counts, read its CPU metric) on each
    environment built as the plan asks, in moto's in-process mock."""
    from moto import mock_aws

    from harness.load.scaling import ScalingObserver
    from harness.local.provision import provision

    calls: list[tuple[str, str]] = []
    with _shell_settings_ignored(), mock_aws():
        for env in envs:
            target = Target("local", plan.environment(env).region)
            provision(target.client, plan, env)
            mark = target.recorder.mark()
            observer = ScalingObserver(target, plan, env)
            observer.start(0.0)
            observer.stop()
            observer.cpu_peak()
            if observer.problem:
                raise DerivationError(f"the scaling observer failed in the emulator for {env}: {observer.problem}")
            calls += [(service, operation) for service, operation, _ in target.recorder.since(mark)]
    return calls


# What a drill session may change on AWS, and nothing else: the faults of DRILL-01 and DRILL-03, the
# temporary instance of DRILL-02 (made, tagged, deleted; also by `harness drills sweep`), DRILL-04's deploys.
# rds:AddTagsToResource is never called by name: AWS asks for it when a restore carries tags.
DRILL_FAULTS = ("rds:RebootDBInstance", "ecs:StopTask", "rds:RestoreDBInstanceToPointInTime", "rds:DeleteDBInstance",
                "ecs:UpdateService")
IMPLIED = ("rds:AddTagsToResource",)
DRILLS = ("DRILL-01", "DRILL-03")


def is_read(action: str) -> bool:
    """An IAM action that reads: its name starts as the read-only guard's operations do (Describe, List, ...),
    or it is a BatchGet (ecr:BatchGetImage authorizes an image pull through the registry API, which no boto3
    call of the harness makes)."""
    return action.split(":", 1)[1].startswith((*READ_ONLY_PREFIXES, "BatchGet"))


def dr_policy(plan: Plan, envs: Sequence[str]) -> dict[str, Any]:
    """The smoke account of each environment (the canary writes go through the API as that account), what the
    drills' backend reads, and, apart, the drills' writes (DRILL_FAULTS)."""
    names = [plan.secret_prefix(env) + plan.requirements["SMK-06"].expected(env)["account_secret"] for env in envs]
    actions = actions_for(dr_calls(plan, envs))
    writes = [a for a in actions if not is_read(a)]
    if sorted(writes) != sorted(DRILL_FAULTS):
        raise DerivationError(f"the drills in the emulator wrote {', '.join(writes) or 'nothing'}; "
                              f"the only writes they may make are {', '.join(DRILL_FAULTS)}")
    return {"Version": POLICY_VERSION, "Statement": [
        secret_read("SmokeAccountRead", names),
        {"Sid": "DrillRead", "Effect": "Allow", "Action": [a for a in actions if is_read(a)], "Resource": "*"},
        {"Sid": "DrillFaults", "Effect": "Allow", "Action": sorted(writes + list(IMPLIED)), "Resource": "*"}]}


def dr_calls(plan: Plan, envs: Sequence[str]) -> list[tuple[str, str]]:
    """The calls of the aws drill backend through a whole DRILL-01 and DRILL-03, and DRILL-02's and DRILL-04's
    steps and a sweep, on each environment built as the plan asks, in moto's in-process mock, with the alarms discovered in the environment as stop alarms.

    What ECS does by itself and moto does not is done here through a second Target, not counted, as the
    platform would: the service's tasks run (moto starts none for a service) with their addresses in its
    target group, and a stopped task's target leaves and a new task takes its place while rollback waits.
    moto's tasks would stop by themselves after one DescribeTasks; its state manager holds them meanwhile."""
    from moto import mock_aws
    from moto.moto_api import state_manager

    calls: list[tuple[str, str]] = []
    with _shell_settings_ignored(), mock_aws():
        state_manager.set_transition(model_name="ecs::task",
                                     transition={"progression": "manual", "times": 1_000_000})
        try:
            for env in envs:
                region = plan.environment(env).region
                platform, drills = Target("local", region), Target("local", region)
                try:
                    _run_drills(platform, drills, plan, env)
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                    line = (str(exc).splitlines() or [type(exc).__name__])[0]
                    raise DerivationError(f"the emulator failed while building {env} or drilling it: {line}") from None
                calls += [(service, operation) for service, operation, _ in drills.recorder.calls]
        finally:
            state_manager.unset_transition("ecs::task")
    return calls


def _run_drills(platform: Target, drills: Target, plan: Plan, env: str) -> None:
    """Build `env` through `platform`, run its service's tasks, then both drills through a backend on `drills`
    as the engine does: plan (the dry run), preflight, the fault, the service probe and the stop alarms while
    it recovers, rollback, the platform's events."""
    from harness.drills.backends.aws import AwsBackend
    from harness.drills.engine import spec_for
    from harness.drills.model import DrillRefused, InjectFailed
    from harness.local.provision import provision

    report = provision(platform.client, plan, env)
    if report.skipped:
        raise DerivationError(f"the emulator could not build all of {env}: {report.skipped}")
    service = _EcsStandIn(platform, plan, env)
    alarms = sorted(a["AlarmName"] for a in service.inventory.need("alarms"))
    if not alarms:
        raise DerivationError(f"the emulator's {env} has no alarm to watch as a stop alarm")
    with tagging_blind_to(drills):  # the backend's discovery through every type's fallback, as for compliance
        listed = take_snapshot(drills, plan, env, vpc_contents=False)
    if listed.failures:
        raise DerivationError(f"the snapshot of {env} in the emulator through the fallbacks is incomplete "
                              f"({', '.join(sorted(listed.failures))})")

    def recovering(_: float) -> None:  # rollback's wait: ECS replaces the stopped task meanwhile
        service.waits += 1
        if service.waits > 3:
            raise DerivationError(f"DRILL-03 on {env} in the emulator: the service did not settle after its "
                                  f"task was replaced: {backend.service_state()[1]}")
        service.replace_stopped()

    backend = AwsBackend(drills, plan, env, alarms, poll_s=0, run_id="iam-derivation", sleep=recovering)
    for rid in DRILLS:
        drill = spec_for(plan, env, rid, with_db=False)
        where = f"{rid} on {env} in the emulator"
        since = time.time() - 60
        try:
            backend.plan(drill)
            backend.preflight(drill, _no_journal)
            backend.inject(drill, _no_journal)
        except (DrillRefused, InjectFailed) as exc:
            raise DerivationError(f"{where}: {exc}") from None
        if drill.fault == "task_loss":
            service.retire_stopped()
            backend.service_state()  # the service probe sees the lost target
        else:
            ok, line = backend.service_state()
            if not ok:
                raise DerivationError(f"{where}: the service is not steady: {line}")
        firing = backend.alarms_firing()
        if firing:
            raise DerivationError(f"{where}: stop alarms firing: {', '.join(firing)}")
        cleanup = backend.rollback(drill, _no_journal)
        if not cleanup["ok"]:
            raise DerivationError(f"{where}: rollback did not settle: {cleanup['detail']}")
        unreadable = [e["message"] for e in backend.events(since) if "unreadable" in e["message"]]
        if unreadable:
            raise DerivationError(f"{where}: {unreadable[0]}")
    try:  # DRILL-02: a tagged temporary instance made and deleted, then a sweep; DRILL-04: both deploys
        restore = spec_for(plan, env, "DRILL-02", with_db=True)
        backend.plan(restore)
        backend.preflight(restore, _no_journal)
        made = backend.restore(restore, _no_journal, time.time() - 1, "iam-derivation", time.time() + 60)
        backend.discard(made, _no_journal)
        backend.sweep(time.time(), _no_journal, env)
        rollback = spec_for(plan, env, "DRILL-04", with_db=False)
        backend.plan(rollback)
        backend.preflight(rollback, _no_journal)
        revisions = backend.revisions()
        for task_definition in (revisions.previous, revisions.current):
            backend.deploy(task_definition, _no_journal)
            backend.deployed(task_definition)
    except (DrillRefused, InjectFailed) as exc:
        raise DerivationError(f"DRILL-02/04 on {env} in the emulator: {exc}") from None


def _no_journal(action: str, detail: dict[str, Any]) -> None:
    return None


class _EcsStandIn:
    """ECS's part, through the platform's Target: the service's tasks running and registered in its target
    group, and a stopped task's target deregistered and the task replaced."""

    def __init__(self, platform: Target, plan: Plan, env: str) -> None:
        self.inventory = take_snapshot(platform, plan, env)
        if self.inventory.failures:
            raise DerivationError(f"the snapshot of {env} in the emulator is incomplete "
                                  f"({', '.join(sorted(self.inventory.failures))})")
        (service,) = self.inventory.need("services")
        self.ecs, self.elbv2 = platform.client("ecs"), platform.client("elbv2")
        self.cluster, self.name, self.desired = service["clusterArn"], service["serviceName"], service["desiredCount"]
        self.network = service["networkConfiguration"]
        self.target_group = service["loadBalancers"][0]["targetGroupArn"]
        self.waits = 0
        # moto reports as running the count an update asks for, and sizes a task by its containers' memory.
        self.ecs.update_service(cluster=self.cluster, service=self.name, desiredCount=self.desired)
        self.task_definition = self.ecs.register_task_definition(
            family="iam-derivation-stand-in", requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
            cpu="256", memory="512", containerDefinitions=[{"name": "backend", "image": "backend:stand-in",
                                                            "memory": 512}])["taskDefinition"]["taskDefinitionArn"]
        self.start(self.desired)

    def running(self) -> list[dict[str, Any]]:
        arns = self.ecs.list_tasks(cluster=self.cluster, desiredStatus="RUNNING")["taskArns"]
        return self.ecs.describe_tasks(cluster=self.cluster, tasks=arns)["tasks"] if arns else []

    def start(self, count: int) -> None:
        tasks = self.ecs.run_task(cluster=self.cluster, taskDefinition=self.task_definition, count=count,
                                  launchType="FARGATE", group=f"service:{self.name}", startedBy="ecs-svc/stand-in",
                                  networkConfiguration=self.network)["tasks"]
        self.elbv2.register_targets(TargetGroupArn=self.target_group,
                                    Targets=[{"Id": _address(t), "Port": 3000} for t in tasks])

    def retire_stopped(self) -> None:
        addresses = {_address(t) for t in self.running()}
        health = self.elbv2.describe_target_health(TargetGroupArn=self.target_group)["TargetHealthDescriptions"]
        gone = [d["Target"] for d in health if d["Target"]["Id"] not in addresses]
        if gone:
            self.elbv2.deregister_targets(TargetGroupArn=self.target_group, Targets=gone)

    def replace_stopped(self) -> None:
        self.retire_stopped()
        short = self.desired - len(self.running())
        if short > 0:
            self.start(short)


def _address(task: dict[str, Any]) -> str:
    return next(d["value"] for a in task["attachments"] for d in a["details"] if d["name"] == "privateIPv4Address")


def compliance_policy(plan: Plan, envs: Sequence[str]) -> dict[str, Any]:
    """What the nightly job's role needs to judge those environments of the plan."""
    return policy_for(compliance_calls(plan, envs))


def compliance_calls(plan: Plan, envs: Sequence[str]) -> list[tuple[str, str]]:
    """Every call a compliance session makes against each environment built as the plan asks, in moto's
    in-process mock. A compliant environment has every resource, so every part of the snapshot is fetched
    and no call is skipped for want of something to describe."""
    from moto import mock_aws

    calls: list[tuple[str, str]] = []
    targets: dict[str, Target] = {}  # one per region: its clients, loaded once, serve every environment there
    with _shell_settings_ignored(), mock_aws():
        for env in envs:
            region = plan.environment(env).region
            try:
                calls += _session_calls(targets.setdefault(region, Target("local", region)), plan, env)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise DerivationError(f"the emulator failed while building or reading {env}: {exc}") from None
    return calls


def _session_calls(target: Target, plan: Plan, env: str) -> list[tuple[str, str]]:
    """Build `env` at the target, then the calls of one session on it: the reachability check and the snapshot;
    then the snapshot once more as an endpoint whose tagging API knows none of the tagged types leads to, so
    the policy also allows each type's fallback (an endpoint, or an account, where the tagging API misses a
    type is judged, not denied)."""
    from harness.local.provision import provision

    report = provision(target.client, plan, env)
    if report.skipped:
        raise DerivationError(f"the emulator could not build all of {env}: {report.skipped}")
    mark = target.recorder.mark()
    target.check_reachable()
    inventory = take_snapshot(target, plan, env)
    with tagging_blind_to(target):
        listed = take_snapshot(target, plan, env)
    for how, snapshot in (("", inventory), (" through the fallbacks", listed)):
        if snapshot.failures:
            failed = "; ".join(f"{part}: {f.message}" for part, f in sorted(snapshot.failures.items()))
            raise DerivationError(f"the snapshot of {env} in the emulator{how} is incomplete ({failed})")
    calls = [(service, operation) for service, operation, _ in target.recorder.since(mark)]
    return calls + _image_calls(target, inventory)


def _image_calls(target: Target, inventory: Inventory) -> list[tuple[str, str]]:
    """The image checks' own calls on the service's image: the registry token for the pull, then ECR's scan
    findings. The image is pushed (and scanned) with a client of its own, so only the checks' calls count."""
    import tempfile
    from pathlib import Path

    import boto3

    from harness.image.ecr import EcrImage, scan_findings, write_authfile
    from harness.image.oci import MANIFEST

    uri = inventory.parts["task_definitions"][0]["containerDefinitions"][0]["image"]
    image = EcrImage.parse(uri)
    if image is None:
        raise DerivationError(f"the service's image {uri} in the emulator is not an ECR image")
    ecr = boto3.client("ecr", region_name=target.region)
    ecr.put_image(repositoryName=image.repository, imageTag=image.tag or "latest",
                  imageManifest=json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "config": {}, "layers": []}))
    ecr.start_image_scan(repositoryName=image.repository, imageId=image.image_id)
    mark = target.recorder.mark()
    with tempfile.TemporaryDirectory() as tmp:
        write_authfile(target, image.registry, Path(tmp) / "auth.json")
    scan_findings(target, image)
    return [(service, operation) for service, operation, _ in target.recorder.since(mark)]


@contextmanager
def _shell_settings_ignored() -> Iterator[None]:
    """Keep the shell's AWS settings out of the derivation: an AWS_ENDPOINT_URL (or an endpoint_url in the
    config file) would send its calls, the provisioning ones included, past the mock to a real endpoint."""
    saved = {name: value for name, value in os.environ.items() if name.startswith("AWS_")}
    for name in saved:
        del os.environ[name]
    os.environ.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                       "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
    try:
        yield
    finally:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            del os.environ[name]
        os.environ.update(saved)


def render(policy: dict[str, Any]) -> str:
    """The policy as committed under plan/iam/: two-space JSON in the order built, so a diff shows a change."""
    return json.dumps(policy, indent=2) + "\n"
