"""LOAD-04: this run against an earlier one (`--load-baseline FILE`, that run's results.json).

A run's results carry its identity (`run`): the profile and the load it shapes (users, arrival rate, mix),
the URL, environment, target and project, and the results format. Runs whose identities differ are not
compared: the verdict is an ERROR listing the differences. The duration and the number of generator
processes are not part of it (the noise below accounts for a shorter run's fewer samples).

The noise is the sampling noise the two runs themselves show (a system that varies from day to day is
what the allowance is for). For a percentile, a distribution-free 95 % confidence interval from each run's
own histogram (the order statistics whose ranks bound it, exact.Ranked.interval_ms);
for the throughput, the 95 % interval of the steady phase's mean requests per second from its per-second
counts. A metric regressed only when, even at the favourable ends of both intervals, it is worse by more
than the allowance (`max_regression`): the run's lower bound above the baseline's upper bound times
(1 + allowance) for a latency, its upper bound below the baseline's lower bound times (1 - allowance) for
the throughput. A figure whose interval cannot be bounded by the run's samples (a p99 needs about 400) is
"too few samples", never compared. Pure: two results in, rows and a verdict out.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from harness.load.exact import STEADY, Ranked, decode
from harness.load.profile import Profile
from harness.verdict import Verdict

RESULTS_FORMAT = 1  # of the `run` identity and the figures this module reads
PERCENTILES = (95, 99)
SHAPING = ("users", "rate_per_s", "mix")  # the profile's settings that shape the load the system sees


def identity(profile: Profile, base_url: str, env: str, target: str, project: str) -> dict[str, Any]:
    """What a results file says of the run that made it, for a later run to check it is comparable."""
    settings = profile.to_json()
    return {"format": RESULTS_FORMAT, "profile": profile.name, **{k: settings[k] for k in SHAPING},
            "base_url": base_url, "env": env, "target": target, "project": project}


def differences(baseline: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """Why two runs cannot be compared; empty when they can."""
    old, new = baseline.get("run"), run.get("run")
    if not isinstance(old, dict):
        return ["the baseline's results carry no run identity (written before LOAD-04): make a new baseline"]
    if old.get("format") != RESULTS_FORMAT:
        return [f"the baseline's results are format {old.get('format')}, this harness writes {RESULTS_FORMAT}"]
    return [f"{key}: {old.get(key)!r} in the baseline, {new.get(key)!r} now" for key in
            ("profile", *SHAPING, "base_url", "env", "target", "project") if old.get(key) != (new or {}).get(key)]


@dataclass(frozen=True)
class Row:
    """One compared figure: its value in each run, each one's 95 % interval, the change, and the outcome."""

    endpoint: str
    metric: str  # p95, p99 (ms) or rps
    baseline: float | None
    run: float | None
    baseline_ci: tuple[float, float] | None
    run_ci: tuple[float, float] | None
    status: str  # regressed, within, too few samples, only in the baseline, only in this run

    @property
    def change(self) -> float | None:
        return None if not self.baseline or self.run is None else self.run / self.baseline - 1

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "metric": self.metric, "baseline": self.baseline, "run": self.run,
                "change": None if self.change is None else round(self.change, 4),
                "baseline_ci": self.baseline_ci, "run_ci": self.run_ci, "status": self.status}


def _latency(endpoint: str, metric: int, old: dict[str, Any] | None, new: dict[str, Any] | None,
             allowance: float) -> Row:
    name = f"p{metric}"
    if old is None or new is None:
        return Row(endpoint, name, None, None, None, None,
                   "only in this run" if old is None else "only in the baseline")
    old_r, new_r = Ranked(decode(old.get("hist", ""))), Ranked(decode(new.get("hist", "")))
    old_v, new_v = old_r.percentile_ms(metric), new_r.percentile_ms(metric)
    old_ci, new_ci = old_r.interval_ms(metric), new_r.interval_ms(metric)
    if old_ci is None or new_ci is None:
        return Row(endpoint, name, old_v, new_v, old_ci, new_ci, "too few samples")
    regressed = new_ci[0] > old_ci[1] * (1 + allowance)
    return Row(endpoint, name, old_v, new_v, old_ci, new_ci, "regressed" if regressed else "within")


