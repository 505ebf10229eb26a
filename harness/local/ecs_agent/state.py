"""What the local ECS agent tells the rest of the harness: `<state>/tasks.json`, as one typed TaskState.

The agent (supervisor.py) runs in a process of its own, started by `harness local up`, and the stand-in,
the drills, the smoke gate and the self-tests read what it does from this file: its tasks (which revision
each runs, whether it is in the target group or draining), the service's desired count, the deployment it
is rolling, the tasks that stopped and Application Auto Scaling's datapoints and actions. TaskState is the
only code that reads or writes it, so the file's shape is defined once, here. The file is replaced whole
(write_atomic), so a reader never sees half of it.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.local.autoscale import Policy
from harness.util.files import write_atomic

FILE = "tasks.json"


def timestamp() -> str:
    """Now, as tasks.json records times: UTC, ISO 8601, to the millisecond."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class TaskRecord:
    """One task the agent runs, in its slot (task-N on port N, with its admin port)."""

    task: str  # task-1, task-2 ...: also its server's name in HAProxy
    pid: int
    port: int
    admin_port: int
    running: bool  # its process lives
    registered: bool  # in the target group: HAProxy sends it requests
    draining: bool  # leaving the service: out of the target group, stopped once its requests are done
    version: str  # the image tag of its task definition, what /api/version answers
    task_definition: str  # ARN of the revision it runs


@dataclass(frozen=True)
class StoppedTaskRecord:
    """A task that stopped, whatever stopped it, recorded as ECS records one (DescribeTasks of a STOPPED
    task): why (ECS's stopCode and stoppedReason), its essential container's exit code, and when."""

    task: str  # its slot's name, task-N
    pid: int | None  # its process: tells apart the tasks a slot ran one after another
    task_definition: str  # ARN of the revision it ran
    version: str
    stop_code: str  # EssentialContainerExited (it ended, whatever ended it) or ServiceSchedulerInitiated
    stopped_reason: str
    exit_code: int | None  # as ECS reports a container's: 128 + the signal for a process a signal ended
    started_at: str  # timestamp()
    stopped_at: str  # timestamp()


@dataclass(frozen=True)
class ScalingAction:
    """A desired count Application Auto Scaling's policy set, and why."""

    at: str  # timestamp()
    from_desired: int
    to_desired: int
    metric: float  # the service's CPU that decided it, in % of the tasks' reservation
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "from": self.from_desired, "to": self.to_desired, "metric": self.metric,
                "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScalingAction:
        return cls(data["at"], data["from"], data["to"], data["metric"], data["reason"])


@dataclass(frozen=True)
class Scaling:
    """The CPU target-tracking policy as the agent last read it, the datapoints it judges and its actions."""

    policy: Policy | None  # None: no policy or no scalable target, nothing scales
    datapoint_s: float
    datapoints: tuple[float | None, ...]  # the completed ones, oldest first; None where nothing was sampled
    actions: tuple[ScalingAction, ...]

    def to_json(self) -> dict[str, Any]:
        return {"policy": asdict(self.policy) if self.policy else None, "datapoint_s": self.datapoint_s,
                "datapoints": list(self.datapoints), "actions": [a.to_json() for a in self.actions]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scaling:
        return cls(Policy(**data["policy"]) if data.get("policy") else None, data["datapoint_s"],
                   tuple(data["datapoints"]), tuple(ScalingAction.from_json(a) for a in data["actions"]))


@dataclass(frozen=True)
class Deployment:
    """The rollout onto the service's task definition (rollout.py)."""

    task_definition: str
    version: str
    since: str  # timestamp() of the agent first seeing the service on it
    rolled_at: str | None  # timestamp() of every task first running it in the target group
    failed_tasks: int  # new tasks replaced for not getting healthy in time
    minimum_healthy_percent: int
    maximum_percent: int
    rolled: bool = False  # every task runs it and is in the target group now
    service: str = ""  # the service's name


@dataclass(frozen=True)
class TaskState:
    """Everything tasks.json holds. All defaults: no agent has written one."""

    supervisor: int | None = None  # PID of the agent that wrote it
    restarts: int = 0  # dead tasks started again
    desired: int | None = None  # the service's desired count, as the agent follows it
    slots: int | None = None  # task slots (ports) the agent has; None in a file from an agent without scaling
    time_scale: float | None = None  # the factor on the scaling policy's periods the agent runs with
    scaling: Scaling | None = None
    deployment: Deployment | None = None
    tasks: tuple[TaskRecord, ...] = ()
    # the latest stopped tasks, oldest first; None in a file from an agent that did not record them
    stopped: tuple[StoppedTaskRecord, ...] | None = ()
    written_at: float | None = field(default=None, compare=False)  # the file's mtime when read; not in it

    @classmethod
    def read(cls, root: Path) -> TaskState:
        """What the agent of state directory `root` last wrote; TaskState() when it wrote nothing."""
        path = root / FILE
        try:
            written_at = path.stat().st_mtime  # before reading: a newer file can only make it later than said
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        return cls(data.get("supervisor"), data.get("restarts", 0), data.get("desired"), data.get("slots"),
                   data.get("time_scale"), Scaling.from_json(data["scaling"]) if data.get("scaling") else None,
                   Deployment(**data["deployment"]) if data.get("deployment") else None,
                   tuple(TaskRecord(**t) for t in data.get("tasks", [])),
                   tuple(StoppedTaskRecord(**t) for t in data["stopped"]) if "stopped" in data else None, written_at)

    def write(self, root: Path) -> None:
        write_atomic(root / FILE, json.dumps(self.to_json(), indent=1))

    def to_json(self) -> dict[str, Any]:
        return {"supervisor": self.supervisor, "restarts": self.restarts, "desired": self.desired,
                "slots": self.slots, "time_scale": self.time_scale,
                "scaling": self.scaling.to_json() if self.scaling else None,
                "deployment": asdict(self.deployment) if self.deployment else None,
                "tasks": [asdict(t) for t in self.tasks], "stopped": [asdict(t) for t in self.stopped or ()]}

