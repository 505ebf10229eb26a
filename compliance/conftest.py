"""Fixtures the compliance checks share; the checks themselves only read the session's snapshot."""
from __future__ import annotations

from typing import Any, Callable

import pytest

from harness.plan import Plan


@pytest.fixture(scope="session")
def app_port(plan: Plan, env_name: str) -> int:
    """The container port of the plan (ECS-03), which several requirements refer to."""
    return int(plan.requirements["ECS-03"].expected(env_name)["container_port"])


@pytest.fixture(scope="session")
def tagged(plan: Plan, env_name: str) -> dict[str, Any]:
    return plan.tags(env_name)


@pytest.fixture
def settle(evidence: Callable[[str, Any], None]) -> Callable[[Any], None]:
    """Conclude a judge's verdict (harness.verdict.Verdict): its evidence recorded, then pass, fail, or
    skip with what could not be looked at."""
    def conclude(verdict: Any) -> None:
        evidence("evidence", verdict.evidence)
        if verdict.status == "skip":
            pytest.skip(verdict.message)
        if not verdict.ok:
            pytest.fail(verdict.message, pytrace=False)
    return conclude


@pytest.fixture
def image_commands(image: Any) -> Any:
    """The image's facts, for a check that needs commands run in the image: ERROR when one of them did not
    finish within its time limit (the sandbox killed it)."""
    if image.command_error:
        pytest.fail(f"a command in the image could not be judged: {image.command_error}", pytrace=False)
    return image
