"""Exact per-endpoint latency inside Locust, merged across workers, written as one results file.

Each load-generating process (a worker, or a standalone run) counts every request's time to the
microsecond (harness.load.exact) into the Run on its Environment (harness.load.generator.state); the
master adds its workers' reports up. At the end the master (or the standalone process) writes the results
file the pytest side judges, and every few seconds while the test runs it appends a progress line for the
CI log. Phases another component marks (a drill's fault) are read here and passed on to the workers.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.event import Events

from harness.load.exact import MARKS_POLL_S, phase_of, read_marks, results, window
from harness.load.generator import brakes
from harness.load.generator.measure import measure_generator
from harness.load.generator.state import MARKS_MESSAGE, MASTER, WORKER, attach, run_of
from harness.util.files import write_atomic

PROGRESS_INTERVAL_S = 2.0
# A progress line looks at the seconds already complete: on the master, the latest are partial for as
# long as a worker report interval.
PROGRESS_WINDOW_S = 5


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
    brakes.add_arguments(parser)


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def progress(environment: Environment, path: Path, delay_s: int) -> None:
    run = run_of(environment)
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
    run = run_of(environment)
    path = getattr(environment.parsed_options, "results_file", "")
    if not path or run.started is None:
        return
    ended = min(run.stopped or time.time(), run.started + run.window_s if run.window_s > 0 else float("inf"))
    distributed = run.role == MASTER
    # A worker that never sent its final report took samples the file does not have.
    complete = run.stopped is not None and (not distributed or (
        bool(run.worker_requests) and run.finished_workers >= set(run.worker_requests)))
    content = results(run.tally, complete=complete, started_at=iso(run.started), ended_at=iso(ended),
                      duration_s=ended - run.started, ramp_s=run.ramp_s,
                      workers=len(run.worker_requests) if distributed else 1,
                      worker_requests=run.worker_requests if distributed else None, marks=run.marks)
    content["stopped"] = run.stop
    write_atomic(Path(path), json.dumps(content, indent=1))  # a reader never sees half of it


def follow_marks(environment: Environment, path: Path) -> None:
    """Read the phase marks as another component appends them, and pass them on to the workers."""
    run = run_of(environment)
    while True:
        gevent.sleep(MARKS_POLL_S)
        if run.started is None:
            continue
        marks = read_marks(path, run.started)
        if marks != run.marks:
            run.marks = marks
            if run.role == MASTER:
                environment.runner.send_message(MARKS_MESSAGE, [[at, name] for at, name in marks])


def on_init(environment: Environment, **_: Any) -> None:
    """Give the environment its Run, and start what its process's role runs beside the users: the
    self-measurement everywhere; on a worker, the watch on its master; on the master (or standalone
    process), the phase marks, the brakes, the progress lines, and the results file at the end."""
    run = attach(environment)
    gevent.spawn(measure_generator, run)
    if run.role == WORKER:
        environment.runner.register_message(MARKS_MESSAGE, run.on_marks)
        gevent.spawn(brakes.follow_master, environment)
        return
    options = environment.parsed_options
    phase_file = getattr(options, "phase_file", "")
    if phase_file:
        gevent.spawn(follow_marks, environment, Path(phase_file))
    environment.events.quitting.add_listener(write_results)
    stop_file = getattr(options, "stop_file", "")
    gevent.spawn(brakes.brakes, environment, brakes.stop_settings(options), Path(stop_file) if stop_file else None)
    progress_file = getattr(options, "progress_file", "")
    if progress_file:
        delay = brakes.MASTER_REPORT_DELAY_S if run.role == MASTER else 0
        gevent.spawn(progress, environment, Path(progress_file), delay)


def add_listeners(events: Events) -> None:
    """Register the exact statistics with a Locust process's events (its locustfile does, at import)."""
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(on_init)