def steady_rps(results: dict[str, Any]) -> tuple[float, tuple[float, float]] | None:
    """The steady phase's mean requests per second and its 95 % interval, from the whole seconds of the
    per-second timeline inside the phase; None with fewer than 5 of them."""
    span = next((p for p in results.get("phases", []) if p.get("name") == STEADY), None)
    if span is None:
        return None
    counts = [float(s["requests"]) for s in results.get("timeline", [])
              if span["start_s"] < s["t_s"] <= math.floor(span["end_s"])]
    if len(counts) < 5:
        return None
    mean = statistics.fmean(counts)
    half = 1.96 * statistics.stdev(counts) / math.sqrt(len(counts))
    return mean, (mean - half, mean + half)


def compare(baseline: dict[str, Any], run: dict[str, Any], allowance: float) -> tuple[list[Row], Verdict]:
    """The rows of the comparison and LOAD-04's verdict."""
    unlike = differences(baseline, run)
    if unlike:
        return [], Verdict("error", "the runs are not comparable: " + "; ".join(unlike),
                           evidence={"differences": unlike})
    rows: list[Row] = []
    old_eps, new_eps = baseline.get("endpoints", {}).get(STEADY, {}), run.get("endpoints", {}).get(STEADY, {})
    for endpoint in sorted(set(old_eps) | set(new_eps)):
        rows += [_latency(endpoint, p, old_eps.get(endpoint), new_eps.get(endpoint), allowance) for p in PERCENTILES]
    old_all, new_all = baseline.get("overall", {}).get(STEADY), run.get("overall", {}).get(STEADY)
    rows += [_latency("overall", p, old_all, new_all, allowance) for p in PERCENTILES]
    old_rps, new_rps = steady_rps(baseline), steady_rps(run)
    if old_rps and new_rps:
        regressed = new_rps[1][1] < old_rps[1][0] * (1 - allowance)
        rows.append(Row("overall", "rps", old_rps[0], new_rps[0], old_rps[1], new_rps[1],
                        "regressed" if regressed else "within"))
    else:
        rows.append(Row("overall", "rps", old_rps[0] if old_rps else None, new_rps[0] if new_rps else None,
                        None, None, "too few samples"))
    evidence = {"rows": [r.to_json() for r in rows], "max_regression": allowance}
    regressed = [r for r in rows if r.status == "regressed"]
    judged = [r for r in rows if r.status in ("regressed", "within")]
    beyond = f"beyond the allowance of {allowance * 100:g} % and the noise of the two runs"
    if regressed:
        return rows, Verdict("fail", f"{len(regressed)} figure(s) regressed {beyond}: "
                             + "; ".join(_said(r) for r in regressed), evidence=evidence)
    if not judged:
        return rows, Verdict("error", "nothing could be compared: too few samples in one of the runs",
                             evidence=evidence)
    return rows, Verdict("pass", f"no endpoint's p95 or p99 nor the throughput regressed {beyond} "
                                 f"({len(judged)} figures compared)", evidence=evidence)


def _said(row: Row) -> str:
    unit = " req/s" if row.metric == "rps" else " ms"
    change = f"{row.change:+.0%}" if row.change is not None else "?"
    return f"{row.endpoint} {row.metric} {row.baseline:.1f} -> {row.run:.1f}{unit} ({change})"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The comparison (rows as to_json wrote them) as fixed-width lines, for the terminal, the summary's
    readers and Allure."""
    if not rows:
        return []
    lines = [f"{'endpoint':<24} {'figure':<6} {'baseline':>10} {'this run':>10} {'change':>8}  "
             f"{'baseline 95 % CI':>18} {'this run 95 % CI':>18}  outcome"]
    for r in rows:
        def num(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        def ci(v: Any) -> str:
            return "-" if not v else f"{v[0]:.1f}-{v[1]:.1f}"
        change = "-" if r["change"] is None else f"{r['change']:+.1%}"
        lines.append(f"{r['endpoint']:<24} {r['metric']:<6} {num(r['baseline']):>10} {num(r['run']):>10} "
                     f"{change:>8}  {ci(r['baseline_ci']):>18} {ci(r['run_ci']):>18}  {r['status']}")
    return lines
