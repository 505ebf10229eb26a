"""A pytest plugin for one self-test: the local backend's rollback of DRILL-01 says it is done without
rebuilding the old primary as the standby (a rollback that claims more than it did, or a standby that dies
right after it), to show that the drill checks the steady state itself after its rollback."""
from typing import Any

from harness.drills.backends.local import LocalBackend

_rollback = LocalBackend.rollback


def _claims_done(self: LocalBackend, drill: Any, journal: Any) -> dict[str, Any]:
    if drill.fault != "db_failover":
        return _rollback(self, drill, journal)
    journal("rollback", {"sabotaged": "the old primary left down"})
    return {"ok": True, "detail": "pair healthy (so it says: the old primary was left down)"}


LocalBackend.rollback = _claims_done  # type: ignore[method-assign]
