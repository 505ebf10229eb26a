"""Fixtures the compliance checks share; the checks themselves only read the session's snapshot."""
from __future__ import annotations

from typing import Any

import pytest

from harness.plan import Plan


@pytest.fixture(scope="session")
def app_port(plan: Plan, env_name: str) -> int:
    """The container port of the plan (ECS-03), which several requirements refer to."""
    return int(plan.requirements["ECS-03"].expected(env_name)["container_port"])


@pytest.fixture(scope="session")
def tagged(plan: Plan, env_name: str) -> dict[str, Any]:
    return plan.tags(env_name)
