"""The plan-named CloudWatch alarms that stop a drill on AWS: they must exist and be quiet before the fault,
and are watched while the system recovers."""
from __future__ import annotations

from collections.abc import Sequence

from harness.alarms import alarm_states
from harness.drills.backends import Journal
from harness.drills.backends.aws.common import AWS_ERRORS, say
from harness.drills.model import DrillRefused
from harness.target import Target


class StopAlarms:
    """The alarms named `names` in the target's region (none: nothing to check or watch)."""

    def __init__(self, target: Target, names: Sequence[str]) -> None:
        self._target = target
        self.names = list(names)

    def preflight(self, journal: Journal) -> None:
        """Refuse the drill when an alarm cannot be found (it could not stop the drill) or is in ALARM already
        (the steady state does not hold)."""
        states = self._states()
        missing = [a for a in self.names if a not in states]
        if missing:
            raise DrillRefused(f"stop alarm(s) {', '.join(missing)} not found in {self._target.region}; "
                               f"fix the names or the drill could not be stopped by them")
        firing = self._firing(states)
        journal("stop alarms", {"alarms": states, "in_alarm": firing})
        if firing:
            raise DrillRefused(f"stop alarm(s) {', '.join(firing)} already in ALARM: the steady state does not hold")

    def firing(self) -> list[str]:
        """The alarms in ALARM. When they cannot be read, one entry saying so, so that the drill stops
        rather than goes on without the alarms it was told to watch."""
        if not self.names:
            return []
        try:
            return self._firing(self._states())
        except AWS_ERRORS as exc:
            return [f"(stop alarms unreadable: {say(exc)})"]

    def _states(self) -> dict[str, str]:
        return alarm_states(self._target.client("cloudwatch"), self.names)

    def _firing(self, states: dict[str, str]) -> list[str]:
        return [name for name in self.names if states.get(name) == "ALARM"]
