"""Locust plugin: exact per-endpoint latency, merged across workers, written as one results file.

Imported by the locustfile. Each load-generating process (a worker, or a standalone run) counts every
request's time to the microsecond (harness.load.exact); a worker ships what it counted since its last
report with Locust's own stats messages and starts afresh, and the master adds the reports up. At the end
the master (or the standalone process) writes the results file the pytest side judges, and every few
seconds while the test runs it appends a progress line for the CI log.

The master (or the standalone process) also holds the run's brakes: twice a second it judges the whole
run's per-second figures against the stop conditions (harness.load.stop), and a stop file the pytest side
writes (a CloudWatch alarm in ALARM) stops the run the same way; the results then say why and when. A
worker quits a few seconds after its master stops answering its heartbeats (Locust's own limit is 60 s).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import psutil
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.util.files import write_atomic
from harness.load.exact import MARKS_POLL_S, Tally, bucket_percentile_ms, phase_of, read_marks, results, window
from harness.load.stop import Figures, Stop, fired

PROGRESS_INTERVAL_S = 2.0
# The generator's self-measurement: CPU every second, and how late a 100 ms timer fires (event-loop lag).
CPU_SAMPLE_S = 1.0
LOOP_TIMER_S = 0.1
LOOP_WATCH_S = 0.02  # the loop's idle time is watched 20 ms after each timer: a sixth of the time
MARKS_MESSAGE = "harness_phase_marks"
# Workers report every 3 s (Locust's WORKER_REPORT_INTERVAL), so the master's latest seconds are partial
# that long; a progress line looks at the seconds already complete.
MASTER_REPORT_DELAY_S = 3
PROGRESS_WINDOW_S = 5
BRAKES_INTERVAL_S = 0.5
# A second is judged once its requests are in: standalone, this long after it ended (the requests started
# in it have mostly finished); on the master, once every worker has reported since then, or at the latest
# a worker report interval plus this after it ended (a worker that stopped reporting holds nothing up).
SETTLE_S = 1.0
# Locust's workers give up on a silent master after 60 s of sending load; these do after this many of
# their own 1 s ticks without its heartbeat (the master answers each worker heartbeat, every second).
# Ticks, not wall time: a worker paused (SIGSTOP) with its master is not deceived by the pause.
MASTER_GONE_TICKS = 5

log = logging.getLogger(__name__)


@dataclass
class Run:
    """This process's view of the test."""
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


run = Run()


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("exact statistics")
    group.add_argument("--ramp-s", type=float, default=0.0, env_var="HARNESS_LOAD_RAMP_S",
                       help="seconds since the start that count as ramp, reported apart and not judged")
    group.add_argument("--results-file", default="", env_var="HARNESS_LOAD_RESULTS",
                       help="where the master (or standalone process) writes the results JSON at the end")
    group.add_argument("--progress-file", default="", env_var="HARNESS_LOAD_PROGRESS",
                       help="append a JSON progress line here every 2 s")
    group.add_argument("--window-s", type=float, default=0.0, env_var="HARNESS_LOAD_WINDOW_S",
                       help="seconds during which users start requests; run Locust a few seconds longer (-t) so "
                            "the requests in flight finish and reach the master before it stops (0: until stop)")
    group.add_argument("--phase-file", default="", env_var="HARNESS_LOAD_PHASE_FILE",
                       help='phases another component marks, one JSON line each: {"at": epoch, "phase": name}; '
                            "read by the master (or standalone process) and passed on to the workers")
    brakes = parser.add_argument_group("stop conditions")
    brakes.add_argument("--stop-error-ratio", type=float, default=Stop().error_ratio, env_var="HARNESS_LOAD_STOP_ERRORS",
                        help="stop the run when more than this share of the requests fails every second for "
                             "--stop-for-s seconds")
    brakes.add_argument("--stop-p99-ms", type=float, default=0.0, env_var="HARNESS_LOAD_STOP_P99_MS",
                        help="... or when every second's p99 is above this (0: no latency brake)")
    brakes.add_argument("--stop-for-s", type=float, default=Stop().for_s, env_var="HARNESS_LOAD_STOP_FOR_S",
                        help="how many seconds in a row a bound must be exceeded before the run stops")
    brakes.add_argument("--stop-file", default="", env_var="HARNESS_LOAD_STOP_FILE",
                        help='stop the run when this file appears ({"reason": text}), e.g. written by the harness '
                             "when a CloudWatch alarm goes into ALARM")


