"""The load verdicts, pure: a results file (harness.load.exact) and the plan's values in, a verdict out.

A measurement the generator could not make honestly is never a pass: when the generator was saturated
(its CPU, or its event loop running late) a failing figure is inconclusive, because the generator may
have caused it, and LOAD-02 says the generator was the bottleneck rather than blaming the system.
"""
from __future__ import annotations

from typing import Any

from harness.load.exact import RAMP, STEADY
from harness.load.stop import stop_line
from harness.verdict import Verdict

LATENCY_SLO = ("p95_ms", "p99_ms", "max_error_ratio")  # what LOAD-01 reads from its plan entry, per endpoint too
# Requests the users make for themselves, not arrivals of the profile's schedule.
AUTH_ENDPOINTS = ("POST /api/auth/login", "POST /api/auth/refresh")


def saturation(results: dict[str, Any], expect: dict[str, Any]) -> str | None:
    """Why the generator was the bottleneck, or None: a process above the CPU ceiling, an event loop that
    never waited for work (a process the machine starves shows that before its CPU does), or a loop that
    ran later than allowed."""
    gen = results.get("generator", {})
    cpu_max, ceiling = float(gen.get("cpu_max", 0.0)), float(expect.get("max_generator_cpu", 0.90))
    lag_limit = float(expect.get("max_lag_p99_ms", 100))
    if cpu_max > ceiling:
        busiest = max(gen.get("cpu_by_process", {}).items(), key=lambda kv: kv[1], default=("?", cpu_max))[0]
        return f"generator CPU reached {100 * cpu_max:.0f} % (ceiling {100 * ceiling:.0f} %) in {busiest}"
    busy_max = float(gen.get("busy_max", 0.0))
    if busy_max > ceiling:
        busiest = max(gen.get("busy_by_process", {}).items(), key=lambda kv: kv[1], default=("?", busy_max))[0]
        return (f"the generator's event loop was busy {100 * busy_max:.0f} % of the time (ceiling "
                f"{100 * ceiling:.0f} %) in {busiest}: it never waited for work, so it could not go faster")
    loop_lag = float(gen.get("loop_lag_p99_ms", 0.0))
    if loop_lag > lag_limit:
        return f"the generator's event loop ran {loop_lag:.0f} ms late (p99; limit {lag_limit:.0f} ms)"
    return None


def judged_phases(results: dict[str, Any]) -> list[str]:
    """Every phase but the ramp, in the order the run went through them."""
    order = [p["name"] for p in results.get("phases", [])]
    present = [name for name in dict.fromkeys(order) if name in results.get("overall", {}) and name != RAMP]
    return present + sorted(set(results.get("overall", {})) - set(present) - {RAMP})


def latency(results: dict[str, Any], expect: dict[str, Any]) -> Verdict:
    """LOAD-01: p95, p99 and error ratio within the SLOs, overall and per endpoint, in each judged phase.
    A run its stop conditions stopped fails, naming the condition and when it fired, whatever its figures."""
    phases = judged_phases(results)
    stopped = results.get("stopped")
    if not phases or not any(results["overall"][p]["requests"] for p in phases):
        if stopped:
            return Verdict("fail", f"{stop_line(stopped)}; no request completed after the ramp")
        return Verdict("error", "no request completed after the ramp: nothing to judge (see the Locust log)")
    overrides = expect.get("endpoints") or {}
    problems, figures = [], {}
    for phase in phases:
        rows = {"overall": results["overall"][phase], **results["endpoints"].get(phase, {})}
        for name, row in rows.items():
            slo = {**{k: expect[k] for k in LATENCY_SLO}, **overrides.get(name, {})}
            figures[f"{phase} {name}"] = {k: row[k] for k in ("requests", "p95_ms", "p99_ms", "error_ratio")}
            for key, limit in (("p95_ms", slo["p95_ms"]), ("p99_ms", slo["p99_ms"])):
                if row["requests"] and row[key] > limit:
                    problems.append(f"{phase} {name} {key[:3]} {row[key]:.1f} ms > {limit:g} ms")
            if row["requests"] and row["error_ratio"] > slo["max_error_ratio"]:
                problems.append(f"{phase} {name} errors {100 * row['error_ratio']:.2f} % "
                                f"({row['failures']}/{row['requests']}) > {100 * slo['max_error_ratio']:g} %")
    steady = results["overall"][phases[0]]
    headline = (f"{phases[0]}: {steady['requests']} requests, p95 {steady['p95_ms']:.1f} ms, "
                f"p99 {steady['p99_ms']:.1f} ms, errors {100 * steady['error_ratio']:.2f} %")
    if stopped:
        return Verdict("fail", "; ".join([stop_line(stopped), *problems, headline]), figures)
    if not problems:
        return Verdict("pass", f"within the SLOs; {headline}", figures)
    why = saturation(results, expect)
    if why:
        return Verdict("inconclusive", f"inconclusive: {why}, so these figures may be the generator's: "
                                       + "; ".join(problems), figures)
    return Verdict("fail", "; ".join(problems), figures)


