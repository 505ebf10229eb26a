"""The `aws` fault backend: a drill's fault made through the AWS APIs, on the deployment the plan's tags find.

These are the only writes the harness makes on AWS, each let through the target's read-only guard by
`Target.allowing` for that one call: RDS `RebootDBInstance` with `ForceFailover` (DRILL-01), ECS `StopTask`
(DRILL-03), RDS `RestoreDBInstanceToPointInTime` and `DeleteDBInstance` of the temporary instance it made
(DRILL-02, and the sweep of leftovers), ECS `UpdateService` to the previous task definition and back
(DRILL-04). Everything else here is a Describe/List call, recorded with the session's other calls.

The database, the cluster and service, and the service's target group are found as the compliance suite
finds them (one `take_snapshot`: tags, then links), never by a name the harness chose. What they are like
now (status, Multi-AZ, running count, target health) is asked again at each step, since a snapshot taken
for a dry run may be minutes old by the time the fault is made.

A restored database carries the drill's tags (TAG_DRILL, TAG_RUN, TAG_ENV, TAG_EXPIRES) and never the plan's,
so discovery never takes it for part of the deployment; nothing here deletes an instance without TAG_DRILL,
whatever its name, and the sweep deletes only its own environment's (TAG_ENV) unless asked for every one.

Errors: a problem found before the fault (discovery, an unsuitable resource, a describe call AWS refused)
raises `DrillRefused` with one line; a fault that could not be made raises `InjectFailed`, a RuntimeError,
since the probes are already running and the call may have reached AWS: the drill records an error and
rolls back as after any fault.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Callable

import botocore.exceptions

from harness.alarms import alarm_states
from harness.drills import judges
from harness.drills.backends import FaultBackend, Journal
from harness.drills.model import (TAG_DRILL, TAG_ENV, TAG_EXPIRES, TAG_RUN, DrillRefused, DrillSpec, InjectFailed,
                                   PreflightFailed, Restored, Revisions)
from harness.compliance.inventory import Inventory, PartFailed, PartUnavailable, take_snapshot
from harness.plan import Plan
from harness.target import Target

AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
FAULTS = ("db_failover", "task_loss", "db_restore", "rollback")
INJECTED = ("db_failover", "task_loss")  # the faults made by `inject`; the others have methods of their own
# Target states that say a target is on its way out or not in use, rather than failing: a stopped task's
# target drains for the deregistration delay, and waiting for that would add it to the measured RTO.
LEAVING = ("draining", "unused")
NOT_FOUND = ("DBInstanceNotFound", "DBInstanceNotFoundFault")
# Statuses a restoring instance does not leave by itself: waiting on would only run out the timeout.
RESTORE_FAILED = ("failed", "incompatible-restore", "incompatible-parameters", "incompatible-network",
                  "storage-full", "inaccessible-encryption-credentials")
PROGRESS_S = 30.0  # a long wait (a restore, a deletion) journals its state at least this often


def _say(exc: BaseException) -> str:
    """One line for an AWS error: the operation, AWS's code and message."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"{exc.operation_name} failed: {err.get('Code')}: {err.get('Message')}"
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _epoch(when: Any) -> float:
    return when.timestamp() if isinstance(when, dt.datetime) else float(when)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code(exc: BaseException) -> str | None:
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, botocore.exceptions.ClientError) else None


