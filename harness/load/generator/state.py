"""One Locust process's view of a load test, held on its Environment.

Each Environment gets its own Run when Locust initialises it (`attach`), so the users, the statistics
and the brakes of one environment share it, and a second environment (a test's) starts empty. A worker
counts its own requests and ships them with each report to the master; the master adds the reports up;
a standalone process counts its own requests and is its own master.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.load.exact import Tally
from harness.load.stop import Figures

ATTRIBUTE = "harness_run"  # the Environment attribute holding its Run
MARKS_MESSAGE = "harness_phase_marks"  # the master passes the phase marks on to its workers in these
WORKER, MASTER, LOCAL = "worker", "master", "local"  # a process's role: LOCAL is a standalone process


@dataclass
class Run:
    """This process's view of the test."""
    role: str = LOCAL
    tally: Tally = field(default_factory=Tally)
    ramp_s: float = 0.0
    started: float | None = None
    stopped: float | None = None
    worker_requests: dict[str, int] = field(default_factory=dict)
    finished_workers: set[str] = field(default_factory=set)
    window_s: float = 0.0
    window_end: float = math.inf  # users start no request from then on (the epoch; no end without a window)
    marks: list[tuple[float, str]] = field(default_factory=list)
    reported_at: dict[str, float] = field(default_factory=dict)  # worker -> when its last report came (master)
    figures: dict[int, Figures] = field(default_factory=dict)  # the whole run's complete seconds, for the brakes
    stop: dict[str, Any] | None = None  # why and when the brakes stopped the run

    def open_window(self, started: float) -> None:
        """Users may start requests until the window closes. When Locust stops a run it kills users
        mid-request, and the requests it cuts are the slowest; a measurement window that closes before the
        stop lets every request started in it finish, and every worker report it, so the upper percentiles
        are whole. Every request a user started is counted, so the results hold every request the server saw."""
        self.window_end = started + self.window_s if self.window_s > 0 else math.inf

    def on_request(self, request_type: str, name: str, response_time: float, response_length: int,
                   response: Any = None, context: dict[str, Any] | None = None, exception: Exception | None = None,
                   start_time: float | None = None, url: str | None = None, **_: Any) -> None:
        # Every argument Locust passes is named: gathering them into **_ would build a dict per request.
        started = start_time or time.time()
        origin = self.started if self.started is not None else started
        intended = context.get("intended_start") if context else None
        self.tally.record(name, started - origin, self.ramp_s, response_time, exception is not None,
                          None if intended is None else started - intended, self.marks)

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        options = environment.parsed_options
        self.ramp_s = float(getattr(options, "ramp_s", 0.0) or 0.0)
        self.window_s = float(getattr(options, "window_s", 0.0) or 0.0)
        self.stopped = None
        self.figures, self.stop, self.reported_at = {}, None, {}
        if self.role == WORKER:
            # The master's start, forwarded with the options, so every worker cuts the ramp at the same instant.
            self.started = float(getattr(options, "load_started_at", 0.0) or time.time())
            self.open_window(self.started)
            return
        self.started = time.time()
        self.tally = Tally()
        self.open_window(self.started)
        if options is not None:
            options.load_started_at = self.started

    def on_test_stop(self, **_: Any) -> None:
        self.stopped = time.time()

    def on_report_to_master(self, client_id: str, data: dict[str, Any]) -> None:
        """On a worker: what it counted since its last report goes with the report, and counting starts
        afresh, so every sample crosses the wire once and merging is addition."""
        data["exact"] = self.tally.to_wire()
        data["exact_final"] = self.stopped is not None
        self.tally = Tally()

    def on_worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        """On the master: add a worker's report to the whole run's tally."""
        wire = data.get("exact")
        if wire is None:
            return
        before = self.tally.requests()
        self.reported_at[client_id] = time.time()
        self.tally.add_wire(wire)
        self.worker_requests[client_id] = self.worker_requests.get(client_id, 0) + self.tally.requests() - before
        if data.get("exact_final"):
            self.finished_workers.add(client_id)

    def on_marks(self, environment: Environment, msg: Any, **_: Any) -> None:
        """On a worker: the phase marks its master read."""
        self.marks = [(float(at), str(name)) for at, name in msg.data]


def role_of(runner: Any) -> str:
    return WORKER if isinstance(runner, WorkerRunner) else MASTER if isinstance(runner, MasterRunner) else LOCAL


def attach(environment: Environment, role: str | None = None) -> Run:
    """A new Run on `environment`, fed by the events its process's role (by default its runner's) sees: a
    worker's and a standalone process's own requests, a master's worker reports."""
    run = Run(role=role or role_of(environment.runner))
    setattr(environment, ATTRIBUTE, run)
    events = environment.events
    events.test_start.add_listener(run.on_test_start)
    events.test_stop.add_listener(run.on_test_stop)
    if run.role == WORKER:
        events.request.add_listener(run.on_request)
        events.report_to_master.add_listener(run.on_report_to_master)
    elif run.role == MASTER:
        events.worker_report.add_listener(run.on_worker_report)
    else:
        events.request.add_listener(run.on_request)
    return run


def run_of(environment: Environment) -> Run:
    """The Run `attach` put on this environment."""
    return getattr(environment, ATTRIBUTE)
