"""The service's tasks, slot by slot, and how the local ECS agent moves them as ECS's rolling deployment does.

When the service moves to another task definition (a deploy, a rollback) the tasks roll onto it with the
service's deploymentConfiguration (minimumHealthyPercent 100 and maximumPercent 200, what the provisioning
asks for and what is assumed when the emulator keeps none): one new task at a time is started in a free slot
beside the old ones; once its health check answers it joins the target group, and only then does an old
task leave it, drain and stop. So the service never has fewer healthy tasks in the target group than its
desired count. A new task that is not healthy within HEALTHY_WITHIN_S is stopped and another started in
its place (counted in the deployment's failed_tasks): a revision whose tasks never get healthy leaves the
old tasks serving, however long it lasts. With every slot busy (or a maximumPercent that leaves no room)
the rollout falls back to stop-then-start, one task at a time, deregistering the old task first.

A task leaving the target group drains: it is stopped when no request is in flight on it, or after
DRAIN_S. Starting and stopping a task is the caller's (the supervisor starts processes; the self-tests
use placeholders), so every step here can be checked without a process.

Every task that stops is recorded as ECS records a stopped task (`stopped`): one that died, whatever
killed it, as its essential container having exited, with its exit code as ECS reports it (128 + the
signal); one the rollout stopped as the service scheduler's, with ECS's reason (a scaling activity of the
deployment, or failed health checks).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from harness.local.alb import Registration
from harness.local.ecs_agent.state import Deployment, StoppedTaskRecord, timestamp

DRAIN_S = 5.0  # the longest a deregistered task is given for its requests in flight
HEALTHY_WITHIN_S = 15.0  # a deployment's new task not healthy by then is replaced (a task starts in 1-3 s)
MIN_HEALTHY_PERCENT, MAX_PERCENT = 100, 200  # the deploymentConfiguration assumed when the service has none
KEEP_STOPPED = 100  # stopped tasks remembered, the latest (ECS shows a stopped task for an hour or more)
EXITED = ("EssentialContainerExited", "Essential container in task exited")  # ECS's stopCode and stoppedReason
SCHEDULER = "ServiceSchedulerInitiated"


@dataclass(frozen=True)
class TaskSpec:
    """What one revision of the service gives each task."""

    task_definition: str
    environment: dict[str, str]
    version: str
    cpu_units: int | None  # the task's CPU reservation, 1024 to a vCPU


@dataclass(frozen=True)
class Service:
    cluster: str  # ARN
    name: str
    desired: int
    spec: TaskSpec
    min_healthy_percent: int = MIN_HEALTHY_PERCENT
    max_percent: int = MAX_PERCENT

    @property
    def resource_id(self) -> str:
        """Application Auto Scaling's name for the service."""
        return f"service/{self.cluster.rsplit('/', 1)[-1]}/{self.name}"


class Task(Protocol):
    """A started task as the rollout sees it: alive while poll() says None (a subprocess.Popen)."""

    def poll(self) -> int | None: ...


def exit_code(returncode: int | None) -> int | None:
    """A process's return code as ECS reports a container's exit code: a signal N ends it with 128 + N."""
    return 128 - returncode if returncode is not None and returncode < 0 else returncode


T = TypeVar("T", bound=Task)


