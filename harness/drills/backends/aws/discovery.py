"""The deployment a drill acts on, found as the compliance suite finds it: one `take_snapshot` (the plan's
tags, then links), never a name the harness chose. Only which resources they are comes from here: what they
are like now is asked again at each step, since a snapshot taken for a dry run may be minutes old by the
time the fault is made."""
from __future__ import annotations

from typing import Any, Callable

from harness.compliance.inventory import Inventory, PartFailed, PartUnavailable, take_snapshot
from harness.drills.model import DrillRefused
from harness.plan import Plan
from harness.target import Target


class Discovery:
    """The database and the ECS service of `env`, each of which a drill needs exactly one of. `inventory`:
    a snapshot of `env` taken already this session (None: taken here, once, when first needed)."""

    def __init__(self, target: Target, plan: Plan, env: str, inventory: Inventory | None = None) -> None:
        self._target = target
        self._plan = plan
        self._env = env
        self._inventory = inventory

    def database(self) -> dict[str, Any]:
        """The environment's database instance, as the snapshot describes it."""
        return self._one("db_instances", "database instance", lambda d: d["DBInstanceIdentifier"])

    def service(self) -> dict[str, Any]:
        """The environment's ECS service, as the snapshot describes it (its cluster, load balancers)."""
        return self._one("services", "ECS service", lambda s: s["serviceName"])

    def tags(self) -> str:
        """The plan's tags for the environment, 'Key=Value, ...': what finds the deployment, and what a
        drill's own resources never carry."""
        return ", ".join(f"{k}={v}" for k, v in self._plan.tags(self._env).items())

    def _discovered(self, part: str) -> list[dict[str, Any]]:
        if self._inventory is None:
            self._inventory = take_snapshot(self._target, self._plan, self._env, vpc_contents=False)
        try:
            return self._inventory.need(part)
        except (PartFailed, PartUnavailable) as exc:
            raise DrillRefused(f"cannot discover {part.replace('_', ' ')} of {self._env}: {exc}") from None

    def _one(self, part: str, what: str, name: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
        found = self._discovered(part)
        if len(found) != 1:
            names = ", ".join(sorted(name(x) for x in found)) or "none"
            raise DrillRefused(f"the drill needs exactly one {what} tagged {self.tags()} in "
                               f"{self._target.region}; found {len(found)} ({names})")
        return found[0]


def target_group(service: dict[str, Any]) -> str | None:
    """The ARN of the target group the service registers its tasks in, found by the service's link to it."""
    return next((lb["targetGroupArn"] for lb in service.get("loadBalancers", []) if lb.get("targetGroupArn")),
                None)
