"""A drill as typed data, in the shape Chaos Toolkit gives an experiment: a steady state (probes and their
tolerances), a method (one fault, injected through a backend), rollbacks (always run), and what is
measured on the way (probe samples, canary writes, the journal of actions).

Times are seconds since the drill's origin (`Clock`), taken from one monotonic clock and mapped to epoch
seconds only for the journal, so a step of the wall clock during a drill cannot bend an RTO.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

PHASES = ("steady", "fault", "recovering", "recovered", "rollback", "steady again")
# The probes of the recovery condition: through the load balancer (health, canary writes), straight to
# the database (db), and the service's own state as its control plane reports it (service).
PROBES = ("health", "write", "db", "service")


# Tags of every temporary resource a drill makes (a restored database): which drill, which run, and when
# it may be swept (ISO 8601, UTC). They are never the plan's Project/Environment tags, so discovery never
# mistakes a drill's leftover for part of the deployment.
# `harness:env` names the plan environment whose drill made it: a sweep takes only its own environment's.
TAG_DRILL, TAG_RUN, TAG_EXPIRES, TAG_ENV = "harness:drill", "harness:run-id", "harness:expires", "harness:env"
EXPIRY_S = 6 * 3600  # a drill resource without any tag (a local restore dir) older than this is a leftover


class DrillRefused(Exception):
    """Preflight said no (unconfirmed protected environment, sick steady state, unsuitable resource); the
    message is one line that names the problem and what to do."""


class Unreadable(DrillRefused):
    """The system's state could not be read (an API error, throttling, a denied call): nothing is known
    about it, so a check that meets this is unknown, never a finding."""


class PreflightFailed(DrillRefused):
    """Preflight found what the drill exists to catch (DRILL-01: a standby out of sync): nothing is injected,
    and the drill FAILS with this one line, rather than being refused as unmeasurable."""


class InjectFailed(RuntimeError):
    """The fault could not be made (the platform refused the call, or there was nothing to hit); one line.
    The call may have reached the platform all the same, so the rollback still runs."""


@dataclass(frozen=True)
class DrillSpec:
    """One drill of the plan, settled for one environment."""
    id: str                     # DRILL-01
    title: str
    fault: str                  # "db_failover" | "task_loss" (what the backend injects)
    probes: tuple[str, ...]     # the probes that must all succeed for the system to count as recovered
    expect: dict[str, Any]      # the requirement's expect keys: rto_s, rpo_s, max_lost_writes, max_error_ratio
    recovery_window_s: float = 5.0   # recovered = every probe succeeding for this long
    steady_state_s: float = 3.0      # probes green this long before any fault
    timeout_s: float = 600.0         # hard limit from the fault on: abort and roll back
    stop_after_failing_s: float = 300.0  # stop condition: a probe failing without a break this long
    probe_interval_s: float = 0.1    # ≥ 10 Hz through the load balancer
    db_interval_s: float = 0.05      # canary inserts straight to the database
    restored_within_s: float = 300.0  # after the rollback, the steady state back within this long, or FAIL


@dataclass(frozen=True)
class Sample:
    """One probe result."""
    t: float                      # seconds since the origin, when the probe was sent
    probe: str                    # one of PROBES
    ok: bool
    latency_ms: float | None = None
    detail: str = ""              # status code or a one-line error


@dataclass
class Write:
    """A canary write (through the API, or straight to the database), with its sequence number and the
    client's timestamp; acknowledged once the server said it was committed."""
    probe: str                    # "write" or "db"
    seq: int
    t: float                      # when it was sent (seconds since the origin)
    acknowledged: bool
    key: str = ""                 # how to read it back (the note's id; the db canary's seq)


@dataclass
class Action:
    """A journal line: something the drill did or saw, outside the probe samples."""
    t: float
    phase: str
    action: str
    detail: dict[str, Any] = field(default_factory=dict)


class Clock:
    """Seconds since the drill's origin; `epoch` is the origin's wall-clock time, for the journal."""

    def __init__(self) -> None:
        self.origin = time.monotonic()
        self.epoch = time.time()

    def now(self) -> float:
        return time.monotonic() - self.origin


@dataclass
class Restored:
    """A temporary database a restore drill made: its name (data directory or DB instance id), how to reach
    it (None: no path from the runner, so it cannot be verified), and what the platform said."""
    name: str
    dsn: str | None
    restore_point: float          # epoch seconds the restore was asked to reach
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Revisions:
    """The service's task definition now and the revision before it in its family, with the version each
    one's image reports (the image tag)."""
    current: str
    current_version: str
    previous: str
    previous_version: str
