"""Waiting in a self-test: `harness.util.wait.until`, its timeout a test failure naming what was awaited."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.util.wait import WaitTimeout, until


def wait_for(condition: Callable[[], Any], timeout: float, what: Callable[[], str], poll_s: float = 0.1) -> float:
    """Seconds until `condition` held; fails the test with `what()` past `timeout`."""
    try:
        return until(condition, timeout, what, poll_s)
    except WaitTimeout as exc:
        pytest.fail(str(exc))