class Rollout(Generic[T]):
    """The tasks in `slots` slots, lowest first, and their place in the target group: `registered` (serving)
    and `draining` (leaving). `start(slot, spec)` starts a task and returns it, `stop(slot, task)` stops one."""

    def __init__(self, slots: int, start: Callable[[int, TaskSpec], T], stop: Callable[[int, T], None]) -> None:
        self.slots = slots
        self._start, self._stop = start, stop
        self.tasks: dict[int, T] = {}
        self.specs: dict[int, TaskSpec] = {}
        self.started: dict[int, float] = {}  # slot -> when its task was started (monotonic)
        self.started_at: dict[int, str] = {}  # slot -> when its task was started (timestamp())
        self.stopped: list[StoppedTaskRecord] = []  # the latest KEEP_STOPPED, oldest first
        self.exited: set[int] = set()  # slots whose dead task is recorded already (kept dead: restart False)
        self.registered: set[int] = set()
        self.draining: dict[int, float] = {}  # slot -> when to stop it whatever is in flight (monotonic)
        self.latest: TaskSpec | None = None  # the service's task definition, as last read
        self.deployment: Deployment | None = None  # the rollout onto it

    @property
    def active(self) -> list[int]:
        """The slots whose task belongs to the service: running or starting, not on its way out."""
        return sorted(slot for slot in self.tasks if slot not in self.draining)

    def _free(self) -> list[int]:
        return [slot for slot in range(self.slots) if slot not in self.tasks]

    def _alive(self, slot: int) -> bool:
        return self.tasks[slot].poll() is None

    def start(self, slot: int, spec: TaskSpec) -> None:
        self.tasks[slot], self.specs[slot] = self._start(slot, spec), spec
        self.started[slot], self.started_at[slot] = time.monotonic(), timestamp()

    def stop(self, slot: int, why: tuple[str, str]) -> None:
        """Stop the slot's task and record it with `why` (ECS's stopCode and stoppedReason)."""
        self.started.pop(slot, None)
        task = self.tasks.pop(slot, None)
        if task is not None:
            self._stop(slot, task)
            if slot not in self.exited:
                self._record(slot, task, why)
            self.exited.discard(slot)

    def _record(self, slot: int, task: T, why: tuple[str, str]) -> None:
        spec = self.specs[slot]
        record = StoppedTaskRecord(f"task-{slot + 1}", getattr(task, "pid", None), spec.task_definition, spec.version,
                             why[0], why[1], exit_code(task.poll()), self.started_at.get(slot, ""), timestamp())
        self.stopped.append(record)
        del self.stopped[:-KEEP_STOPPED]
        print(f"tasks: {record.task} (pid {record.pid}) of {spec.task_definition} stopped, exit code "
              f"{record.exit_code}: {record.stopped_reason}", file=sys.stderr, flush=True)

    def _scaled(self) -> tuple[str, str]:
        """Why the scheduler stops a task it takes out of the service: a scaling activity of the deployment."""
        name = self.deployment.task_definition.rsplit("/", 1)[-1] if self.deployment else "unknown"
        return SCHEDULER, f"Scaling activity initiated by (deployment of {name})"

    def replace_dead(self, restart: bool = True) -> int:
        """A task that died leaves the target group at once (its target fails), and a new one takes its
        slot, joining once healthy, as ECS replaces a stopped task; with `restart` False, dead tasks stay
        dead. Returns how many were started again."""
        restarted = 0
        for slot, task in list(self.tasks.items()):
            if task.poll() is None:
                continue
            self.registered.discard(slot)
            if slot in self.draining:  # it was on its way out anyway
                del self.draining[slot]
                self.stop(slot, EXITED)
            elif restart:
                restarted += 1
                spec = self.specs[slot]
                self.stop(slot, EXITED)
                self.start(slot, spec)
            elif slot not in self.exited:  # kept dead, recorded once
                self._record(slot, task, EXITED)
                self.exited.add(slot)
        return restarted

    def converge(self, service: Service) -> None:
        """Run the service's desired count of tasks on its task definition: scale, or roll onto it."""
        latest = self.latest = service.spec
        if self.deployment is None or self.deployment.task_definition != latest.task_definition:
            self.deployment = Deployment(latest.task_definition, latest.version, timestamp(), None, 0,
                                         service.min_healthy_percent, service.max_percent, service=service.name)
        want = min(service.desired, self.slots)
        old = [slot for slot in self.active if self.specs[slot].task_definition != latest.task_definition]
        if old:
            self.roll(service, want, old)
        else:
            self.scale_to(want, latest)

    def scale_to(self, want: int, spec: TaskSpec) -> None:
        """Start tasks in the lowest free slots, or take the highest ones out of the target group."""
        active = self.active
        for slot in self._free()[: max(0, want - len(active))]:
            self.start(slot, spec)
        for slot in active[want:]:
            self.deregister(slot)

    def roll(self, service: Service, want: int, old: list[int]) -> None:
        """One step of a rolling deployment onto the service's task definition, each poll.

        The new revision's tasks are started one at a time in free slots while the total stays within
        maximumPercent of the desired count; an old task leaves the target group only while the tasks in
        it stay at or above minimumHealthyPercent without it, i.e. once a new task has joined. An old task
        in no target group (restarted and not yet healthy) serves nothing: it goes once the service has its
        desired count in the target group without it, or at once if its process is dead. With no room to
        start a new task beside the old ones, an old one is deregistered, drained and stopped first."""
        assert self.deployment is not None  # converge() made it
        latest, now = service.spec, time.monotonic()
        new = [slot for slot in self.active if slot not in old]
        for slot in new:
            if slot not in self.registered and self._alive(slot) and now - self.started[slot] > HEALTHY_WITHIN_S:
                print(f"tasks: task-{slot + 1} of {latest.task_definition} not healthy within "
                      f"{HEALTHY_WITHIN_S:.0f} s; starting another", file=sys.stderr, flush=True)
                self.deployment = replace(self.deployment, failed_tasks=self.deployment.failed_tasks + 1)
                self.stop(slot, (SCHEDULER, f"Task failed ELB health checks: not healthy within "
                                            f"{HEALTHY_WITHIN_S:.0f} s"))
                self.start(slot, latest)
        for slot in new[want:]:  # scaled in during the deployment
            self.deregister(slot)
        new = new[:want]
        healthy = sum(slot in self.registered for slot in self.active)
        for slot in old:
            if slot not in self.registered and (healthy >= want or not self._alive(slot)):
                self.deregister(slot)
        old = [slot for slot in old if slot in self.registered]
        starting = [slot for slot in new if slot not in self.registered]
        free = self._free()
        ceiling = max(want, want * service.max_percent // 100)
        room = bool(free) and (len(self.tasks) < ceiling or len(self.active) < want)
        if len(new) < want and not starting and room:
            self.start(free[0], latest)
            starting = [free[0]]
        if not old:
            return
        floor = math.ceil(want * service.min_healthy_percent / 100)
        if healthy - 1 >= floor:
            self.deregister(old[-1])
        elif not starting and not room and not self.draining:  # stop-then-start, deregistered first
            self.deregister(old[-1])

    def rolled(self) -> bool:
        """Every task of the service runs its task definition and is in the target group."""
        return self.latest is not None and all(
            self.specs[slot].task_definition == self.latest.task_definition and slot in self.registered
            for slot in self.active)

    def deployment_state(self) -> Deployment | None:
        """The deployment as tasks.json reports it: whether it has rolled, and since when."""
        if self.deployment is None:
            return None
        rolled = self.rolled()
        if rolled and self.deployment.rolled_at is None:
            self.deployment = replace(self.deployment, rolled_at=timestamp())
        return replace(self.deployment, rolled=rolled)

    # -- the target group -----------------------------------------------------------------------------------

    def admit_healthy(self, healthy: Callable[[int], bool]) -> None:
        """A task joins the target group once its health check (`healthy(slot)`) answers, as a target passes
        its initial check: HAProxy counts a server UP the moment it leaves maintenance."""
        for slot in self.active:
            if slot not in self.registered and self._alive(slot) and healthy(slot):
                self.registered.add(slot)

    def deregister(self, slot: int) -> None:
        """Out of the target group now; stopped once drained (finish_draining)."""
        self.registered.discard(slot)
        self.draining[slot] = time.monotonic() + DRAIN_S

    def finish_draining(self, servers: dict[str, Registration] | None) -> None:
        """Stop each deregistered task once HAProxy (its `servers`, None when none answers) has taken it out
        and nothing is in flight on it, or once DRAIN_S have passed."""
        for slot, deadline in list(self.draining.items()):
            seen = servers.get(f"task-{slot + 1}") if servers else None
            if seen is None or (not seen.registered and seen.sessions == 0) or time.monotonic() > deadline:
                del self.draining[slot]
                self.stop(slot, self._scaled())

    def stopped_all(self) -> None:
        """The caller stopped every task at once (the agent's shutdown): none runs or serves any more."""
        self.tasks.clear()
        self.started.clear()
        self.exited.clear()
        self.registered.clear()
        self.draining.clear()
