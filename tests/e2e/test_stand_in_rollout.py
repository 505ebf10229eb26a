"""The stand-in's ECS agent rolls the service from one task definition revision to another as ECS's rolling
deployment does (minimumHealthyPercent 100, maximumPercent 200), which DRILL-04 (rollback) relies on: one
stand-in of its own (env dev, 2 tasks), provisioned with a deploy history of two revisions.

- The emulator holds the family's previous revision (image tag PREVIOUS_IMAGE_TAG) and the current one, and
  the service and its tasks run the current one ("latest").
- A rollback to the previous revision through the ECS API, then a roll forward again: each time every task
  ends on the revision the service names, `/api/version` through HAProxy answers its version from every
  task, and a client through HAProxy at about 20 requests/s all along sees no request fail; the agent's
  tasks in the target group never number fewer than the desired count.
- A revision whose tasks fail their health check from birth (HARNESS_FAULTS in its container environment,
  as a bad image would): the old tasks keep serving, the deployment does not roll, the never-healthy task
  is replaced; back on the good revision the service recovers.

About 60 s on an idle machine, a third of it the stand-in's cold up. The agent's rolling steps alone, with
placeholder tasks (instant): within maximumPercent, the fallback when no slot is free, the retries.
"""
from __future__ import annotations

import http.cookiejar
import json
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import requests

from support.stand_in import HttpLoop, stand_in

from support.waiting import wait_for
from harness.local.stand_in import StandIn
from harness.local.provision import CURRENT_IMAGE_TAG, PREVIOUS_IMAGE_TAG
from harness.local.ecs_agent.rollout import HEALTHY_WITHIN_S, Rollout, Service, TaskSpec
from harness.local.ecs_agent.state import TaskRecord, TaskState

pytestmark = pytest.mark.stand_in

DESIRED = 2  # ECS-09 for dev
RATE_HZ = 20.0
ROLL_WITHIN_S = 45.0
BAD_TAG = "2026.11.2"
HOLD_S = 10.0  # how long the old tasks must keep serving beside a revision that never gets healthy


@pytest.fixture(scope="module")
def plane() -> Iterator[StandIn]:
    with stand_in("dg-roll-", "dev") as plane:
        yield plane


class Ecs:
    """The plan's service in the stand-in's emulator, and what the agent says of it."""

    def __init__(self, plane: StandIn) -> None:
        self.plane = plane
        self.client = plane.target.client("ecs")
        self.cluster = self.client.list_clusters()["clusterArns"][0]
        self.arn = self.client.list_services(cluster=self.cluster)["serviceArns"][0]

    def service(self) -> dict[str, Any]:
        return self.client.describe_services(cluster=self.cluster, services=[self.arn])["services"][0]

    def task_definition(self, arn: str) -> dict[str, Any]:
        return self.client.describe_task_definition(taskDefinition=arn)["taskDefinition"]

    def revisions(self) -> list[str]:
        """The ACTIVE revisions of the service's family, oldest first."""
        family = self.task_definition(self.service()["taskDefinition"])["family"]
        arns = [a for a in self.client.list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"]
                if a.rsplit("/", 1)[1].rsplit(":", 1)[0] == family]
        return sorted(arns, key=lambda a: int(a.rsplit(":", 1)[1]))

    def update(self, task_definition: str) -> None:
        self.client.update_service(cluster=self.cluster, service=self.arn, taskDefinition=task_definition)

    def agent(self) -> TaskState:
        return TaskState.read(self.plane.root)

    def in_service(self) -> list[TaskRecord]:
        """The agent's tasks in the target group."""
        return [t for t in self.agent().tasks if t.registered and not t.draining]

    def rolled_to(self, task_definition: str, version: str) -> bool:
        state = self.agent()
        deployment, tasks = state.deployment, [t for t in state.tasks if not t.draining]
        return (deployment is not None and deployment.task_definition == task_definition and deployment.rolled
                and len(tasks) == DESIRED and all(t.registered and t.running and t.version == version
                                                  and t.task_definition == task_definition for t in tasks))

    def failed_tasks(self) -> int:
        """The new tasks the agent replaced in its current deployment for not getting healthy."""
        deployment = self.agent().deployment
        return deployment.failed_tasks if deployment else 0

    def seen(self) -> str:
        state = self.agent()
        return (f"service on {self.service()['taskDefinition']}; deployment {state.deployment}; tasks "
                f"{[(t.task, t.version, t.registered, t.draining) for t in state.tasks]}; "
                f"HAProxy {self.plane.alb.status()}")


