"""One way to wait for a condition: poll it until it holds or a deadline passes."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class WaitTimeout(TimeoutError):
    """The condition did not hold in time; the message says what was awaited and what was seen last."""


def until(check: Callable[[], Any], timeout_s: float, what: str | Callable[[], str], poll_s: float = 0.1) -> float:
    """Seconds until `check()` returned a true value; `WaitTimeout` naming `what` (a text, or a function
    called then, to describe the last state seen) once `timeout_s` has passed with it false."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise WaitTimeout(f"not within {timeout_s:g} s: {what() if callable(what) else what}")
        time.sleep(poll_s)
    return time.monotonic() - start
