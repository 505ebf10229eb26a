"""The `aws` fault backend: a drill's fault made through the AWS APIs, on the deployment the plan's tags find.

These are the only writes the harness makes on AWS: RDS `RebootDBInstance` with `ForceFailover` (DRILL-01)
and ECS `StopTask` (DRILL-03), each let through the target's read-only guard by `Target.allowing` for that
one call; everything else here is a Describe/List call, recorded with the session's other calls.

The database, the cluster and service, and the service's target group are found as the compliance suite
finds them (one `take_snapshot`: tags, then links), never by a name the harness chose. What they are like
now (status, Multi-AZ, running count, target health) is asked again at each step, since a snapshot taken
for a dry run may be minutes old by the time the fault is made.

Errors: a problem found before the fault (discovery, an unsuitable resource, a describe call AWS refused)
raises `DrillRefused` with one line; a fault that could not be made raises `InjectFailed`, a RuntimeError,
since the probes are already running and the call may have reached AWS: the drill records an error and
rolls back as after any fault.
"""
from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Callable

import botocore.exceptions

from harness.drills.backends import FaultBackend, Journal
from harness.drills.model import DrillRefused, DrillSpec, InjectFailed
from harness.inventory import Inventory, PartFailed, PartUnavailable, take_snapshot
from harness.plan import Plan
from harness.target import Target

AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
FAULTS = ("db_failover", "task_loss")
# Target states that say a target is on its way out or not in use, rather than failing: a stopped task's
# target drains for the deregistration delay, and waiting for that would add it to the measured RTO.
LEAVING = ("draining", "unused")


