"""One load run of a pytest session: what was run, what it measured, what the checks concluded, and the
`load` section of summary.json with the per-endpoint table people read."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.verdict import Verdict
from harness.load.profile import Profile
from harness.load.runner import RunResult
from harness.load.scaling import ScalingObserver

FIGURES = ("requests", "failures", "error_ratio", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms")


@dataclass
class LoadRun:
    profile: Profile
    base_url: str
    result: RunResult
    scaling: ScalingObserver | None = None
    time_scale: float = 1.0  # the stand-in's scaling time scale (1.0 elsewhere)
    load_start_s: float = 0.0  # seconds from the observer's origin to the end of the ramp
    cpu_target: float | None = None  # the CPU target (%) of the service's target-tracking policy, as deployed
    chart: Path | None = None
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None  # LOAD-04's comparison with --load-baseline: file, rows, verdict, chart
    baseline_verdict: Verdict | None = None

    @property
    def results(self) -> dict[str, Any] | None:
        return self.result.results

    def section(self) -> dict[str, Any]:
        """summary.json's `load`: the steady phase's figures overall and per endpoint, every phase's overall,
        the generator's self-measurement, and each check's verdict."""
        results = self.results or {}
        steady = "steady"
        phases = results.get("phases", [])
        return {
            "profile": self.profile.name, "base_url": self.base_url,
            "workers": results.get("workers", 0), "complete": self.result.complete,
            "interrupted": self.result.interrupted, "problem": self.result.problem,
            "stopped": self.result.stopped, "notes": self.result.notes,
            "settings": self.profile.to_json(), "phases": phases, "target_rps": self.profile.rate_per_s,
            "overall": figures(results.get("overall", {}).get(steady, {})),
            "endpoints": {name: figures(row) for name, row in results.get("endpoints", {}).get(steady, {}).items()},
            "by_phase": {name: figures(row) for name, row in results.get("overall", {}).items()},
            "generator": {"cpu_max": results.get("generator", {}).get("cpu_max"),
                          "busy_max": results.get("generator", {}).get("busy_max"),
                          "lag_p99_ms": results.get("generator", {}).get("lag_p99_ms"),
                          "loop_lag_p99_ms": results.get("generator", {}).get("loop_lag_p99_ms"),
                          "late_starts": results.get("schedule", {}).get("late_starts")},
            "scaling": {"samples": self.scaling.samples, "time_scale": self.time_scale,
                        "problem": self.scaling.problem} if self.scaling else None,
            "verdicts": {rid: {"status": v.status, "message": v.message} for rid, v in sorted(self.verdicts.items())},
            "baseline": self.baseline,
            "files": {**self.result.files, **({"chart": str(self.chart)} if self.chart else {})},
        }


def figures(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in FIGURES if key in row}


def table(section: dict[str, Any]) -> list[str]:
    """The per-endpoint table (steady phase) as fixed-width lines, for the terminal and `harness report`."""
    head = f"{'endpoint':<28} {'requests':>8} {'errors':>7} {'req/s':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}"
    rows = {**section.get("endpoints", {}), "overall": section.get("overall", {})}
    if not section.get("overall"):
        return []
    lines = [head]
    for name, row in rows.items():
        if not row:
            continue
        lines.append(f"{name:<28} {row['requests']:>8} {100 * row['error_ratio']:>6.2f}% {row['rps']:>7.1f} "
                     f"{row['p50_ms']:>6.1f}ms {row['p95_ms']:>6.1f}ms {row['p99_ms']:>6.1f}ms {row['max_ms']:>6.1f}ms")
    return lines
