"""The aws fault backend against moto's server: the plan's prod environment provisioned into it, and the
backend driven through a Target of kind `aws`, so the read-only guard is the one a real account gets.

The module has a moto account of its own (moto keeps its state per process and account), so another
module's prod environment in the same process cannot make discovery ambiguous. What ECS does by itself
and moto does not, a plain (unguarded) client does here, as the platform would: the service's tasks run
(moto starts none for a service), their addresses are registered in its target group, and a stopped task
is replaced. moto's tasks otherwise stop by themselves, a step of their lifecycle per DescribeTasks; the
module holds them at RUNNING while it runs.

moto's quirks the restore and rollback tests work around (moto 5.2): a point-in-time restore copies every
attribute of the source and takes only the parameters that are truthy, so MultiAZ=False and
CopyTagsToSnapshot=False are dropped (the copy is Multi-AZ like the source: the tests read what was asked in
the request instead), while Tags given replace the source's; RestoreTime is not checked against anything,
LatestRestorableTime is always "now", a restored instance is available at once and a deleted one gone at
once. ECS's ListTaskDefinitions ignores `sort` and takes familyPrefix as the exact family; UpdateService
changes the service's task definition but neither its primary deployment (still the first one, its
rolloutState as at creation) nor its tasks: the tests play ECS's part there, as for a stopped task.
"""
from __future__ import annotations

import copy
import datetime as dt
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs

import pytest
import requests
from moto.backends import get_backend

from harness.drills.backends.aws import AwsBackend, image_version, restore_id
from harness.drills import judges
from harness.drills.model import (EXPIRY_S, TAG_DRILL, TAG_ENV, TAG_EXPIRES, TAG_RUN, DrillRefused, DrillSpec,
                                  InjectFailed, PreflightFailed, Restored)
from harness.compliance.inventory import Failure, Inventory, take_snapshot
from harness.local.provision import provision
from harness.plan import load_plan
from harness.target import READ_ONLY_PREFIXES, ReadOnlyViolation, Target

PLAN = load_plan(Path(__file__).resolve().parents[2] / "plan" / "dougust.toml")
ENV = "prod"
REGION = PLAN.environment(ENV).region
ACCOUNT = "100000000301"
RUN = "test-run"

DRILL_01 = DrillSpec(id="DRILL-01", title="Database failover", fault="db_failover", probes=("health", "write", "db"),
                     expect={"rto_s": 120, "rpo_s": 300, "max_lost_writes": 0}, timeout_s=1.0)
DRILL_03 = DrillSpec(id="DRILL-03", title="Application failure", fault="task_loss", probes=("health", "service"),
                     expect={"rto_s": 300, "max_error_ratio": 0.05}, timeout_s=1.0)
DRILL_02 = DrillSpec(id="DRILL-02", title="Database restore", fault="db_restore", probes=("db",),
                     expect={"rto_s": 3600, "rpo_s": 300}, timeout_s=5.0)
DRILL_04 = DrillSpec(id="DRILL-04", title="Rollback", fault="rollback", probes=("health", "write"),
                     expect={"rto_s": 300}, timeout_s=1.0)
RESTORE_RUN = "drill-02-20261125T190000-a1b2c3"  # as engine.new_run_id makes them
DSN_TEMPLATE = "postgresql://drill:drill-secret@{host}:{port}/dougust"


