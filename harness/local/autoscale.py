"""Target tracking on the service's average CPU, as Application Auto Scaling applies it to an ECS service,
for the local ECS agent (harness/local/ecs_agent/supervisor.py), so a load test sees the stand-in scale as AWS would.

What AWS does, and so what this does:
- the metric is ECSServiceAverageCPUUtilization: each running task's CPU as a percentage of its
  reservation (the task definition's `cpu` units / 1024 vCPU), averaged over the tasks, in one-minute
  datapoints. A Fargate task cannot use more than its reservation; a local process can, so the local
  figure can pass 100 %;
- scale out when the last 3 datapoints are all above the target; scale in when the last 15 are all below
  90 % of it. A missing datapoint is insufficient data, which never scales either way;
- the new desired count is ceil(desired * metric / target), the metric being the mean of the datapoints
  judged, kept within the scalable target's [min, max]. Rounding up makes scale-out generous and
  scale-in cautious: what is left after a scale-in still runs at or below the target;
- a scale-out waits out ScaleOutCooldown after the previous scale-out, a scale-in ScaleInCooldown after
  the previous scale-in; a scale-out cancels a running scale-in cooldown; scale-in is off while a
  deployment is in progress, and when the policy sets DisableScaleIn.
Simplified: within ScaleOutCooldown AWS may still scale out further if the new figure is larger; here
there is at most one scale-out per cooldown. The memory policy is not applied (a stand-in task uses a
few per cent of its memory reservation, so it would never ask for more tasks).

Time scale: one factor multiplies every period of the policy, the datapoint length (60 s) and both
cooldowns, so a test can make a 300 s cooldown last 15 s (factor 0.05) and still see the policy's
shape: 3 datapoints to scale out, 15 to scale in. The factor is the supervisor's `--time-scale`
(StandIn.time_scale); 1.0 is AWS's own timing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

CPU_METRIC = "ECSServiceAverageCPUUtilization"
DIMENSION = "ecs:service:DesiredCount"
DATAPOINT_S = 60.0  # CloudWatch period of the alarms that target tracking creates
OUT_DATAPOINTS = 3  # the high alarm: 3 of 3 datapoints above the target
IN_DATAPOINTS = 15  # the low alarm: 15 of 15 datapoints below IN_RATIO * target
IN_RATIO = 0.9


@dataclass(frozen=True)
class Policy:
    """The CPU target-tracking policy and the scalable target's bounds, cooldowns already time-scaled."""

    name: str
    target: float
    scale_out_cooldown_s: float
    scale_in_cooldown_s: float
    min_capacity: int
    max_capacity: int
    scale_in: bool = True

    def clamp(self, desired: int) -> int:
        return max(self.min_capacity, min(self.max_capacity, desired))


@dataclass(frozen=True)
class Action:
    desired: int
    metric: float
    reason: str


@dataclass
class Cooldowns:
    """When the last scale-out and scale-in happened (seconds on the caller's clock)."""

    last_out: float | None = None
    last_in: float | None = None

    def record(self, before: int, action: Action, now: float) -> None:
        if action.desired > before:
            self.last_out, self.last_in = now, None  # a scale-out ends a scale-in cooldown
        else:
            self.last_in = now


def decide(policy: Policy | None, desired: int, datapoints: Sequence[float | None], now: float,
           cooldowns: Cooldowns, deploying: bool = False) -> Action | None:
    """The scaling action target tracking takes now, or None. `datapoints` are the completed ones,
    oldest first, None where there was no sample."""
    if policy is None:
        return None
    target = policy.target
    high = _sustained(datapoints, OUT_DATAPOINTS, lambda d: d > target)
    if high is not None:
        wanted = policy.clamp(_proportional(desired, high, target))
        waiting = cooldowns.last_out is not None and now - cooldowns.last_out < policy.scale_out_cooldown_s
        if wanted > desired and not waiting:
            return Action(wanted, high, f"CPU above the {target:g} % target for {OUT_DATAPOINTS} datapoints")
        return None
    threshold = IN_RATIO * target
    low = _sustained(datapoints, IN_DATAPOINTS, lambda d: d < threshold)
    if low is None or not policy.scale_in or deploying:
        return None
    wanted = policy.clamp(_proportional(desired, low, target))
    waiting = cooldowns.last_in is not None and now - cooldowns.last_in < policy.scale_in_cooldown_s
    if wanted < desired and not waiting:
        return Action(wanted, low, f"CPU below {threshold:g} % (90 % of the target) for {IN_DATAPOINTS} datapoints")
    return None


def _sustained(datapoints: Sequence[float | None], count: int, holds: Callable[[float], bool]) -> float | None:
    """The mean of the last `count` datapoints if every one exists and `holds`: the alarm's condition."""
    window = [d for d in datapoints[-count:] if d is not None and holds(d)]
    return sum(window) / count if len(window) == count else None


def _proportional(desired: int, metric: float, target: float) -> int:
    """The count that brings the metric to the target, rounded up (with a margin for float noise)."""
    return math.ceil(desired * metric / target - 1e-9)


class Metric:
    """The service's average CPU in datapoints of `period_s`, each the time-weighted mean of the samples
    over it, as CloudWatch averages. A sample covers the interval since the previous one (psutil's
    cpu_percent measures exactly that), so a poll that comes late still fills the datapoints it spans."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._buckets: dict[int, tuple[float, float]] = {}  # index -> (value x seconds, seconds)

    def add(self, since: float, until: float, value: float) -> None:
        for index in range(int(since // self.period_s), int(until // self.period_s) + 1):
            overlap = min(until, (index + 1) * self.period_s) - max(since, index * self.period_s)
            if overlap > 0:
                weighted, seconds = self._buckets.get(index, (0.0, 0.0))
                self._buckets[index] = (weighted + value * overlap, seconds + overlap)

    def datapoints(self, now: float, count: int = IN_DATAPOINTS) -> list[float | None]:
        """The last `count` completed datapoints, oldest first; None for a period no sample covered."""
        current = int(now // self.period_s)
        for index in [i for i in self._buckets if i < current - count]:
            del self._buckets[index]
        points: list[float | None] = []
        for index in range(current - count, current):
            weighted, seconds = self._buckets.get(index, (0.0, 0.0))
            points.append(weighted / seconds if seconds else None)
        return points


def read_policy(aas: Any, resource_id: str, time_scale: float) -> Policy | None:
    """The CPU target-tracking policy on the service's scalable target, or None when either is missing."""
    targets = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource_id],
                                            ScalableDimension=DIMENSION)["ScalableTargets"]
    if not targets:
        return None
    policies = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource_id,
                                             ScalableDimension=DIMENSION)["ScalingPolicies"]
    for policy in policies:
        config = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
        metric = (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        if policy.get("PolicyType") == "TargetTrackingScaling" and metric == CPU_METRIC:
            return Policy(policy["PolicyName"], float(config["TargetValue"]),
                          config.get("ScaleOutCooldown", 300) * time_scale,
                          config.get("ScaleInCooldown", 300) * time_scale,
                          targets[0]["MinCapacity"], targets[0]["MaxCapacity"],
                          scale_in=not config.get("DisableScaleIn", False))
    return None