def _say(exc: BaseException) -> str:
    """One line for an AWS error: the operation, AWS's code and message."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"{exc.operation_name} failed: {err.get('Code')}: {err.get('Message')}"
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _epoch(when: Any) -> float:
    return when.timestamp() if isinstance(when, dt.datetime) else float(when)


def _tail(arn: str) -> str:
    """A readable name from an ARN: the cluster's name, the target group's name."""
    resource = arn.split(":", 5)[-1]
    parts = resource.split("/")
    return parts[1] if resource.startswith("targetgroup/") and len(parts) > 1 else parts[-1]


class AwsBackend(FaultBackend):
    """`stop_alarms`: the plan-named alarms that stop the drill. `inventory`: a snapshot of `env` taken
    already this session, to find the resources without a second discovery (their state is read again at
    each step anyway). `poll_s`: how often rollback looks whether the system has settled. `run_id` names the
    run in the stopped task's reason, so ECS's own record says who stopped it."""

    name = "aws"

    def __init__(self, target: Target, plan: Plan, env: str, stop_alarms: Sequence[str] = (), *,
                 inventory: Inventory | None = None, poll_s: float = 5.0, run_id: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.target = target
        self._plan = plan
        self.env = env
        self.stop_alarms = list(stop_alarms)
        self.poll_s = poll_s
        self.run_id = run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._sleep = sleep
        self._inventory = inventory
        self._fault: str | None = None      # the drill's fault, once preflight or inject has seen it
        self._attempted = False             # inject was called: rollback waits for the system to settle
        self._hit: dict[str, Any] = {}

    # --- discovery ----------------------------------------------------------------------------------------

    def _discovered(self, part: str) -> list[dict[str, Any]]:
        if self._inventory is None:
            self._inventory = take_snapshot(self.target, self._plan, self.env)
        try:
            return self._inventory.need(part)
        except (PartFailed, PartUnavailable) as exc:
            raise DrillRefused(f"cannot discover {part.replace('_', ' ')} of {self.env}: {exc}") from None

    def _tags(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._plan.tags(self.env).items())

    def _one(self, part: str, what: str, name: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
        found = self._discovered(part)
        if len(found) != 1:
            names = ", ".join(sorted(name(x) for x in found)) or "none"
            raise DrillRefused(f"the drill needs exactly one {what} tagged {self._tags()} in "
                               f"{self.target.region}; found {len(found)} ({names})")
        return found[0]

    def _database(self) -> dict[str, Any]:
        return self._one("db_instances", "database instance", lambda d: d["DBInstanceIdentifier"])

    def _service(self) -> dict[str, Any]:
        return self._one("services", "ECS service", lambda s: s["serviceName"])

    @staticmethod
    def _target_group(service: dict[str, Any]) -> str | None:
        return next((lb["targetGroupArn"] for lb in service.get("loadBalancers", []) if lb.get("targetGroupArn")),
                    None)

    # --- live state ---------------------------------------------------------------------------------------

    def _db_now(self, identifier: str) -> dict[str, Any]:
        return self.target.client("rds").describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]

    def _service_now(self, service: dict[str, Any]) -> dict[str, Any]:
        found = self.target.client("ecs").describe_services(cluster=service["clusterArn"],
                                                            services=[service["serviceArn"]])["services"]
        if not found or found[0].get("status") != "ACTIVE":
            raise DrillRefused(f"service {service['serviceName']} is no longer active in cluster "
                               f"{_tail(service['clusterArn'])}")
        return found[0]

    def _running_tasks(self, service: dict[str, Any]) -> list[dict[str, Any]]:
        """The service's running tasks. The `group` check keeps to the service's own tasks where the
        serviceName filter is not applied (moto lists every task of the cluster)."""
        ecs = self.target.client("ecs")
        arns = [arn for page in ecs.get_paginator("list_tasks").paginate(
                    cluster=service["clusterArn"], serviceName=service["serviceName"], desiredStatus="RUNNING")
                for arn in page.get("taskArns", [])]
        tasks = []
        for i in range(0, len(arns), 100):
            tasks += ecs.describe_tasks(cluster=service["clusterArn"], tasks=arns[i:i + 100])["tasks"]
        return [t for t in tasks if t.get("lastStatus") == "RUNNING"
                and t.get("group") == f"service:{service['serviceName']}"]

    def _alarm_states(self) -> dict[str, str]:
        """The stop alarms that exist, and their state. One call for all states: the state is judged here,
        since an endpoint may ignore StateValue beside AlarmNames (moto does)."""
        cw = self.target.client("cloudwatch")
        states: dict[str, str] = {}
        for i in range(0, len(self.stop_alarms), 100):
            for page in cw.get_paginator("describe_alarms").paginate(AlarmNames=self.stop_alarms[i:i + 100],
                                                                     AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
                for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
                    states[alarm["AlarmName"]] = alarm.get("StateValue", "")
        return states

    def _firing(self, states: dict[str, str]) -> list[str]:
        return [name for name in self.stop_alarms if states.get(name) == "ALARM"]

    # --- the interface ------------------------------------------------------------------------------------

    def plan(self, drill: DrillSpec) -> list[str]:
        _known(drill)
        try:
            steps = self._steps(drill)
        except AWS_ERRORS as exc:
            raise DrillRefused(f"cannot read the {self.env} deployment: {_say(exc)}") from None
        if self.stop_alarms:
            steps.append(f"stop the drill if any of these alarms is in ALARM: {', '.join(self.stop_alarms)}")
        return steps

    def _steps(self, drill: DrillSpec) -> list[str]:
        if drill.fault == "db_failover":
            db = self._db_now(self._database()["DBInstanceIdentifier"])
            ident, az, standby = db["DBInstanceIdentifier"], db.get("AvailabilityZone"), db.get(
                "SecondaryAvailabilityZone")
            where = f"primary in {az}" + (f", standby in {standby}" if standby else "")
            shape = f"Multi-AZ, {where}" if db.get("MultiAZ") else f"not Multi-AZ, {where}: preflight will refuse"
            return [f"reboot RDS instance {ident} with ForceFailover=True ({shape}); follow its RDS events "
                    f"until a failover completes",
                    f"rollback: nothing to undo (the standby stays primary); wait up to {drill.timeout_s:.0f} s "
                    f"for {ident} to be available"]
        found = self._service()
        service = self._service_now(found)
        tg = self._target_group(found)
        group = f"target group {_tail(tg)}" if tg else "its target group (none linked: preflight will refuse)"
        name, cluster = service["serviceName"], _tail(service["clusterArn"])
        return [f"stop one of {service.get('runningCount', 0)} running tasks of service {name} in cluster "
                f"{cluster}; wait until running = desired ({service.get('desiredCount', 0)}) and every "
                f"target of {group} is healthy",
                f"rollback: nothing to undo (ECS replaces the task); wait up to {drill.timeout_s:.0f} s "
                f"for the service to be steady"]

    def preflight(self, drill: DrillSpec, journal: Journal) -> None:
        _known(drill)
        self._fault = drill.fault
        try:
            if drill.fault == "db_failover":
                self._preflight_database(journal)
            else:
                self._preflight_service(journal)
            if self.stop_alarms:
                self._preflight_alarms(journal)
        except AWS_ERRORS as exc:
            raise DrillRefused(f"preflight could not read the {self.env} deployment: {_say(exc)}") from None

    def _preflight_database(self, journal: Journal) -> None:
        ident = self._database()["DBInstanceIdentifier"]
        db = self._db_now(ident)
        found = {"db_instance": ident, "status": db.get("DBInstanceStatus"), "multi_az": db.get("MultiAZ"),
                 "az": db.get("AvailabilityZone"), "standby_az": db.get("SecondaryAvailabilityZone"),
                 "engine": db.get("Engine")}
        journal("discovered", found)
        if not db.get("MultiAZ"):
            raise DrillRefused(f"database {ident} is not Multi-AZ: a forced failover needs a standby; refusing")
        if db.get("DBInstanceStatus") != "available":
            raise DrillRefused(f"database {ident} is {db.get('DBInstanceStatus')}, not available; "
                               f"run the drill once it is available")

    def _preflight_service(self, journal: Journal) -> None:
        service = self._service()
        tg = self._target_group(service)
        now = self._service_now(service)
        running, desired = now.get("runningCount", 0), now.get("desiredCount", 0)
        journal("discovered", {"cluster": service["clusterArn"], "service": service["serviceName"],
                               "target_group": tg, "running": running, "desired": desired})
        name = service["serviceName"]
        if tg is None:
            raise DrillRefused(f"service {name} has no target group: the drill cannot see its targets recover")
        if running < 1 or running != desired:
            raise DrillRefused(f"service {name} runs {running} of {desired} desired tasks; the drill needs it "
                               f"steady with at least one task")

    def _preflight_alarms(self, journal: Journal) -> None:
        states = self._alarm_states()
        missing = [a for a in self.stop_alarms if a not in states]
        if missing:
            raise DrillRefused(f"stop alarm(s) {', '.join(missing)} not found in {self.target.region}; "
                               f"fix the names or the drill could not be stopped by them")
        firing = self._firing(states)
        journal("stop alarms", {"alarms": states, "in_alarm": firing})
        if firing:
            raise DrillRefused(f"stop alarm(s) {', '.join(firing)} already in ALARM: the steady state does not hold")

    def inject(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        _known(drill)
        self._fault = drill.fault
        self._attempted = True
        if drill.fault == "db_failover":
            self._hit = self._fail_over(journal)
        else:
            self._hit = self._stop_task(drill, journal)
        return self._hit

    def _fail_over(self, journal: Journal) -> dict[str, Any]:
        ident = self._database()["DBInstanceIdentifier"]
        rds = self.target.client("rds")
        try:
            before = self._db_now(ident)
            with self.target.allowing("RebootDBInstance"):
                after = rds.reboot_db_instance(DBInstanceIdentifier=ident, ForceFailover=True)["DBInstance"]
        except AWS_ERRORS as exc:
            raise InjectFailed(f"forced failover of {ident}: {_say(exc)}") from None
        hit = {"db_instance": ident, "az_before": before.get("AvailabilityZone"),
               "standby_az_before": before.get("SecondaryAvailabilityZone")}
        journal("reboot with failover", {**hit, "status": after.get("DBInstanceStatus")})
        return hit

    def _stop_task(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        service = self._service()
        name = service["serviceName"]
        ecs = self.target.client("ecs")
        try:
            tasks = self._running_tasks(service)
            if not tasks:
                raise InjectFailed(f"service {name} has no running task to stop")
            # The oldest task: the one a long-lived deployment would lose first, and the same on a re-run.
            task = min(tasks, key=lambda t: (_epoch(t.get("startedAt") or 0), t["taskArn"]))
            with self.target.allowing("StopTask"):
                ecs.stop_task(cluster=service["clusterArn"], task=task["taskArn"],
                              reason=f"harness DR drill {drill.id} {self.run_id}")
        except AWS_ERRORS as exc:
            raise InjectFailed(f"stopping a task of service {name}: {_say(exc)}") from None
        hit = {"task": task["taskArn"], "cluster": service["clusterArn"], "service": name,
               "running_before": len(tasks)}
        journal("stop task", hit)
        return hit

    def service_state(self) -> tuple[bool, str]:
        try:
            service = self._service()
            now = self._service_now(service)
            tg = self._target_group(service)
            health = (self.target.client("elbv2").describe_target_health(TargetGroupArn=tg)
                      ["TargetHealthDescriptions"] if tg else [])
        except DrillRefused as exc:
            return False, str(exc)
        except AWS_ERRORS as exc:
            return False, _say(exc)
        running, desired = now.get("runningCount", 0), now.get("desiredCount", 0)
        states = Counter(d.get("TargetHealth", {}).get("State", "unknown") for d in health)
        healthy = states.pop("healthy", 0)
        line = f"running {running}/{desired}, targets healthy {healthy}/{desired}"
        line += "".join(f", {n} {state}" for state, n in sorted(states.items()))
        if tg is None:
            return False, line + ", no target group linked to the service"
        failing = any(state not in LEAVING for state in states)
        return desired >= 1 and running == desired and healthy >= desired and not failing, line

    def alarms_firing(self) -> list[str]:
        """The stop alarms in ALARM. When they cannot be read, one entry saying so, so that the drill stops
        rather than goes on without the alarms it was told to watch."""
        if not self.stop_alarms:
            return []
        try:
            return self._firing(self._alarm_states())
        except AWS_ERRORS as exc:
            return [f"(stop alarms unreadable: {_say(exc)})"]

    def events(self, since_epoch: float) -> list[dict[str, Any]]:
        """RDS events of the database (failover started/completed) for a failover, the service's own events
        for a task loss. An error reading them is one event saying so: the report shows it, the drill goes on."""
        try:
            if self._fault == "task_loss":
                found = [(e["createdAt"], e["message"]) for e in self._service_now(self._service()).get("events", [])]
            else:
                ident = self._database()["DBInstanceIdentifier"]
                pages = self.target.client("rds").get_paginator("describe_events").paginate(
                    SourceType="db-instance", SourceIdentifier=ident,
                    StartTime=dt.datetime.fromtimestamp(since_epoch, dt.timezone.utc))
                found = [(e["Date"], e["Message"]) for page in pages for e in page.get("Events", [])]
        except DrillRefused as exc:
            return [{"at": time.time(), "message": f"platform events unreadable: {exc}"}]
        except AWS_ERRORS as exc:
            return [{"at": time.time(), "message": f"platform events unreadable: {_say(exc)}"}]
        # StartTime is filtered again here: not every endpoint applies it (moto does not).
        return sorted(({"at": _epoch(at), "message": message} for at, message in found if _epoch(at) >= since_epoch),
                      key=lambda e: e["at"])

    def rollback(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        """Nothing to undo: RDS keeps the promoted standby as primary and builds a new standby; ECS starts a
        task in place of the stopped one. What is left is to wait (up to the drill's timeout) until the
        database is available or the service steady again, so the next drill starts from a healthy system."""
        if not self._attempted:
            result = {"ok": True, "detail": "no fault was injected; nothing to undo"}
            journal("rollback", result)
            return result
        check = self._database_available if drill.fault == "db_failover" else self.service_state
        started = time.monotonic()
        while True:
            ok, detail = check()
            waited = time.monotonic() - started
            if ok or waited >= drill.timeout_s:
                break
            self._sleep(min(self.poll_s, drill.timeout_s - waited))
        result = {"ok": ok, "detail": detail if ok else f"after {waited:.0f} s: {detail}", "waited_s": round(waited, 1)}
        journal("rollback", result)
        return result

    def _database_available(self) -> tuple[bool, str]:
        try:
            ident = self._database()["DBInstanceIdentifier"]
            db = self._db_now(ident)
        except DrillRefused as exc:
            return False, str(exc)
        except AWS_ERRORS as exc:
            return False, _say(exc)
        status, az = db.get("DBInstanceStatus"), db.get("AvailabilityZone")
        was = self._hit.get("az_before")
        moved = f" (was {was})" if was and was != az else (" (same zone as before)" if was else "")
        return status == "available", f"{ident} {status} in {az}{moved}"


def _known(drill: DrillSpec) -> None:
    if drill.fault not in FAULTS:
        raise DrillRefused(f"{drill.id}: the aws backend cannot inject '{drill.fault}'; it knows {', '.join(FAULTS)}")
