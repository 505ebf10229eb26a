"""The drills' faults on the local stand-in (harness/local): an AZ loss of the PostgreSQL primary, and the
loss of one task process. The stand-in recovers on its own as AWS would (the standby promoted and found
through the multi-host DSN; the ECS agent stand-in replacing the task, HAProxy's checks admitting it);
the rollback makes the pair Multi-AZ again by rebuilding the old primary as the synchronous standby."""
from __future__ import annotations

import os
import signal
import time
from typing import Any

from harness.drills import judges
from harness.drills.backends import FaultBackend, Journal
from harness.drills.model import DrillRefused, DrillSpec, InjectFailed, PreflightFailed, Restored, Revisions
from harness.local.alb import AlbError
from harness.local.ecs_agent.state import TaskRecord
from harness.local.postgres import DISCARD_TIMEOUT
from harness.util.proc import process_alive
from harness.local.stand_in import StandIn

SETTLE_S = 60.0  # the longest a rollback waits for the service to be whole again


class LocalBackend(FaultBackend):
    name = "local"
    discard_s = DISCARD_TIMEOUT

    def __init__(self, plane: StandIn) -> None:
        self.plane = plane
        self.pair = plane.database
        self.reported: list[dict[str, Any]] = []  # what the stand-in "reported", as RDS events would be
        self._ecs: Any = None  # the emulator's ECS, driven as on AWS (DRILL-04)

    def plan(self, drill: DrillSpec) -> list[str]:
        if drill.fault == "db_failover":
            roles = self.pair.roles()
            return [f"kill the stand-in's PostgreSQL primary (node '{roles['primary']}') with SIGKILL, as an AZ loss, "
                    f"and promote the synchronous standby (node '{roles['standby']}'); the app reaches the new "
                    "primary through its multi-host DSN",
                    f"afterwards rebuild node '{roles['primary']}' as the new synchronous standby (pg_rewind, or a "
                    "fresh base backup), so the pair is Multi-AZ again"]
        if drill.fault == "db_restore":
            return ["take a manifest of every application table (rows, content hash) and canary rows up to a "
                    "restore point", "restore the stand-in's base backup and WAL archive to that point into a "
                    "temporary data directory on a free port, tagged with the run and an expiry",
                    "verify the manifest and the canary rows there, then stop and remove the temporary server"]
        if drill.fault == "rollback":
            revisions = self.revisions()
            return [f"point the service at the previous revision {revisions.previous.rsplit('/', 1)[-1]} (version "
                    f"{revisions.previous_version}) in the emulator; the ECS agent stand-in rolls the tasks",
                    f"verify with the smoke gate expecting {revisions.previous_version}",
                    f"roll forward to {revisions.current.rsplit('/', 1)[-1]} (version {revisions.current_version}) "
                    "and verify again"]
        tasks = self._running()
        return [f"kill one of the {len(tasks)} running task processes with SIGKILL; the ECS agent stand-in starts a "
                "new one, which joins HAProxy's target group once its health check answers",
                "recovered when the service runs its desired count and every target is UP"]

    def preflight(self, drill: DrillSpec, journal: Journal) -> None:
        if drill.fault == "db_failover":
            # A standby to fail over to (else RDS would refuse), and in sync: judged as found, never repaired.
            roles, status = self.pair.roles(), self.pair.status()
            if None in roles.values() or not all(node["running"] for node in status.values()):
                raise DrillRefused(f"the stand-in's PostgreSQL pair in {self.pair.state} has no running standby to "
                                   f"fail over to (roles {roles}); see 'harness local status'")
            sync_state = status[roles["primary"]].get("standby_sync_state")  # type: ignore[index]
            journal("preflight", {"roles": roles, "standby_sync_state": sync_state})
            problem = judges.local_standby(sync_state)
            if problem:
                raise PreflightFailed(judges.out_of_sync(f"node '{roles['standby']}': {problem}"))
            return
        if drill.fault == "db_restore":
            roles = self.pair.roles()
            if roles["primary"] is None or not self.pair.status()[roles["primary"]]["running"]:
                raise DrillRefused(f"the stand-in's PostgreSQL primary does not run (roles {roles}); "
                                   "see 'harness local status'")
            journal("preflight", {"roles": roles})
            return
        ok, line = self.service_state()
        if not ok:
            raise DrillRefused(f"the stand-in's service is not whole ({line}); a task-loss drill starts from a "
                               "service running its desired count")
        journal("preflight", {"service": line})

    def inject(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        if drill.fault == "db_failover":
            hit = self.pair.fail_over()
            self.reported += [{"at": hit["killed_at"], "message": f"primary node '{hit['old_primary']}' killed"},
                              {"at": hit["promoted_at"], "message": f"node '{hit['new_primary']}' promoted to primary"}]
            journal("fault", hit)
            return hit
        if drill.fault != "task_loss":
            raise DrillRefused(f"the local backend cannot inject '{drill.fault}'")
        tasks = [t for t in self._running() if t.registered]
        if not tasks:
            raise DrillRefused("no registered running task to stop")
        victim = tasks[-1]
        os.kill(victim.pid, signal.SIGKILL)
        hit = {"task": victim.task, "pid": victim.pid, "killed_at": time.time()}
        self.reported.append({"at": hit["killed_at"], "message": f"task {victim.task} (pid {victim.pid}) killed"})
        journal("fault", hit)
        return hit

    def service_state(self) -> tuple[bool, str]:
        state = self.plane.task_state()
        if state is None:
            return False, "the ECS agent stand-in does not run"
        desired = state.desired or 0
        tasks = [t for t in state.tasks if not t.draining]
        running = [t for t in tasks if t.running and process_alive(t.pid)]
        registered = [t for t in running if t.registered]
        try:
            servers = self.plane.alb.status().get("servers", {})
        except AlbError as exc:
            return False, f"HAProxy's stats do not answer: {exc}"
        up = [t for t in registered if servers.get(t.task) == "UP"]
        line = f"running {len(running)}/{desired}, targets healthy {len(up)}/{desired}"
        return desired > 0 and len(running) == desired and len(up) == desired, line

    def events(self, since_epoch: float) -> list[dict[str, Any]]:
        return [e for e in self.reported if e["at"] >= since_epoch]

    def rollback(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        if drill.fault == "db_failover":
            try:
                rebuilt = self.pair.rebuild_standby()
            except RuntimeError as exc:
                journal("rollback failed", {"error": str(exc)[:500]})
                return {"ok": False, "detail": f"the old primary could not be rebuilt as standby: {exc}"[:300]}
            healthy = self.pair.healthy()
            journal("rollback", {**(rebuilt or {}), "healthy": healthy, "roles": self.pair.roles()})
            return {"ok": healthy, "detail": f"pair {'healthy' if healthy else 'NOT healthy'}, roles "
                                             f"{self.pair.roles()}"}
        deadline = time.monotonic() + min(SETTLE_S, drill.timeout_s)
        ok, line = self.service_state()
        while not ok and time.monotonic() < deadline:
            time.sleep(0.5)
            ok, line = self.service_state()
        journal("rollback", {"service": line, "ok": ok})
        return {"ok": ok, "detail": line}

    def _running(self) -> list[TaskRecord]:
        state = self.plane.task_state()
        return [t for t in state.tasks if t.running and not t.draining] if state else []


    # -- DRILL-02 --------------------------------------------------------------------------------------------

    def restore(self, drill: DrillSpec, journal: Journal, restore_point: float, run_id: str,
                expires: float) -> Restored:
        """From the stand-in's base backup (taken at `up`, as RDS's snapshot) and its WAL archive, into a
        temporary data directory on a free port. The archive first gets the WAL up to now (RDS ships it
        every five minutes; a restore needs a commit past its point)."""
        try:
            segment = self.pair.switch_wal()
            journal("wal archived", {"segment": segment.name})
            made = self.pair.restore(restore_point, run_id, drill.id, expires, env=self.plane.env)
        except RuntimeError as exc:
            raise InjectFailed(str(exc).splitlines()[0]) from None
        journal("restored", {k: v for k, v in made.items() if k != "dsn"})
        return Restored(run_id, made["dsn"], restore_point, {"port": made["port"], "dir": made["dir"]})

    def discard(self, restored: Restored, journal: Journal) -> dict[str, Any]:
        done = self.pair.discard_restore(restored.name)
        journal("discarded", {"name": restored.name, **done})
        return done

    def sweep(self, now: float, journal: Journal, env: str | None) -> list[dict[str, Any]]:
        found = self.pair.sweep_restores(now, env)
        for item in found:
            journal("swept" if item["removed"] else "kept", item)
        return found

    # -- DRILL-04 --------------------------------------------------------------------------------------------

    def revisions(self) -> Revisions:
        """From the emulator, as on AWS: the stand-in's control plane is moto's ECS."""
        return self._control_plane().revisions()

    def deploy(self, task_definition: str, journal: Journal) -> None:
        self._control_plane().deploy(task_definition, journal)

    def deployed(self, task_definition: str) -> tuple[bool, str]:
        """What the ECS agent stand-in runs: every task on `task_definition`, the desired count, all UP."""
        ok, line = self.service_state()
        state = self.plane.task_state()
        tasks = [t for t in state.tasks if not t.draining] if state else []
        on = [t for t in tasks if t.task_definition == task_definition]
        revision = task_definition.rsplit(":", 1)[-1]
        return ok and len(on) == len(tasks), f"rev {revision}: {len(on)}/{len(tasks)} tasks on it, {line}"

    def _control_plane(self) -> Any:
        from harness.drills.backends.aws import AwsBackend

        if self._ecs is None:
            self._ecs = AwsBackend(self.plane.target, self.plane.plan, self.plane.env)
        return self._ecs
