"""The deployment plan as data: requirements with their expected values per environment, and waivers.

Both files are validated when loaded; every problem becomes a `PlanError` whose one-line message names
the file, the key and the fix, so the plugin can stop the run before any test executes.
"""
from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Severity = Literal["critical", "high", "medium", "low"]
ID_PATTERN = re.compile(r"^[A-Z]+-\d{2}$")

# The plan area of each id prefix, used to group results in the reports.
AREAS = {
    "NET": "network",
    "DB": "database",
    "ECS": "compute",
    "ALB": "load balancing",
    "ECR": "registry",
    "IMG": "image",
    "SEC": "secrets",
    "MON": "monitoring",
    "TAG": "tagging",
    "DR": "disaster recovery",
    "SMK": "smoke",
    "LOAD": "load",
    "DRILL": "drills",
}


# The suite that verifies each id prefix; a run reports the uncovered requirements of the suites it ran.
SUITES = {"SMK": "smoke", "LOAD": "load", "DRILL": "dr"}


class PlanError(Exception):
    """A plan or waiver file that cannot be used; the message is one line naming the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvOverride(_Strict):
    expect: dict[str, Any] = Field(default_factory=dict)
    severity: Severity | None = None
    optional: bool | None = None


class Requirement(_Strict):
    id: str
    section: str
    text: str
    severity: Severity
    optional: bool = False
    expect: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, EnvOverride] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError(f"'{value}' is not an id like NET-01")
        if value.split("-")[0] not in AREAS:
            raise ValueError(f"'{value}' has an unknown prefix (known: {', '.join(AREAS)})")
        return value

    @property
    def area(self) -> str:
        return AREAS[self.id.split("-")[0]]

    @property
    def suite(self) -> str:
        return SUITES.get(self.id.split("-")[0], "compliance")

    def expected(self, env: str) -> dict[str, Any]:
        override = self.env.get(env)
        return {**self.expect, **(override.expect if override else {})}

    def severity_in(self, env: str) -> Severity:
        override = self.env.get(env)
        return (override.severity if override and override.severity else None) or self.severity

    def optional_in(self, env: str) -> bool:
        override = self.env.get(env)
        return override.optional if override and override.optional is not None else self.optional


class TagKeys(_Strict):
    project: str = "Project"
    environment: str = "Environment"


class SubnetTiers(_Strict):
    public: str = "Public"
    private: str = "Private"
    isolated: str = "Isolated"


class Settings(_Strict):
    project: str
    document: str = "AWS-DEPLOYMENT-PLAN.md"
    tag_keys: TagKeys = TagKeys()
    secret_prefix: str = "{env}/dougust/"
    subnet_tier_tag: str = "aws-cdk:subnet-type"
    subnet_tiers: SubnetTiers = SubnetTiers()
    timezone: str = "UTC"
    enforce_optional: bool = False


class Environment(_Strict):
    protected: bool = False
    region: str = "us-east-1"


JOURNEYS = ("health", "me", "browse", "write")  # the load journeys of the API contract (harness/load/generator/journeys.py)


class StopValues(_Strict):
    """A load profile's stop conditions (`stop = { error_ratio, p99_ms, for_s, alarms }`): the run stops when
    the error ratio or the p99 stays beyond its bound for `for_s` seconds, or a named CloudWatch alarm is in
    ALARM. Keys left out keep their defaults (harness.load.stop: error ratio 0.5 for 10 s, no p99 bound)."""

    error_ratio: float | None = Field(default=None, ge=0, le=1)
    p99_ms: float | None = Field(default=None, gt=0)
    for_s: float | None = Field(default=None, gt=0)
    alarms: list[str] | None = None


class ProfileValues(_Strict):
    """A load profile's settings, all optional so an environment can override some of them."""

    users: int | None = Field(default=None, gt=0)
    spawn_rate: float | None = Field(default=None, gt=0)
    duration_s: float | None = Field(default=None, gt=0)
    ramp_s: float | None = Field(default=None, ge=0)
    rate_per_s: float | None = Field(default=None, ge=0)  # total arrival rate; 0: unpaced (closed model)
    workers: int | None = Field(default=None, ge=0)  # local worker processes; 0: one standalone process
    mix: dict[str, float] | None = None
    stop: StopValues | None = None

    @field_validator("mix")
    @classmethod
    def _known_journeys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        unknown = sorted(set(value) - set(JOURNEYS))
        if unknown:
            raise ValueError(f"unknown journeys {unknown}; the journeys are {list(JOURNEYS)}")
        if any(w < 0 for w in value.values()) or not any(w > 0 for w in value.values()):
            raise ValueError("weights must be 0 or more, at least one of them positive")
        return value


class LoadProfile(ProfileValues):
    """`[load.<name>]` in the plan: values common to every environment, `env.<name>` overrides."""

    text: str = ""
    env: dict[str, ProfileValues] = Field(default_factory=dict)

    def values(self, env: str) -> dict[str, Any]:
        common = self.model_dump(exclude={"text", "env"}, exclude_none=True)
        specific = self.env[env].model_dump(exclude_none=True) if env in self.env else {}
        stop = {**common.get("stop", {}), **specific.get("stop", {})}  # an environment overrides single keys
        return {**common, **specific, **({"stop": stop} if stop else {})}


