"""The load judges and profiles in process, as tables: each case one violation (or none) and its verdict."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from harness.load import judges
from harness.load.profile import resolve
from harness.plan import PlanError, load_plan

ROOT = Path(__file__).resolve().parents[2]
SLO = {"p95_ms": 500, "p99_ms": 1000, "max_error_ratio": 0.01, "endpoints": {}}
GEN = {"min_throughput_ratio": 0.95, "max_generator_cpu": 0.90, "max_lag_p99_ms": 100}


def row(requests: int = 1000, failures: int = 0, p95: float = 200, p99: float = 400) -> dict[str, Any]:
    return {"requests": requests, "failures": failures, "error_ratio": failures / requests if requests else 0.0,
            "rps": requests / 50, "p50_ms": 50.0, "p95_ms": p95, "p99_ms": p99, "max_ms": p99 * 1.5}


def results(**changes: Any) -> dict[str, Any]:
    """A healthy 60 s run (10 s ramp) at 30 req/s: two endpoints, the generator idle."""
    base = {
        "phases": [{"name": "ramp", "start_s": 0, "end_s": 10}, {"name": "steady", "start_s": 10, "end_s": 60}],
        "overall": {"ramp": row(200, p95=900, p99=2000), "steady": row(1500)},
        "endpoints": {"ramp": {"GET /api/notes": row(200, p95=900, p99=2000)},
                      "steady": {"GET /api/notes": row(1000), "POST /api/notes": row(480),
                                 "POST /api/auth/login": row(20)}},
        "generator": {"cpu_max": 0.3, "cpu_by_process": {"h:worker:1": 0.3}, "loop_lag_p99_ms": 3.0, "lag_p99_ms": 2.0},
        "schedule": {"late_starts": 0, "lag_p99_ms": 2.0},
    }
    for path, value in changes.items():
        node = base
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return copy.deepcopy(base)


@pytest.mark.parametrize(("case", "data", "expect", "status", "says"), [
    ("healthy", results(), SLO, "pass", "within the SLOs"),
    ("the ramp is not judged", results(overall__ramp=row(200, p95=5000, p99=9000)), SLO, "pass", "steady"),
    ("slow endpoint singled out", results(endpoints__steady={"GET /api/notes": row(1000),
                                                             "GET /api/notes/:id": row(300, p95=650)}),
     SLO, "fail", "steady GET /api/notes/:id p95 650.0 ms > 500 ms"),
    ("p95 just above", results(endpoints__steady={"GET /api/notes": row(1000, p95=500.1)}), SLO, "fail",
     "steady GET /api/notes p95 500.1 ms > 500 ms"),
    ("p95 at the SLO", results(endpoints__steady={"GET /api/notes": row(1000, p95=500.0)}), SLO, "pass", ""),
    ("p99 overall", results(overall__steady=row(1500, p99=1200)), SLO, "fail", "steady overall p99 1200.0 ms"),
    ("errors 3 % against 1 %", results(endpoints__steady={"POST /api/notes": row(500, failures=15)}), SLO, "fail",
     "POST /api/notes errors 3.00 % (15/500) > 1 %"),
    ("per-endpoint override", results(endpoints__steady={"POST /api/notes": row(500, p95=700)}),
     {**SLO, "endpoints": {"POST /api/notes": {"p95_ms": 800}}}, "pass", ""),
    ("saturated generator: a failing figure is inconclusive",
     results(overall__steady=row(1500, p95=900), generator={"cpu_max": 0.99, "cpu_by_process": {"h:local:1": 0.99},
                                                            "loop_lag_p99_ms": 50, "lag_p99_ms": 0}),
     {**SLO, **GEN}, "inconclusive", "generator CPU reached 99 %"),
    ("a marked phase is judged too", results(phases=[{"name": "ramp", "start_s": 0, "end_s": 10},
                                                     {"name": "steady", "start_s": 10, "end_s": 30},
                                                     {"name": "during", "start_s": 30, "end_s": 60}],
                                             overall={"ramp": row(100), "steady": row(600),
                                                      "during": row(900, failures=90)}),
     SLO, "fail", "during overall errors 10.00 %"),
    ("nothing after the ramp", results(overall={"ramp": row(10)}), SLO, "error", "no request completed"),
])
def test_latency_judge(case: str, data: dict[str, Any], expect: dict[str, Any], status: str, says: str) -> None:
    verdict = judges.latency(data, expect)
    assert (verdict.status, says in verdict.message) == (status, True), verdict.message
    if case == "slow endpoint singled out":
        assert "GET /api/notes p95" not in verdict.message


@pytest.mark.parametrize(("case", "data", "rate", "status", "says"), [
    ("reached", results(), 29.0, "pass", "29.6 of 29 req/s"),
    ("login is not an arrival", results(), 30.0, "pass", "29.6 of 30 req/s planned (99 %"),
    ("short of the plan", results(), 40.0, "fail", "29.6 of 40 req/s planned (74 %, minimum 95 %)"),
    ("short because the generator was saturated", results(generator={"cpu_max": 0.97, "cpu_by_process": {"w": 0.97},
                                                                      "loop_lag_p99_ms": 10, "lag_p99_ms": 0}),
     40.0, "inconclusive", "the generator was the bottleneck"),
    ("reached but the generator's loop lagged", results(generator={"cpu_max": 0.5, "cpu_by_process": {},
                                                                    "loop_lag_p99_ms": 250, "lag_p99_ms": 0}),
     29.0, "inconclusive", "event loop ran 250 ms late"),
    ("a starved generator: little CPU, a loop that never waited",
     results(generator={"cpu_max": 0.55, "cpu_by_process": {"w": 0.55}, "busy_max": 0.99,
                        "busy_by_process": {"h:local:7": 0.99}, "loop_lag_p99_ms": 20, "lag_p99_ms": 0}),
     40.0, "inconclusive", "event loop was busy 99 % of the time (ceiling 90 %) in h:local:7"),
    ("unpaced judges the generator only", results(), 0.0, "pass", "unpaced: 29.6 req/s"),
    ("nothing measured", results(overall={"ramp": row(10)}), 30.0, "error", "could not be measured"),
])
def test_throughput_judge(case: str, data: dict[str, Any], rate: float, status: str, says: str) -> None:
    verdict = judges.throughput(data, rate, GEN)
    assert (verdict.status, says in verdict.message) == (status, True), verdict.message


def samples(*counts: tuple[float, int, int]) -> list[dict[str, Any]]:
    return [{"t_s": t, "desired": d, "running": r} for t, d, r in counts]


@pytest.mark.parametrize(("case", "data", "budget", "sustained", "cpu_peak", "status", "says"), [
    ("scaled out in time", samples((0, 2, 2), (20, 2, 2), (30, 3, 2), (34, 3, 3)), 30, 60, 95.0, "pass",
     "desired 2 -> 3, running 2 -> 3 24 s into the load"),
    ("desired rose, running never followed", samples((0, 2, 2), (30, 3, 2), (60, 3, 2)), 30, 60, 95.0, "fail",
     "no scale-out within 30 s"),
    ("too slow", samples((0, 2, 2), (50, 3, 3)), 30, 60, 95.0, "fail", "too slow: desired 2 -> 3"),
    ("no scale-out though long and hot", samples((0, 2, 2), (70, 2, 2)), 30, 60, 95.0, "fail", "desired stayed 2"),
    ("CPU never above the target", samples((0, 2, 2), (70, 2, 2)), 30, 60, 40.0, "skip", "peaked at 40 %"),
    ("run shorter than the budget", samples((0, 2, 2), (40, 2, 2)), 420, 50, None, "skip", "less than the 420 s"),
    ("counts unreadable", [], 30, 60, None, "error", "could not be read"),
])
def test_scale_out_judge(case: str, data: list[dict[str, Any]], budget: float, sustained: float,
                         cpu_peak: float | None, status: str, says: str) -> None:
    verdict = judges.scale_out(data, 10.0, budget, sustained, 70.0, cpu_peak)
    assert (verdict.status, says in verdict.message) == (status, True), verdict.message


PLAN = load_plan(ROOT / "plan" / "dougust.toml")


@pytest.mark.parametrize(("env", "name", "overrides", "expected"), [
    ("prod", "launch", {}, {"users": 200, "rate_per_s": 200.0, "duration_s": 600.0, "workers": 2}),
    ("dev", "launch", {}, {"users": 60, "rate_per_s": 50.0, "duration_s": 300.0, "workers": 2}),
    ("prod", "local", {"users": 4, "rate_per_s": 0, "duration_s": 20, "workers": 3},
     {"users": 4, "rate_per_s": 0.0, "duration_s": 20.0, "workers": 3}),
    ("prod", "health", {}, {"mix": {"health": 1.0}, "rate_per_s": 0.0}),
])
def test_profiles_resolve_per_environment_with_overrides(env: str, name: str, overrides: dict[str, Any],
                                                          expected: dict[str, Any]) -> None:
    profile = resolve(PLAN, env, name, **overrides)
    assert {k: getattr(profile, k) for k in expected} == expected
    assert profile.overridden == overrides


@pytest.mark.parametrize(("name", "overrides", "says"), [
    ("soak", {}, "unknown load profile 'soak': the plan defines health, launch, local"),
    ("local", {"users": 0}, "--load-users 0: must be positive"),
    ("local", {"rate_per_s": -1}, "--load-rate -1: must be 0 or more"),
    ("local", {"workers": 0}, "--load-workers 0: must be positive"),
    ("local", {"duration_s": 5}, "ramp_s 10 leaves no steady phase in duration_s 5"),
])
def test_bad_profiles_are_one_line(name: str, overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(PlanError) as caught:
        resolve(PLAN, "prod", name, **overrides)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_plan_profile_without_a_generating_process_is_one_line(tmp_path: Path) -> None:
    text = (ROOT / "plan" / "dougust.toml").read_text()
    assert text.count("workers = 2") == 1  # the launch profile's
    (tmp_path / "plan.toml").write_text(text.replace("workers = 2", "workers = 0"))
    with pytest.raises(PlanError) as caught:
        resolve(load_plan(tmp_path / "plan.toml"), "prod", "launch")
    assert "load profile 'launch': workers = 0 for environment 'prod'; give 1" in str(caught.value)
