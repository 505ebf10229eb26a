"""A load profile as the run uses it: the plan's values for the environment, with the operator's overrides.

The profile decides Locust's settings (users, spawn rate, how long, the arrival rate, the journeys' mix)
and the run's shape (a ramp that is not judged, then the steady phase), and when the run stops early (its
stop conditions, harness.load.stop)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from harness.load.judges import LATENCY_SLO
from harness.load.stop import Stop
from harness.plan import JOURNEYS, Plan, PlanError

REQUIRED = ("users", "spawn_rate", "duration_s", "ramp_s", "rate_per_s", "mix")
# The numbers each load check reads from its plan entry (`expect`), and LOAD-01's per-endpoint overrides.
SLO_KEYS = {"LOAD-01": LATENCY_SLO,
            "LOAD-02": ("min_throughput_ratio", "max_generator_cpu", "max_lag_p99_ms"),
            "LOAD-03": ("scale_out_within_s",), "LOAD-04": ("max_regression",)}


@dataclass(frozen=True)
class Profile:
    name: str
    users: int
    spawn_rate: float
    duration_s: float
    ramp_s: float
    rate_per_s: float  # total arrival rate; 0: unpaced, every user as fast as it goes
    mix: dict[str, float]
    # Locust processes generating load on this machine: 1, one standalone process (a master over a single
    # worker would only relay its figures, and costs about a third of its throughput); N > 1, a master and
    # N workers.
    workers: int = 1
    stop: Stop = field(default_factory=Stop)  # the brakes: stop the run when the system falls over
    text: str = ""
    overridden: dict[str, Any] = field(default_factory=dict)

    @property
    def paced(self) -> bool:
        return self.rate_per_s > 0

    @property
    def steady_s(self) -> float:
        return max(self.duration_s - self.ramp_s, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "users": self.users, "spawn_rate": self.spawn_rate,
                "duration_s": self.duration_s, "ramp_s": self.ramp_s, "rate_per_s": self.rate_per_s,
                "mix": self.mix, "workers": self.workers, "stop": self.stop.to_json(), "overridden": self.overridden}


def resolve(plan: Plan, env: str, name: str, *, users: int | None = None, rate_per_s: float | None = None,
            duration_s: float | None = None, workers: int | None = None) -> Profile:
    """The named profile for `env`, overridden by the options given (None: keep the plan's value)."""
    if name not in plan.load:
        known = ", ".join(sorted(plan.load)) or "none"
        raise PlanError(f"unknown load profile '{name}': the plan defines {known}; pass --load-profile with one "
                        f"of them or add [load.{name}] to the plan")
    values = plan.load[name].values(env)
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise PlanError(f"load profile '{name}' has no {', '.join(missing)} for environment '{env}'; "
                        f"add them to [load.{name}] in the plan")
    overrides = {k: v for k, v in {"users": users, "rate_per_s": rate_per_s, "duration_s": duration_s,
                                   "workers": workers}.items() if v is not None}
    for key, value in overrides.items():
        if value < 0 or (key != "rate_per_s" and value == 0):
            raise PlanError(f"--load-{key.split('_')[0]} {value:g}: must be {'0 or more' if key == 'rate_per_s' else 'positive'}")
    profile = Profile(name=name, users=int(values["users"]), spawn_rate=float(values["spawn_rate"]),
                      duration_s=float(values["duration_s"]), ramp_s=float(values["ramp_s"]),
                      rate_per_s=float(values["rate_per_s"]), workers=int(values.get("workers", 1)),
                      mix={k: float(v) for k, v in values["mix"].items() if v > 0 and k in JOURNEYS},
                      stop=Stop.from_values(values.get("stop")), text=plan.load[name].text)
    profile = replace(profile, **{k: type(getattr(profile, k))(v) for k, v in overrides.items()},
                      overridden=overrides)
    if profile.workers < 1:
        raise PlanError(f"load profile '{name}': workers = {profile.workers} for environment '{env}'; give 1 (one "
                        f"Locust process) or more in [load.{name}]")
    if profile.ramp_s >= profile.duration_s:
        raise PlanError(f"load profile '{name}': ramp_s {profile.ramp_s:g} leaves no steady phase in duration_s "
                        f"{profile.duration_s:g}; pass a longer --load-duration or shorten ramp_s in the plan")
    return profile


def check_slos(plan: Plan, env: str, ids: set[str]) -> None:
    """Every number the selected load checks judge by is there and is a number, before any load is sent."""
    for rid in sorted(ids & set(SLO_KEYS)):
        expect = plan.requirements[rid].expected(env)
        entries = [("", expect, SLO_KEYS[rid])]
        if rid == "LOAD-01":
            overrides = expect.get("endpoints") or {}
            if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
                raise PlanError(f"{rid}: endpoints must map route templates to tables, e.g. "
                                f'endpoints = {{ "POST /api/notes" = {{ p95_ms = 800 }} }}; fix the plan')
            entries += [(f"endpoints.{name}.", values, tuple(values)) for name, values in overrides.items()]
        for where, values, keys in entries:
            for key in keys:
                value = values.get(key)
                if key not in SLO_KEYS["LOAD-01"] + SLO_KEYS[rid] or isinstance(value, bool) \
                        or not isinstance(value, (int, float)) or value < 0 \
                        or (key == "max_regression" and value >= 1):
                    below = " and below 1" if key == "max_regression" else ""
                    raise PlanError(f"{rid}: {where}{key} = {value!r} is not a usable SLO; give a number of 0 or "
                                    f"more{below} (keys: {', '.join(SLO_KEYS[rid])}) in the plan")