def throughput(results: dict[str, Any], rate_per_s: float, expect: dict[str, Any]) -> Verdict:
    """LOAD-02: the steady phase reached min_throughput_ratio of the planned arrival rate, and the
    generator was not the bottleneck. Unpaced runs plan no rate: only the generator is judged."""
    steady = results.get("overall", {}).get(STEADY)
    if not steady or not steady["requests"]:
        return Verdict("error", "no request completed in the steady phase: throughput could not be measured")
    span = next((p["end_s"] - p["start_s"] for p in results["phases"] if p["name"] == STEADY), 0.0)
    auth = sum(row["requests"] for name, row in results["endpoints"].get(STEADY, {}).items() if name in AUTH_ENDPOINTS)
    achieved = (steady["requests"] - auth) / span if span > 0 else 0.0
    late = results.get("schedule", {})
    figures = {"achieved_rps": round(achieved, 2), "planned_rps": rate_per_s,
               "generator": results.get("generator", {}), "late_starts": late.get("late_starts", 0),
               "schedule_lag_p99_ms": late.get("lag_p99_ms", 0.0)}
    why = saturation(results, expect)
    if why:
        return Verdict("inconclusive", f"inconclusive: the generator was the bottleneck ({why}); the system was "
                                       f"not judged. Add workers (--load-workers) or machines", figures)
    if rate_per_s <= 0:
        return Verdict("pass", f"unpaced: {achieved:.1f} req/s achieved with the generator not saturated", figures)
    ratio = achieved / rate_per_s
    figures["ratio"] = round(ratio, 3)
    minimum = float(expect.get("min_throughput_ratio", 0.95))
    line = f"{achieved:.1f} of {rate_per_s:g} req/s planned ({100 * ratio:.0f} %, minimum {100 * minimum:.0f} %)"
    if ratio >= minimum:
        return Verdict("pass", line, figures)
    return Verdict("fail", f"{line}; the generator was not saturated, so the users were held up by the system's "
                           f"answers ({late.get('late_starts', 0)} late starts, schedule lag p99 "
                           f"{late.get('lag_p99_ms', 0.0):.0f} ms)", figures)


def scale_out(samples: list[dict[str, Any]], load_start_s: float, budget_s: float,
              sustained_s: float, cpu_target: float | None, cpu_peak: float | None) -> Verdict:
    """LOAD-03: the desired and the running count both rose above where they started, within budget_s of
    the load reaching its steady phase (load_start_s). samples: {"t_s", "desired", "running"} in time order.

    A run too short to wait out the budget, or whose load never took the service's CPU above the target,
    did not exercise scaling: a skip saying so, never a pass."""
    if not samples:
        return Verdict("error", "the service's desired and running counts could not be read during the run")
    first = samples[0]
    base_desired, base_running = first["desired"], first["running"]
    rose = next((s for s in samples if s["t_s"] >= load_start_s and s["desired"] > base_desired
                 and s["running"] > base_running), None)
    figures = {"before": {"desired": base_desired, "running": base_running}, "budget_s": budget_s,
               "peak": {"desired": max(s["desired"] for s in samples), "running": max(s["running"] for s in samples)},
               "cpu_target": cpu_target, "cpu_peak": cpu_peak}
    if rose is not None:
        took = rose["t_s"] - load_start_s
        figures["scaled_out_after_s"] = round(took, 1)
        line = (f"desired {base_desired} -> {rose['desired']}, running {base_running} -> {rose['running']} "
                f"{took:.0f} s into the load (budget {budget_s:g} s)")
        return Verdict("pass" if took <= budget_s else "fail", line if took <= budget_s else f"too slow: {line}",
                       figures)
    if cpu_target is not None and cpu_peak is not None and cpu_peak <= cpu_target:
        return Verdict("skip", f"not exercised: the service's CPU peaked at {cpu_peak:.0f} %, not above the "
                                       f"{cpu_target:g} % target, so no scale-out was due; use a heavier profile",
                       figures)
    if sustained_s < budget_s:
        return Verdict("skip", f"not exercised: the load lasted {sustained_s:.0f} s after the ramp, less than "
                                       f"the {budget_s:g} s budget; no scale-out seen yet", figures)
    return Verdict("fail", f"no scale-out within {budget_s:g} s of sustained load (desired stayed "
                           f"{figures['peak']['desired']}, running {figures['peak']['running']})", figures)