class Client(HttpLoop):
    """One client through HAProxy at RATE_HZ on `path` (conftest.HttpLoop); beside it, the agent's tasks in
    the target group and the servers HAProxy counts UP are counted, so the fewest there were during the run
    is known."""

    def __init__(self, plane: StandIn, ecs: Ecs, path: str) -> None:
        super().__init__(plane.urls["https"] + path, str(plane.ca_file), RATE_HZ)
        self.ecs, self.alb = ecs, plane.alb
        self.fewest_in_service = self.fewest_up = DESIRED
        self.threads.append(threading.Thread(target=self._count, daemon=True))

    def _count(self) -> None:
        while not self.stop.is_set():
            try:
                self.fewest_in_service = min(self.fewest_in_service, len(self.ecs.in_service()))
                up = sum(state == "UP" for state in self.alb.status()["servers"].values())
                self.fewest_up = min(self.fewest_up, up)
            except (OSError, ValueError):  # HAProxy's stats not answering (tasks.json is never half-written)
                pass
            self.stop.wait(0.1)

    def summary(self) -> str:
        return (f"{len(self.answers)} answers, {len(self.errors)} failed {self.errors[:5]}; "
                f"fewest tasks in service {self.fewest_in_service}, UP in HAProxy {self.fewest_up}")


def versions_through_the_alb(plane: StandIn, requests_: int = 12) -> dict[str, set[str]]:
    """Task -> the versions `/api/version` reported through HAProxy, round robin without stickiness."""
    seen: dict[str, set[str]] = {}
    with requests.Session() as session:
        session.verify, session.trust_env = str(plane.ca_file), False
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        for _ in range(requests_):
            body = session.get(plane.urls["https"] + "/api/version", timeout=5).json()
            seen.setdefault(body["task"], set()).add(body["version"])
    return seen


def roll(plane: StandIn, ecs: Ecs, task_definition: str, version: str,
         record_property: Callable[[str, object], None], name: str) -> None:
    """Move the service to `task_definition` under a client at RATE_HZ; every task ends on it, no request fails."""
    with Client(plane, ecs, "/api/version") as client:
        time.sleep(0.5)  # the client's first requests reach the tasks being replaced
        ecs.update(task_definition)
        took = wait_for(lambda: ecs.rolled_to(task_definition, version), ROLL_WITHIN_S, ecs.seen)
        rolled = time.time()
        time.sleep(1.0)
    record_property(f"{name}_s", round(took, 1))
    record_property(f"{name}_requests", len(client.answers))
    record_property(f"{name}_failed", len(client.errors))
    print(f"{name}: rolled to {version} in {took:.1f} s; {client.summary()}")
    assert client.errors == [], client.summary()
    assert client.fewest_in_service >= DESIRED and client.fewest_up >= DESIRED, client.summary()
    assert {a[3] for a in client.answers if a[0] > rolled} == {version}  # once rolled, only it answers
    in_service = {t.task for t in ecs.in_service()}
    seen = versions_through_the_alb(plane)
    assert set(seen) == in_service and all(v == {version} for v in seen.values()), (seen, ecs.seen())


def test_the_service_has_a_deploy_history_and_runs_the_current_revision(plane: StandIn) -> None:
    ecs = Ecs(plane)
    revisions = ecs.revisions()
    assert len(revisions) >= 2, revisions
    assert ecs.service()["taskDefinition"] == revisions[-1]
    images = [ecs.task_definition(arn)["containerDefinitions"][0]["image"] for arn in revisions[-2:]]
    assert [image.rsplit(":", 1)[1] for image in images] == [PREVIOUS_IMAGE_TAG, CURRENT_IMAGE_TAG]
    previous, current = (ecs.task_definition(arn) for arn in revisions[-2:])
    for td in (previous, current):  # the revisions differ by the image's tag alone
        for key in ("revision", "taskDefinitionArn", "registeredAt"):
            td.pop(key, None)
        td["containerDefinitions"][0]["image"] = td["containerDefinitions"][0]["image"].rsplit(":", 1)[0]
    assert previous == current
    assert ecs.rolled_to(revisions[-1], CURRENT_IMAGE_TAG), ecs.seen()
    seen = versions_through_the_alb(plane)
    assert set(seen) == {t.task for t in ecs.in_service()} and all(v == {CURRENT_IMAGE_TAG} for v in seen.values())


