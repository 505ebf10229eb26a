"""The drills' faults on the local stand-in (harness/local): an AZ loss of the PostgreSQL primary, and the
loss of one task process. The stand-in recovers on its own as AWS would (the standby promoted and found
through the multi-host DSN; the ECS agent stand-in replacing the task, HAProxy's checks admitting it);
the rollback makes the pair Multi-AZ again by rebuilding the old primary as the synchronous standby."""
from __future__ import annotations

import os
import signal
import time
from typing import Any

from harness.drills.backends import FaultBackend, Journal
from harness.drills.model import DrillRefused, DrillSpec
from harness.local.alb import AlbError
from harness.local.database import process_alive
from harness.local.dataplane import DataPlane

SETTLE_S = 60.0  # the longest a rollback waits for the service to be whole again


class LocalBackend(FaultBackend):
    name = "local"

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.pair = plane.database
        self.reported: list[dict[str, Any]] = []  # what the stand-in "reported", as RDS events would be

    def plan(self, drill: DrillSpec) -> list[str]:
        if drill.fault == "db_failover":
            roles = self.pair.roles()
            return [f"kill the stand-in's PostgreSQL primary (node '{roles['primary']}') with SIGKILL, as an AZ loss, "
                    f"and promote the synchronous standby (node '{roles['standby']}'); the app reaches the new "
                    "primary through its multi-host DSN",
                    f"afterwards rebuild node '{roles['primary']}' as the new synchronous standby (pg_rewind, or a "
                    "fresh base backup), so the pair is Multi-AZ again"]
        tasks = self._running()
        return [f"kill one of the {len(tasks)} running task processes with SIGKILL; the ECS agent stand-in starts a "
                "new one, which joins HAProxy's target group once its health check answers",
                "recovered when the service runs its desired count and every target is UP"]

    def preflight(self, drill: DrillSpec, journal: Journal) -> None:
        if drill.fault == "db_failover":
            # Only what RDS would refuse on: a standby to fail over to. Whether it is synchronous is what the
            # drill measures (lost acknowledged writes), not a precondition.
            roles, status = self.pair.roles(), self.pair.status()
            if None in roles.values() or not all(node["running"] for node in status.values()):
                raise DrillRefused(f"the stand-in's PostgreSQL pair in {self.pair.state} has no running standby to "
                                   f"fail over to (roles {roles}); see 'harness local status'")
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
        tasks = [t for t in self._running() if t["registered"]]
        if not tasks:
            raise DrillRefused("no registered running task to stop")
        victim = tasks[-1]
        os.kill(victim["pid"], signal.SIGKILL)
        hit = {"task": victim["task"], "pid": victim["pid"], "killed_at": time.time()}
        self.reported.append({"at": hit["killed_at"], "message": f"task {victim['task']} (pid {victim['pid']}) killed"})
        journal("fault", hit)
        return hit

    def service_state(self) -> tuple[bool, str]:
        state = self.plane.status()["tasks"]
        if not state["supervisor"]:
            return False, "the ECS agent stand-in does not run"
        desired = state["desired"] or 0
        tasks = [t for t in state["tasks"] if not t["draining"]]
        running = [t for t in tasks if t["running"] and process_alive(t["pid"])]
        registered = [t for t in running if t["registered"]]
        try:
            servers = self.plane.alb.status().get("servers", {})
        except AlbError as exc:
            return False, f"HAProxy's stats do not answer: {exc}"
        up = [t for t in registered if servers.get(t["task"]) == "UP"]
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

    def _running(self) -> list[dict[str, Any]]:
        return [t for t in self.plane.status()["tasks"]["tasks"] if t["running"] and not t["draining"]]

