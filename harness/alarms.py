"""The states of plan-named CloudWatch alarms: what stops a load run or a drill on AWS."""
from __future__ import annotations

from typing import Any, Sequence


def alarm_states(cloudwatch: Any, names: Sequence[str]) -> dict[str, str]:
    """{name: StateValue} of the named alarms that exist (metric or composite); a name absent from the answer
    does not exist or cannot be seen. One call for all the states, judged by the caller: an endpoint may
    ignore StateValue beside AlarmNames (moto does)."""
    states: dict[str, str] = {}
    names = list(names)
    for i in range(0, len(names), 100):
        for page in cloudwatch.get_paginator("describe_alarms").paginate(
                AlarmNames=names[i:i + 100], AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
            for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
                states[alarm["AlarmName"]] = alarm.get("StateValue", "")
    return states
