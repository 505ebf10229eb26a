"""The run's brakes inside Locust, and a worker's watch on its master.

The master (or the standalone process) judges the whole run's per-second figures against the stop
conditions (harness.load.stop) twice a second, and a stop file the pytest side writes (a CloudWatch alarm
in ALARM) stops the run the same way; the results then say why and when. A worker quits a few seconds
after its master stops answering its heartbeats (Locust's own limit is 60 s).
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment

from harness.load.exact import bucket_percentile_ms
from harness.load.generator.state import MASTER, Run, run_of
from harness.load.stop import Figures, Stop, fired

# Workers report every 3 s (Locust's WORKER_REPORT_INTERVAL), so the master's latest seconds are partial
# that long.
MASTER_REPORT_DELAY_S = 3
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


def add_arguments(parser: Any) -> None:
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


def stop_settings(options: Any) -> Stop:
    """The stop conditions the options give."""
    return Stop(error_ratio=float(getattr(options, "stop_error_ratio", Stop().error_ratio)),
                p99_ms=float(getattr(options, "stop_p99_ms", 0.0) or 0.0) or None,
                for_s=float(getattr(options, "stop_for_s", Stop().for_s)))


def complete_until(run: Run, now: float, distributed: bool) -> float:
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
    run = run_of(environment)
    distributed = run.role == MASTER
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
            until = min(complete_until(run, now, distributed), run.window_s if run.window_s > 0 else math.inf)
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
