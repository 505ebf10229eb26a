"""The generator measuring itself: a saturated generator shows in its CPU, in how busy its event loop is
and in how late its timers fire, and then its verdicts become inconclusive (harness.load.judges)."""
from __future__ import annotations

import socket
import time

import gevent
import psutil

from harness.load.generator.state import Run

# CPU every second, and how late a 100 ms timer fires (event-loop lag).
CPU_SAMPLE_S = 1.0
LOOP_TIMER_S = 0.1
LOOP_WATCH_S = 0.02  # the loop's idle time is watched 20 ms after each timer: a sixth of the time


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


def measure_generator(run: Run) -> None:
    """Sample this process's CPU (psutil; 1.0 is one core, all a gevent process can use), how busy its
    event loop was, and how late its timers fire, into the run's tally while the test runs."""
    process = psutil.Process()
    process.cpu_percent(None)
    idle = LoopIdle()
    name = f"{socket.gethostname()}:{run.role}:{process.pid}"
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
