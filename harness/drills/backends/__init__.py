"""One interface for injecting a drill's fault, whatever runs the system: `local` acts on the stand-in,
`aws` calls the AWS APIs (the only writes the harness ever makes there, and only inside a confirmed drill)."""
from __future__ import annotations

from typing import Any, Callable

from harness.drills.model import DrillSpec, Restored, Revisions

Journal = Callable[[str, dict[str, Any]], None]  # (action, detail): one line of the drill's journal


class FaultBackend:
    """What a drill needs from the system's side. Every method but `plan` may act; each says what it did
    through `journal`. Problems that mean "do not start" raise DrillRefused with one line."""

    name = "abstract"
    discard_s = 0.0  # the longest `discard` takes to remove a temporary database: part of its expiry

    def plan(self, drill: DrillSpec) -> list[str]:
        """What the drill would do, in sentences, without doing anything (--dry-run)."""
        raise NotImplementedError

    def preflight(self, drill: DrillSpec, journal: Journal) -> None:
        """Refuse an unsuitable system (no standby to fail over to, a service without tasks) before any probe
        starts; for DRILL-01, raise PreflightFailed when the standby is not in sync (judges.local_standby,
        judges.rds_standby): the drill then fails without injecting anything."""
        raise NotImplementedError

    def inject(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        """The fault itself; returns what it hit (instance, task, node)."""
        raise NotImplementedError

    def service_state(self) -> tuple[bool, str]:
        """(healthy, one line): the service runs its desired count and every registered target is healthy."""
        raise NotImplementedError

    def alarms_firing(self) -> list[str]:
        """The plan-named stop alarms now in ALARM (none where there are no alarms)."""
        return []

    def events(self, since_epoch: float) -> list[dict[str, Any]]:
        """What the platform itself reported about the fault since then (RDS events on AWS), as
        {"at": epoch, "message": str}; shown beside the client-measured figures."""
        return []

    def rollback(self, drill: DrillSpec, journal: Journal) -> dict[str, Any]:
        """Leave the system as healthy as before the drill (always run: success, failure, Ctrl-C, SIGTERM).
        Returns {"ok": bool, ...} for the summary's `cleanup`."""
        raise NotImplementedError

    # -- DRILL-02: point-in-time restore --------------------------------------------------------------------

    def restore(self, drill: DrillSpec, journal: Journal, restore_point: float, run_id: str,
                expires: float) -> Restored:
        """Restore the environment's database as it was at `restore_point` (epoch) into a temporary one,
        tagged (TAG_DRILL, TAG_RUN, TAG_ENV, TAG_EXPIRES) with `expires`; return once it accepts connections, or raise
        InjectFailed with one line (the restore point cannot be reached, the restore failed)."""
        raise NotImplementedError

    def discard(self, restored: Restored, journal: Journal) -> dict[str, Any]:
        """Remove the temporary database and wait until it is gone: {"ok": bool, "detail": str}."""
        raise NotImplementedError

    # -- DRILL-04: roll back to the previous revision -------------------------------------------------------

    def revisions(self) -> Revisions:
        """The service's current task definition and the previous revision of its family; DrillRefused when
        there is none."""
        raise NotImplementedError

    def deploy(self, task_definition: str, journal: Journal) -> None:
        """Point the service at `task_definition` (update_service)."""
        raise NotImplementedError

    def deployed(self, task_definition: str) -> tuple[bool, str]:
        """(done, one line): every running task of the service runs `task_definition`, at the desired count,
        and every target is healthy."""
        raise NotImplementedError

    # -- cleanup --------------------------------------------------------------------------------------------

    def sweep(self, now: float, journal: Journal, env: str | None) -> list[dict[str, Any]]:
        """Remove the drill resources of environment `env` (None: of every environment) whose TAG_EXPIRES is
        before `now` (epoch), and only those, as judges.sweep decides; returns [{"name", "run_id", "drill",
        "expires", "expired": bool (the sweep meant to remove it), "removed": bool, "detail"}] for every drill
        resource found."""
        raise NotImplementedError
