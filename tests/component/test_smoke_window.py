"""The stability window, in-process against a small HTTP server: when a round of the window fails on an
HTTP check before the stopped task is on record (a request in flight on a crashing task), SMK-10 is read
once more and names the task."""
from __future__ import annotations

import datetime as dt
import threading
from typing import Iterator

import pytest

from harness.smoke.gate import GateInput, run_gate
from harness.smoke.probes import Endpoint
from harness.smoke.tasks import ServiceTasks, StoppedTask
from support.servers import JsonHandler, serving

REVISION = "arn:aws:ecs:us-east-1:1:task-definition/backend:7"
BEGAN = dt.datetime.now(dt.timezone.utc)
STATE = {"broken": False, "reads_since_broken": 0}


class Handler(JsonHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        status = 500 if STATE["broken"] else 404
        self.send_json(status, {"statusCode": status, "message": "x"})


@pytest.fixture
def server() -> Iterator[str]:
    with serving(Handler) as url:
        yield url


def tasks() -> ServiceTasks:
    """The crash is on record only from the second read after the server broke: the read at the end of
    the red round still sees nothing."""
    now = dt.datetime.now(dt.timezone.utc)
    stopped: tuple[StoppedTask, ...] = ()
    if STATE["broken"]:
        STATE["reads_since_broken"] += 1
        if STATE["reads_since_broken"] > 1:
            stopped = (StoppedTask("task-2 (pid 4242)", REVISION, "EssentialContainerExited",
                                   "Essential container in task exited", 137, None, BEGAN, now),)
    return ServiceTasks("backend", REVISION, BEGAN, now, stopped)


def test_a_red_round_in_the_window_reads_the_stopped_tasks_again(server):
    STATE.update(broken=False, reads_since_broken=0)
    given = GateInput({"SMK-09": {"path": "/api/no-such-route"},
                       "SMK-10": {"not_counted": ["ServiceSchedulerInitiated: Scaling activity initiated by"]}},
                      tasks=tasks)
    flip = threading.Timer(1.0, lambda: STATE.update(broken=True))
    flip.start()
    try:
        result = run_gate(Endpoint.of(server), given, stable_for_s=10, interval_s=0.5)
    finally:
        flip.cancel()
    assert set(r for r, v in result.verdicts.items() if not v.ok) == {"SMK-09", "SMK-10"}, result.verdicts
    assert "task-2 (pid 4242) of backend:7" in result.verdicts["SMK-10"].message
    assert "s into the 10 s stability window: " in result.verdicts["SMK-10"].message
    assert result.rounds[-1]["failing"] == ["SMK-09", "SMK-10"] and result.stable_s < 10, result.rounds
