"""The local stand-in of the ECS agent: runs the service's tasks as the emulator describes them.

It finds the plan's service by its tags, reads the task definition the service runs, resolves the
container's secrets from Secrets Manager and starts each task (harness/local/app.py) with that
environment, as ECS does. It keeps the desired number of tasks running: a task that dies is started
again, and when the service moves to another task definition (a deploy, a rollback) the tasks are
replaced one at a time, as a rolling deployment does.

    python -m harness.local.tasks --state DIR --endpoint-url URL --plan FILE --env ENV --ports 13001,13002
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.inventory import tag_dict
from harness.plan import Plan, load_plan
from harness.target import Target

POLL_S = 1.0


@dataclass(frozen=True)
class TaskSpec:
    """What one revision of the service gives each task."""

    task_definition: str
    environment: dict[str, str]
    version: str


def current_spec(target: Target, plan: Plan, env: str) -> TaskSpec:
    """The service's task definition, resolved as the ECS agent would: plain environment, secrets, image tag."""
    ecs = target.client("ecs")
    wanted = plan.tags(env)
    port = int(plan.requirements["ECS-03"].expected(env)["container_port"])
    for cluster in ecs.list_clusters()["clusterArns"]:
        for service_arn in ecs.list_services(cluster=cluster)["serviceArns"]:
            service = ecs.describe_services(cluster=cluster, services=[service_arn], include=["TAGS"])["services"][0]
            have = tag_dict(service.get("tags"))
            if service.get("status") == "ACTIVE" and all(have.get(k) == v for k, v in wanted.items()):
                return _spec(target, service["taskDefinition"], port)
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
    return TaskSpec(td["taskDefinitionArn"], environment, version)


class Supervisor:
    def __init__(self, target: Target, plan: Plan, env: str, ports: list[int], admin_ports: list[int],
                 state: Path) -> None:
        self.target, self.plan, self.env = target, plan, env
        self.slots = list(zip(ports, admin_ports))
        self.state = state
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.specs: dict[int, TaskSpec] = {}
        self.restarts = 0
        self.stopping = False

    def start_task(self, slot: int, spec: TaskSpec) -> None:
        port, admin = self.slots[slot]
        environment = {**os.environ, **spec.environment, "PORT": str(port), "ADMIN_PORT": str(admin),
                       "TASK_ID": f"task-{slot + 1}", "APP_VERSION": spec.version}
        log = open(self.state / f"task-{slot + 1}.log", "ab")
        self.processes[slot] = subprocess.Popen([sys.executable, "-m", "harness.local.app"], env=environment,
                                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.specs[slot] = spec

    def stop_task(self, slot: int) -> None:
        process = self.processes.pop(slot, None)
        if process and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def write_state(self) -> None:
        tasks = [{"task": f"task-{slot + 1}", "pid": p.pid, "port": self.slots[slot][0], "admin_port": self.slots[slot][1],
                  "running": p.poll() is None, "version": self.specs[slot].version,
                  "task_definition": self.specs[slot].task_definition} for slot, p in sorted(self.processes.items())]
        tmp = self.state / "tasks.json.tmp"
        tmp.write_text(json.dumps({"supervisor": os.getpid(), "restarts": self.restarts, "tasks": tasks}, indent=1))
        tmp.replace(self.state / "tasks.json")

    def run(self) -> None:
        spec = current_spec(self.target, self.plan, self.env)
        for slot in range(len(self.slots)):
            self.start_task(slot, spec)
        while not self.stopping:
            self.write_state()
            time.sleep(POLL_S)
            for slot, process in list(self.processes.items()):
                if process.poll() is not None and not self.stopping:
                    self.restarts += 1
                    self.start_task(slot, self.specs[slot])
            try:
                latest = current_spec(self.target, self.plan, self.env)
            except Exception:  # the emulator may be briefly away; keep the tasks running as they are
                continue
            for slot in range(len(self.slots)):
                if self.specs[slot].task_definition != latest.task_definition and not self.stopping:
                    self.stop_task(slot)
                    self.start_task(slot, latest)
                    break  # one task at a time: the next poll replaces the next one
        for slot in list(self.processes):
            self.stop_task(slot)
        self.write_state()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.local.tasks", description=__doc__)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--plan", required=True, type=Path)
    parser.add_argument("--env", required=True)
    parser.add_argument("--ports", required=True, help="comma list, one per task")
    parser.add_argument("--admin-ports", required=True, help="comma list, one per task")
    args = parser.parse_args(argv)
    plan = load_plan(args.plan)
    target = Target("localstack", plan.environment(args.env).region, endpoint_url=args.endpoint_url)
    supervisor = Supervisor(target, plan, args.env, [int(p) for p in args.ports.split(",")],
                            [int(p) for p in args.admin_ports.split(",")], args.state)

    def stop(*_: Any) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisor.run()


if __name__ == "__main__":
    main()
