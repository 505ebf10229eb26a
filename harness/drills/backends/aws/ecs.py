"""The ECS service's part of the drills: one of its tasks stopped (DRILL-03), and the service deployed to its
previous task definition and back (DRILL-04). Its state is its running count against the desired one and
the health of the targets in its target group, read again at each look."""
from __future__ import annotations

from collections import Counter
from typing import Any

from harness.drills.backends import Journal
from harness.drills.backends.aws.common import AWS_ERRORS, epoch, say
from harness.drills.backends.aws.discovery import Discovery, target_group
from harness.drills.model import DrillRefused, DrillSpec, InjectFailed, Revisions, Unreadable
from harness.plan import Plan
from harness.target import Target

# Target states that say a target is on its way out or not in use, rather than failing: a stopped task's
# target drains for the deregistration delay, and waiting for that would add it to the measured RTO.
LEAVING = ("draining", "unused")


def image_version(image: str) -> str:
    """The version an image reports: its tag (after the last ':' of the last path segment, so a registry's
    port is not taken for one), else 'latest'; a digest is not a tag."""
    name = image.rsplit("/", 1)[-1].split("@", 1)[0]
    return name.rsplit(":", 1)[1] if ":" in name else "latest"


def _revision(task_definition: str) -> str:
    """'family:12' from a task definition's ARN or its family:revision."""
    return task_definition.rsplit("/", 1)[-1]


def _tail(arn: str) -> str:
    """A readable name from an ARN: the cluster's name, the target group's name."""
    resource = arn.split(":", 5)[-1]
    parts = resource.split("/")
    return parts[1] if resource.startswith("targetgroup/") and len(parts) > 1 else parts[-1]


def _group_line(tg: str | None) -> str:
    return f"target group {_tail(tg)}" if tg else "its target group (none linked: preflight will refuse)"