def test_rollback_to_the_previous_revision_and_forward_again_drops_no_request(
        plane: StandIn, record_property: Callable[[str, object], None]) -> None:
    ecs = Ecs(plane)
    previous, current = ecs.revisions()[-2:]
    roll(plane, ecs, previous, PREVIOUS_IMAGE_TAG, record_property, "rollback")
    assert ecs.service()["taskDefinition"] == previous
    roll(plane, ecs, current, CURRENT_IMAGE_TAG, record_property, "roll_forward")


def test_a_revision_that_never_gets_healthy_leaves_the_old_tasks_serving(
        plane: StandIn, record_property: Callable[[str, object], None]) -> None:
    ecs = Ecs(plane)
    good = ecs.service()["taskDefinition"]
    assert ecs.rolled_to(good, CURRENT_IMAGE_TAG), ecs.seen()
    old_tasks = {t.task: t.pid for t in ecs.in_service()}
    current = ecs.task_definition(good)
    container = current["containerDefinitions"][0]
    container["image"] = container["image"].rsplit(":", 1)[0] + f":{BAD_TAG}"
    container["environment"].append({"name": "HARNESS_FAULTS", "value": json.dumps({"health_down": True})})
    keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions",
            "requiresCompatibilities", "cpu", "memory")
    bad = ecs.client.register_task_definition(**{k: current[k] for k in keep})["taskDefinition"]["taskDefinitionArn"]

    with Client(plane, ecs, "/api/health") as client:
        ecs.update(bad)
        # The bad revision's task starts beside the old ones and fails its health check.
        wait_for(lambda: any(t.task_definition == bad and t.running for t in ecs.agent().tasks), 10, ecs.seen)
        held = time.monotonic()
        # Until it has been given up and started again, and at least HOLD_S: nothing of the old service goes.
        wait_for(lambda: (ecs.failed_tasks() >= 1 and time.monotonic() - held >= HOLD_S),
                 HEALTHY_WITHIN_S + 15, ecs.seen)
        held_s = time.monotonic() - held
        state = ecs.agent()
        assert state.deployment is not None, ecs.seen()
        assert state.deployment.task_definition == bad and state.deployment.rolled is False, ecs.seen()
        assert {t.task: t.pid for t in ecs.in_service()} == old_tasks, ecs.seen()
        assert all(t.version == CURRENT_IMAGE_TAG for t in ecs.in_service())
        assert not any(t.registered for t in state.tasks if t.task_definition == bad), ecs.seen()
        assert client.errors == [], client.summary()
        replaced = state.deployment.failed_tasks

        # Back on the good revision, which the old tasks run: the bad task goes and the deployment has rolled.
        ecs.update(good)
        recovered = wait_for(lambda: ecs.rolled_to(good, CURRENT_IMAGE_TAG) and len(ecs.agent().tasks) == DESIRED,
                             ROLL_WITHIN_S, ecs.seen)
    assert {t.task: t.pid for t in ecs.in_service()} == old_tasks, ecs.seen()
    assert client.errors == [], client.summary()
    assert client.fewest_in_service >= DESIRED and client.fewest_up >= DESIRED, client.summary()
    record_property("bad_revision_held_s", round(held_s, 1))
    record_property("bad_revision_failed_tasks", replaced)
    record_property("recovered_s", round(recovered, 1))
    print(f"bad revision: old tasks kept serving {held_s:.1f} s, {replaced} new task(s) replaced; "
          f"recovered in {recovered:.1f} s; {client.summary()}")


# --- the rolling steps, without processes ------------------------------------------------------------------

