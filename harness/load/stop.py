"""The brakes of a load run: when the system under load falls over, the run stops.

A profile's `stop = { error_ratio, p99_ms, for_s, alarms }` (docs/requirements.md, "Load", Stop conditions):
the whole run's figures (every worker merged) are judged second by second, and when the error ratio or
the p99 stays beyond its bound for `for_s` seconds the run is stopped; plan-named CloudWatch alarms in
ALARM stop it too (polled by the pytest process). The decision is the pure function `fired`, fed the
per-second figures the generator counts anyway; nothing here imports Locust.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

from harness.alarms import alarm_states

DEFAULT_ERROR_RATIO = 0.5
DEFAULT_FOR_S = 10.0


@dataclass(frozen=True)
class Stop:
    """The stop conditions of a profile; a profile without `stop` gets these defaults."""
    error_ratio: float = DEFAULT_ERROR_RATIO  # a second is beyond when more than this share of it failed
    p99_ms: float | None = None  # ... or when its p99 is above this (None: no latency brake)
    for_s: float = DEFAULT_FOR_S  # for this many seconds in a row
    alarms: tuple[str, ...] = field(default_factory=tuple)  # CloudWatch alarms whose ALARM state stops the run

    @classmethod
    def from_values(cls, values: dict[str, Any] | None) -> "Stop":
        values = values or {}
        return cls(error_ratio=float(values.get("error_ratio", DEFAULT_ERROR_RATIO)),
                   p99_ms=None if values.get("p99_ms") is None else float(values["p99_ms"]),
                   for_s=float(values.get("for_s", DEFAULT_FOR_S)), alarms=tuple(values.get("alarms") or ()))

    def to_json(self) -> dict[str, Any]:
        return {"error_ratio": self.error_ratio, "p99_ms": self.p99_ms, "for_s": self.for_s,
                "alarms": list(self.alarms)}

    def describe(self) -> str:
        parts = [f"error ratio > {self.error_ratio:g}"] + ([f"p99 > {self.p99_ms:g} ms"] if self.p99_ms else [])
        alarms = f", or alarm {', '.join(self.alarms)} in ALARM" if self.alarms else ""
        return f"{' or '.join(parts)} for {self.for_s:g} s{alarms}"


class Figures(NamedTuple):
    """One second of the whole run: requests started in it, how many failed, their p99."""
    t: int
    requests: int
    failures: int
    p99_ms: float


class Fired(NamedTuple):
    condition: str  # "error_ratio" or "p99_ms"
    start_s: int  # the first second beyond the bound
    end_s: int  # the end of the last second of the streak: when the condition was established
    reason: str  # e.g. "error ratio 0.97 > 0.5 for 10 s"


def fired(series: Iterable[Figures], stop: Stop) -> Fired | None:
    """The first condition that stayed beyond its bound for `stop.for_s` seconds, or None.

    Each condition keeps its own streak. A second with requests is beyond its bound or within it (within
    ends the streak); a second without any completed request neither starts nor ends one (a system that
    stops answering after failing stays beyond). `series` holds the seconds already complete, in any
    order; missing seconds count as seconds without requests."""
    by_t = {f.t: f for f in series}
    if not by_t:
        return None
    need = max(1, math.ceil(stop.for_s - 1e-9))
    streaks: dict[str, list[Figures]] = {"error_ratio": [], "p99_ms": []}
    starts: dict[str, int | None] = {"error_ratio": None, "p99_ms": None}
    for t in range(min(by_t), max(by_t) + 1):
        second = by_t.get(t)
        for condition in streaks:
            if second is not None and second.requests > 0:
                if beyond(second, condition, stop):
                    if starts[condition] is None:
                        starts[condition], streaks[condition] = t, []
                    streaks[condition].append(second)
                else:
                    starts[condition], streaks[condition] = None, []
            start = starts[condition]
            if start is not None and t - start + 1 >= need:
                return Fired(condition, start, t + 1, say(condition, streaks[condition], stop, t + 1 - start))
    return None


def beyond(second: Figures, condition: str, stop: Stop) -> bool:
    if condition == "error_ratio":
        return second.failures / second.requests > stop.error_ratio
    return stop.p99_ms is not None and second.p99_ms > stop.p99_ms


def say(condition: str, streak: list[Figures], stop: Stop, seconds: int) -> str:
    if condition == "error_ratio":
        ratio = sum(s.failures for s in streak) / sum(s.requests for s in streak)
        return f"error ratio {ratio:.2f} > {stop.error_ratio:g} for {seconds} s"
    lowest = min(s.p99_ms for s in streak)
    return f"p99 {lowest:.0f} ms or more > {stop.p99_ms:g} ms for {seconds} s"


def stop_line(stopped: dict[str, Any]) -> str:
    """How the brakes stopped a run (the results' `stopped`), e.g. "stopped at 23 s: error ratio 0.97 > 0.5
    for 10 s"."""
    return f"stopped at {float(stopped.get('at_s', 0)):.0f} s: {stopped.get('reason', 'reason unknown')}"


def alarms_in_alarm(states: dict[str, str], names: Iterable[str]) -> str | None:
    """The stop reason from CloudWatch alarm states (name -> StateValue), or None. A named alarm absent
    from `states` cannot be read: that is an error for the caller to report, never a silent pass."""
    names = list(names)
    missing = [n for n in names if n not in states]
    if missing:
        raise LookupError(f"stop alarm(s) {', '.join(missing)} not found")
    firing = [n for n in names if states[n] == "ALARM"]
    return f"alarm {', '.join(firing)} in ALARM" if firing else None


def alarm_check(cloudwatch: Any, names: Iterable[str]) -> Callable[[], str | None]:
    """A run's stop check on CloudWatch alarms (a boto3 client): the stop reason while one is in ALARM, else
    None; an alarm that cannot be read raises. One call for all the states, judged here (an endpoint may
    ignore StateValue beside AlarmNames)."""
    names = list(names)

    def check() -> str | None:
        return alarms_in_alarm(alarm_states(cloudwatch, names), names)
    return check
