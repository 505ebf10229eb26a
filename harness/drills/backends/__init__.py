"""One interface for injecting a drill's fault, whatever runs the system: `local` acts on the stand-in,
`aws` calls the AWS APIs (the only writes the harness ever makes there, and only inside a confirmed drill)."""
from __future__ import annotations

from typing import Any, Callable

from harness.drills.model import DrillSpec

Journal = Callable[[str, dict[str, Any]], None]  # (action, detail): one line of the drill's journal


class FaultBackend:
    """What a drill needs from the system's side. Every method but `plan` may act; each says what it did
    through `journal`. Problems that mean "do not start" raise DrillRefused with one line."""

    name = "abstract"

    def plan(self, drill: DrillSpec) -> list[str]:
        """What the drill would do, in sentences, without doing anything (--dry-run)."""
        raise NotImplementedError

    def preflight(self, drill: DrillSpec, journal: Journal) -> None:
        """Refuse an unsuitable system (a database that is not Multi-AZ, a service without tasks, a pair that
        is not synchronous) before any probe starts."""
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
