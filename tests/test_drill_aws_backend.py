"""The aws fault backend against moto's server: the plan's prod environment provisioned into it, and the
backend driven through a Target of kind `aws`, so the read-only guard is the one a real account gets.

The module has a moto account of its own (moto keeps its state per process and account), so another
module's prod environment in the same process cannot make discovery ambiguous. What ECS does by itself
and moto does not, a plain (unguarded) client does here, as the platform would: the service's tasks run
(moto starts none for a service), their addresses are registered in its target group, and a stopped task
is replaced. moto's tasks otherwise stop by themselves, a step of their lifecycle per DescribeTasks; the
module holds them at RUNNING while it runs.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs

import pytest
import requests
from moto.backends import get_backend

from harness.drills.backends.aws import AwsBackend, InjectFailed
from harness.drills.model import DrillRefused, DrillSpec
from harness.inventory import Failure, Inventory, take_snapshot
from harness.local.provision import provision
from harness.plan import load_plan
from harness.target import READ_ONLY_PREFIXES, ReadOnlyViolation, Target

PLAN = load_plan(Path(__file__).resolve().parents[1] / "plan" / "dougust.toml")
ENV = "prod"
REGION = PLAN.environment(ENV).region
ACCOUNT = "100000000301"
RUN = "test-run"

DRILL_01 = DrillSpec(id="DRILL-01", title="Database failover", fault="db_failover", probes=("health", "write", "db"),
                     expect={"rto_s": 120, "rpo_s": 300, "max_lost_writes": 0}, timeout_s=1.0)
DRILL_03 = DrillSpec(id="DRILL-03", title="Application failure", fault="task_loss", probes=("health", "service"),
                     expect={"rto_s": 300, "max_error_ratio": 0.05}, timeout_s=1.0)


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

    def start_tasks(self, count: int) -> list[dict[str, Any]]:
        """What ECS does for the service: tasks in its group, each registered in its target group."""
        service = self.client("ecs").describe_services(cluster=self.cluster, services=[self.service])["services"][0]
        tasks = self.client("ecs").run_task(
            cluster=self.cluster, taskDefinition=self.stand_in_task_definition, count=count, launchType="FARGATE",
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
    assert all(e["at"] >= injected_at for e in backend.events(injected_at))
    assert _writes(aws) == [("rds", "RebootDBInstance", "ok")]


def test_drill_01_is_refused_on_a_database_without_a_standby(backend, aws, deployment, journal):
    rds = deployment.client("rds")
    rds.modify_db_instance(DBInstanceIdentifier=deployment.db, MultiAZ=False, ApplyImmediately=True)
    try:
        assert "not Multi-AZ" in backend.plan(DRILL_01)[0]
        with pytest.raises(DrillRefused) as refused:
            backend.preflight(DRILL_01, journal[1])
    finally:
        rds.modify_db_instance(DBInstanceIdentifier=deployment.db, MultiAZ=True, ApplyImmediately=True)
    assert str(refused.value) == (f"database {deployment.db} is not Multi-AZ: a forced failover needs a standby; "
                                  f"refusing")
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
