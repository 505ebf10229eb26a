"""The load run as a picture: latency and throughput over time, the phases shaded (PNG, for Allure and
reports/load/). Drawn from the results file's per-second timeline, with matplotlib's file-only backend."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot loads)

PHASE_COLOURS = {"ramp": "#dddddd", "steady": "#e8f4e8"}
OTHER_PHASE = "#fbe9d0"


def draw(results: dict[str, Any], path: Path, *, title: str, target_rps: float = 0.0,
         p95_slo_ms: float | None = None) -> Path:
    timeline = results.get("timeline", [])
    t = [row["t_s"] for row in timeline]
    fig, (lat, rps) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), constrained_layout=True)
    for axis in (lat, rps):
        for phase in results.get("phases", []):
            axis.axvspan(phase["start_s"], phase["end_s"], color=PHASE_COLOURS.get(phase["name"], OTHER_PHASE),
                         zorder=0)
    for phase in results.get("phases", []):
        lat.text(phase["start_s"], 1.01, f" {phase['name']}", transform=lat.get_xaxis_transform(), fontsize=8)
    served = [row for row in timeline if row["requests"]]  # a second without answers has no latency
    lat.plot([row["t_s"] for row in served], [row["p50_ms"] for row in served], label="p50", color="#3b7dd8")
    lat.plot([row["t_s"] for row in served], [row["p95_ms"] for row in served], label="p95", color="#d8543b")
    if p95_slo_ms:
        lat.axhline(p95_slo_ms, linestyle="--", color="#d8543b", linewidth=1, label=f"p95 SLO {p95_slo_ms:g} ms")
    lat.set_ylabel("latency per second (ms)")
    lat.legend(loc="upper left", fontsize=8)
    rps.plot(t, [row["requests"] for row in timeline], label="requests/s", color="#2f8f4e")
    rps.bar(t, [row["failures"] for row in timeline], label="failures/s", color="#c0392b", width=0.9)
    if target_rps:
        rps.axhline(target_rps, linestyle="--", color="#2f8f4e", linewidth=1, label=f"planned {target_rps:g}/s")
    rps.set_ylabel("per second")
    rps.set_xlabel("seconds since the start")
    cpu = rps.twinx()
    cpu.plot(t, [100 * row.get("cpu", 0.0) for row in timeline], color="#888888", linewidth=1, label="generator CPU %")
    cpu.set_ylim(0, 110)
    cpu.set_ylabel("generator CPU (%)")
    handles = rps.get_legend_handles_labels()
    extra = cpu.get_legend_handles_labels()
    rps.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left", fontsize=8)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def draw_against_baseline(baseline: dict[str, Any], results: dict[str, Any], path: Path, *, title: str) -> Path:
    """LOAD-04's picture: the baseline's latency and throughput over time beside this run's, on the same
    scales, so a slower run shows as a higher line at a glance."""
    fig, axes = plt.subplots(2, 2, sharex="col", sharey="row", figsize=(12, 6.5), constrained_layout=True)
    for column, (name, run) in enumerate((("baseline", baseline), ("this run", results))):
        lat, rps = axes[0][column], axes[1][column]
        for axis in (lat, rps):
            for phase in run.get("phases", []):
                axis.axvspan(phase["start_s"], phase["end_s"], color=PHASE_COLOURS.get(phase["name"], OTHER_PHASE),
                             zorder=0)
        timeline = run.get("timeline", [])
        served = [row for row in timeline if row["requests"]]
        lat.plot([row["t_s"] for row in served], [row["p50_ms"] for row in served], label="p50", color="#3b7dd8")
        lat.plot([row["t_s"] for row in served], [row["p95_ms"] for row in served], label="p95", color="#d8543b")
        lat.set_title(f"{name} ({(run.get('started_at') or '')[:16].replace('T', ' ')})", fontsize=10)
        rps.plot([row["t_s"] for row in timeline], [row["requests"] for row in timeline], color="#2f8f4e",
                 label="requests/s")
        rps.set_xlabel("seconds since the start")
        lat.legend(loc="upper left", fontsize=8)
    axes[0][0].set_ylabel("latency per second (ms)")
    axes[1][0].set_ylabel("requests per second")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
