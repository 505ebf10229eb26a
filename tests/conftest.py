"""Fixtures the self-tests share, and the markers that say what a test needs.

The tiers are folders: unit/ (pure, in-process tables: seconds), component/ (one real server each: moto,
PostgreSQL, HAProxy, a registry), e2e/ (whole suites as processes of their own, the stand-in). Each test is
marked with its tier, so `-m unit` or `-m "not e2e"` select by it; a module's `pytestmark` names what else
it needs (postgres, haproxy, locust, node, localstack, sandbox, stand_in). The helpers live in support/.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from harness.util.net import free_port

TIERS = ("unit", "component", "e2e")

# The files that take longest (seconds measured in one `make test`), run first: `make test` hands whole
# files to its workers in collection order (--dist loadfile --no-loadscope-reorder), and a long file
# started last would run alone at the end. The order only decides how soon `make test` ends; a file not
# named here runs after these, in collection order.
SLOWEST_FIRST = (
    "e2e/test_load_engine.py",         # 245
    "e2e/test_drills_database.py",     # 235
    "e2e/test_drills_service.py",      # 160
    "e2e/test_stand_in_scaling.py",    # 155
    "e2e/test_smoke_gate.py",          # 145
    "e2e/test_mutations.py",           # 145
    "e2e/test_load_stop.py",           # 135
    "e2e/test_image.py",               # 75
    "e2e/test_load_baseline.py",       # 70
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = next((part for part in item.path.parts[::-1] if part in TIERS), None)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: a self-test belongs in one of tests/{', tests/'.join(TIERS)}")
        item.add_marker(getattr(pytest.mark, tier))
    tests = Path(__file__).parent
    stale = [name for name in SLOWEST_FIRST if not (tests / name).is_file()]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py: SLOWEST_FIRST names {', '.join(stale)}, which is gone: "
                                "name the file that replaced it, or remove the line")

    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(tests).as_posix()
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)
    items.sort(key=rank)  # stable: within a file, and among the others, collection order


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return tmp_path / "reports"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server in this process for one test module. moto keeps its state per process and account,
    so a module that shares the process with another uses an account of its own or a distinct env."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per call would bury failures
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
