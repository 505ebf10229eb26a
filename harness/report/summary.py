"""The session's summary: status per requirement, grouped by plan area, with the figures users gate on.

Statuses, worst first: error (could not judge), fail, waived (failed under a valid waiver), optional-fail
(an optional requirement failed and the plan does not enforce it), skip (with its reason), pass.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.report.drift import Drift, summary_line, to_markdown
from harness.util.files import write_atomic
from harness.plan import Plan
from harness.util.redact import mask_url_passwords, plain_variables, redact

if TYPE_CHECKING:
    from harness.plugin import HarnessState

STATUSES = ("pass", "skip", "optional-fail", "waived", "fail", "error")


@dataclass
class Outcome:
    status: str
    message: str = ""
    waiver_can_go: bool = False
    evidence: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return STATUSES.index(self.status)


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        # The assertion's (or pytest.fail's) own message, without pytest's "assert ..." explanation under it.
        return crash.message.split("\n", 1)[0].removeprefix("AssertionError: ").removeprefix("Failed: ")
    return str(report.longrepr or "")


def classify(report: pytest.TestReport, waived: bool, optional: bool) -> Outcome | None:
    """The outcome one phase of a test contributes; None when the phase says nothing yet (a passed setup)."""
    xfail = getattr(report, "wasxfail", None)
    if report.when != "call":
        if report.failed:
            return Outcome("error", _message(report))
        if report.skipped:
            return Outcome("skip", _message(report))
        return None
    if report.passed:
        return Outcome("pass", xfail or "", waiver_can_go=waived)
    if report.skipped and xfail:
        return Outcome("waived" if waived else "optional-fail", xfail)
    if report.skipped:
        return Outcome("skip", _message(report))
    return Outcome("fail", _message(report))


def summarize(state: HarnessState, duration_s: float) -> dict[str, Any]:
    assert state.plan is not None
    plan, env = state.plan, state.env
    by_requirement: dict[str, list[tuple[str, Outcome]]] = {}
    rid_of = {nodeid: rid for rid, nodeids in state.carried.items() for nodeid in nodeids}
    for nodeid, outcome in state.outcomes.items():
        by_requirement.setdefault(rid_of[nodeid], []).append((nodeid, outcome))
    rows = []
    for rid in (r for r in plan.requirements if r in by_requirement):
        results = by_requirement[rid]
        req = plan.requirements[rid]
        worst = max((o for _, o in results), key=lambda o: o.rank)
        rows.append({
            "id": rid, "area": req.area, "section": req.section, "severity": req.severity_in(env),
            "optional": req.optional_in(env), "text": req.text, "status": worst.status, "message": worst.message,
            "waiver_can_go": all(o.waiver_can_go for _, o in results),
            "tests": [{"nodeid": n, "status": o.status, "message": o.message, "evidence": o.evidence}
                      for n, o in results],
        })
    counts = {s: sum(r["status"] == s for r in rows) for s in reversed(STATUSES)}
    by_area: dict[str, dict[str, int]] = {}
    for r in rows:
        area = by_area.setdefault(r["area"], {s: 0 for s in reversed(STATUSES)})
        area[r["status"]] += 1
    suites = {plan.requirements[rid].suite for rid in state.carried}
    uncovered = sorted(rid for rid, req in plan.requirements.items()
                       if req.suite in suites and rid not in state.carried)
    inventory = state.inventory
    meta = inventory.meta if inventory else {}
    # Written as every output is (harness.util.redact): container values masked but for the plan's plain
    # variables, whatever snapshot the evidence came from; no URL's password in any message.
    return redact({
        "project": plan.project,
        "env": env,
        "target": meta.get("target", state.config.option.target),
        "endpoint": meta.get("endpoint"),
        "snapshot_taken_at": meta.get("taken_at"),
        "replayed_snapshot": bool(state.config.option.snapshot),
        "api_calls": meta.get("api_calls", 0) if not state.config.option.snapshot else 0,
        "api_calls_by_operation": meta.get("calls", {}),
        # How the snapshot found each resource type (tagging API, fallback, link), with the calls it cost.
        "discovery": meta.get("discovery"),
        "provision_api_calls": state.provision_calls,
        "duration_s": round(duration_s, 3),
        "requirements_checked": len(rows),
        "counts": counts,
        "by_area": by_area,
        "uncovered": uncovered,
        "waivers_can_go": [r["id"] for r in rows if r["waiver_can_go"] and r["status"] == "pass"],
        "requirements": rows,
        "gate": {"base_url": state.endpoint.base_url if state.endpoint else None,
                 "expected_version": state.config.option.expect_version,
                 "elapsed_s": round(state.gate.elapsed_s, 3), "rounds": state.gate.rounds} if state.gate else None,
    }, plain_variables(plan, env))


def write_summary(reports_dir: Path, summary: dict[str, Any]) -> Path:
    """summary.json; the sections added after `summarize` (load, drills, drift) have no URL's password either."""
    return write_atomic(reports_dir / "summary.json", json.dumps(redact(summary, None), indent=2, default=str))


def write_drift(reports_dir: Path, drift: Drift, plan: Plan) -> tuple[Path, Path]:
    """`drift.json` for machines (the nightly gate, tomorrow's comparison) and `drift.md` for people, which
    gives each requirement's plan sentence."""
    texts = {rid: req.text for rid, req in plan.requirements.items()}
    return (write_atomic(reports_dir / "drift.json", json.dumps(redact(drift.to_json(), None), indent=2, default=str)),
            write_atomic(reports_dir / "drift.md", mask_url_passwords(to_markdown(drift, texts))))


def drift_section(drift: Drift) -> dict[str, Any]:
    """What summary.json says of the drift: the counts and the requirement lists; the details are in drift.json."""
    return {"baseline_taken_at": drift.baseline_taken_at, "added": len(drift.added), "removed": len(drift.removed),
            "changed": len(drift.changed), "requirements": drift.requirements, "line": summary_line(drift)}



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