def open_window(started: float) -> None:
    """Users may start requests until the window closes. When Locust stops a run it kills users
    mid-request, and the requests it cuts are the slowest; a measurement window that closes before the
    stop lets every request started in it finish, and every worker report it, so the upper percentiles
    are whole. Every request a user started is counted, so the results hold every request the server saw."""
    run.window_end = started + run.window_s if run.window_s > 0 else math.inf


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def on_request(request_type: str, name: str, response_time: float, response_length: int, response: Any = None,
               context: dict[str, Any] | None = None, exception: Exception | None = None,
               start_time: float | None = None, url: str | None = None, **_: Any) -> None:
    # Every argument Locust passes is named: gathering them into **_ would build a dict per request.
    started = start_time or time.time()
    origin = run.started if run.started is not None else started
    intended = context.get("intended_start") if context else None
    run.tally.record(name, started - origin, run.ramp_s, response_time, exception is not None,
                     None if intended is None else started - intended, run.marks)


def on_test_start(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    run.ramp_s = float(getattr(options, "ramp_s", 0.0) or 0.0)
    run.window_s = float(getattr(options, "window_s", 0.0) or 0.0)
    run.stopped = None
    run.figures, run.stop, run.reported_at = {}, None, {}
    if isinstance(environment.runner, WorkerRunner):
        # The master's start, forwarded with the options, so every worker cuts the ramp at the same instant.
        run.started = float(getattr(options, "load_started_at", 0.0) or time.time())
        open_window(run.started)
        return
    run.started = time.time()
    run.tally = Tally()
    open_window(run.started)
    if options is not None:
        options.load_started_at = run.started


def on_test_stop(environment: Environment, **_: Any) -> None:
    run.stopped = time.time()


def on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    data["exact"] = run.tally.to_wire()
    data["exact_final"] = run.stopped is not None
    run.tally = Tally()


def on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    wire = data.get("exact")
    if wire is None:
        return
    before = run.tally.requests()
    run.reported_at[client_id] = time.time()
    run.tally.add_wire(wire)
    run.worker_requests[client_id] = run.worker_requests.get(client_id, 0) + run.tally.requests() - before
    if data.get("exact_final"):
        run.finished_workers.add(client_id)


def progress(environment: Environment, path: Path, delay_s: int) -> None:
    while True:
        gevent.sleep(PROGRESS_INTERVAL_S)
        if run.started is None or run.stopped is not None:
            continue
        elapsed = time.time() - run.started
        last = int(elapsed) - delay_s
        line = {"t_s": round(elapsed, 1), "phase": phase_of(elapsed, run.ramp_s, run.marks),
                "users": environment.runner.user_count if environment.runner else 0,
                **window(run.tally, max(last - PROGRESS_WINDOW_S, 0), max(last, 0))}
        with path.open("a") as out:
            out.write(json.dumps(line) + "\n")


def write_results(environment: Environment, **_: Any) -> None:
    path = getattr(environment.parsed_options, "results_file", "")
    if not path or run.started is None:
        return
    ended = min(run.stopped or time.time(), run.started + run.window_s if run.window_s > 0 else float("inf"))
    distributed = isinstance(environment.runner, MasterRunner)
    # A worker that never sent its final report took samples the file does not have.
    complete = run.stopped is not None and (not distributed or (
        bool(run.worker_requests) and run.finished_workers >= set(run.worker_requests)))
    content = results(run.tally, complete=complete, started_at=iso(run.started), ended_at=iso(ended),
                      duration_s=ended - run.started, ramp_s=run.ramp_s,
                      workers=len(run.worker_requests) if distributed else 1,
                      worker_requests=run.worker_requests if distributed else None, marks=run.marks)
    content["stopped"] = run.stop
    write_atomic(Path(path), json.dumps(content, indent=1))  # a reader never sees half of it


def complete_until(now: float, distributed: bool) -> float:
    """Seconds since the start up to which the whole run's per-second figures are in."""
    elapsed = now - run.started
    if not distributed:
        return elapsed - SETTLE_S
    latest = elapsed - MASTER_REPORT_DELAY_S - SETTLE_S
    if run.reported_at:
        latest = max(latest, min(run.reported_at.values()) - run.started - SETTLE_S / 2)
    return latest


def requested_stop(path: Path | None) -> str | None:
    """The reason in the stop file, once it exists (written whole by the harness)."""
    if path is None or not path.exists():
        return None
    try:
        return str(json.loads(path.read_text())["reason"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"a stop was requested ({path})"


def brakes(environment: Environment, settings: Stop, stop_file: Path | None) -> None:
    """Judge the whole run's complete seconds against the stop conditions, and stop the run (every user,
    on every worker) when one holds or the stop file appears. Runs on the master or standalone process,
    from the per-second figures that are counted anyway: nothing is added to a request's path."""
    distributed = isinstance(environment.runner, MasterRunner)
    while True:
        gevent.sleep(BRAKES_INTERVAL_S)
        if run.started is None or run.stopped is not None or run.stop is not None:
            continue
        now = time.time()
        elapsed = now - run.started
        stop: dict[str, Any] | None = None
        requested = requested_stop(stop_file)
        if requested is not None:
            stop = {"condition": "requested", "reason": requested}
        else:
            until = min(complete_until(now, distributed), run.window_s if run.window_s > 0 else math.inf)
            run.tally.fold()
            for t, second in list(run.tally.seconds.items()):
                if t + 1 <= until and t not in run.figures:
                    requests = sum(second.buckets.values())
                    run.figures[t] = Figures(t, requests, second.failures, bucket_percentile_ms(second.buckets, 99))
            found = fired(run.figures.values(), settings)
            if found is not None:
                stop = {"condition": found.condition, "reason": found.reason,
                        "since_s": found.start_s, "established_s": found.end_s}
        if stop is None:
            continue
        run.stop = {"at_s": round(elapsed, 1), **stop}
        log.warning(f"stopping the run at {elapsed:.0f} s: {stop['reason']}")
        environment.runner.quit()  # stops every user (the master tells its workers), then Locust writes the results
        return


def follow_master(environment: Environment) -> None:
    """On a worker: quit once the master has been silent for MASTER_GONE_TICKS heartbeats, so load from a
    worker started elsewhere does not outlive its master by Locust's 60 s."""
    silent = [0]
    heard = [False]

    def on_heartbeat(**_: Any) -> None:
        silent[0], heard[0] = 0, True

    environment.events.heartbeat_received.add_listener(on_heartbeat)
    while True:
        gevent.sleep(1.0)
        if not heard[0]:
            continue  # not connected yet: Locust's own connection retries apply
        silent[0] += 1
        if silent[0] >= MASTER_GONE_TICKS:
            log.error(f"no heartbeat from the master for {MASTER_GONE_TICKS} s: it is gone, quitting")
            environment.runner.quit()
            return


class LoopIdle:
    """Time the event loop spends waiting in its poll for something to do, from libev/libuv prepare and
    check watchers (the last to run before the poll, the first after it). A loop that never waits is
    saturated even when the process shows little CPU: on a machine shared with the system under test the
    scheduler may starve it, and then it is the bottleneck all the same.

    The watchers run Python on every loop iteration, which at thousands of requests per second costs a
    generator a good share of its throughput; so they are on only for short windows (`sample`), and the
    busy share is estimated from those."""

    def __init__(self) -> None:
        self.idle_s = self.watched_s = 0.0
        self._since: float | None = None
        loop = gevent.get_hub().loop
        self._prepare, self._check = loop.prepare(ref=False, priority=-2), loop.check(ref=False, priority=2)

    def _before_poll(self) -> None:
        self._since = time.perf_counter()

    def _after_poll(self) -> None:
        if self._since is not None:
            self.idle_s += time.perf_counter() - self._since
            self._since = None

    def sample(self, window_s: float) -> None:
        """Watch the loop for window_s (this greenlet sleeps meanwhile)."""
        began = time.perf_counter()
        self._prepare.start(self._before_poll)
        self._check.start(self._after_poll)
        gevent.sleep(window_s)
        self._prepare.stop()
        self._check.stop()
        self._since = None
        self.watched_s += time.perf_counter() - began


def measure_generator(role: str) -> None:
    """Sample this process's CPU (psutil; 1.0 is one core, all a gevent process can use), how busy its
    event loop was, and how late its timers fire; a saturated generator shows in them, and its verdicts
    become inconclusive."""
    process = psutil.Process()
    process.cpu_percent(None)
    idle = LoopIdle()
    name = f"{socket.gethostname()}:{role}:{process.pid}"
    last_sample, last_idle, last_watched = time.perf_counter(), 0.0, 0.0
    while True:
        before = time.perf_counter()
        gevent.sleep(LOOP_TIMER_S)
        late = time.perf_counter() - before - LOOP_TIMER_S
        idle.sample(LOOP_WATCH_S)
        now = time.perf_counter()
        if run.started is None or run.stopped is not None:
            continue
        cpu = busy = 0.0
        if now - last_sample >= CPU_SAMPLE_S:
            cpu = process.cpu_percent(None) / 100
            watched = idle.watched_s - last_watched
            busy = max(0.0, 1 - (idle.idle_s - last_idle) / watched) if watched > 0 else 0.0
            last_sample, last_idle, last_watched = now, idle.idle_s, idle.watched_s
        run.tally.record_generator(name, time.time() - run.started, cpu, busy, late)


def follow_marks(environment: Environment, path: Path) -> None:
    """Read the phase marks as another component appends them, and pass them on to the workers."""
    while True:
        gevent.sleep(MARKS_POLL_S)
        if run.started is None:
            continue
        marks = read_marks(path, run.started)
        if marks != run.marks:
            run.marks = marks
            if isinstance(environment.runner, MasterRunner):
                environment.runner.send_message(MARKS_MESSAGE, [[at, name] for at, name in marks])


def on_marks(environment: Environment, msg: Any, **_: Any) -> None:
    run.marks = [(float(at), str(name)) for at, name in msg.data]


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    environment.events.test_start.add_listener(on_test_start)
    environment.events.test_stop.add_listener(on_test_stop)
    runner = environment.runner
    role = "worker" if isinstance(runner, WorkerRunner) else "master" if isinstance(runner, MasterRunner) else "local"
    gevent.spawn(measure_generator, role)
    if isinstance(runner, WorkerRunner):
        environment.events.request.add_listener(on_request)
        environment.events.report_to_master.add_listener(on_report_to_master)
        runner.register_message(MARKS_MESSAGE, on_marks)
        gevent.spawn(follow_master, environment)
        return
    phase_file = getattr(environment.parsed_options, "phase_file", "")
    if phase_file:
        gevent.spawn(follow_marks, environment, Path(phase_file))
    if isinstance(runner, MasterRunner):
        environment.events.worker_report.add_listener(on_worker_report)
    else:
        environment.events.request.add_listener(on_request)
    environment.events.quitting.add_listener(write_results)
    options = environment.parsed_options
    settings = Stop(error_ratio=float(getattr(options, "stop_error_ratio", Stop().error_ratio)),
                    p99_ms=float(getattr(options, "stop_p99_ms", 0.0) or 0.0) or None,
                    for_s=float(getattr(options, "stop_for_s", Stop().for_s)))
    stop_file = getattr(options, "stop_file", "")
    gevent.spawn(brakes, environment, settings, Path(stop_file) if stop_file else None)
    progress_file = getattr(environment.parsed_options, "progress_file", "")
    if progress_file:
        delay = MASTER_REPORT_DELAY_S if isinstance(runner, MasterRunner) else 0
        gevent.spawn(progress, environment, Path(progress_file), delay)
