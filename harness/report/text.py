"""summary.json as text, for people: the one renderer behind pytest's terminal summary and `harness report`."""
from __future__ import annotations

import datetime as dt
from typing import Any

from harness.compliance.inventory import discovery_lines
from harness.load.baseline import table as baseline_table
from harness.load.session import table
from harness.report.drift import ownership_line


def render(summary: dict[str, Any]) -> list[str]:
    """The coverage and counts, what did not pass, how discovery went, then the gate, the load run, the
    drills and the drift where the run had them, and what the plan's owners should act on."""
    counts = ", ".join(f"{n} {status}" for status, n in summary["counts"].items() if n)
    lines = [f"target {summary['target']} env {summary['env']}: {summary['requirements_checked']} requirements: {counts}"]
    for area, by_status in summary["by_area"].items():
        lines.append(f"  {area:<18} " + ", ".join(f"{n} {s}" for s, n in by_status.items() if n))
    lines.append(f"api_calls {summary['api_calls']}, duration_s {summary['duration_s']:.2f}")
    for row in summary["requirements"]:
        if row["status"] != "pass":
            lines.append(f"  {row['status']:<13} {row['id']:<7} {row['severity']:<8} {row['message'][:160]}")
    lines += discovery_lines(summary.get("discovery"))
    gate = summary.get("gate")
    if gate:
        rounds = gate["rounds"]
        lines.append(f"smoke gate on {gate['base_url']}: {len(rounds)} round(s) in {gate['elapsed_s']:.2f} s, "
                     f"last failing: {', '.join(rounds[-1]['failing']) or 'none'}")
    if summary.get("load"):
        lines += _load(summary["load"])
    if summary.get("drills"):
        lines += ["drills:", *(f"  {line}" for line in drills_table(summary["drills"]))]
    if summary.get("drift"):
        lines.append(f"drift since {summary['drift']['baseline_taken_at']}: {summary['drift']['line']}")
        if summary["drift"].get("coverage"):
            lines.append(f"  {ownership_line(summary['drift']['coverage'], summary['drift']['unmanaged'])}")
        if summary["drift"].get("files"):
            lines.append(f"  details: {summary['drift']['files'][1]}")
    lines += [f"waiver for {rid} can go: the requirement passes" for rid in summary.get("waivers_can_go", [])]
    if summary.get("uncovered"):
        lines.append(f"plan requirements no test carries: {', '.join(summary['uncovered'])}")
    return lines


def _load(load: dict[str, Any]) -> list[str]:
    generator = load["generator"]
    return [f"load profile {load['profile']} on {load['base_url']} ({load['workers']} worker(s)): "
            + ("complete" if load["complete"] else f"INCOMPLETE ({load['problem']})"),
            *(f"  {line}" for line in table(load)),
            f"  generator: cpu max {generator['cpu_max']}, loop busy max {generator['busy_max']}, "
            f"schedule lag p99 {generator['lag_p99_ms']} ms",
            *(f"  {rid} {verdict['status']}: {verdict['message'][:200]}" for rid, verdict in load["verdicts"].items()),
            *([f"  against the baseline {load['baseline']['file']}:"]
              + [f"    {line}" for line in baseline_table(load["baseline"]["rows"])] if load.get("baseline") else [])]


def drills_table(drills: dict[str, Any]) -> list[str]:
    """The `drills` section as lines: one row per drill with its measured figures against the targets,
    then the verdict, where the journal and chart are, and whether the rollback left the system whole."""
    def num(value: Any, unit: str = "") -> str:
        return "-" if value is None else f"{value:g}{unit}"

    lines = [f"{'drill':<9} {'verdict':<12} {'RTO':>16} {'RPO':>14} {'lost/acked':>11} {'errors':>7} {'±':>6}"]
    for rid, d in drills.items():
        acked = d.get("acknowledged_writes")
        lost = "-" if acked is None else f"{d.get('lost_writes') if d.get('lost_writes') is not None else '?'}/{acked}"
        lines.append(f"{rid:<9} {d['verdict']:<12} {num(d.get('rto_s'), ' s') + ' / ' + num(d.get('rto_target_s')):>16} "
                     f"{num(d.get('rpo_s'), ' s') + ' / ' + num(d.get('rpo_target_s')):>14} {lost:>11} "
                     f"{num(d.get('error_ratio')):>7} {num(d.get('resolution_s'), ' s'):>6}")
    for rid, d in drills.items():
        lines.append(f"  {rid} {d['verdict']}: {d['message'][:300]}")
        cleanup = d.get("cleanup") or {}
        if cleanup:
            lines.append(f"    rollback {'ok' if cleanup.get('ok') else 'FAILED'}: {cleanup.get('detail', '')}")
        for event in d.get("platform_events") or []:
            at = dt.datetime.fromtimestamp(event["at"], dt.timezone.utc).isoformat(timespec="milliseconds")
            lines.append(f"    platform event at {at}: {event['message']}")
        if d.get("load"):
            lines.append("    background load: " + "; ".join(
                f"{phase} {row['requests']} requests" + (f", p95 {row['p95_ms']:g} ms, errors {100 * row['error_ratio']:.2f} %"
                                                         if row.get("requests") else "")
                for phase, row in d["load"].items()))
        if d.get("journal"):
            lines.append(f"    journal {d['journal']}, chart {d['chart']}")
    return lines