def _in_account(target: Target) -> Target:
    """Every client of the target, made from now on, speaks to this module's moto account."""
    def header(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = ACCOUNT
    target.session.events.register("before-sign", header)
    return target


@dataclass
class Deployment:
    plain: Target            # unguarded: the platform's side and the test's own changes
    db: str
    cluster: str
    service: str
    target_group: str
    desired: int
    stand_in_task_definition: str
    inventory: Inventory

    def client(self, service: str) -> Any:
        return self.plain.client(service)

    def running_tasks(self) -> list[dict[str, Any]]:
        ecs = self.client("ecs")
        arns = ecs.list_tasks(cluster=self.cluster, desiredStatus="RUNNING")["taskArns"]
        return ecs.describe_tasks(cluster=self.cluster, tasks=arns)["tasks"] if arns else []

    def start_tasks(self, count: int, task_definition: str | None = None) -> list[dict[str, Any]]:
        """What ECS does for the service: tasks in its group, each registered in its target group."""
        service = self.client("ecs").describe_services(cluster=self.cluster, services=[self.service])["services"][0]
        tasks = self.client("ecs").run_task(
            cluster=self.cluster, taskDefinition=task_definition or self.stand_in_task_definition, count=count,
            launchType="FARGATE",
            group=f"service:{self.service}", startedBy="ecs-svc/stand-in",
            networkConfiguration=service["networkConfiguration"])["tasks"]
        self.client("elbv2").register_targets(TargetGroupArn=self.target_group,
                                              Targets=[{"Id": _address(t), "Port": 3000} for t in tasks])
        return tasks

    def retire(self, task: dict[str, Any]) -> None:
        self.client("elbv2").deregister_targets(TargetGroupArn=self.target_group,
                                                Targets=[{"Id": _address(task), "Port": 3000}])

    def replace_stopped(self) -> None:
        """ECS's side of a stopped task: its target leaves the group and a new task takes its place."""
        running = self.running_tasks()
        addresses = {_address(t) for t in running}
        health = self.client("elbv2").describe_target_health(TargetGroupArn=self.target_group)
        gone = [d["Target"] for d in health["TargetHealthDescriptions"] if d["Target"]["Id"] not in addresses]
        if gone:
            self.client("elbv2").deregister_targets(TargetGroupArn=self.target_group, Targets=gone)
        if len(running) < self.desired:
            self.start_tasks(self.desired - len(running))


def _address(task: dict[str, Any]) -> str:
    return next(d["value"] for a in task["attachments"] for d in a["details"] if d["name"] == "privateIPv4Address")


@pytest.fixture(scope="module")
def tasks_stay_running(moto_endpoint: str) -> Iterator[None]:
    """moto's state manager is one per process: the default comes back when the module ends."""
    state = f"{moto_endpoint}/moto-api/state-manager"
    requests.post(f"{state}/set-transition", timeout=10, json={
        "model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000}}).raise_for_status()
    yield
    requests.post(f"{state}/unset-transition", timeout=10, json={"model_name": "ecs::task"}).raise_for_status()


@pytest.fixture(scope="module")
def deployment(moto_endpoint: str, tasks_stay_running: None) -> Deployment:
    """The plan's prod environment, its service running its desired count with every target registered."""
    plain = _in_account(Target("localstack", REGION, endpoint_url=moto_endpoint))
    assert provision(plain.client, PLAN, ENV).skipped == {}
    found = take_snapshot(plain, PLAN, ENV)
    (db,), (service,) = found.need("db_instances"), found.need("services")
    ecs = plain.client("ecs")
    # moto runs no task for a service, and reports as running the count an update asks for.
    ecs.update_service(cluster=service["clusterArn"], service=service["serviceName"],
                       desiredCount=service["desiredCount"])
    stand_in = ecs.register_task_definition(  # moto sizes a task by its containers' memory
        family="drill-stand-in", requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
        containerDefinitions=[{"name": "backend", "image": "backend:stand-in", "memory": 512}],
    )["taskDefinition"]["taskDefinitionArn"]
    dep = Deployment(plain, db["DBInstanceIdentifier"], service["clusterArn"], service["serviceName"],
                     service["loadBalancers"][0]["targetGroupArn"], service["desiredCount"], stand_in, found)
    dep.start_tasks(dep.desired)
    return dep


@pytest.fixture
def aws(deployment: Deployment, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Target:
    """A target of kind aws, read-only as on a real account, with throwaway keys from the environment."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "drill-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "drill-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return _in_account(Target("aws", REGION, endpoint_url=moto_endpoint))


@pytest.fixture
def backend(aws: Target, deployment: Deployment) -> AwsBackend:
    """Given the module's snapshot, as a run gives the session's: one discovery per module keeps it fast."""
    return AwsBackend(aws, PLAN, ENV, inventory=deployment.inventory, poll_s=0.01, run_id=RUN)


def _ecs_service(deployment: Deployment) -> Any:
    """moto's own record of the service, for what ECS would change and moto does not."""
    return get_backend("ecs")[ACCOUNT][REGION].services[f"{deployment.cluster.split('/')[-1]}:{deployment.service}"]


def _register(deployment: Deployment, family: str, image: str) -> str:
    """A revision as a release registers it: the app container maps the plan's port (3000); moto sizes a
    task by its containers' memory, hence the container's."""
    return deployment.client("ecs").register_task_definition(
        family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
        containerDefinitions=[{"name": "log-router", "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:2.32.0",
                               "memory": 64},
                              {"name": "backend", "image": image, "memory": 448,
                               "portMappings": [{"containerPort": 3000, "protocol": "tcp"}]}],
    )["taskDefinition"]["taskDefinitionArn"]


@pytest.fixture
def releases(deployment: Deployment) -> Iterator[list[tuple[str, str]]]:
    """Two more releases of the service's family, the service pointed at the newer (a plain update, as the
    deploy pipeline makes it): [(previous, its version), (current, its version)]. The service and moto's
    record of its deployments are as before afterwards."""
    ecs = deployment.client("ecs")
    before = ecs.describe_services(cluster=deployment.cluster, services=[deployment.service])["services"][0]
    family = ecs.describe_task_definition(taskDefinition=before["taskDefinition"])["taskDefinition"]["family"]
    registry = "100000000301.dkr.ecr.us-east-1.amazonaws.com:443/dougust-prod-backend"
    made = [(_register(deployment, family, f"{registry}:{version}"), version) for version in ("2026.12.0", "2026.12.1")]
    ecs.update_service(cluster=deployment.cluster, service=deployment.service, taskDefinition=made[-1][0])
    deployments = copy.deepcopy(_ecs_service(deployment).deployments)
    try:
        yield made
    finally:
        ecs.update_service(cluster=deployment.cluster, service=deployment.service,
                           taskDefinition=before["taskDefinition"])
        _ecs_service(deployment).deployments = deployments


@pytest.fixture
def journal() -> tuple[list[tuple[str, dict[str, Any]]], Callable[[str, dict[str, Any]], None]]:
    lines: list[tuple[str, dict[str, Any]]] = []
    return lines, lambda action, detail: lines.append((action, detail))


def _writes(target: Target) -> list[tuple[str, str, str]]:
    return [call for call in target.recorder.calls if not call[1].startswith(READ_ONLY_PREFIXES)]


def _sent(target: Target, service: str, operation: str) -> list[dict[str, list[str]]]:
    """The bodies of the requests of that operation as they went to the endpoint."""
    bodies: list[dict[str, list[str]]] = []

    def keep(request: Any, **_: Any) -> None:
        body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
        bodies.append(parse_qs(body))
    target.client(service).meta.events.register(f"before-send.{service}.{operation}", keep)
    return bodies


# --- the guard ----------------------------------------------------------------------------------------------

def test_outside_a_drill_every_write_through_an_aws_target_is_refused(aws, deployment):
    task = deployment.running_tasks()[0]["taskArn"]
    writes = [lambda: aws.client("rds").reboot_db_instance(DBInstanceIdentifier=deployment.db, ForceFailover=True),
              lambda: aws.client("ecs").stop_task(cluster=deployment.cluster, task=task, reason="no"),
              lambda: aws.client("rds").restore_db_instance_to_point_in_time(
                  SourceDBInstanceIdentifier=deployment.db, TargetDBInstanceIdentifier="no", UseLatestRestorableTime=True),
              lambda: aws.client("rds").delete_db_instance(DBInstanceIdentifier=deployment.db, SkipFinalSnapshot=True),
              lambda: aws.client("ecs").update_service(cluster=deployment.cluster, service=deployment.service,
                                                       taskDefinition=deployment.stand_in_task_definition),
              lambda: aws.client("ec2").create_tags(Resources=["vpc-1"], Tags=[{"Key": "k", "Value": "v"}])]
    for write in writes:
        with pytest.raises(ReadOnlyViolation, match="is a write call; the harness is read-only"):
            write()
    assert aws.recorder.calls == []  # refused before they left the machine
    assert task in {t["taskArn"] for t in deployment.running_tasks()}


def test_allowing_lets_through_exactly_the_named_operations_in_its_block_and_thread(aws, deployment):
    rds, ecs = aws.client("rds"), aws.client("ecs")
    task = deployment.running_tasks()[0]["taskArn"]
    from_another_thread: list[BaseException] = []

    def reboot_elsewhere() -> None:
        try:
            rds.reboot_db_instance(DBInstanceIdentifier=deployment.db)
        except ReadOnlyViolation as exc:
            from_another_thread.append(exc)

    with aws.allowing("RebootDBInstance"):
        with pytest.raises(ReadOnlyViolation, match="ecs.StopTask is a write call"):
            ecs.stop_task(cluster=deployment.cluster, task=task, reason="no")
        worker = threading.Thread(target=reboot_elsewhere)
        worker.start()
        worker.join()
        rds.reboot_db_instance(DBInstanceIdentifier=deployment.db)
    with pytest.raises(ReadOnlyViolation, match="rds.RebootDBInstance is a write call"):
        rds.reboot_db_instance(DBInstanceIdentifier=deployment.db)
    assert len(from_another_thread) == 1
    assert _writes(aws) == [("rds", "RebootDBInstance", "ok")]


# --- plan and preflight -----------------------------------------------------------------------------------

def test_plan_names_what_discovery_found_and_makes_only_read_calls(aws, deployment):
    backend = AwsBackend(aws, PLAN, ENV)  # discovers for itself, through the guarded target
    failover, task_loss = backend.plan(DRILL_01), backend.plan(DRILL_03)
    assert failover[0].startswith(f"reboot RDS instance {deployment.db} with ForceFailover=True (Multi-AZ, "
                                  f"primary in {REGION}")
    cluster, group = deployment.cluster.split("/")[-1], deployment.target_group.split("/")[1]
    assert task_loss[0] == (f"stop one of {deployment.desired} running tasks of service {deployment.service} in "
                            f"cluster {cluster}; wait until running = desired ({deployment.desired}) and every "
                            f"target of target group {group} is healthy")
    assert aws.recorder.calls and _writes(aws) == []


def test_a_fault_the_backend_does_not_know_is_refused(backend):
    restore = DrillSpec(id="DRILL-02", title="Restore", fault="pitr_restore", probes=(), expect={})
    with pytest.raises(DrillRefused, match="DRILL-02: the aws backend cannot inject 'pitr_restore'"):
        backend.plan(restore)


def test_plan_of_a_restore_and_a_rollback_says_what_they_would_make_and_change(aws, deployment, releases):
    backend = AwsBackend(aws, PLAN, ENV, inventory=deployment.inventory)
    source = deployment.client("rds").describe_db_instances(DBInstanceIdentifier=deployment.db)["DBInstances"][0]
    subnet_group, group = source["DBSubnetGroup"]["DBSubnetGroupName"], source["VpcSecurityGroups"][0]["VpcSecurityGroupId"]
    restore = backend.plan(DRILL_02)
    assert restore[0].startswith(f"restore RDS instance {deployment.db} ({source['BackupRetentionPeriod']} days of "
                                 f"backups, restorable up to ")
    assert (f"into a temporary instance {deployment.db}-drill-<run> ({source['DBInstanceClass']}, single-AZ, not "
            f"publicly accessible, no deletion protection) in subnet group {subnet_group} with security groups "
            f"{group}; tagged harness:drill=DRILL-02, harness:run-id=<run id>, harness:env=prod, harness:expires=<start + "
            f"1810 s: the drill's hard timeout for the restore, as long again to verify, 1800 s to delete>, never "
            f"Project=dougust, Environment=prod, so discovery does not see it") in restore[0]
    assert restore[1] == ("wait until it is available, then it cannot be verified from here (no restore DSN "
                          "template): the drill reports it restored, not verified")
    assert restore[2].startswith("rollback: delete the temporary instance (no final snapshot")
    (back, back_version), (forth, forth_version) = [(arn.split("/")[-1], v) for arn, v in releases]
    rollback = backend.plan(DRILL_04)
    assert rollback[0].startswith(f"deploy {back} (version {back_version}) to service {deployment.service} in cluster "
                                  f"{deployment.cluster.split('/')[-1]}, in place of {forth} (version {forth_version})")
    assert rollback[1] == f"rollback: deploy {forth} (version {forth_version}) again and wait the same way"
    assert aws.recorder.calls and _writes(aws) == []


@pytest.mark.parametrize("parts, failures, refusal", [
    ({}, {"db_instances": Failure("error", "rds:DescribeDBInstances failed: AccessDenied: no")},
     "cannot discover db instances of prod: rds:DescribeDBInstances failed: AccessDenied: no"),
    ({"db_instances": []}, {}, "the drill needs exactly one database instance tagged Project=dougust, "
                               "Environment=prod in us-east-1; found 0 (none)"),
    ({"db_instances": [{"DBInstanceIdentifier": "b"}, {"DBInstanceIdentifier": "a"}]}, {},
     "the drill needs exactly one database instance tagged Project=dougust, Environment=prod in us-east-1; "
     "found 2 (a, b)"),
], ids=["discovery failed", "none", "two"])
def test_a_database_discovery_cannot_settle_is_refused_before_any_call(aws, parts, failures, refusal):
    backend = AwsBackend(aws, PLAN, ENV, inventory=Inventory(meta={}, parts=parts, failures=failures))
    with pytest.raises(DrillRefused) as refused:
        backend.preflight(DRILL_01, lambda *_: None)
    assert str(refused.value) == refusal and aws.recorder.calls == []


# --- DRILL-01 ---------------------------------------------------------------------------------------------

def test_drill_01_fails_over_the_multi_az_instance_and_waits_for_it(backend, aws, deployment, journal):
    lines, note = journal
    sent = _sent(aws, "rds", "RebootDBInstance")
    backend.preflight(DRILL_01, note)
    action, found = lines[0]
    assert action == "discovered" and found["db_instance"] == deployment.db
    assert (found["status"], found["multi_az"], found["engine"]) == ("available", True, "postgres")
    injected_at = time.time()
    hit = backend.inject(DRILL_01, note)
    assert hit["db_instance"] == deployment.db and hit["az_before"].startswith(REGION)
    assert _writes(aws) == [("rds", "RebootDBInstance", "ok")]
    assert [(b["DBInstanceIdentifier"], b["ForceFailover"]) for b in sent] == [([deployment.db], ["true"])]
    assert backend.rollback(DRILL_01, note)["ok"] is True
    assert lines[-1][0] == "rollback" and lines[-1][1]["detail"].startswith(f"{deployment.db} available")
    # RDS's own account of it: moto records none for a reboot, so only the instance's earlier events show.
    assert "DB instance created" in [e["message"] for e in backend.events(injected_at - 3600)]
    # moto answers every event whatever StartTime says: the backend's own filter leaves the earlier ones out.
    later = backend.events(injected_at)
    assert "DB instance created" not in [e["message"] for e in later]
    assert all(e["at"] >= injected_at for e in later)
    assert _writes(aws) == [("rds", "RebootDBInstance", "ok")]


def test_drill_01_fails_without_injecting_on_a_database_without_a_standby(backend, aws, deployment, journal):
    rds = deployment.client("rds")
    rds.modify_db_instance(DBInstanceIdentifier=deployment.db, MultiAZ=False, ApplyImmediately=True)
    try:
        assert "not Multi-AZ" in backend.plan(DRILL_01)[0]
        with pytest.raises(PreflightFailed) as failed:
            backend.preflight(DRILL_01, journal[1])
    finally:
        rds.modify_db_instance(DBInstanceIdentifier=deployment.db, MultiAZ=True, ApplyImmediately=True)
    assert str(failed.value) == (f"the standby is not in sync (database {deployment.db} is not Multi-AZ): a failover "
                                 "now would lose acknowledged writes")
    assert _writes(aws) == []


def test_drill_01_fails_without_injecting_while_a_modification_is_pending(backend, aws, deployment, journal):
    """moto reports no PendingModifiedValues; what RDS answers gets them here, as for a change applied at the
    next maintenance window (the Multi-AZ conversion of a single-AZ instance, say)."""
    lines, note = journal

    def pending(parsed: dict[str, Any], **_: Any) -> None:
        for db in parsed.get("DBInstances", []):
            db["PendingModifiedValues"] = {"MultiAZ": True, "DBInstanceClass": "db.t4g.large"}
    aws.client("rds").meta.events.register("after-call.rds.DescribeDBInstances", pending)
    with pytest.raises(PreflightFailed) as failed:
        backend.preflight(DRILL_01, note)
    assert str(failed.value) == (f"the standby is not in sync (database {deployment.db} has pending modifications "
                                 "(DBInstanceClass, MultiAZ)): a failover now would lose acknowledged writes")
    assert lines[0][1]["pending_modifications"] == ["DBInstanceClass", "MultiAZ"]
    aws.client("rds").meta.events.unregister("after-call.rds.DescribeDBInstances", pending)
    backend.preflight(DRILL_01, note)  # nothing pending: in sync
    assert _writes(aws) == []


# --- DRILL-03 ---------------------------------------------------------------------------------------------

def test_drill_03_stops_one_task_of_the_service_and_rollback_waits_for_its_replacement(aws, deployment, journal):
    lines, note = journal
    replaced: list[float] = []

    def ecs_meanwhile(seconds: float) -> None:  # the rollback's wait: ECS replaces the task during it
        replaced.append(seconds)
        deployment.replace_stopped()

    backend = AwsBackend(aws, PLAN, ENV, inventory=deployment.inventory, poll_s=0.01, run_id=RUN,
                         sleep=ecs_meanwhile)
    assert backend.service_state() == (True, f"running {deployment.desired}/{deployment.desired}, "
                                             f"targets healthy {deployment.desired}/{deployment.desired}")
    backend.preflight(DRILL_03, note)
    before = {t["taskArn"] for t in deployment.running_tasks()}
    hit = backend.inject(DRILL_03, note)
    assert hit["task"] in before and hit["running_before"] == deployment.desired
    assert _writes(aws) == [("ecs", "StopTask", "ok")]
    stopped = deployment.client("ecs").describe_tasks(cluster=deployment.cluster, tasks=[hit["task"]])["tasks"][0]
    assert stopped["lastStatus"] == "STOPPED" and stopped["stoppedReason"] == f"harness DR drill DRILL-03 {RUN}"
    assert {t["taskArn"] for t in deployment.running_tasks()} == before - {hit["task"]}
    deployment.retire(stopped)  # its target leaves the group; moto keeps reporting the service's count
    assert backend.service_state() == (False, f"running {deployment.desired}/{deployment.desired}, "
                                              f"targets healthy {deployment.desired - 1}/{deployment.desired}")
    result = backend.rollback(DRILL_03, note)
    assert result["ok"] is True and replaced == [0.01], result
    assert backend.service_state()[0] and _writes(aws) == [("ecs", "StopTask", "ok")]


def test_drill_03_rollback_says_when_the_service_did_not_recover_in_time(backend, aws, deployment, journal):
    backend.preflight(DRILL_03, journal[1])
    hit = backend.inject(DRILL_03, journal[1])
    stopped = deployment.client("ecs").describe_tasks(cluster=deployment.cluster, tasks=[hit["task"]])["tasks"][0]
    deployment.retire(stopped)
    try:
        result = backend.rollback(replace(DRILL_03, timeout_s=0.05), journal[1])
    finally:
        deployment.replace_stopped()
    assert result["ok"] is False
    assert result["detail"].endswith(f"running {deployment.desired}/{deployment.desired}, "
                                     f"targets healthy {deployment.desired - 1}/{deployment.desired}")


def test_drill_03_is_refused_when_the_service_runs_short_of_its_desired_count(backend, aws, deployment, journal):
    # moto has no API for a service short of its count (an update sets running to desired): set it in place.
    service = get_backend("ecs")[ACCOUNT][REGION].services[f"{deployment.cluster.split('/')[-1]}:{deployment.service}"]
    service.running_count = deployment.desired - 1
    try:
        with pytest.raises(DrillRefused, match=f"service {deployment.service} runs {deployment.desired - 1} of "
                                               f"{deployment.desired} desired tasks"):
            backend.preflight(DRILL_03, journal[1])
        assert backend.service_state()[0] is False
    finally:
        service.running_count = deployment.desired
    assert _writes(aws) == []


def test_a_task_that_cannot_be_stopped_is_an_inject_failure_in_one_line(backend, aws, deployment, journal):
    ecs = deployment.client("ecs")
    tasks = deployment.running_tasks()
    for task in tasks:
        ecs.stop_task(cluster=deployment.cluster, task=task["taskArn"], reason="test: none left")
        deployment.retire(task)
    try:
        with pytest.raises(InjectFailed, match=f"^service {deployment.service} has no running task to stop$"):
            backend.inject(DRILL_03, journal[1])
    finally:
        deployment.start_tasks(len(tasks))
    assert _writes(aws) == []


# --- stop alarms and rollback without a fault ----------------------------------------------------------------

def test_stop_alarms_are_checked_in_preflight_and_watched_during_the_drill(aws, deployment, journal):
    assert AwsBackend(aws, PLAN, ENV).alarms_firing() == [] and aws.recorder.calls == []
    alarm = f"dougust-{ENV}-rds-cpu-high"
    assert alarm in {a["AlarmName"] for a in deployment.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    with pytest.raises(DrillRefused, match="stop alarm\\(s\\) no-such-alarm not found"):
        AwsBackend(aws, PLAN, ENV, stop_alarms=[alarm, "no-such-alarm"],
                   inventory=deployment.inventory).preflight(DRILL_01, journal[1])
    watched = AwsBackend(aws, PLAN, ENV, stop_alarms=[alarm], inventory=deployment.inventory)
    watched.preflight(DRILL_01, journal[1])
    assert watched.alarms_firing() == []
    cw = deployment.client("cloudwatch")
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")
    try:
        assert watched.alarms_firing() == [alarm]
        with pytest.raises(DrillRefused, match=f"stop alarm\\(s\\) {alarm} already in ALARM"):
            watched.preflight(DRILL_01, journal[1])
    finally:
        cw.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="test")
    assert _writes(aws) == []


def test_rollback_after_a_refused_preflight_has_nothing_to_undo(backend, aws, journal):
    assert backend.rollback(DRILL_01, journal[1]) == {"ok": True, "detail": "no fault was injected; nothing to undo"}
    assert aws.recorder.calls == []


# --- DRILL-02 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, run_id, ident", [
    ("dougust-prod-db", RESTORE_RUN, "dougust-prod-db-drill-a1b2c3"),
    ("Prod_DB.Main-Instance-With-A-Very-Long-Name", "drill-02-20261125T190000-A1B2C3",
     "prod-db-main-instance-with-a-v-drill-a1b2c3"),
    ("9db", "r--x_y", "d-9db-drill-r-x-y"),
], ids=["plan's name", "long and odd", "digit first"])
def test_a_restored_instance_is_named_as_rds_allows(source, run_id, ident):
    assert restore_id(source, run_id) == ident


@pytest.mark.parametrize("image, version", [
    ("dougust-prod-backend:2026.12.0", "2026.12.0"),
    ("100000000301.dkr.ecr.us-east-1.amazonaws.com:443/dougust-prod-backend", "latest"),
    ("registry:5000/team/dougust-prod-backend:2026.12.1", "2026.12.1"),
    ("dougust-prod-backend@sha256:0123abcd", "latest"),
    ("dougust-prod-backend:2026.12.1@sha256:0123abcd", "2026.12.1"),
], ids=["tag", "registry port, no tag", "registry port and tag", "digest", "tag and digest"])
def test_a_revision_s_version_is_its_image_tag(image, version):
    assert image_version(image) == version


def _instance(deployment: Deployment, ident: str) -> dict[str, Any] | None:
    try:
        return deployment.client("rds").describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
    except deployment.client("rds").exceptions.DBInstanceNotFoundFault:
        return None


def _database(deployment: Deployment, ident: str, tags: dict[str, str]) -> str:
    """An instance made outside the backend (a leftover of another run, or someone else's)."""
    deployment.client("rds").create_db_instance(
        DBInstanceIdentifier=ident, Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="someone", MasterUserPassword="not-a-drill-1", Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return ident


def test_drill_02_preflight_needs_backups_to_restore_from(backend, aws, deployment, journal):
    lines, note = journal
    backend.preflight(DRILL_02, note)
    action, found = lines[0]
    assert action == "discovered" and found["db_instance"] == deployment.db and found["backup_retention_days"] >= 1
    assert found["latest_restorable_time"].endswith("Z")
    rds = deployment.client("rds")
    rds.modify_db_instance(DBInstanceIdentifier=deployment.db, BackupRetentionPeriod=0, ApplyImmediately=True)
    try:
        with pytest.raises(DrillRefused) as refused:
            backend.preflight(DRILL_02, note)
    finally:
        rds.modify_db_instance(DBInstanceIdentifier=deployment.db, BackupRetentionPeriod=found["backup_retention_days"],
                               ApplyImmediately=True)
    assert str(refused.value) == (f"database {deployment.db} keeps no automated backups (retention 0 days): a "
                                  f"point-in-time restore needs them; refusing")
    assert _writes(aws) == []


def test_drill_02_restores_into_a_tagged_single_az_instance_that_discovery_does_not_see_and_discard_removes_it(
        aws, deployment, journal):
    lines, note = journal
    backend = AwsBackend(aws, PLAN, ENV, inventory=deployment.inventory, poll_s=0.01, restore_dsn_template=DSN_TEMPLATE)
    sent = _sent(aws, "rds", "RestoreDBInstanceToPointInTime")
    source = _instance(deployment, deployment.db)
    backend.preflight(DRILL_02, note)
    lines.clear()
    expires = time.time() + EXPIRY_S
    point = time.time() + 0.3  # a moment RDS has not archived yet: the restore waits for it
    restored = backend.restore(DRILL_02, note, point, RESTORE_RUN, expires)
    try:
        made = _instance(deployment, restored.name)
        assert restored.name == restore_id(deployment.db, RESTORE_RUN) == f"{deployment.db}-drill-a1b2c3"
        host = made["Endpoint"]["Address"]
        assert restored.dsn == f"postgresql://drill:drill-secret@{host}:5432/dougust"
        assert restored.restore_point == point
        assert restored.detail["endpoint"] == host and restored.detail["port"] == 5432
        assert restored.detail["source"] == deployment.db
        expected_tags = {TAG_DRILL: "DRILL-02", TAG_RUN: RESTORE_RUN, TAG_ENV: ENV,
                         TAG_EXPIRES: dt.datetime.fromtimestamp(expires, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        assert {t["Key"]: t["Value"] for t in made["TagList"]} == expected_tags  # not the plan's Project/Environment
        assert made["DBInstanceStatus"] == "available" and made["DeletionProtection"] is False
        assert made["PubliclyAccessible"] is False and made["DBInstanceClass"] == source["DBInstanceClass"]
        assert made["DBSubnetGroup"]["DBSubnetGroupName"] == source["DBSubnetGroup"]["DBSubnetGroupName"]
        assert made["VpcSecurityGroups"] == source["VpcSecurityGroups"]
        # What was asked: moto keeps the source's Multi-AZ and CopyTagsToSnapshot whatever the request says.
        (body,) = sent
        assert {k: body[k] for k in ("MultiAZ", "DeletionProtection", "PubliclyAccessible", "CopyTagsToSnapshot")} == {
            "MultiAZ": ["false"], "DeletionProtection": ["false"], "PubliclyAccessible": ["false"],
            "CopyTagsToSnapshot": ["false"]}
        asked = dt.datetime.fromisoformat(body["RestoreTime"][0].replace("Z", "+00:00")).timestamp()
        assert abs(asked - point) < 0.001
        assert [a for a, _ in lines] == ["restore point", "restore point", "restore started", "restoring", "restored"]
        (_, waiting), (_, reached) = lines[:2]
        assert waiting["state"].startswith(f"{deployment.db} restorable up to ") and reached["waited_s"] >= 0.2
        # The nightly compliance run sees one database, not the drill's as a second one.
        found = take_snapshot(deployment.plain, PLAN, ENV).need("db_instances")
        assert [d["DBInstanceIdentifier"] for d in found] == [deployment.db]
    finally:
        result = backend.discard(restored, note)
    assert result == {"ok": True, "detail": f"{restored.name} deleted"}
    assert _instance(deployment, restored.name) is None and _instance(deployment, deployment.db) is not None
    assert lines[-1] == ("discarded", {"db_instance": restored.name, **result})
    assert _writes(aws) == [("rds", "RestoreDBInstanceToPointInTime", "ok"), ("rds", "DeleteDBInstance", "ok")]


def test_drill_02_gives_up_in_one_line_when_rds_does_not_archive_past_the_restore_point(backend, aws, deployment, journal):
    point = time.time() + 3600
    with pytest.raises(InjectFailed) as failed:
        backend.restore(replace(DRILL_02, timeout_s=0.05), journal[1], point, RESTORE_RUN, time.time() + EXPIRY_S)
    message = str(failed.value)
    assert message.startswith(f"restore point {dt.datetime.fromtimestamp(point, dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} "
                              f"not restorable after 0 s ({deployment.db} restorable up to ")
    assert "\n" not in message and _writes(aws) == []
    # The drill's undo then finds nothing to remove, and says so.
    assert backend.discard(Restored(RESTORE_RUN, None, point, {"run_id": RESTORE_RUN}), journal[1]) == {
        "ok": True, "detail": f"nothing to remove: no database instance {RESTORE_RUN}"}
    assert _writes(aws) == []


def test_drill_02_a_restore_rds_refuses_is_an_inject_failure_in_one_line(backend, aws, deployment, journal):
    in_the_way = _database(deployment, restore_id(deployment.db, RESTORE_RUN), {"owner": "someone else"})
    point = time.time() - 60
    try:
        with pytest.raises(InjectFailed) as failed:
            backend.restore(DRILL_02, journal[1], point, RESTORE_RUN, time.time() + EXPIRY_S)
        # The drill's undo: the backend made nothing, and the instance in the way is not its to remove.
        undone = backend.discard(Restored(RESTORE_RUN, None, point, {"run_id": RESTORE_RUN}), journal[1])
        assert _instance(deployment, in_the_way) is not None
    finally:
        deployment.client("rds").delete_db_instance(DBInstanceIdentifier=in_the_way, SkipFinalSnapshot=True)
    assert str(failed.value) == (f"restoring {deployment.db} to "
                                 f"{dt.datetime.fromtimestamp(point, dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}: "
                                 f"RestoreDBInstanceToPointInTime failed: DBInstanceAlreadyExists: DB instance already exists")
    assert undone == {"ok": True, "detail": f"nothing to remove: no database instance {RESTORE_RUN}"}
    assert _writes(aws) == [("rds", "RestoreDBInstanceToPointInTime", "DBInstanceAlreadyExists")]


def test_discard_removes_what_the_restore_made_when_the_drill_got_nothing_back(backend, aws, deployment, journal):
    restored = backend.restore(DRILL_02, journal[1], time.time() - 60, RESTORE_RUN, time.time() + EXPIRY_S)
    assert restored.dsn is None  # no DSN template: the drill reports it restored, not verified
    # As the engine calls it when restore raised after its call reached RDS: only the run's id is known.
    result = backend.discard(Restored(RESTORE_RUN, None, 0.0, {"run_id": RESTORE_RUN}), journal[1])
    assert result == {"ok": True, "detail": f"{restored.name} deleted"} and _instance(deployment, restored.name) is None


def test_discard_never_deletes_an_instance_without_the_drill_tag(backend, aws, deployment, journal):
    lines, note = journal
    look_alike = _database(deployment, f"{deployment.db}-drill-ffffff", {"Project": "dougust"})
    try:
        for name in (deployment.db, look_alike):
            assert backend.discard(Restored(name, None, 0.0), note) == {
                "ok": False, "detail": f"refused to delete {name}: it has no harness:drill tag, so no drill made it"}
        assert _instance(deployment, deployment.db) and _instance(deployment, look_alike)
    finally:
        deployment.client("rds").delete_db_instance(DBInstanceIdentifier=look_alike, SkipFinalSnapshot=True)
    assert [a for a, _ in lines] == ["discard refused", "discard refused"]
    assert _writes(aws) == []


def test_sweep_removes_its_environment_s_expired_drill_instances_only(backend, aws, deployment, journal):
    lines, note = journal
    now = time.time()

    def iso(epoch: float) -> str:
        return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def drill(run: str, **more: str) -> dict[str, str]:
        return {TAG_DRILL: "DRILL-02", TAG_RUN: run, **more}

    made = [_database(deployment, "dougust-prod-db-drill-aaaaaa", drill("run-a", **{TAG_ENV: ENV, TAG_EXPIRES: iso(now - 60)})),
            _database(deployment, "dougust-prod-db-drill-bbbbbb", drill("run-b", **{TAG_ENV: ENV, TAG_EXPIRES: iso(now + 3600)})),
            _database(deployment, "dougust-prod-db-drill-cccccc", drill("run-c", **{TAG_ENV: ENV})),
            _database(deployment, "dougust-prod-db-drill-dddddd", {"Project": "dougust", "Environment": "prod"}),
            _database(deployment, "dougust-stag-db-drill-eeeeee",
                      drill("run-e", **{TAG_ENV: "staging", TAG_EXPIRES: iso(now - 60)})),
            _database(deployment, "dougust-prod-db-drill-ffffff",
                      drill("run-f", **{TAG_ENV: ENV, TAG_EXPIRES: "tomorrow, after verification"}))]
    try:
        found = {i["name"]: i for i in backend.sweep(now, note, ENV)}
        assert found.pop(made[0]) == {"name": made[0], "run_id": "run-a", "drill": "DRILL-02", "expires": iso(now - 60),
                                      "expired": True, "removed": True,
                                      "detail": f"expired {iso(now - 60)}: {made[0]} deleted"}
        assert found.pop(made[1]) == {"name": made[1], "run_id": "run-b", "drill": "DRILL-02", "expires": iso(now + 3600),
                                      "expired": False, "removed": False,
                                      "detail": f"kept: not expired (expires {iso(now + 3600)})"}
        # No expiry, or one that cannot be read: not this sweep's to delete, reported.
        assert found.pop(made[2])["detail"].startswith("kept, not this sweep's to delete: its harness:expires tag (None)")
        unreadable = found.pop(made[5])
        assert unreadable["removed"] is False and unreadable["expired"] is False
        assert "('tomorrow, after verification') cannot be read" in unreadable["detail"]
        # Another environment's, expired: kept, named.
        assert found.pop(made[4])["detail"] == "kept: of environment 'staging', not of 'prod' (--all-envs sweeps every environment)"
        assert found == {}  # neither the look-alike without the drill tag nor the environment's database
        assert [_instance(deployment, i) is not None for i in made] == [False, True, True, True, True, True]
        assert _writes(aws) == [("rds", "DeleteDBInstance", "ok")]
        # Long after, every environment (--all-envs): what has a readable expiry goes; still nothing else.
        later = backend.sweep(now + 2 * EXPIRY_S, note, None)
        assert sorted((i["name"], i["removed"]) for i in later) == sorted([
            (made[4], True), (made[1], True), (made[2], False), (made[5], False)])
        assert [_instance(deployment, i) is not None for i in made] == [False, False, True, True, False, True]
        assert _instance(deployment, deployment.db) is not None
        assert ("swept", next(i for i in later if i["name"] == made[1])) in lines
    finally:
        for ident in made:
            if _instance(deployment, ident):
                deployment.client("rds").delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True)


def test_the_restore_expiry_covers_verification_and_deletion_so_no_sweep_takes_a_restore_being_verified(
        aws, deployment, journal):
    """The expiry the engine gives a restore (judges.restore_expiry) is past the restore, its verification
    and its deletion: a sweep run meanwhile, even of every environment, keeps it."""
    lines, note = journal
    backend = AwsBackend(aws, PLAN, ENV, inventory=deployment.inventory, poll_s=0.01, delete_timeout_s=600.0)
    started = time.time()
    expires = judges.restore_expiry(started, DRILL_02.timeout_s, backend.discard_s)
    assert expires - started == 2 * DRILL_02.timeout_s + 600.0
    restored = backend.restore(DRILL_02, note, started - 60, RESTORE_RUN, expires)
    try:
        # The drill's hard timeout has passed, the restore is still being verified: kept.
        during = backend.sweep(started + DRILL_02.timeout_s + 1, note, None)
        assert [(i["name"], i["removed"]) for i in during] == [(restored.name, False)]
        assert _instance(deployment, restored.name) is not None
        after = backend.sweep(expires + 1, note, ENV)
        assert [(i["name"], i["removed"]) for i in after] == [(restored.name, True)]
    finally:
        if _instance(deployment, restored.name):
            deployment.client("rds").delete_db_instance(DBInstanceIdentifier=restored.name, SkipFinalSnapshot=True)


# --- DRILL-04 ---------------------------------------------------------------------------------------------

def test_drill_04_finds_the_previous_active_revision_and_its_version(backend, aws, deployment, journal, releases):
    (previous, previous_version), (current, current_version) = releases
    revs = backend.revisions()
    assert (revs.current, revs.current_version, revs.previous, revs.previous_version) == (
        current, current_version, previous, previous_version)
    lines, note = journal
    backend.preflight(DRILL_04, note)
    assert lines[0] == ("revisions", {"current": current, "current_version": "2026.12.1", "previous": previous,
                                      "previous_version": "2026.12.0"})
    # A deregistered (INACTIVE) revision is no place to go back to: the one before it is.
    deployment.client("ecs").deregister_task_definition(taskDefinition=previous)
    family, revision = previous.split("/")[-1].split(":")
    assert backend.revisions().previous == previous.rsplit(":", 1)[0] + f":{int(revision) - 1}"
    assert _writes(aws) == []


def test_drill_04_is_refused_in_one_line_when_the_family_has_no_earlier_revision(backend, aws, deployment, journal):
    ecs = deployment.client("ecs")
    before = ecs.describe_services(cluster=deployment.cluster, services=[deployment.service])["services"][0]
    solo = _register(deployment, "dougust-prod-first-release", "dougust-prod-backend:2026.12.0")
    ecs.update_service(cluster=deployment.cluster, service=deployment.service, taskDefinition=solo)
    try:
        with pytest.raises(DrillRefused) as refused:
            backend.preflight(DRILL_04, journal[1])
        assert "preflight will refuse: task definition family" in backend.plan(DRILL_04)[0]
    finally:
        ecs.update_service(cluster=deployment.cluster, service=deployment.service, taskDefinition=before["taskDefinition"])
    assert str(refused.value) == ("task definition family dougust-prod-first-release has no ACTIVE revision before 1: "
                                  "there is nothing to roll back to")
    assert _writes(aws) == []


def test_drill_04_deploys_the_previous_revision_and_sees_when_every_task_runs_it(backend, aws, deployment, journal,
                                                                                 releases):
    lines, note = journal
    (previous, _), (current, _) = releases
    rev, desired = previous.rsplit(":", 1)[1], deployment.desired
    backend.deploy(previous, note)
    assert _writes(aws) == [("ecs", "UpdateService", "ok")]
    assert lines == [("deploy", {"service": deployment.service, "task_definition": previous,
                                 "service_task_definition": previous})]
    # moto moves the service, not its primary deployment (still the service's first) nor its tasks: not yet.
    first = _ecs_service(deployment).deployments[0]["taskDefinition"].split("/")[-1]
    assert backend.deployed(previous) == (False, f"on rev {rev}: 0/{desired} tasks, targets healthy {desired}/{desired}, "
                                                 f"the primary deployment is {first}, rollout IN_PROGRESS, "
                                                 f"{desired} tasks on other revisions")
    old = deployment.running_tasks()
    ecs = deployment.client("ecs")
    try:
        # ECS's part: the new revision's tasks in place of the old, the deployment completed.
        deployment.start_tasks(desired, previous)
        for task in old:
            ecs.stop_task(cluster=deployment.cluster, task=task["taskArn"], reason="replaced by the deployment")
            deployment.retire(task)
        primary = _ecs_service(deployment).deployments[0]
        primary.update(taskDefinition=previous, rolloutState="COMPLETED")
        assert backend.deployed(previous) == (True, f"on rev {rev}: {desired}/{desired} tasks, "
                                                    f"targets healthy {desired}/{desired}")
        done, line = backend.deployed(current)
        assert not done and line.startswith(f"on rev {current.rsplit(':', 1)[1]}: 0/{desired} tasks") and (
            f"the service is on {previous.split('/')[-1]}" in line)
    finally:
        for task in deployment.running_tasks():
            ecs.stop_task(cluster=deployment.cluster, task=task["taskArn"], reason="test: back to the stand-in")
            deployment.retire(task)
        deployment.start_tasks(desired)
    assert _writes(aws) == [("ecs", "UpdateService", "ok")]
