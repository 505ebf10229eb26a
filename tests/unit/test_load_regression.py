"""LOAD-04 as tables: a run against its baseline, each figure judged beyond the allowance and the noise
the two runs themselves show; runs that differ in what shapes the load are never compared."""
from __future__ import annotations

import random
from typing import Any

import pytest

from harness.load import baseline
from harness.load.exact import encode, micros, new_histogram, record_us

IDENTITY = {"format": baseline.RESULTS_FORMAT, "profile": "local", "users": 8, "rate_per_s": 30.0,
            "mix": {"browse": 1.0}, "base_url": "https://127.0.0.1:18443", "env": "dev", "target": "local",
            "project": "dougust"}


def hist(values_ms: list[float]) -> str:
    h = new_histogram()
    for v in values_ms:
        record_us(h, micros(v))
    return encode(h)


def results(scale: float = 1.0, rps: float = 30.0, n: int = 600, seed: int = 1, **identity: Any) -> dict[str, Any]:
    """A steady phase of `n` requests per endpoint, latencies lognormal around 20 ms times `scale`, and a
    per-second timeline at about `rps`."""
    rnd = random.Random(seed)
    samples = {ep: [scale * rnd.lognormvariate(3.0, 0.3) for _ in range(n)]
               for ep in ("GET /api/health", "GET /api/notes")}
    everything = [v for values in samples.values() for v in values]
    return {"run": {**IDENTITY, **identity}, "phases": [{"name": "ramp", "start_s": 0, "end_s": 5},
                                                        {"name": "steady", "start_s": 5, "end_s": 65}],
            "endpoints": {"steady": {ep: {"hist": hist(v)} for ep, v in samples.items()}},
            "overall": {"steady": {"hist": hist(everything)}},
            "timeline": [{"t_s": t, "requests": int(rps + rnd.uniform(-2, 2))} for t in range(1, 66)]}


BASE = results()


@pytest.mark.parametrize("run, status, message", [
    (results(seed=2), "pass", "no endpoint's p95 or p99 nor the throughput regressed beyond the allowance of 25 %"),
    (results(scale=1.15, seed=2), "pass", "figures compared"),
    (results(scale=2.0, seed=2), "fail", "GET /api/health p95"),
    (results(rps=15.0, seed=2), "fail", "overall rps"),
    (results(seed=2, profile="health"), "error", "profile: 'local' in the baseline, 'health' now"),
    (results(seed=2, rate_per_s=60.0, mix={"write": 1.0}), "error", "rate_per_s: 30.0 in the baseline, 60.0 now; "
                                                                   "mix: "),
    (results(seed=2, base_url="https://other"), "error", "base_url"),
    (results(n=10, seed=2), "pass", "figures compared"),
], ids=["same endpoint again", "15 % slower: within the allowance", "twice as slow", "half the throughput",
        "another profile", "another rate and mix", "another endpoint", "a short run: only what it can say"])
def test_a_run_against_its_baseline(run, status, message):
    rows, verdict = baseline.compare(BASE, run, 0.25)
    assert (verdict.status, message in verdict.message) == (status, True), verdict.message
    if status == "fail" and "p95" in message:
        assert "GET /api/notes p95" in verdict.message and "overall p99" in verdict.message


def test_too_few_samples_are_not_compared_and_a_baseline_without_identity_is_refused():
    rows, _ = baseline.compare(BASE, results(n=10, seed=2), 0.25)
    assert {r.status for r in rows if r.endpoint != "overall"} == {"too few samples"}
    # 100 samples bound a p95 but not a p99: its interval would reach past the largest sample.
    rows, _ = baseline.compare(results(n=100, seed=3), results(n=100, seed=2), 0.25)
    assert {(r.metric, r.status) for r in rows if r.endpoint == "GET /api/health"} == {
        ("p95", "within"), ("p99", "too few samples")}
    old = dict(BASE)
    old.pop("run")
    _, verdict = baseline.compare(old, results(seed=2), 0.25)
    assert verdict.status == "error" and "no run identity" in verdict.message


def test_the_table_shows_both_runs_the_change_and_the_intervals():
    rows, _ = baseline.compare(BASE, results(scale=2.0, seed=2), 0.25)
    lines = baseline.table([r.to_json() for r in rows])
    assert lines[0].split()[:4] == ["endpoint", "figure", "baseline", "this"]
    health = next(line for line in lines if line.startswith("GET /api/health") and " p95 " in line)
    assert health.endswith("regressed") and "+" in health
