"""What SMK-10 observes: the service's current deployment and the tasks of the service that stopped.

A revision that starts, passes its health checks and then exits is invisible through the load balancer
(it routes around the dead task, ECS starts another) and ECS's deployment circuit breaker misses it too.
ECS keeps the stopped tasks (an hour or more), with why each stopped and its containers' exit codes;
this module reads them, and the gate's judge (gate.judge_stopped_tasks) decides.

Two sources give the same ServiceTasks: `EcsTasks` asks ECS (DescribeServices for the PRIMARY deployment,
ListTasks desiredStatus=STOPPED, DescribeTasks, DescribeTaskDefinition for which containers are essential);
`StandInTasks` reads the local stand-in's ECS agent, which records every stopped task as ECS does.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import botocore.exceptions

from harness.local.ecs_agent.state import TaskState
from harness.plan import Plan
from harness.service import find_service
from harness.target import Target


@dataclass(frozen=True)
class StoppedTask:
    task: str  # ECS's task id; on the stand-in its slot and process
    task_definition: str  # ARN of the revision it ran
    stop_code: str  # ECS's stopCode: EssentialContainerExited, ServiceSchedulerInitiated, UserInitiated ...
    reason: str  # ECS's stoppedReason
    exit_code: int | None  # the essential container's, None when it has none (it never started, say)
    container: str | None  # that container's name; None on the stand-in, whose task is one process
    started_at: dt.datetime | None
    stopped_at: dt.datetime | None  # None: still stopping


@dataclass(frozen=True)
class ServiceTasks:
    service: str
    task_definition: str  # the current (PRIMARY) deployment's revision
    began: dt.datetime  # when that deployment was made
    read_at: dt.datetime
    stopped: tuple[StoppedTask, ...]
    kept_s: float | None = None  # how long the source keeps a stopped task (ECS: an hour); None: all it saw


ECS_KEEPS_S = 3600.0  # ECS shows a stopped task for at least an hour
GONE = ("ClientException", "InvalidParameterException")  # how ECS answers for a revision it no longer has
STALE_S = 15.0  # the stand-in's agent writes its state every second: older than this, it is not running


def _aware(value: Any) -> dt.datetime | None:
    """A time as ECS gives it (a datetime in the machine's zone from boto3, ISO 8601 from the stand-in), in
    UTC: the judge prints it with a Z."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value) if value else None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class EcsTasks:
    """The plan's service's stopped tasks, read from ECS. The service is found once (by the plan's tags);
    each call reads its deployment and its stopped tasks again."""

    def __init__(self, target: Target, plan: Plan, env: str) -> None:
        self._target, self._plan, self._env = target, plan, env
        self._service: tuple[str, str, str] | None = None  # cluster ARN, service ARN, name
        self._essential: dict[str, tuple[str, ...]] = {}  # task definition ARN -> its essential containers

    def __call__(self) -> ServiceTasks:
        ecs = self._target.client("ecs")
        if self._service is None:
            found = find_service(self._target, self._plan, self._env)
            self._service = found["clusterArn"], found["serviceArn"], found["serviceName"]
        cluster, arn, name = self._service
        described = ecs.describe_services(cluster=cluster, services=[arn])["services"]
        if not described or described[0].get("status") != "ACTIVE":
            raise LookupError(f"service {name} is no longer active")
        primary = next((d for d in described[0].get("deployments", []) if d.get("status") == "PRIMARY"), None)
        if primary is None:
            raise LookupError(f"service {name} has no PRIMARY deployment")
        arns = [task for page in ecs.get_paginator("list_tasks").paginate(
                    cluster=cluster, serviceName=name, desiredStatus="STOPPED") for task in page["taskArns"]]
        tasks: list[dict[str, Any]] = []
        for i in range(0, len(arns), 100):
            tasks += ecs.describe_tasks(cluster=cluster, tasks=arns[i:i + 100])["tasks"]
        # The group keeps to the service's own tasks where serviceName is not applied (moto lists the cluster's).
        stopped = tuple(self._stopped(task) for task in tasks if task.get("group") == f"service:{name}")
        return ServiceTasks(name, primary["taskDefinition"], _aware(primary["createdAt"]) or _now(), _now(), stopped,
                            kept_s=ECS_KEEPS_S)

    def _stopped(self, task: dict[str, Any]) -> StoppedTask:
        essential = self._essential_of(task["taskDefinitionArn"])
        containers = task.get("containers", [])
        container = next((c for c in containers if c.get("name") in essential and "exitCode" in c),
                         next((c for c in containers if "exitCode" in c), None))
        return StoppedTask(task["taskArn"].rsplit("/", 1)[-1], task["taskDefinitionArn"],
                           task.get("stopCode", ""), task.get("stoppedReason", ""),
                           container.get("exitCode") if container else None,
                           container.get("name") if container else None, _aware(task.get("startedAt")),
                           _aware(task.get("stoppedAt") or task.get("executionStoppedAt") or task.get("stoppingAt")))

    def _essential_of(self, task_definition: str) -> tuple[str, ...]:
        """The revision's essential containers; none known when ECS no longer has it (deleted since): the exit
        code is then any container's that has one."""
        if task_definition not in self._essential:  # a revision never changes: asked once
            try:
                described = self._target.client("ecs").describe_task_definition(taskDefinition=task_definition)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in GONE:
                    raise  # a denied or throttled call is not knowledge: SMK-10 could not be observed
                self._essential[task_definition] = ()
            else:
                self._essential[task_definition] = tuple(c["name"] for c in described["taskDefinition"][
                    "containerDefinitions"] if c.get("essential", True))
        return self._essential[task_definition]


class StandInTasks:
    """The stand-in's service's stopped tasks, as its ECS agent recorded them. `state` reads the agent's
    TaskState, None while no agent runs."""

    def __init__(self, state: Callable[[], TaskState | None], where: Path) -> None:
        self._state, self._where = state, where

    def __call__(self) -> ServiceTasks:
        state = self._state()
        if state is None or state.deployment is None:
            raise LookupError(f"the stand-in's ECS agent ({self._where}) runs no deployment: is it up?")
        if state.stopped is None:
            raise LookupError(f"the stand-in's ECS agent ({self._where}) records no stopped tasks (it predates "
                              "them): restart it with 'harness local down' and 'harness local up'")
        age = time.time() - (state.written_at or 0.0)
        if age > STALE_S:
            raise LookupError(f"the stand-in's ECS agent ({self._where}) last wrote its state {age:.0f} s ago: "
                              "it does not run")
        deployment = state.deployment
        stopped = tuple(StoppedTask(f"{t.task} (pid {t.pid})", t.task_definition, t.stop_code, t.stopped_reason,
                                    t.exit_code, None, _aware(t.started_at), _aware(t.stopped_at))
                        for t in state.stopped)
        return ServiceTasks(deployment.service or "the service", deployment.task_definition,
                            _aware(deployment.since) or _now(), _now(), stopped)
