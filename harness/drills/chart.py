"""A drill as a picture: the probe timeline (each sample a green or red mark), the probes' latency, the
phases shaded, the fault and the recovery marked, lost writes crossed (PNG, for Allure and reports/).
Drawn from the drill's journal with matplotlib's file-only backend, in the style of harness.load.chart."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot loads)

from harness.drills.model import PROBES  # noqa: E402

PHASE_COLOURS = {"steady": "#e8f4e8", "fault": "#f6c6c6", "recovering": "#fbe9d0", "recovered": "#dde8f7",
                 "rollback": "#e6e0f0", "steady again": "#d4ecdf"}
OK, FAILED = "#2f8f4e", "#c0392b"
LATENCY_COLOURS = {"health": "#3b7dd8", "write": "#d8543b", "db": "#8e44ad", "service": "#888888"}


def draw(journal: dict[str, Any], path: Path) -> Path:
    samples = journal.get("samples") or []
    seen = {row[1] for row in samples} | {w["probe"] for w in journal.get("writes") or []}
    rows = [p for p in PROBES if p in seen] + sorted(seen - set(PROBES))
    row_of = {p: i for i, p in enumerate(rows)}
    fig, (timeline, lat) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5),
                                        gridspec_kw={"height_ratios": [1, 1.4]})
    for phase in journal.get("phases") or []:
        for axis in (timeline, lat):
            # A zero-length phase (the fault's instant) still gets a sliver, so the legend shows it.
            end = max(phase["end_s"], phase["start_s"] + 0.001)
            axis.axvspan(phase["start_s"], end, color=PHASE_COLOURS.get(phase["name"], "#eeeeee"), zorder=0,
                         label=phase["name"] if axis is timeline else None)
    for ok, colour, label in ((True, OK, "probe succeeded"), (False, FAILED, "probe failed")):
        picked = [row for row in samples if bool(row[2]) is ok]
        if picked:
            # Failures taller and on top: a failover of a fraction of a second is a few of them among hundreds.
            timeline.scatter([r[0] for r in picked], [row_of[r[1]] for r in picked], marker="|", s=40 if ok else 160,
                             color=colour, linewidths=0.8 if ok else 1.6, label=label, zorder=2 if ok else 4)
    lost = [w for w in journal.get("writes") or [] if w.get("acknowledged") and w.get("present") is False]
    if lost:
        timeline.scatter([w["t"] for w in lost], [row_of[w["probe"]] for w in lost], marker="x", s=50,
                         color="black", label=f"lost acknowledged write ({len(lost)})", zorder=3)
    timeline.set_yticks(range(len(rows)), rows)
    timeline.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    timeline.invert_yaxis()
    timed_any = False
    for probe in rows:
        timed = [(r[0], r[3]) for r in samples if r[1] == probe and r[3] is not None and r[3] > 0]
        if timed:
            lat.plot([t for t, _ in timed], [ms for _, ms in timed], ".", markersize=2, label=probe,
                     color=LATENCY_COLOURS.get(probe, "#444444"))
            timed_any = True
    if timed_any:
        lat.set_yscale("log")
    fault_t, recovered_t = journal.get("fault_t"), journal.get("recovered_t")
    figures = (journal.get("verdict") or {}).get("figures") or {}
    for axis in (timeline, lat):
        if fault_t is not None:
            axis.axvline(fault_t, color=FAILED, linestyle="--", linewidth=1.2,
                         label="fault injected" if axis is timeline else None)
        if recovered_t is not None:
            rto = figures.get("rto_s")
            rto = rto if rto is not None else recovered_t - (fault_t or 0.0)
            axis.axvline(recovered_t, color=OK, linestyle="--", linewidth=1.2,
                         label=f"recovered, RTO {rto:.1f} s" if axis is timeline else None)
    timeline.set_ylabel("probe")
    if timeline.get_legend_handles_labels()[0]:
        timeline.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    lat.set_ylabel("latency (ms)")
    lat.set_xlabel("seconds since the start")
    if timed_any:
        lat.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    status = (journal.get("verdict") or {}).get("status", "no verdict")
    fig.subplots_adjust(left=0.08, right=0.78, top=0.93, bottom=0.08, hspace=0.06)  # room for the legends
    fig.suptitle(f"{journal.get('drill', '?')} {journal.get('title', '')} — {journal.get('env', '?')}: {status}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


VERDICT_COLOURS = {"pass": OK, "fail": FAILED}  # anything else (error, skip) grey


def draw_history(drill: str, entries: list[dict[str, Any]], path: Path) -> Path:
    """One drill's runs from the drill history: RTO and RPO per run against their targets, each run's point
    coloured by its verdict (a run without a figure has no point on that axis)."""
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(10, 5.5))
    runs = list(range(1, len(entries) + 1))
    for axis, key, label in ((axes[0], "rto_s", "RTO (s)"), (axes[1], "rpo_s", "RPO (s)")):
        points = [(i, line[key], line.get("verdict")) for i, line in zip(runs, entries)
                  if isinstance(line.get(key), (int, float))]
        if points:
            axis.plot([p[0] for p in points], [p[1] for p in points], color="#888888", linewidth=1, zorder=1)
            axis.scatter([p[0] for p in points], [p[1] for p in points], s=40, zorder=2,
                         color=[VERDICT_COLOURS.get(p[2], "#888888") for p in points])
        targets = [(i, line[f"{key[:3]}_target_s"]) for i, line in zip(runs, entries)
                   if isinstance(line.get(f"{key[:3]}_target_s"), (int, float))]
        if targets:
            axis.step([t[0] for t in targets], [t[1] for t in targets], where="mid", color=FAILED, linestyle="--",
                      linewidth=1, label="target")
            axis.legend(loc="upper left", fontsize=8)
        axis.set_ylabel(label)
    axes[1].set_xticks(runs, [f"{i}\n{line.get('date', '')[:10]}\n{line.get('verdict', '')}"
                              for i, line in zip(runs, entries)], fontsize=7)
    axes[1].set_xlabel("run (oldest first)")
    fig.suptitle(f"{drill}: {len(entries)} run{'s' if len(entries) != 1 else ''} in the drill history")
    fig.subplots_adjust(left=0.08, right=0.97, top=0.92, bottom=0.2, hspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