def _tag_map(tags: Sequence[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def restore_id(source: str, run_id: str) -> str:
    """The temporary instance's identifier: the source's name cut short, and the run id's random tail, as
    RDS allows it (letters, digits and single hyphens, a letter first, at most 63 characters)."""
    ident = re.sub(r"[^a-z0-9]+", "-", f"{source[:30]}-drill-{run_id[-6:]}".lower()).strip("-")
    ident = ident if ident[:1].isalpha() else f"d-{ident}"
    return ident[:63].rstrip("-")


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


class AwsBackend(FaultBackend):
    """`stop_alarms`: the plan-named alarms that stop the drill. `inventory`: a snapshot of `env` taken
    already this session, to find the resources without a second discovery (their state is read again at
    each step anyway). `poll_s`: how often a wait looks again (the system settled, a restore available, a
    deleted instance gone). `run_id` names the run in the stopped task's reason, so ECS's own record says
    who stopped it. `restore_dsn_template`: how the runner reaches a restored database,
    'postgresql://USER:PASS@{host}:{port}/dougust' (None: it cannot, and a restore is not verified).
    `delete_timeout_s`: how long a discard or a sweep waits for a deleted instance to be gone."""

    name = "aws"

    def __init__(self, target: Target, plan: Plan, env: str, stop_alarms: Sequence[str] = (), *,
                 inventory: Inventory | None = None, poll_s: float = 5.0, run_id: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, restore_dsn_template: str | None = None,
                 delete_timeout_s: float = 1800.0) -> None:
        if restore_dsn_template is not None:
            try:
                restore_dsn_template.format(host="host", port=5432)
            except (KeyError, IndexError, ValueError):  # the template holds a password: never repeated
                raise ValueError("the restore DSN template may name only {host} and {port}") from None
        self.target = target
        self._plan = plan
        self.env = env
        self.stop_alarms = list(stop_alarms)
        self.poll_s = poll_s
        self.run_id = run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._sleep = sleep
        self.restore_dsn_template = restore_dsn_template
        self.delete_timeout_s = delete_timeout_s
        self.discard_s = delete_timeout_s
        self._inventory = inventory
        self._fault: str | None = None      # the drill's fault, once preflight or inject has seen it
        self._attempted = False             # inject was called: rollback waits for the system to settle
        self._hit: dict[str, Any] = {}
        self._made: str | None = None       # the instance this backend's restore call created

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

    def _find_db(self, identifier: str) -> dict[str, Any] | None:
        """The instance now, or None when there is none by that name (an identifier RDS would not accept
        names none either)."""
        try:
            return self._db_now(identifier)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in NOT_FOUND + ("InvalidParameterValue",):
                return None
            raise

    def _db_tags(self, db: dict[str, Any]) -> dict[str, str]:
        """An instance's tags: DescribeDBInstances carries them; an endpoint that leaves them out is asked."""
        if "TagList" in db:
            return _tag_map(db["TagList"])
        return _tag_map(self.target.client("rds").list_tags_for_resource(ResourceName=db["DBInstanceArn"])
                        .get("TagList"))

    def _wait(self, check: Callable[[], tuple[bool, str]], timeout_s: float, journal: Journal | None = None,
              action: str = "") -> tuple[bool, str, float]:
        """Ask `check` every poll_s until it says done or `timeout_s` has passed: (done, its last line, the
        seconds waited). With a journal, its line is journaled first, when it changes (at most every
        PROGRESS_S) and at the end."""
        started = time.monotonic()
        said, said_at = None, float("-inf")
        while True:
            ok, line = check()
            waited = time.monotonic() - started
            done = ok or waited >= timeout_s
            if journal is not None and (said is None or done or (line != said and waited - said_at >= PROGRESS_S)):
                journal(action, {"state": line, "waited_s": round(waited, 1)})
                said, said_at = line, waited
            if done:
                return ok, line, waited
            self._sleep(max(0.0, min(self.poll_s, timeout_s - waited)))

    def _alarm_states(self) -> dict[str, str]:
        return alarm_states(self.target.client("cloudwatch"), self.stop_alarms)

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
        if drill.fault == "db_restore":
            return self._restore_steps(drill)
        if drill.fault == "rollback":
            return self._rollback_steps(drill)
        if drill.fault == "db_failover":
            db = self._db_now(self._database()["DBInstanceIdentifier"])
            ident, az, standby = db["DBInstanceIdentifier"], db.get("AvailabilityZone"), db.get(
                "SecondaryAvailabilityZone")
            where = f"primary in {az}" + (f", standby in {standby}" if standby else "")
            shape = (f"Multi-AZ, {where}" if db.get("MultiAZ")
                     else f"not Multi-AZ, {where}: preflight will fail the drill, injecting nothing")
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

    def _restore_steps(self, drill: DrillSpec) -> list[str]:
        db = self._db_now(self._database()["DBInstanceIdentifier"])
        ident = db["DBInstanceIdentifier"]
        subnet_group = (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName", "(none)")
        groups = ", ".join(g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])) or "none"
        backups = db.get("BackupRetentionPeriod") or 0
        latest = db.get("LatestRestorableTime")
        where = (f"{backups} days of backups, restorable up to {_iso(_epoch(latest))}" if backups and latest
                 else f"backup retention {backups} days, latest restorable time {latest or 'none'}: "
                      f"preflight will refuse")
        verify = ("verify it against the manifest through the restore DSN template" if self.restore_dsn_template
                  else "it cannot be verified from here (no restore DSN template): the drill reports it restored, "
                       "not verified")
        return [f"restore RDS instance {ident} ({where}) to the manifest's restore point, waiting up to "
                f"{drill.timeout_s:.0f} s for RDS to archive past it, into a temporary instance "
                f"{ident[:30]}-drill-<run> ({db.get('DBInstanceClass')}, single-AZ, not publicly accessible, "
                f"no deletion protection) in subnet group {subnet_group} with security groups {groups}; tagged "
                f"{TAG_DRILL}={drill.id}, {TAG_RUN}=<run id>, {TAG_ENV}={self.env}, {TAG_EXPIRES}=<start + "
                f"{judges.restore_expiry(0.0, drill.timeout_s, self.discard_s):.0f} s: the drill's hard timeout for the "
                f"restore, as long again to verify, {self.discard_s:.0f} s to delete>, never "
                f"{self._tags()}, so discovery does not see it",
                f"wait until it is available, then {verify}",
                f"rollback: delete the temporary instance (no final snapshot, its automated backups too) and wait "
                f"until it is gone; if the run is killed, 'harness drills sweep' removes it once expired"]

    def _rollback_steps(self, drill: DrillSpec) -> list[str]:
        found = self._service()
        name, cluster = found["serviceName"], _tail(found["clusterArn"])
        try:
            revs = self.revisions()
        except DrillRefused as exc:
            return [f"roll service {name} in cluster {cluster} back to its previous task definition: preflight "
                    f"will refuse: {exc}"]
        back, forth = _revision(revs.previous), _revision(revs.current)
        tg = self._target_group(found)
        group = f"target group {_tail(tg)}" if tg else "its target group (none linked: preflight will refuse)"
        return [f"deploy {back} (version {revs.previous_version}) to service {name} in cluster {cluster}, in "
                f"place of {forth} (version {revs.current_version}); wait up to {drill.timeout_s:.0f} s until "
                f"every task runs it and every target of {group} is healthy, then the smoke gate expects "
                f"version {revs.previous_version}",
                f"rollback: deploy {forth} (version {revs.current_version}) again and wait the same way"]

    def preflight(self, drill: DrillSpec, journal: Journal) -> None:
        _known(drill)
        self._fault = drill.fault
        try:
            if drill.fault == "db_failover":
                self._preflight_database(journal)
            elif drill.fault == "db_restore":
                self._preflight_restore(journal)
            elif drill.fault == "rollback":
                self._preflight_rollback(journal)
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
        found["pending_modifications"] = sorted(db.get("PendingModifiedValues") or {})
        journal("discovered", found)
        problem = judges.rds_standby(ident, db.get("MultiAZ"), db.get("DBInstanceStatus"),
                                     db.get("PendingModifiedValues"))
        if problem:
            raise PreflightFailed(judges.out_of_sync(problem))

    def _preflight_restore(self, journal: Journal) -> None:
        ident = self._database()["DBInstanceIdentifier"]
        db = self._db_now(ident)
        latest = db.get("LatestRestorableTime")
        backups = db.get("BackupRetentionPeriod") or 0
        journal("discovered", {"db_instance": ident, "status": db.get("DBInstanceStatus"),
                               "backup_retention_days": backups,
                               "latest_restorable_time": _iso(_epoch(latest)) if latest else None,
                               "subnet_group": (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
                               "instance_class": db.get("DBInstanceClass")})
        if backups < 1:
            raise DrillRefused(f"database {ident} keeps no automated backups (retention 0 days): a point-in-time "
                               f"restore needs them; refusing")
        if not latest:
            raise DrillRefused(f"database {ident} reports no latest restorable time: RDS has nothing to restore "
                               f"from yet; refusing")

    def _preflight_rollback(self, journal: Journal) -> None:
        revs = self.revisions()
        journal("revisions", {"current": revs.current, "current_version": revs.current_version,
                              "previous": revs.previous, "previous_version": revs.previous_version})
        ok, line = self.service_state()
        journal("discovered", {"service": self._service()["serviceName"], "state": line})
        if not ok:
            raise DrillRefused(f"service {self._service()['serviceName']} is not steady ({line}); the rollback "
                               f"drill starts only from a steady service")

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
        if drill.fault not in INJECTED:
            raise InjectFailed(f"{drill.id}: '{drill.fault}' is not one fault to inject: it runs through the "
                               f"backend's {'restore and discard' if drill.fault == 'db_restore' else 'deploy'}")
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
            targets_ok, targets = self._targets(service, now.get("desiredCount", 0))
        except DrillRefused as exc:
            return False, str(exc)
        except AWS_ERRORS as exc:
            return False, _say(exc)
        running, desired = now.get("runningCount", 0), now.get("desiredCount", 0)
        return running == desired and targets_ok, f"running {running}/{desired}, {targets}"

    def _targets(self, service: dict[str, Any], desired: int) -> tuple[bool, str]:
        """(every target healthy at the desired count, none failing; the line that says so). Targets on
        their way out (LEAVING) do not count against it."""
        tg = self._target_group(service)
        health = (self.target.client("elbv2").describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
                  if tg else [])
        states = Counter(d.get("TargetHealth", {}).get("State", "unknown") for d in health)
        healthy = states.pop("healthy", 0)
        line = f"targets healthy {healthy}/{desired}" + "".join(f", {n} {state}" for state, n in sorted(states.items()))
        if tg is None:
            return False, line + ", no target group linked to the service"
        failing = any(state not in LEAVING for state in states)
        return desired >= 1 and healthy >= desired and not failing, line

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
            if self._fault in ("task_loss", "rollback"):
                found = [(e["createdAt"], e["message"]) for e in self._service_now(self._service()).get("events", [])]
            else:
                # A restore's own instance (RDS keeps the events of a deleted one), else the database.
                ident = self._made or self._database()["DBInstanceIdentifier"]
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
        ok, detail, waited = self._wait(check, drill.timeout_s)
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

    # --- DRILL-02: point-in-time restore --------------------------------------------------------------------

    def restore(self, drill: DrillSpec, journal: Journal, restore_point: float, run_id: str,
                expires: float) -> Restored:
        """RDS restores to a point only once it has archived the transaction log past it (every five
        minutes), so the restore waits for the source's LatestRestorableTime to reach the point first. The
        restored instance is made cheap and harmless (single-AZ, private, no deletion protection) in the
        source's network, and tagged as the drill's, never as the deployment's; the whole restore is bounded
        by the drill's timeout."""
        self._fault = drill.fault
        started = time.monotonic()
        rds = self.target.client("rds")
        point = _iso(restore_point)
        try:
            source = self._db_now(self._database()["DBInstanceIdentifier"])
        except DrillRefused as exc:
            raise InjectFailed(str(exc)) from None
        except AWS_ERRORS as exc:
            raise InjectFailed(f"reading the database to restore: {_say(exc)}") from None
        ident = source["DBInstanceIdentifier"]
        target = restore_id(ident, run_id)

        def archived() -> tuple[bool, str]:
            latest = self._db_now(ident).get("LatestRestorableTime")
            if not latest:
                return False, f"{ident} reports no latest restorable time"
            return _epoch(latest) >= restore_point, f"{ident} restorable up to {_iso(_epoch(latest))}, restore point {point}"

        try:
            ok, line, waited = self._wait(archived, drill.timeout_s, journal, "restore point")
        except AWS_ERRORS as exc:
            raise InjectFailed(f"reading the latest restorable time of {ident}: {_say(exc)}") from None
        if not ok:
            raise InjectFailed(f"restore point {point} not restorable after {waited:.0f} s ({line})")
        subnet_group = (source.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
        tags = {TAG_DRILL: drill.id, TAG_RUN: run_id, TAG_ENV: self.env, TAG_EXPIRES: _iso(expires)}
        request: dict[str, Any] = {
            "SourceDBInstanceIdentifier": ident, "TargetDBInstanceIdentifier": target,
            "RestoreTime": dt.datetime.fromtimestamp(restore_point, dt.timezone.utc),
            "DBInstanceClass": source["DBInstanceClass"],
            "VpcSecurityGroupIds": [g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups", [])],
            "MultiAZ": False, "PubliclyAccessible": False, "DeletionProtection": False, "CopyTagsToSnapshot": False,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        if subnet_group:
            request["DBSubnetGroupName"] = subnet_group
        try:
            with self.target.allowing("RestoreDBInstanceToPointInTime"):
                made = rds.restore_db_instance_to_point_in_time(**request)["DBInstance"]
        except AWS_ERRORS as exc:
            raise InjectFailed(f"restoring {ident} to {point}: {_say(exc)}") from None
        except KeyboardInterrupt:
            self._made = target  # interrupted in flight: the instance may exist, and the undo must find it
            raise
        self._made = target
        journal("restore started", {"source": ident, "db_instance": target, "restore_time": point,
                                    "subnet_group": subnet_group, "instance_class": source["DBInstanceClass"],
                                    "tags": tags, "status": made.get("DBInstanceStatus")})

        def available() -> tuple[bool, str]:
            try:
                status = self._db_now(target).get("DBInstanceStatus")
            except AWS_ERRORS as exc:  # a new instance may not be listed yet: look again
                return False, _say(exc)
            if status in RESTORE_FAILED:
                raise InjectFailed(f"the restore of {ident} into {target} ended {status}")
            return status == "available", f"{target} {status}"

        ok, line, _ = self._wait(available, max(0.0, drill.timeout_s - (time.monotonic() - started)), journal,
                                 "restoring")
        if not ok:
            raise InjectFailed(f"{target} not available {time.monotonic() - started:.0f} s after the restore "
                               f"began ({line})")
        try:
            db = self._db_now(target)
        except AWS_ERRORS as exc:
            raise InjectFailed(f"reading the restored {target}: {_say(exc)}") from None
        host, port = db.get("Endpoint", {}).get("Address"), db.get("Endpoint", {}).get("Port")
        dsn = self.restore_dsn_template.format(host=host, port=port) if self.restore_dsn_template else None
        detail = {"endpoint": host, "port": port, "source": ident, "restore_time": point,
                  "multi_az": db.get("MultiAZ"), "expires": tags[TAG_EXPIRES]}
        journal("restored", {"db_instance": target, **detail})
        return Restored(target, dsn, restore_point, detail)

    def discard(self, restored: Restored, journal: Journal) -> dict[str, Any]:
        """Delete the restored instance and wait until RDS no longer lists it. When the drill never got a
        `Restored` back (its wait timed out after the restore call), `restored.name` is only the run's id:
        the instance this backend asked for is removed instead. Only an instance tagged TAG_DRILL is ever
        deleted."""
        try:
            db = self._find_db(restored.name)
            if db is None and self._made and self._made != restored.name:
                db = self._find_db(self._made)
        except AWS_ERRORS as exc:
            result = {"ok": False, "detail": f"cannot read {restored.name}: {_say(exc)}"}
            journal("discard failed", result)
            return result
        if db is None:
            result = {"ok": True, "detail": f"nothing to remove: no database instance {self._made or restored.name}"}
            journal("discarded", result)
            return result
        ident = db["DBInstanceIdentifier"]
        try:
            tags = self._db_tags(db)
        except AWS_ERRORS as exc:
            result = {"ok": False, "detail": f"cannot read the tags of {ident}: {_say(exc)}; not deleted"}
            journal("discard failed", result)
            return result
        if TAG_DRILL not in tags:
            result = {"ok": False, "detail": f"refused to delete {ident}: it has no {TAG_DRILL} tag, so no drill "
                                             f"made it"}
            journal("discard refused", result)
            return result
        removed = self._remove([db], journal)[ident]
        result = {"ok": removed[0], "detail": removed[1]}
        journal("discarded", {"db_instance": ident, **result})
        return result

    def _remove(self, instances: Sequence[dict[str, Any]], journal: Journal) -> dict[str, tuple[bool, str]]:
        """Delete these (drill-tagged) instances, then wait, up to delete_timeout_s for them all, until RDS
        no longer lists them: {identifier: (gone, one line)}."""
        rds = self.target.client("rds")
        refused: dict[str, str] = {}
        for db in instances:
            ident = db["DBInstanceIdentifier"]
            if db.get("DBInstanceStatus") == "deleting":
                continue  # an earlier discard or sweep asked already
            try:
                with self.target.allowing("DeleteDBInstance"):
                    rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True,
                                           DeleteAutomatedBackups=True)
                journal("delete", {"db_instance": ident})
            except AWS_ERRORS as exc:
                if _code(exc) not in NOT_FOUND:
                    refused[ident] = _say(exc)
        waiting = [db["DBInstanceIdentifier"] for db in instances if db["DBInstanceIdentifier"] not in refused]
        left: dict[str, str] = {}

        def gone() -> tuple[bool, str]:
            left.clear()
            for ident in waiting:
                try:
                    db = self._find_db(ident)
                except AWS_ERRORS as exc:
                    left[ident] = _say(exc)
                    continue
                if db is not None:
                    left[ident] = str(db.get("DBInstanceStatus"))
            return not left, ", ".join(f"{i} {state}" for i, state in left.items()) or "gone"

        _, _, waited = self._wait(gone, self.delete_timeout_s, journal if waiting else None, "deleting")
        result = {ident: (False, line) for ident, line in refused.items()}
        for ident in waiting:
            result[ident] = ((False, f"{ident} still {left[ident]} after {waited:.0f} s") if ident in left
                             else (True, f"{ident} deleted"))
        return result

    # --- DRILL-04: roll back to the previous revision ---------------------------------------------------------

    def revisions(self) -> Revisions:
        """The service's task definition now and the highest ACTIVE revision of its family below it (AWS
        takes familyPrefix as a prefix, and may not sort: both are settled here)."""
        ecs = self.target.client("ecs")
        try:
            current = self._service_now(self._service())["taskDefinition"]
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
            raise DrillRefused(f"cannot read the service's task definitions: {_say(exc)}") from None
        return Revisions(now["taskDefinitionArn"], self._version(now), previous["taskDefinitionArn"],
                         self._version(previous))

    def _version(self, task_definition: dict[str, Any]) -> str:
        """The image tag of the app's container: the one that maps the plan's container port."""
        port = self._plan.requirements["ECS-03"].expected(self.env)["container_port"]
        app = next((c for c in task_definition.get("containerDefinitions", [])
                    if any(m.get("containerPort") == port for m in c.get("portMappings", []))), None)
        if app is None:
            raise DrillRefused(f"task definition {_revision(task_definition['taskDefinitionArn'])} has no container "
                               f"mapping port {port}: its version cannot be told")
        return image_version(app.get("image", ""))

    def deploy(self, task_definition: str, journal: Journal) -> None:
        service = self._service()
        try:
            with self.target.allowing("UpdateService"):
                updated = self.target.client("ecs").update_service(
                    cluster=service["clusterArn"], service=service["serviceArn"], taskDefinition=task_definition
                )["service"]
        except AWS_ERRORS as exc:
            raise InjectFailed(f"deploying {_revision(task_definition)} to service {service['serviceName']}: "
                               f"{_say(exc)}") from None
        journal("deploy", {"service": service["serviceName"], "task_definition": task_definition,
                           "service_task_definition": updated.get("taskDefinition")})

    def deployed(self, task_definition: str) -> tuple[bool, str]:
        """Done when the service's primary deployment is `task_definition` and its rollout COMPLETED (where
        the endpoint reports none: one deployment, running = desired), every running task of the service
        runs it, at the desired count, and every target is healthy."""
        want = _revision(task_definition)
        try:
            service = self._service()
            now = self._service_now(service)
            tasks = self._running_tasks(service)
            targets_ok, targets = self._targets(service, now.get("desiredCount", 0))
        except DrillRefused as exc:
            return False, str(exc)
        except AWS_ERRORS as exc:
            return False, _say(exc)
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

    # --- cleanup ----------------------------------------------------------------------------------------------

    def sweep(self, now: float, journal: Journal, env: str | None) -> list[dict[str, Any]]:
        """Every instance tagged TAG_DRILL in the region; those judges.sweep finds expired for `env` (None:
        every environment) deleted, all at once, then waited for. An instance without TAG_DRILL is never
        touched, whatever its name; one of another environment, or whose expiry cannot be read, is kept and
        reported."""
        found: list[tuple[dict[str, Any], dict[str, str], bool, str]] = []
        try:
            for page in self.target.client("rds").get_paginator("describe_db_instances").paginate():
                for db in page.get("DBInstances", []):
                    tags = self._db_tags(db)
                    if TAG_DRILL in tags:
                        found.append((db, tags, *judges.sweep(tags, now, env)))
        except AWS_ERRORS as exc:
            raise DrillRefused(f"cannot list the database instances in {self.target.region}: {_say(exc)}") from None
        expired = [db for db, _, remove, _ in found if remove]
        removed = self._remove(expired, journal) if expired else {}
        items = []
        for db, tags, remove, why in found:
            ident = db["DBInstanceIdentifier"]
            gone, detail = removed.get(ident, (False, why))
            item = {"name": ident, "run_id": tags.get(TAG_RUN, ""), "drill": tags[TAG_DRILL],
                    "expires": tags.get(TAG_EXPIRES), "expired": remove, "removed": gone,
                    "detail": f"{why}: {detail}" if remove else detail}
            journal("swept" if gone else "kept", item)
            items.append(item)
        return items


def _known(drill: DrillSpec) -> None:
    if drill.fault not in FAULTS:
        raise DrillRefused(f"{drill.id}: the aws backend cannot inject '{drill.fault}'; it knows {', '.join(FAULTS)}")
