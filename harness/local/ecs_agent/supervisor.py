"""The local stand-in of the ECS agent: runs the service's tasks as the emulator describes them.

It finds the plan's service by its tags, reads the task definition the service runs, resolves the
container's secrets from Secrets Manager and starts tasks (harness/local/app.py) with that environment, as
ECS does. It keeps the service's desired count running, one task per slot (a port and an admin port),
lowest slots first: a task that dies is started again. When the service moves to another task definition
(a deploy, a rollback) the tasks roll onto it as ECS's rolling deployment does (rollout.py).

It registers the tasks with the load balancer as ECS does with the target group: a task joins once its
health check answers, and leaves before it is stopped, drained first (rollout.py). HAProxy
(harness/local/alb.py) is told through its admin socket, every poll, so a reloaded HAProxy is brought back
in line too.

It also does Application Auto Scaling's part: every poll it reads the scalable target and the CPU
target-tracking policy from the emulator, measures each task's CPU with psutil as a percentage of the
task definition's CPU reservation, applies the policy as AWS does (harness/local/autoscale.py) and writes
the new desired count to the service, which the agent then follows. Without the policy or the scalable
target nothing scales. `--time-scale F` multiplies every period of the policy (the datapoint length and
both cooldowns) by F: 0.05 makes the 300 s cooldown 15 s.

moto counts a service's tasks as running from the moment its desiredCount is written (and as 0 before),
so the agent writes the desired count back once the tasks it started serve; on local, runningCount rises
with desiredCount. The tasks the agent runs, its deployment, the tasks that stopped (as ECS records them,
rollout.py) and each scaling action are in <state>/tasks.json (state.py).

    python -m harness.local.ecs_agent.supervisor --state DIR --endpoint-url URL --plan FILE --env ENV \\
        --ports 13001,...,13010 --admin-ports 13101,...,13110 [--alb-socket PATH] [--time-scale F]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TypeVar

import psutil
import requests

from harness.local.alb import FAIL_OPEN, AlbError, TargetGroup
from harness.local.autoscale import DATAPOINT_S, Cooldowns, Metric, Policy, decide, read_policy
from harness.local.ecs_agent.rollout import MAX_PERCENT, MIN_HEALTHY_PERCENT, Rollout, Service, TaskSpec
from harness.local.ecs_agent.state import Scaling, ScalingAction, TaskRecord, TaskState, timestamp
from harness.plan import Plan, load_plan
from harness.service import find_service
from harness.target import Target
from harness.util import proc

POLL_S = 1.0  # at most; shorter when a time-scaled datapoint would otherwise get fewer than 3 samples
STOP_S = 10.0  # SIGTERM, then this long before SIGKILL
KEEP_ACTIONS = 50
AGENT_FAULTS = "agent-faults.json"  # faults of the agent itself, for the drills' self-tests
T = TypeVar("T")


def current_service(target: Target, plan: Plan, env: str) -> Service:
    """The plan's service, its desired count and its task definition resolved as the ECS agent would:
    plain environment, secrets, image tag."""
    port = int(plan.requirements["ECS-03"].expected(env)["container_port"])
    try:
        service = find_service(target, plan, env)
    except LookupError as exc:
        raise LookupError(f"{exc}; provision the plan first") from None
    # moto 5.2.5 keeps no deploymentConfiguration; AWS returns the one the service was made with
    config = service.get("deploymentConfiguration") or {}
    return Service(service["clusterArn"], service["serviceName"], service["desiredCount"],
                   _spec(target, service["taskDefinition"], port),
                   int(config.get("minimumHealthyPercent", MIN_HEALTHY_PERCENT)),
                   int(config.get("maximumPercent", MAX_PERCENT)))


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
        self.rollout: Rollout[subprocess.Popen[bytes]] = Rollout(len(self.slots), self.start_task, self.stop_task)
        self.meters: dict[int, psutil.Process] = {}
        self.metric = Metric(DATAPOINT_S * time_scale)
        self.sampled: float | None = None  # when the CPU was last sampled (monotonic)
        self.cooldowns = Cooldowns()
        self.policy: Policy | None = None
        self.desired = 0
        self.actions: list[ScalingAction] = []
        self.restarts = 0
        self.stopping = False
        self.last_error = ""  # the emulator call that last failed, so the log says it once

    @property
    def poll_s(self) -> float:
        return min(POLL_S, self.metric.period_s / 3)

    # -- tasks ----------------------------------------------------------------------------------------------

    def start_task(self, slot: int, spec: TaskSpec) -> subprocess.Popen[bytes]:
        port, admin = self.slots[slot]
        environment = {**os.environ, **spec.environment, "PORT": str(port), "ADMIN_PORT": str(admin),
                       "TASK_ID": f"task-{slot + 1}", "APP_VERSION": spec.version}
        process = proc.spawn([sys.executable, "-m", "harness.local.app"], log=self.state / f"task-{slot + 1}.log",
                             env=environment)
        self.meters[slot] = psutil.Process(process.pid)
        self.meters[slot].cpu_percent()  # the baseline: each later call measures since the previous one
        return process

    def stop_task(self, slot: int, process: subprocess.Popen[bytes]) -> None:
        self.meters.pop(slot, None)
        proc.stop(process, STOP_S)

    def restart_dead(self) -> None:
        """Dead tasks are replaced (rollout.py), unless the `restart_tasks: false` fault in
        <state>/agent-faults.json says to leave them dead (an agent that no longer does its job)."""
        if not self.stopping:
            self.restarts += self.rollout.replace_dead(restart=self.faults().get("restart_tasks", True))

    def faults(self) -> dict[str, Any]:
        try:
            return json.loads((self.state / AGENT_FAULTS).read_text())
        except (OSError, ValueError):
            return {}

    # -- target group ---------------------------------------------------------------------------------------

    def sync_target_group(self) -> None:
        """Make HAProxy's registrations what the agent holds; a no-op while no HAProxy answers."""
        servers = self.target_group.servers() if self.target_group else None
        if servers is None or self.target_group is None:
            return
        for slot in range(len(self.slots)):
            name = f"task-{slot + 1}"
            want = slot in self.rollout.registered
            if any(s in servers and servers[s].registered != want for s in (name, name + FAIL_OPEN)):
                try:
                    self.target_group.set_registered(name, want)
                except (AlbError, OSError) as exc:  # HAProxy reloading: the next poll tries again
                    print(f"tasks: {name} not {'registered' if want else 'deregistered'} yet: {exc}",
                          file=sys.stderr, flush=True)

    def _healthy(self, slot: int) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.slots[slot][0]}/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    # -- scaling --------------------------------------------------------------------------------------------

    def sample_cpu(self, now: float) -> None:
        """One sample of the service's average CPU: each task's share of its reservation, averaged."""
        values = []
        for slot, meter in self.meters.items():
            cpu_units = self.rollout.specs[slot].cpu_units
            if cpu_units is None or self.rollout.tasks[slot].poll() is not None:
                continue
            try:
                values.append(meter.cpu_percent() * 1024 / cpu_units)
            except psutil.Error:
                continue
        if values and self.sampled is not None:
            self.metric.add(self.sampled, now, sum(values) / len(values))
        self.sampled = now

    def autoscale(self, service: Service, now: float) -> Service:
        deploying = any(self.rollout.specs[slot].task_definition != service.spec.task_definition
                        for slot in self.rollout.active)
        action = decide(self.policy, service.desired, self.metric.datapoints(now), now, self.cooldowns, deploying)
        if action is None:
            return service
        self.target.client("ecs").update_service(cluster=service.cluster, service=service.name,
                                                 desiredCount=action.desired)
        self.cooldowns.record(service.desired, action, now)
        self.actions.append(ScalingAction(timestamp(), service.desired, action.desired, round(action.metric, 1),
                                          action.reason))
        del self.actions[:-KEEP_ACTIONS]
        return replace(service, desired=action.desired)

    # -- the loop -------------------------------------------------------------------------------------------

    def write_state(self) -> None:
        rollout = self.rollout
        tasks = tuple(TaskRecord(f"task-{slot + 1}", p.pid, self.slots[slot][0], self.slots[slot][1], p.poll() is None,
                                 slot in rollout.registered, slot in rollout.draining, rollout.specs[slot].version,
                                 rollout.specs[slot].task_definition) for slot, p in sorted(rollout.tasks.items()))
        deployment = rollout.deployment_state()
        datapoints = tuple(None if d is None else round(d, 1) for d in self.metric.datapoints(time.monotonic()))
        TaskState(os.getpid(), self.restarts, self.desired, len(self.slots), self.time_scale,
                  Scaling(self.policy, self.metric.period_s, datapoints, tuple(self.actions)),
                  deployment, tasks, tuple(rollout.stopped)).write(self.state)

    def run(self) -> None:
        service = current_service(self.target, self.plan, self.env)
        self.desired = service.desired
        self.rollout.converge(service)
        reported = False  # whether moto has been told that the desired tasks run
        next_poll = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            self.sample_cpu(now)  # first: a task started later in this poll is measured from its start next time
            self.restart_dead()
            fresh = self._from_emulator(lambda: self.follow(now))
            service = fresh or service
            self.rollout.admit_healthy(self._healthy)
            self.sync_target_group()
            self.rollout.finish_draining(self.target_group.servers() if self.target_group else None)
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
        self.rollout.converge(service)
        return service

    def serving(self, service: Service) -> bool:
        """Every task the service asks for runs and is in the target group."""
        active = self.rollout.active
        return bool(active) and self.rollout.registered == set(active) \
            and len(active) == min(service.desired, len(self.slots))

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
        processes = list(self.rollout.tasks.values())
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_S
        for process in processes:
            proc.stop(process, max(0.0, deadline - time.monotonic()))
        self.rollout.stopped_all()
        self.write_state()


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
