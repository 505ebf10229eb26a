"""The session's summary: status per requirement, grouped by plan area, with the figures users gate on.

Statuses, worst first: error (could not judge), fail, waived (failed under a valid waiver), optional-fail
(an optional requirement failed and the plan does not enforce it), skip (with its reason), pass.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.plan import Plan
from harness.report.drift import Drift, summary_line, to_markdown
from harness.util.files import write_atomic
from harness.util.redact import mask_url_passwords, plain_variables, redact

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


def summarize(plan: Plan, env: str, carried: Mapping[str, Sequence[str]], outcomes: Mapping[str, Outcome], *,
              target: str, snapshot_meta: Mapping[str, Any], replayed: bool, provision_calls: int,
              duration_s: float, gate: dict[str, Any] | None) -> dict[str, Any]:
    """summary.json's core: a row per requirement (its worst outcome over the tests carrying it), counts
    overall and by plan area, the requirements no selected suite's test carries, and the run's figures."""
    by_requirement: dict[str, list[tuple[str, Outcome]]] = {}
    rid_of = {nodeid: rid for rid, nodeids in carried.items() for nodeid in nodeids}
    for nodeid, outcome in outcomes.items():
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
    suites = {plan.requirements[rid].suite for rid in carried}
    uncovered = sorted(rid for rid, req in plan.requirements.items() if req.suite in suites and rid not in carried)
    meta = snapshot_meta
    # Written as every output is (harness.util.redact): container values masked but for the plan's plain
    # variables, whatever snapshot the evidence came from; no URL's password in any message.
    return redact({
        "project": plan.project,
        "env": env,
        "target": meta.get("target", target),
        "endpoint": meta.get("endpoint"),
        "snapshot_taken_at": meta.get("taken_at"),
        "replayed_snapshot": replayed,
        "api_calls": meta.get("api_calls", 0) if not replayed else 0,
        "api_calls_by_operation": meta.get("calls", {}),
        # How the snapshot found each resource type (tagging API, fallback, link), with the calls it cost.
        "discovery": meta.get("discovery"),
        "provision_api_calls": provision_calls,
        "duration_s": round(duration_s, 3),
        "requirements_checked": len(rows),
        "counts": counts,
        "by_area": by_area,
        "uncovered": uncovered,
        "waivers_can_go": [r["id"] for r in rows if r["waiver_can_go"] and r["status"] == "pass"],
        "requirements": rows,
        "gate": gate,
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
            "changed": len(drift.changed), "requirements": drift.requirements, "line": summary_line(drift),
            "unmanaged": drift.unmanaged, "coverage": drift.coverage}
