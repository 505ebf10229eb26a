"""What the aws backend's service modules share: an AWS error in one line, AWS's times as epochs, and the
wait a drill step makes on AWS while it reports its progress."""
from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable

import botocore.exceptions

from harness.drills.backends import Journal

AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
PROGRESS_S = 30.0  # a long wait (a restore, a deletion) journals its state at least this often


def say(exc: BaseException) -> str:
    """One line for an AWS error: the operation, AWS's code and message."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"{exc.operation_name} failed: {err.get('Code')}: {err.get('Message')}"
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def epoch(when: Any) -> float:
    """A time as AWS answers it (a datetime, or seconds since the epoch) in seconds since the epoch."""
    return when.timestamp() if isinstance(when, dt.datetime) else float(when)


class Poller:
    """Waits for AWS to settle. Unlike `harness.util.wait.until` such a wait ends with the last state seen
    rather than an exception (the drill records it as its outcome), can journal that state while it waits
    (a restore or a deletion takes many minutes), and sleeps through the backend's `sleep`, where a test or
    the IAM derivation plays the platform's part between two looks."""

    def __init__(self, poll_s: float, sleep: Callable[[float], None]) -> None:
        self.poll_s = poll_s
        self._sleep = sleep

    def wait(self, check: Callable[[], tuple[bool, str]], timeout_s: float, journal: Journal | None = None,
             action: str = "") -> tuple[bool, str, float]:
        """Ask `check` every poll_s until it says done or `timeout_s` has passed: (done, its last line, the
        seconds waited). With a journal, its line is journaled first, when it changes (at most every
        PROGRESS_S) and at the end."""
        started = time.monotonic()
        said, said_at = None, float("-inf")
        while True:
            ok, line = check()
            waited = time.monotonic() - started
            done = ok or waited >= timeout_s
            if journal is not None and (said is None or done or (line != said and waited - said_at >= PROGRESS_S)):
                journal(action, {"state": line, "waited_s": round(waited, 1)})
                said, said_at = line, waited
            if done:
                return ok, line, waited
            self._sleep(max(0.0, min(self.poll_s, timeout_s - waited)))
