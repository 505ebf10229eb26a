"""`AwsBackend`: the drills' FaultBackend on AWS, which sends each drill to the service that makes its fault
(rds, ecs) and watches the stop alarms beside it."""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any, Callable

from harness.compliance.inventory import Inventory
from harness.drills.backends import FaultBackend, Journal
from harness.drills.backends.aws.alarms import StopAlarms
from harness.drills.backends.aws.common import AWS_ERRORS, Poller, epoch, say
from harness.drills.backends.aws.discovery import Discovery
from harness.drills.backends.aws.ecs import Deployments, EcsService
from harness.drills.backends.aws.rds import Failover, Restore, instance_events
from harness.drills.model import DrillRefused, DrillSpec, InjectFailed, Restored, Revisions, Unreadable
from harness.plan import Plan
from harness.target import Target

FAULTS = ("db_failover", "task_loss", "db_restore", "rollback")
INJECTED = ("db_failover", "task_loss")  # the faults made by `inject`; the others have methods of their own


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
        self._env = env
        self.discard_s = delete_timeout_s
        run_id = run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        found = Discovery(target, plan, env, inventory)
        self._found = found
        self._poller = Poller(poll_s, sleep)
        self._alarms = StopAlarms(target, stop_alarms)
        self._failover = Failover(target, found)
        self._restore = Restore(target, found, self._poller, env, restore_dsn_template, delete_timeout_s)
        self._service = EcsService(target, found, run_id)
        self._deployments = Deployments(target, found, self._service, plan, env)
        self._target = target
        self._fault: str | None = None      # the drill's fault, once preflight or inject has seen it
        self._attempted = False             # inject was called: rollback waits for the system to settle
        self._hit: dict[str, Any] = {}

    def plan(self, drill: DrillSpec) -> list[str]:
        _known(drill)
        try:
            steps = self._steps(drill)
        except AWS_ERRORS as exc:
            raise Unreadable(f"cannot read the {self._env} deployment: {say(exc)}") from None
        if self._alarms.names:
            steps.append(f"stop the drill if any of these alarms is in ALARM: {', '.join(self._alarms.names)}")
        return steps

    def _steps(self, drill: DrillSpec) -> list[str]:
        if drill.fault == "db_restore":
            return self._restore.steps(drill)
        if drill.fault == "rollback":
            return self._deployments.steps(drill)
        if drill.fault == "db_failover":
            return self._failover.steps(drill)
        return self._service.steps(drill)

    def preflight(self, drill: DrillSpec, journal: Journal) -> None:
        _known(drill)
        self._fault = drill.fault
        try:
            if drill.fault == "db_failover":
                self._failover.preflight(journal)
            elif drill.fault == "db_restore":
                self._restore.preflight(journal)
            elif drill.fault == "rollback":
                self._deployments.preflight(journal)
            else:
                self._service.preflight(journal)
            if self._alarms.names:
                self._alarms.preflight(journal)
        except AWS_ERRORS as exc:
            raise Unreadable(f"preflight could not read the {self._env} deployment: {say(exc)}") from None

    def inject(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        _known(drill)
        if drill.fault not in INJECTED:
            raise InjectFailed(f"{drill.id}: '{drill.fault}' is not one fault to inject: it runs through the "
                               f"backend's {'restore and discard' if drill.fault == 'db_restore' else 'deploy'}")
        self._fault = drill.fault
        self._attempted = True
        if drill.fault == "db_failover":
            self._hit = self._failover.inject(journal)
        else:
            self._hit = self._service.stop_task(drill, journal)
        return self._hit

    def service_state(self) -> tuple[bool, str]:
        return self._service.state()

    def alarms_firing(self) -> list[str]:
        return self._alarms.firing()

    def events(self, since_epoch: float) -> list[dict[str, Any]]:
        """RDS events of the database (failover started/completed) for a failover, the service's own events
        for a task loss. An error reading them is one event saying so: the report shows it, the drill goes on."""
        try:
            if self._fault in ("task_loss", "rollback"):
                found = self._service.events()
            else:
                # A restore's own instance (RDS keeps the events of a deleted one), else the database.
                ident = self._restore.made or self._found.database()["DBInstanceIdentifier"]
                found = instance_events(self._target, ident, since_epoch)
        except DrillRefused as exc:
            return [{"at": time.time(), "message": f"platform events unreadable: {exc}"}]
        except AWS_ERRORS as exc:
            return [{"at": time.time(), "message": f"platform events unreadable: {say(exc)}"}]
        # StartTime is filtered again here: not every endpoint applies it (moto does not).
        return sorted(({"at": epoch(at), "message": message} for at, message in found if epoch(at) >= since_epoch),
                      key=lambda e: e["at"])

    def rollback(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        """Nothing to undo: RDS keeps the promoted standby as primary and builds a new standby; ECS starts a
        task in place of the stopped one. What is left is to wait (up to the drill's timeout) until the
        database is available or the service steady again, so the next drill starts from a healthy system."""
        if not self._attempted:
            result = {"ok": True, "detail": "no fault was injected; nothing to undo"}
            journal("rollback", result)
            return result
        check = ((lambda: self._failover.available(self._hit.get("az_before"))) if drill.fault == "db_failover"
                 else self._service.state)
        ok, detail, waited = self._poller.wait(check, drill.timeout_s)
        result = {"ok": ok, "detail": detail if ok else f"after {waited:.0f} s: {detail}", "waited_s": round(waited, 1)}
        journal("rollback", result)
        return result

    def restore(self, drill: DrillSpec, journal: Journal, restore_point: float, run_id: str,
                expires: float) -> Restored:
        self._fault = drill.fault
        return self._restore.restore(drill, journal, restore_point, run_id, expires)

    def discard(self, restored: Restored, journal: Journal) -> dict[str, Any]:
        return self._restore.discard(restored, journal)

    def revisions(self) -> Revisions:
        return self._deployments.revisions()

    def deploy(self, task_definition: str, journal: Journal) -> None:
        self._deployments.deploy(task_definition, journal)

    def deployed(self, task_definition: str) -> tuple[bool, str]:
        return self._deployments.deployed(task_definition)

    def sweep(self, now: float, journal: Journal, env: str | None) -> list[dict[str, Any]]:
        return self._restore.sweep(now, journal, env)


def _known(drill: DrillSpec) -> None:
    if drill.fault not in FAULTS:
        raise DrillRefused(f"{drill.id}: the aws backend cannot inject '{drill.fault}'; it knows {', '.join(FAULTS)}")