class FakeTask:
    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class Agent(Rollout[FakeTask]):
    """The agent's rolling decisions alone: a started task is a placeholder, healthy when the test says so."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots, lambda slot, spec: FakeTask(), self.stopped_by_agent)

    @staticmethod
    def stopped_by_agent(slot: int, task: FakeTask) -> None:
        if task.returncode is None:
            task.returncode = -15  # SIGTERM

    def poll(self, service: Service) -> None:
        """One poll as the supervisor runs it, with every started task healthy at once and every drain immediate."""
        self.converge(service)
        self.registered |= set(self.active)
        self.finish_draining(None)


def spec(name: str) -> TaskSpec:
    return TaskSpec(f"arn:aws:ecs:eu-west-1:1:task-definition/backend:{name}", {}, name, 512)


@pytest.mark.parametrize("slots, max_percent, most_tasks", [(10, 200, 4), (2, 200, 2), (4, 100, 2)])
def test_a_roll_keeps_the_desired_count_in_service_and_within_maximum_percent(
        slots: int, max_percent: int, most_tasks: int) -> None:
    """With room for a new task beside the old ones, the service never has fewer than its 2 tasks in the
    target group, and at most 4 run (200 %: an old one draining, one old and one new serving, the next new
    one starting); with every slot busy (2 slots) or no room allowed (maximumPercent 100) it falls back to
    stop-then-start, one task at a time, never fewer than 1 in the target group."""
    agent = Agent(slots)
    old, new = Service("c", "s", 2, spec("1")), Service("c", "s", 2, spec("2"), max_percent=max_percent)
    agent.poll(old)
    assert sorted(agent.registered) == [0, 1]
    fewest, most = 2, 2
    for _ in range(10):
        agent.converge(new)  # what the target group holds after the step, before new tasks get healthy
        fewest, most = min(fewest, len(agent.registered)), max(most, len(agent.tasks))
        agent.registered |= set(agent.active)
        agent.finish_draining(None)
    assert agent.rolled() and {agent.specs[s].version for s in agent.active} == {"2"} and len(agent.active) == 2
    assert most == most_tasks
    assert fewest == (2 if most_tasks > 2 else 1)


def test_a_new_task_never_healthy_is_replaced_and_the_old_ones_stay() -> None:
    agent = Agent(10)
    agent.poll(Service("c", "s", 2, spec("1")))
    bad = Service("c", "s", 2, spec("bad"))
    agent.converge(bad)
    assert sorted(agent.registered) == [0, 1] and sorted(agent.tasks) == [0, 1, 2]
    for _ in range(3):
        agent.started[2] -= HEALTHY_WITHIN_S + 1
        agent.converge(bad)
    assert agent.deployment is not None and agent.deployment.failed_tasks == 3 and not agent.rolled()
    assert sorted(agent.registered) == [0, 1] and sorted(agent.tasks) == [0, 1, 2] and not agent.draining
    agent.converge(Service("c", "s", 2, spec("1")))  # back: the never-healthy task goes, the old ones stay
    assert list(agent.draining) == [2] and agent.rolled()


def test_every_stopped_task_is_recorded_as_ecs_records_it() -> None:
    """A task that dies is an exited essential container with ECS's exit code (128 + the signal), however it
    died; one the rollout takes out is the scheduler's, with its reason; a dead task kept dead (restart off)
    is recorded once."""
    agent = Agent(10)
    agent.poll(Service("c", "s", 2, spec("1")))
    agent.tasks[1].returncode = -9
    assert agent.replace_dead() == 1
    (killed,) = agent.stopped
    assert (killed.task, killed.stop_code, killed.stopped_reason, killed.exit_code, killed.version) == (
        "task-2", "EssentialContainerExited", "Essential container in task exited", 137, "1")
    assert killed.started_at <= killed.stopped_at
    agent.poll(Service("c", "s", 1, spec("1")))  # scaled in
    assert [(t.task, t.stop_code, t.exit_code) for t in agent.stopped[1:]] == [
        ("task-2", "ServiceSchedulerInitiated", 143)]
    assert agent.stopped[1].stopped_reason == "Scaling activity initiated by (deployment of backend:1)"
    agent.tasks[0].returncode = 3
    agent.replace_dead(restart=False)
    agent.replace_dead(restart=False)
    assert [(t.task, t.exit_code) for t in agent.stopped[2:]] == [("task-1", 3)]
    bad = Service("c", "s", 1, spec("bad"))
    agent.replace_dead()
    agent.converge(bad)
    agent.started[1] -= HEALTHY_WITHIN_S + 1
    agent.converge(bad)
    assert agent.stopped[-1].stopped_reason.startswith("Task failed ELB health checks")