class DrillCanary(_Strict):
    """Canary writes through the API: the tenant-scoped resource, so the drill fits the real backend."""

    path: str = "/api/notes"
    body: dict[str, str] = Field(default_factory=lambda: {"title": "dr canary {run} #{seq}", "body": "{sent_at}"})
    read: str = "/api/notes/{id}"
    id_field: str = "id"


class Drills(_Strict):
    """`[drills]`: how drills observe, common to every drill; a drill's `expect` may override any of the
    numbers (e.g. a longer timeout_s for one drill)."""

    recovery_window_s: float = Field(default=5.0, gt=0)
    steady_state_s: float = Field(default=3.0, ge=0)
    probe_interval_s: float = Field(default=0.1, gt=0, le=0.5)
    db_interval_s: float = Field(default=0.05, gt=0)
    timeout_s: float = Field(default=900.0, gt=0)
    stop_after_failing_s: float = Field(default=300.0, gt=0)
    restored_within_s: float = Field(default=300.0, gt=0)
    stop_alarms: list[str] = Field(default_factory=list)
    canary: DrillCanary = DrillCanary()

    @model_validator(mode="after")
    def _room_to_be_restored(self) -> Drills:
        if self.restored_within_s <= self.steady_state_s:
            raise ValueError(f"restored_within_s ({self.restored_within_s:g}) must be more than steady_state_s "
                             f"({self.steady_state_s:g}): the probes must be green that long after the rollback")
        return self


class Plan(_Strict):
    plan: Settings
    environments: dict[str, Environment]
    requirement: list[Requirement]
    load: dict[str, LoadProfile] = Field(default_factory=dict)
    drills: Drills = Drills()

    @property
    def project(self) -> str:
        return self.plan.project

    @property
    def requirements(self) -> dict[str, Requirement]:
        return {r.id: r for r in self.requirement}

    def environment(self, name: str) -> Environment:
        if name not in self.environments:
            known = ", ".join(sorted(self.environments))
            raise PlanError(f"unknown environment '{name}': the plan defines {known}; pass --env with one of them")
        return self.environments[name]

    def secret_prefix(self, env: str) -> str:
        return self.plan.secret_prefix.format(env=env, project=self.project)

    def tags(self, env: str) -> dict[str, str]:
        return {self.plan.tag_keys.project: self.project, self.plan.tag_keys.environment: env}


class Waiver(_Strict):
    id: str
    reason: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    expires: dt.date
    env: str | None = None


class _WaiverFile(_Strict):
    waiver: list[Waiver] = Field(default_factory=list)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"{path}: file not found; pass an existing file") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, an unreadable or a binary file
        raise PlanError(f"{path}: cannot be read as a TOML file ({exc}); pass the TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}: not valid TOML ({exc}); fix the syntax") from None


def _describe(path: Path, data: dict[str, Any], exc: ValidationError) -> str:
    """One line for the first validation problem: file, key path (with the item's id), problem."""
    err = exc.errors()[0]
    parts: list[str] = []
    node: Any = data
    for loc in err["loc"]:
        if isinstance(loc, int) and isinstance(node, list):
            item = node[loc] if loc < len(node) else None
            ident = item.get("id") if isinstance(item, dict) else None
            parts[-1] += f"[{loc}]" + (f" ({ident})" if ident else "")
            node = item
        else:
            parts.append(str(loc))
            node = node.get(loc) if isinstance(node, dict) else None
    key = ".".join(parts) or "(top level)"
    message = err["msg"]
    if err["type"] == "missing":
        message = "is required; add it"
    elif err["type"] == "extra_forbidden":
        message = "is not a known key; remove it or fix its spelling"
    return f"{path}: {key}: {message}"


def load_plan(path: Path) -> Plan:
    data = _read_toml(path)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(_describe(path, data, exc)) from None
    seen: set[str] = set()
    for req in plan.requirement:
        if req.id in seen:
            raise PlanError(f"{path}: requirement {req.id} is defined twice; keep one")
        seen.add(req.id)
        for env in req.env:
            if env not in plan.environments:
                raise PlanError(f"{path}: requirement {req.id}: env.{env} names no environment of the plan; "
                                f"use one of {', '.join(sorted(plan.environments))}")
    for name, profile in plan.load.items():
        for env in profile.env:
            if env not in plan.environments:
                raise PlanError(f"{path}: load.{name}: env.{env} names no environment of the plan; "
                                f"use one of {', '.join(sorted(plan.environments))}")
    return plan


def load_waivers(path: Path, plan: Plan, today: dt.date) -> list[Waiver]:
    """Waivers in force; an unknown id, unknown environment or expired waiver is an error."""
    if not path.exists():
        return []
    data = _read_toml(path)
    try:
        waivers = _WaiverFile.model_validate(data).waiver
    except ValidationError as exc:
        raise PlanError(_describe(path, data, exc)) from None
    for w in waivers:
        if w.id not in plan.requirements:
            raise PlanError(f"{path}: waiver for '{w.id}' names no requirement of the plan; fix the id or remove it")
        if w.env is not None and w.env not in plan.environments:
            raise PlanError(f"{path}: waiver for {w.id}: env '{w.env}' is not in the plan; fix it or remove the key")
        if w.expires < today:
            raise PlanError(f"{path}: waiver for {w.id} (owner {w.owner}) expired on {w.expires}; "
                            f"fix the deviation or renew the waiver with a new date")
    return waivers
