"""The local stand-in of the ECS agent: runs the service's tasks as the emulator describes them.

It finds the plan's service by its tags, reads the task definition the service runs, resolves the
container's secrets from Secrets Manager and starts tasks (harness/local/app.py) with that environment, as
ECS does. It keeps the service's desired count running, one task per slot (a port and an admin port),
lowest slots first: a task that dies is started again.

When the service moves to another task definition (a deploy, a rollback) the agent rolls onto it as ECS's
rolling deployment does with the service's deploymentConfiguration (minimumHealthyPercent 100 and
maximumPercent 200, what provision.py asks for and what is assumed when the emulator keeps none): one new
task at a time is started in a free slot beside the old ones; once its health check answers it joins the
target group, and only then does an old task leave it, drain and stop. So the service never has fewer
healthy tasks in the target group than its desired count. A new task that is not healthy within
HEALTHY_WITHIN_S is stopped and another started in its place (counted in the deployment's failed_tasks):
a revision whose tasks never get healthy leaves the old tasks serving, however long it lasts. With every
slot busy (or a maximumPercent that leaves no room) the agent falls back to stop-then-start, one task at a
time, deregistering the old task first. tasks.json says per task which revision it runs and under
"deployment" the service's task definition and whether it has rolled (every task runs it and is in the
target group).

It registers the tasks with the load balancer as ECS does with the target group: a task joins once its
health check answers, and leaves before it is stopped; a task leaving is stopped when no request is in
flight on it, or after DRAIN_S. HAProxy (harness/local/alb.py) is told through its admin socket, every
poll, so a reloaded HAProxy is brought back in line too.

It also does Application Auto Scaling's part: every poll it reads the scalable target and the CPU
target-tracking policy from the emulator, measures each task's CPU with psutil as a percentage of the
task definition's CPU reservation, applies the policy as AWS does (harness/local/autoscale.py) and writes
the new desired count to the service, which the agent then follows. Without the policy or the scalable
target nothing scales. `--time-scale F` multiplies every period of the policy (the datapoint length and
both cooldowns) by F: 0.05 makes the 300 s cooldown 15 s.

moto counts a service's tasks as running from the moment its desiredCount is written (and as 0 before),
so the agent writes the desired count back once the tasks it started serve; on local, runningCount rises
with desiredCount. The tasks the agent runs and each scaling action are in <state>/tasks.json.

    python -m harness.local.ecs_agent.supervisor --state DIR --endpoint-url URL --plan FILE --env ENV \\
        --ports 13001,...,13010 --admin-ports 13101,...,13110 [--alb-socket PATH] [--time-scale F]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import psutil
import requests

from harness.compliance.inventory import tag_dict
from harness.local.alb import FAIL_OPEN, AlbError, TargetGroup
from harness.local.autoscale import DATAPOINT_S, Action, Cooldowns, Metric, Policy, decide, read_policy
from harness.plan import Plan, load_plan
from harness.target import Target

POLL_S = 1.0  # at most; shorter when a time-scaled datapoint would otherwise get fewer than 3 samples
DRAIN_S = 5.0  # the longest a deregistered task is given for its requests in flight
STOP_S = 10.0  # SIGTERM, then this long before SIGKILL
HEALTHY_WITHIN_S = 15.0  # a deployment's new task not healthy by then is replaced (a task starts in 1-3 s)
MIN_HEALTHY_PERCENT, MAX_PERCENT = 100, 200  # the deploymentConfiguration assumed when the service has none
KEEP_ACTIONS = 50
AGENT_FAULTS = "agent-faults.json"  # faults of the agent itself, for the drills' self-tests
T = TypeVar("T")


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


def current_service(target: Target, plan: Plan, env: str) -> Service:
    """The plan's service, its desired count and its task definition resolved as the ECS agent would:
    plain environment, secrets, image tag."""
    ecs = target.client("ecs")
    wanted = plan.tags(env)
    port = int(plan.requirements["ECS-03"].expected(env)["container_port"])
    for cluster in ecs.list_clusters()["clusterArns"]:
        for service_arn in ecs.list_services(cluster=cluster)["serviceArns"]:
            service = ecs.describe_services(cluster=cluster, services=[service_arn], include=["TAGS"])["services"][0]
            have = tag_dict(service.get("tags"))
            if service.get("status") == "ACTIVE" and all(have.get(k) == v for k, v in wanted.items()):
                # moto 5.2.5 keeps no deploymentConfiguration; AWS returns the one the service was made with
                config = service.get("deploymentConfiguration") or {}
                return Service(cluster, service["serviceName"], service["desiredCount"],
                               _spec(target, service["taskDefinition"], port),
                               int(config.get("minimumHealthyPercent", MIN_HEALTHY_PERCENT)),
                               int(config.get("maximumPercent", MAX_PERCENT)))
    raise LookupError(f"no ECS service tagged {wanted} at {target.endpoint_url}; provision the plan first")


def _spec(target: Target, task_definition: str, port: int) -> TaskSpec:
    td = target.client("ecs").describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
    containers = td["containerDefinitions"]
    app = next((c for c in containers if any(m.get("containerPort") == port for m in c.get("portMappings", []))),
               containers[0])
    environment = {e["name"]: e["value"] for e in app.get("environment", [])}
    secrets = target.client("secretsmanager")
    for secret in app.get("secrets", []):
        environment[secret["name"]] = secrets.get_secret_value(SecretId=secret["valueFrom"])["SecretString"]
    image = app.get("image", "")
    version = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    return TaskSpec(td["taskDefinitionArn"], environment, version, int(td["cpu"]) if td.get("cpu") else None)


class Supervisor:
    def __init__(self, target: Target, plan: Plan, env: str, ports: list[int], admin_ports: list[int],
                 state: Path, alb_socket: Path | None = None, time_scale: float = 1.0) -> None:
        self.target, self.plan, self.env = target, plan, env
        self.slots = list(zip(ports, admin_ports))
        self.state = state
        self.target_group = TargetGroup(alb_socket) if alb_socket else None
        self.time_scale = time_scale
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.specs: dict[int, TaskSpec] = {}
        self.meters: dict[int, psutil.Process] = {}
        self.registered: set[int] = set()
        self.draining: dict[int, float] = {}  # slot -> when to stop it whatever is in flight (monotonic)
        self.started: dict[int, float] = {}  # slot -> when its task was started (monotonic)
        self.latest: TaskSpec | None = None  # the service's task definition, as last read
        self.deployment: dict[str, Any] = {}  # the rollout onto it: since when, failed tasks, when rolled
        self.metric = Metric(DATAPOINT_S * time_scale)
        self.sampled: float | None = None  # when the CPU was last sampled (monotonic)
        self.cooldowns = Cooldowns()
        self.policy: Policy | None = None
        self.desired = 0
        self.actions: list[dict[str, Any]] = []
        self.restarts = 0
        self.stopping = False
        self.last_error = ""  # the emulator call that last failed, so the log says it once

    @property
    def poll_s(self) -> float:
        return min(POLL_S, self.metric.period_s / 3)

    @property
    def active(self) -> list[int]:
        """The slots whose task belongs to the service: running or starting, not on its way out."""
        return sorted(slot for slot in self.processes if slot not in self.draining)

    # -- tasks ----------------------------------------------------------------------------------------------

    def start_task(self, slot: int, spec: TaskSpec) -> None:
        port, admin = self.slots[slot]
        environment = {**os.environ, **spec.environment, "PORT": str(port), "ADMIN_PORT": str(admin),
                       "TASK_ID": f"task-{slot + 1}", "APP_VERSION": spec.version}
        log = open(self.state / f"task-{slot + 1}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "harness.local.app"], env=environment,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.processes[slot], self.specs[slot] = process, spec
        self.started[slot] = time.monotonic()
        self.meters[slot] = psutil.Process(process.pid)
        self.meters[slot].cpu_percent()  # the baseline: each later call measures since the previous one

    def stop_task(self, slot: int) -> None:
        self.meters.pop(slot, None)
        self.started.pop(slot, None)
        process = self.processes.pop(slot, None)
        if process and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart_dead(self) -> None:
        """A task that died leaves the target group at once (its target fails), and a new one takes its
        slot, joining once healthy, as ECS replaces a stopped task. The `restart_tasks: false` fault in
        <state>/agent-faults.json leaves dead tasks dead (an agent that no longer does its job)."""
        restart = self.faults().get("restart_tasks", True)
        for slot, process in list(self.processes.items()):
            if process.poll() is None or self.stopping:
                continue
            self.registered.discard(slot)
            if slot in self.draining:  # it was on its way out anyway
                del self.draining[slot]
                self.stop_task(slot)
            elif restart:
                self.restarts += 1
                self.start_task(slot, self.specs[slot])

    def faults(self) -> dict[str, Any]:
        try:
            return json.loads((self.state / AGENT_FAULTS).read_text())
        except (OSError, ValueError):
            return {}

    def converge(self, service: Service) -> None:
        """Run the service's desired count of tasks on its task definition: scale, or roll onto it."""
        latest = self.latest = service.spec
        if self.deployment.get("task_definition") != latest.task_definition:
            self.deployment = {"task_definition": latest.task_definition, "version": latest.version,
                               "since": _now(), "rolled_at": None, "failed_tasks": 0,
                               "minimum_healthy_percent": service.min_healthy_percent,
                               "maximum_percent": service.max_percent}
        want = min(service.desired, len(self.slots))
        old = [slot for slot in self.active if self.specs[slot].task_definition != latest.task_definition]
        if old:
            self.roll(service, want, old)
        else:
            self.scale_to(want, latest)

    def scale_to(self, want: int, spec: TaskSpec) -> None:
        """Start tasks in the lowest free slots, or take the highest ones out of the target group."""
        active = self.active
        free = [slot for slot in range(len(self.slots)) if slot not in self.processes]
        for slot in free[: max(0, want - len(active))]:
            self.start_task(slot, spec)
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
        latest, now = service.spec, time.monotonic()
        new = [slot for slot in self.active if slot not in old]
        for slot in new:
            if slot not in self.registered and self.processes[slot].poll() is None \
                    and now - self.started[slot] > HEALTHY_WITHIN_S:
                print(f"tasks: task-{slot + 1} of {latest.task_definition} not healthy within "
                      f"{HEALTHY_WITHIN_S:.0f} s; starting another", file=sys.stderr, flush=True)
                self.deployment["failed_tasks"] += 1
                self.stop_task(slot)
                self.start_task(slot, latest)
        for slot in new[want:]:  # scaled in during the deployment
            self.deregister(slot)
        new = new[:want]
        healthy = sum(slot in self.registered for slot in self.active)
        for slot in old:
            if slot not in self.registered and (healthy >= want or self.processes[slot].poll() is not None):
                self.deregister(slot)
        old = [slot for slot in old if slot in self.registered]
        starting = [slot for slot in new if slot not in self.registered]
        free = [slot for slot in range(len(self.slots)) if slot not in self.processes]
        ceiling = max(want, want * service.max_percent // 100)
        room = bool(free) and (len(self.processes) < ceiling or len(self.active) < want)
        if len(new) < want and not starting and room:
            self.start_task(free[0], latest)
            starting = [free[0]]
        if not old:
            return
        floor = math.ceil(want * service.min_healthy_percent / 100)
        if healthy - 1 >= floor:
            self.deregister(old[-1])
        elif not starting and not room and not self.draining:  # stop-then-start, deregistered first
            self.deregister(old[-1])

    def deregister(self, slot: int) -> None:
        """Out of the target group now; stopped once drained (finish_draining)."""
        self.registered.discard(slot)
        self.draining[slot] = time.monotonic() + DRAIN_S

    def rolled(self) -> bool:
        """Every task of the service runs its task definition and is in the target group."""
        return self.latest is not None and all(
            self.specs[slot].task_definition == self.latest.task_definition and slot in self.registered
            for slot in self.active)

    # -- target group ---------------------------------------------------------------------------------------

    def register_healthy(self) -> None:
        """A task joins the target group once its health check answers, as a target passes its initial
        check: HAProxy counts a server UP the moment it leaves maintenance."""
        for slot in self.active:
            if slot not in self.registered and self.processes[slot].poll() is None \
                    and _healthy(f"http://127.0.0.1:{self.slots[slot][0]}/api/health"):
                self.registered.add(slot)

    def sync_target_group(self) -> None:
        """Make HAProxy's registrations what the agent holds; a no-op while no HAProxy answers."""
        servers = self.target_group.servers() if self.target_group else None
        if servers is None or self.target_group is None:
            return
        for slot in range(len(self.slots)):
            name = f"task-{slot + 1}"
            want = slot in self.registered
            if any(s in servers and servers[s].registered != want for s in (name, name + FAIL_OPEN)):
                try:
                    self.target_group.set_registered(name, want)
                except (AlbError, OSError) as exc:  # HAProxy reloading: the next poll tries again
                    print(f"tasks: {name} not {'registered' if want else 'deregistered'} yet: {exc}",
                          file=sys.stderr, flush=True)

    def finish_draining(self) -> None:
        """Stop each deregistered task once HAProxy has taken it out and nothing is in flight on it."""
        servers = self.target_group.servers() if self.target_group else None
        for slot, deadline in list(self.draining.items()):
            name = f"task-{slot + 1}"
            seen = servers.get(name) if servers else None
            if seen is None or (not seen.registered and seen.sessions == 0) or time.monotonic() > deadline:
                del self.draining[slot]
                self.stop_task(slot)

    # -- scaling --------------------------------------------------------------------------------------------

    def sample_cpu(self, now: float) -> None:
        """One sample of the service's average CPU: each task's share of its reservation, averaged."""
        values = []
        for slot, meter in self.meters.items():
            cpu_units = self.specs[slot].cpu_units
            if cpu_units is None or self.processes[slot].poll() is not None:
                continue
            try:
                values.append(meter.cpu_percent() * 1024 / cpu_units)
            except psutil.Error:
                continue
        if values and self.sampled is not None:
            self.metric.add(self.sampled, now, sum(values) / len(values))
        self.sampled = now

    def autoscale(self, service: Service, now: float) -> Service:
        deploying = any(self.specs[slot].task_definition != service.spec.task_definition for slot in self.active)
        action = decide(self.policy, service.desired, self.metric.datapoints(now), now, self.cooldowns, deploying)
        if action is None:
            return service
        self.target.client("ecs").update_service(cluster=service.cluster, service=service.name,
                                                 desiredCount=action.desired)
        self.cooldowns.record(service.desired, action, now)
        self._record(service.desired, action)
        return dataclasses.replace(service, desired=action.desired)

    def _record(self, before: int, action: Action) -> None:
        self.actions.append({"at": _now(),
                             "from": before, "to": action.desired, "metric": round(action.metric, 1),
                             "reason": action.reason})
        del self.actions[:-KEEP_ACTIONS]

    # -- the loop -------------------------------------------------------------------------------------------

    def write_state(self) -> None:
        tasks = [{"task": f"task-{slot + 1}", "pid": p.pid, "port": self.slots[slot][0], "admin_port": self.slots[slot][1],
                  "running": p.poll() is None, "registered": slot in self.registered,
                  "draining": slot in self.draining, "version": self.specs[slot].version,
                  "task_definition": self.specs[slot].task_definition} for slot, p in sorted(self.processes.items())]
        rolled = self.rolled()
        if rolled and self.deployment and self.deployment["rolled_at"] is None:
            self.deployment["rolled_at"] = _now()
        deployment = {**self.deployment, "rolled": rolled} if self.deployment else None
        now = time.monotonic()
        scaling = {"policy": dataclasses.asdict(self.policy) if self.policy else None,
                   "datapoint_s": self.metric.period_s,
                   "datapoints": [None if d is None else round(d, 1) for d in self.metric.datapoints(now)],
                   "actions": self.actions}
        tmp = self.state / "tasks.json.tmp"
        tmp.write_text(json.dumps({"supervisor": os.getpid(), "restarts": self.restarts, "desired": self.desired,
                                   "slots": len(self.slots), "time_scale": self.time_scale, "scaling": scaling,
                                   "deployment": deployment, "tasks": tasks}, indent=1))
        tmp.replace(self.state / "tasks.json")

    def run(self) -> None:
        service = current_service(self.target, self.plan, self.env)
        self.desired = service.desired
        self.converge(service)
        reported = False  # whether moto has been told that the desired tasks run
        next_poll = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            self.sample_cpu(now)  # first: a task started later in this poll is measured from its start next time
            self.restart_dead()
            fresh = self._from_emulator(lambda: self.follow(now))
            service = fresh or service
            self.register_healthy()
            self.sync_target_group()
            self.finish_draining()
            if fresh and not reported and self.serving(service):
                reported = bool(self._from_emulator(lambda: self.report_running(service)))
            self.write_state()
            self.target.recorder.calls.clear()  # the agent runs for hours and has no use for the call log
            next_poll = max(next_poll + self.poll_s, time.monotonic())
            time.sleep(max(0.0, next_poll - time.monotonic()))
        self.shutdown()

    def follow(self, now: float) -> Service:
        """Read the service and its scaling policy, apply the policy, run what the service asks for."""
        service = current_service(self.target, self.plan, self.env)
        self.policy = read_policy(self.target.client("application-autoscaling"), service.resource_id,
                                  self.time_scale)
        service = self.autoscale(service, now)
        self.desired = service.desired
        self.converge(service)
        return service

    def serving(self, service: Service) -> bool:
        """Every task the service asks for runs and is in the target group."""
        return bool(self.active) and self.registered == set(self.active) \
            and len(self.active) == min(service.desired, len(self.slots))

    def report_running(self, service: Service) -> bool:
        """moto counts a service's tasks as running only from a desiredCount write: write the same back."""
        self.target.client("ecs").update_service(cluster=service.cluster, service=service.name,
                                                 desiredCount=service.desired)
        return True

    def _from_emulator(self, call: Callable[[], T]) -> T | None:
        """What `call` returns, or None while the emulator is away: the tasks keep running as they are,
        and the log says why once, not every poll."""
        try:
            result = call()
        except Exception as exc:
            if repr(exc) != self.last_error:
                print(f"tasks: emulator calls fail until this clears: {exc!r}", file=sys.stderr, flush=True)
            self.last_error = repr(exc)
            return None
        self.last_error = ""
        return result

    def shutdown(self) -> None:
        """SIGTERM to every task at once, then wait: stopping them one by one would add up their exits."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        self.registered.clear()
        self.draining.clear()
        self.write_state()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.local.ecs_agent.supervisor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--plan", required=True, type=Path)
    parser.add_argument("--env", required=True)
    parser.add_argument("--ports", required=True, help="comma list, one per task slot")
    parser.add_argument("--admin-ports", required=True, help="comma list, one per task slot")
    parser.add_argument("--alb-socket", type=Path, help="HAProxy's admin socket, to register the tasks")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="factor on every period of the scaling policy (default 1.0, AWS's timing)")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be above 0")
    ports, admin_ports = [int(p) for p in args.ports.split(",")], [int(p) for p in args.admin_ports.split(",")]
    if len(ports) != len(admin_ports):
        parser.error("--ports and --admin-ports need one port each per task slot")
    plan = load_plan(args.plan)
    target = Target("localstack", plan.environment(args.env).region, endpoint_url=args.endpoint_url)
    supervisor = Supervisor(target, plan, args.env, ports, admin_ports, args.state, args.alb_socket, args.time_scale)

    def stop(*_: Any) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisor.run()


if __name__ == "__main__":
    main()