class EcsService:
    """The environment's service: its state, and the loss of one of its tasks. `run_id` names the run in the
    stopped task's reason, so ECS's own record says who stopped it."""

    def __init__(self, target: Target, found: Discovery, run_id: str) -> None:
        self._target = target
        self._found = found
        self._run_id = run_id

    def steps(self, drill: DrillSpec) -> list[str]:
        """What a task loss would do (--dry-run)."""
        found = self._found.service()
        service = self.now(found)
        group = _group_line(target_group(found))
        name, cluster = service["serviceName"], _tail(service["clusterArn"])
        return [f"stop one of {service.get('runningCount', 0)} running tasks of service {name} in cluster "
                f"{cluster}; wait until running = desired ({service.get('desiredCount', 0)}) and every "
                f"target of {group} is healthy",
                f"rollback: nothing to undo (ECS replaces the task); wait up to {drill.timeout_s:.0f} s "
                f"for the service to be steady"]

    def preflight(self, journal: Journal) -> None:
        """Refuse a service whose recovery could not be seen (no target group) or that is not steady with at
        least one task."""
        service = self._found.service()
        tg = target_group(service)
        now = self.now(service)
        running, desired = now.get("runningCount", 0), now.get("desiredCount", 0)
        journal("discovered", {"cluster": service["clusterArn"], "service": service["serviceName"],
                               "target_group": tg, "running": running, "desired": desired})
        name = service["serviceName"]
        if tg is None:
            raise DrillRefused(f"service {name} has no target group: the drill cannot see its targets recover")
        if running < 1 or running != desired:
            raise DrillRefused(f"service {name} runs {running} of {desired} desired tasks; the drill needs it "
                               f"steady with at least one task")

    def stop_task(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        """Stop the service's oldest running task; returns what was hit."""
        service = self._found.service()
        name = service["serviceName"]
        ecs = self._target.client("ecs")
        try:
            tasks = self.running_tasks(service)
            if not tasks:
                raise InjectFailed(f"service {name} has no running task to stop")
            # The oldest task: the one a long-lived deployment would lose first, and the same on a re-run.
            task = min(tasks, key=lambda t: (epoch(t.get("startedAt") or 0), t["taskArn"]))
            with self._target.allowing("StopTask"):
                ecs.stop_task(cluster=service["clusterArn"], task=task["taskArn"],
                              reason=f"harness DR drill {drill.id} {self._run_id}")
        except AWS_ERRORS as exc:
            raise InjectFailed(f"stopping a task of service {name}: {say(exc)}") from None
        hit = {"task": task["taskArn"], "cluster": service["clusterArn"], "service": name,
               "running_before": len(tasks)}
        journal("stop task", hit)
        return hit

    def state(self) -> tuple[bool, str]:
        """(healthy, one line): the service runs its desired count and every registered target is healthy."""
        try:
            service = self._found.service()
            now = self.now(service)
            targets_ok, targets = self.targets(service, now.get("desiredCount", 0))
        except DrillRefused as exc:
            return False, str(exc)
        except AWS_ERRORS as exc:
            return False, say(exc)
        running, desired = now.get("runningCount", 0), now.get("desiredCount", 0)
        return running == desired and targets_ok, f"running {running}/{desired}, {targets}"

    def events(self) -> list[tuple[Any, str]]:
        """The service's own events, (when, message), as ECS keeps them."""
        return [(e["createdAt"], e["message"]) for e in self.now(self._found.service()).get("events", [])]

    def now(self, service: dict[str, Any]) -> dict[str, Any]:
        """The discovered service as ECS describes it now; DrillRefused when it is no longer active."""
        found = self._target.client("ecs").describe_services(cluster=service["clusterArn"],
                                                             services=[service["serviceArn"]])["services"]
        if not found or found[0].get("status") != "ACTIVE":
            raise DrillRefused(f"service {service['serviceName']} is no longer active in cluster "
                               f"{_tail(service['clusterArn'])}")
        return found[0]

    def running_tasks(self, service: dict[str, Any]) -> list[dict[str, Any]]:
        """The service's running tasks. The `group` check keeps to the service's own tasks where the
        serviceName filter is not applied (moto lists every task of the cluster)."""
        ecs = self._target.client("ecs")
        arns = [arn for page in ecs.get_paginator("list_tasks").paginate(
                    cluster=service["clusterArn"], serviceName=service["serviceName"], desiredStatus="RUNNING")
                for arn in page.get("taskArns", [])]
        tasks = []
        for i in range(0, len(arns), 100):
            tasks += ecs.describe_tasks(cluster=service["clusterArn"], tasks=arns[i:i + 100])["tasks"]
        return [t for t in tasks if t.get("lastStatus") == "RUNNING"
                and t.get("group") == f"service:{service['serviceName']}"]

    def targets(self, service: dict[str, Any], desired: int) -> tuple[bool, str]:
        """(every target healthy at the desired count, none failing; the line that says so). Targets on
        their way out (LEAVING) do not count against it."""
        tg = target_group(service)
        health = (self._target.client("elbv2").describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
                  if tg else [])
        states = Counter(d.get("TargetHealth", {}).get("State", "unknown") for d in health)
        healthy = states.pop("healthy", 0)
        line = f"targets healthy {healthy}/{desired}" + "".join(f", {n} {state}" for state, n in sorted(states.items()))
        if tg is None:
            return False, line + ", no target group linked to the service"
        failing = any(state not in LEAVING for state in states)
        return desired >= 1 and healthy >= desired and not failing, line


class Deployments:
    """The service's task definitions: the one it runs, the previous revision of its family, and a deploy of
    either. The version a revision reports is the image tag of the container that maps the plan's container
    port (ECS-03)."""

    def __init__(self, target: Target, found: Discovery, service: EcsService, plan: Plan, env: str) -> None:
        self._target = target
        self._found = found
        self._service = service
        self._plan = plan
        self._env = env

    def steps(self, drill: DrillSpec) -> list[str]:
        """What a rollback drill would do (--dry-run)."""
        found = self._found.service()
        name, cluster = found["serviceName"], _tail(found["clusterArn"])
        try:
            revs = self.revisions()
        except DrillRefused as exc:
            return [f"roll service {name} in cluster {cluster} back to its previous task definition: preflight "
                    f"will refuse: {exc}"]
        back, forth = _revision(revs.previous), _revision(revs.current)
        group = _group_line(target_group(found))
        return [f"deploy {back} (version {revs.previous_version}) to service {name} in cluster {cluster}, in "
                f"place of {forth} (version {revs.current_version}); wait up to {drill.timeout_s:.0f} s until "
                f"every task runs it and every target of {group} is healthy, then the smoke gate expects "
                f"version {revs.previous_version}",
                f"rollback: deploy {forth} (version {revs.current_version}) again and wait the same way"]

    def preflight(self, journal: Journal) -> None:
        """Refuse without a previous revision, or when the service is not steady to begin with."""
        revs = self.revisions()
        journal("revisions", {"current": revs.current, "current_version": revs.current_version,
                              "previous": revs.previous, "previous_version": revs.previous_version})
        ok, line = self._service.state()
        journal("discovered", {"service": self._found.service()["serviceName"], "state": line})
        if not ok:
            raise DrillRefused(f"service {self._found.service()['serviceName']} is not steady ({line}); the "
                               f"rollback drill starts only from a steady service")

    def revisions(self) -> Revisions:
        """The service's task definition now and the highest ACTIVE revision of its family below it (AWS
        takes familyPrefix as a prefix, and may not sort: both are settled here)."""
        ecs = self._target.client("ecs")
        try:
            current = self._service.now(self._found.service())["taskDefinition"]
            now = ecs.describe_task_definition(taskDefinition=current)["taskDefinition"]
            family, revision = now["family"], int(now["revision"])
            arns = [arn for page in ecs.get_paginator("list_task_definitions").paginate(
                        familyPrefix=family, status="ACTIVE", sort="DESC")
                    for arn in page.get("taskDefinitionArns", [])]
            earlier = []
            for arn in arns:
                fam, _, rev = _revision(arn).rpartition(":")
                if fam == family and rev.isdigit() and int(rev) < revision:
                    earlier.append((int(rev), arn))
            if not earlier:
                raise DrillRefused(f"task definition family {family} has no ACTIVE revision before {revision}: "
                                   f"there is nothing to roll back to")
            previous = ecs.describe_task_definition(taskDefinition=max(earlier)[1])["taskDefinition"]
        except AWS_ERRORS as exc:
            raise Unreadable(f"cannot read the service's task definitions: {say(exc)}") from None
        return Revisions(now["taskDefinitionArn"], self._version(now), previous["taskDefinitionArn"],
                         self._version(previous))

    def deploy(self, task_definition: str, journal: Journal) -> None:
        """Point the service at `task_definition` (UpdateService)."""
        service = self._found.service()
        try:
            with self._target.allowing("UpdateService"):
                updated = self._target.client("ecs").update_service(
                    cluster=service["clusterArn"], service=service["serviceArn"], taskDefinition=task_definition
                )["service"]
        except AWS_ERRORS as exc:
            raise InjectFailed(f"deploying {_revision(task_definition)} to service {service['serviceName']}: "
                               f"{say(exc)}") from None
        journal("deploy", {"service": service["serviceName"], "task_definition": task_definition,
                           "service_task_definition": updated.get("taskDefinition")})

    def deployed(self, task_definition: str) -> tuple[bool, str]:
        """Done when the service's primary deployment is `task_definition` and its rollout COMPLETED (where
        the endpoint reports none: one deployment, running = desired), every running task of the service
        runs it, at the desired count, and every target is healthy."""
        want = _revision(task_definition)
        try:
            service = self._found.service()
            now = self._service.now(service)
            tasks = self._service.running_tasks(service)
            targets_ok, targets = self._service.targets(service, now.get("desiredCount", 0))
        except DrillRefused as exc:
            return False, str(exc)
        except AWS_ERRORS as exc:
            return False, say(exc)
        desired, running = now.get("desiredCount", 0), now.get("runningCount", 0)
        deployments = now.get("deployments", [])
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        on = [t for t in tasks if _revision(t.get("taskDefinitionArn", "")) == want]
        line = f"on rev {want.rsplit(':', 1)[-1]}: {len(on)}/{desired} tasks, {targets}"
        problems = []
        if _revision(now.get("taskDefinition", "")) != want:
            problems.append(f"the service is on {_revision(now.get('taskDefinition', ''))}")
        elif primary is not None and _revision(primary.get("taskDefinition", "")) != want:
            problems.append(f"the primary deployment is {_revision(primary.get('taskDefinition', ''))}")
        if primary is not None and "rolloutState" in primary:
            if primary["rolloutState"] != "COMPLETED":
                problems.append(f"rollout {primary['rolloutState']}")
        elif running != desired or len(deployments) != 1:
            problems.append(f"{len(deployments)} deployments, running {running}/{desired}")
        if len(on) != len(tasks):
            problems.append(f"{len(tasks) - len(on)} tasks on other revisions")
        done = not problems and targets_ok and desired >= 1 and len(on) >= desired
        return done, line + "".join(f", {p}" for p in problems)

    def _version(self, task_definition: dict[str, Any]) -> str:
        """The image tag of the app's container: the one that maps the plan's container port."""
        port = self._plan.requirements["ECS-03"].expected(self._env)["container_port"]
        app = next((c for c in task_definition.get("containerDefinitions", [])
                    if any(m.get("containerPort") == port for m in c.get("portMappings", []))), None)
        if app is None:
            raise DrillRefused(f"task definition {_revision(task_definition['taskDefinitionArn'])} has no container "
                               f"mapping port {port}: its version cannot be told")
        return image_version(app.get("image", ""))
