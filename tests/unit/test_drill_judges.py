"""The drill judges in process, as tables: each case one violation (or none) built from a few synthetic
samples, and the figure or verdict it must give; then the picture, drawn for a normal and an empty drill."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from harness.drills import judges
from harness.drills.chart import draw
from harness.drills.model import DrillSpec, Sample, Write
from harness.verdict import Verdict

STEP = 0.1
PNG = b"\x89PNG\r\n\x1a\n"


def line(probe: str, pattern: str, start: float = 0.0, step: float = STEP) -> list[Sample]:
    """One probe's samples from a pattern, one character per slot of `step` seconds from `start`:
    '+' succeeded, '-' failed, '.' no sample (the probe was silent)."""
    return [Sample(round(start + i * step, 6), probe, c == "+") for i, c in enumerate(pattern) if c != "."]


def run(**patterns: str) -> list[Sample]:
    return [s for probe, pattern in patterns.items() for s in line(probe, pattern)]


# 0-0.9 s steady, the fault at 1.0, failing 1.0-1.4, succeeding 1.5-3.4
DIP = "+" * 10 + "-" * 5 + "+" * 20
CALM = "+" * 35
BOTH = ("health", "write")


@pytest.mark.parametrize(("samples", "fault_t", "expected"), [
    pytest.param(run(health=DIP, write=DIP), 1.0, 1.5, id="first ok after the last failure"),
    pytest.param(run(health=DIP, write=CALM, service="-" * 35), 1.0, 1.5, id="a probe that does not decide is ignored"),
    pytest.param(run(health=DIP, write="+" * 10 + "-" * 10 + "+" * 20), 1.0, 2.0,
                 id="the last probe to recover decides"),
    pytest.param(run(health="+" * 10 + "-" * 5 + "+" * 5 + "-" + "+" * 20, write="+" * 45), 1.0, 2.1,
                 id="a flap inside the window pushes recovery later"),
    pytest.param(run(health="+" * 10 + "-" * 5 + "+" * 10 + "-" + "+" * 20, write="+" * 50), 1.0, 2.6,
                 id="a flap at the window's closed end counts"),
    pytest.param(run(health=DIP, write="+" * 10), 1.0, None, id="a probe silent after the fault: no recovery"),
    pytest.param(run(health=DIP, write="+" * 10 + "." * 12 + "+" * 13), 1.0, 2.1,
                 id="a probe silent after the fault holds recovery back until it speaks"),
    pytest.param(run(health="+" * 10 + "-" * 15 + "+" * 9, write=CALM), 1.0, None,
                 id="a window cut short by the end of observation is no recovery"),
    pytest.param(run(health="+" * 10 + "-" * 15 + "+" * 10, write=CALM), 1.0, 2.5,
                 id="one more interval of observation completes it"),
    pytest.param(run(health=CALM, write=CALM), 1.05, 1.1, id="nothing failed: the first sample after the fault"),
    pytest.param(list(reversed(run(health=DIP, write=DIP))), 1.0, 1.5, id="samples in any order"),
    pytest.param(run(health=DIP, write=DIP), 5.0, None, id="the fault after the last window"),
])
def test_recovery(samples: list[Sample], fault_t: float, expected: float | None) -> None:
    t0 = judges.recovery(samples, fault_t, 1.0, BOTH)
    assert t0 == pytest.approx(expected) if expected is not None else t0 is None


def lines_run(function: Any, *args: Any) -> int:
    """How many lines of its own module `function(*args)` executes: a count of work that, unlike a clock,
    the machine's load does not change."""
    count = 0
    module = function.__code__.co_filename

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        count += event == "line"
        return local

    def calls(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == module else None

    sys.settrace(calls)
    try:
        function(*args)
    finally:
        sys.settrace(None)
    return count


def test_recovery_is_not_quadratic() -> None:
    """10 Hz x 4 probes, flapping every 4.9 s (each 5 s window fails at its very end), then calm: the first
    window after the last flap. Twice the flapping makes the judge run about twice the lines (a quadratic
    scan would run four times as many)."""
    probes = ("health", "write", "db", "service")

    def flapping(flaps: int) -> tuple[list[Sample], float]:
        pattern = ("+" * 48 + "-") * flaps + "+" * 700
        return [s for p in probes for s in line(p, pattern)], 49 * flaps * STEP

    (half, _), (whole, expected) = flapping(40), flapping(80)
    assert len(whole) == 4 * (49 * 80 + 700)
    assert judges.recovery(whole, 0.0, 5.0, probes) == pytest.approx(expected)
    ratio = lines_run(judges.recovery, whole, 0.0, 5.0, probes) / lines_run(judges.recovery, half, 0.0, 5.0, probes)
    assert ratio < 2.5, f"twice the samples ran {ratio:.2f} times the lines"


def test_the_line_count_tells_quadratic_from_linear() -> None:
    """The measure above, on a scan that is quadratic by construction, gives about four."""
    def pairs(values: list[int]) -> int:
        return sum(1 for a in values for b in values if a < b)

    assert lines_run(pairs, list(range(200))) / lines_run(pairs, list(range(100))) > 3.5


@pytest.mark.parametrize(("samples", "after_t", "expected"), [
    pytest.param(run(health=CALM, write=CALM), 0.0, 0.1, id="10 Hz"),
    pytest.param(run(health=CALM) + line("write", "+" * 10, step=0.5), 0.0, 0.5, id="the slowest probe sets it"),
    pytest.param(line("health", "+" * 60) + line("write", "+" * 10, step=0.5) + line("write", "+" * 10, start=5.0),
                 5.0, 0.1, id="only samples after the point count"),
    pytest.param(run(health="+", write="+"), 0.0, 0.0, id="too few samples"),
])
def test_resolution(samples: list[Sample], after_t: float, expected: float) -> None:
    assert judges.resolution(samples, BOTH, after_t) == pytest.approx(expected)


def writes(*rows: tuple[int, float, bool]) -> list[Write]:
    return [Write("db", seq, t, acknowledged) for seq, t, acknowledged in rows]


@pytest.mark.parametrize(("ws", "present", "lost_seqs", "rpo"), [
    pytest.param(writes((1, 50, True), (2, 60, True)), {("db", 1), ("db", 2)}, [], 0.0, id="none lost"),
    pytest.param(writes((1, 60, True), (2, 70, True), (3, 90, True)), {("db", 3)}, [1, 2], 40.0,
                 id="oldest lost 40 s before the fault"),
    pytest.param(writes((1, 90, True), (2, 95, False)), {("db", 1)}, [], 0.0,
                 id="an unacknowledged missing write is not lost"),
    pytest.param(writes((1, 90, True), (2, 101, True)), {("db", 1)}, [2], 0.0, id="lost after the fault: RPO 0"),
    pytest.param([Write("write", 1, 60, True)], {("db", 1)}, [1], 40.0, id="the probe is part of the key"),
])
def test_lost_writes_and_rpo(ws: list[Write], present: set[tuple[str, int]], lost_seqs: list[int],
                             rpo: float) -> None:
    lost = judges.lost_writes(ws, present)
    assert [w.seq for w in lost] == lost_seqs
    assert judges.rpo(lost, 100.0) == rpo


@pytest.mark.parametrize(("start_t", "end_t", "probes", "expected"), [
    pytest.param(0.0, 3.5, BOTH, (5, 70, 5 / 70), id="the whole run"),
    pytest.param(1.0, 1.5, BOTH, (5, 10, 0.5), id="start included, end excluded"),
    pytest.param(1.1, 1.4, BOTH, (3, 6, 0.5), id="inside the dip"),
    pytest.param(1.5, 3.5, BOTH, (0, 40, 0.0), id="after the dip"),
    pytest.param(1.0, 1.5, ("write",), (0, 5, 0.0), id="only the named probes"),
    pytest.param(9.0, 10.0, BOTH, (0, 0, 0.0), id="no sample: ratio 0"),
])
def test_error_ratio(start_t: float, end_t: float, probes: tuple[str, ...], expected: tuple) -> None:
    samples = run(health=DIP, write=CALM, db="-" * 35)
    failed, total, ratio = judges.error_ratio(samples, start_t, end_t, probes)
    assert (failed, total) == expected[:2] and ratio == pytest.approx(expected[2])


DRILL = DrillSpec("DRILL-01", "Database failover", "db_failover", ("health", "write", "db"),
                  {"rto_s": 120, "rpo_s": 300, "max_lost_writes": 0}, timeout_s=20.0, stop_after_failing_s=3.0)


@pytest.mark.parametrize(("samples", "now_t", "fault_t", "alarms", "says"), [
    pytest.param(run(health=CALM, write=CALM, db=CALM), 3.5, 1.0, [], None, id="healthy"),
    pytest.param(run(health=DIP, write=DIP, db=DIP), 3.5, 1.0, [], None, id="a short dip"),
    pytest.param(run(health=CALM, write=CALM, db=CALM), 0.5, None, ["dougust-5xx"], "alarm dougust-5xx is in ALARM",
                 id="a plan-named alarm"),
    pytest.param(run(health=CALM, write=CALM, db="-" * 35), 3.5, None, [], None,
                 id="before the fault only alarms count"),
    pytest.param(run(health=CALM, write=CALM, db=CALM), 21.5, 1.0, [], "hard timeout of 20 s reached",
                 id="hard timeout"),
    pytest.param(run(health=CALM, write=CALM, db=CALM), 21.0, 1.0, [], None, id="at the timeout, not yet"),
    pytest.param(run(health=CALM, write="+" * 10 + "-" * 25, db=CALM), 4.5, 1.0, [],
                 "probe write has failed for 3.5 s without a break (the plan allows 3 s)", id="failing too long"),
    pytest.param(run(health=CALM, write="+" * 10 + "-" * 25, db=CALM), 3.9, 1.0, [], None,
                 id="failing, within the allowance"),
    pytest.param(run(health=CALM, write="+" * 10 + "-" * 10 + "+" + "-" * 14, db=CALM), 4.5, 1.0, [], None,
                 id="one success breaks the streak"),
    pytest.param(run(health=CALM, write=CALM, db=CALM, service="-" * 35), 4.5, 1.0, [], None,
                 id="a probe that does not decide"),
    pytest.param(run(health=CALM, write=CALM, db="-" * 35), 4.5, 1.0, [],
                 "probe db has failed for 3.5 s without a break", id="failing since before the fault: from the fault"),
    pytest.param(run(health=CALM, write="+" * 10 + "-" * 25, db=CALM), 25.0, 1.0, ["a"],
                 "alarm a is in ALARM; hard timeout of 20 s reached; probe write has failed for 24 s",
                 id="every reason at once"),
])
def test_stop_reason(samples: list[Sample], now_t: float, fault_t: float | None, alarms: list[str],
                     says: str | None) -> None:
    reason = judges.stop_reason(samples, now_t, fault_t, DRILL, alarms, DRILL.probes)
    assert reason is None if says is None else says in (reason or "")


FAILOVER = DrillSpec("DRILL-01", "Database failover", "db_failover", ("health", "write", "db"),
                     {"rto_s": 120, "rpo_s": 300, "max_lost_writes": 0})
TASK_LOSS = DrillSpec("DRILL-03", "Application failure", "task_loss", ("health", "write", "service"),
                      {"rto_s": 300, "max_error_ratio": 0.05})
ACKED = [Write("db", i, 10 + 0.1 * i, True) for i in range(312)] + [Write("db", 312, 41.3, False)]
LOST3 = ACKED[100:103]


def measured(**changes: Any) -> dict[str, Any]:
    """A clean failover: RTO 12.4 s, 312 acknowledged writes all read back, 3 % errors."""
    base = {"rto_s": 12.4, "resolution_s": 0.1, "writes": ACKED, "lost": [], "rpo_s": 0.0, "error_ratio": 0.031,
            "aborted": None, "readback_problem": None}
    return {**base, **changes}


@pytest.mark.parametrize(("drill", "given", "status", "says"), [
    pytest.param(FAILOVER, measured(), "pass",
                 "RTO 12.4 s (± 0.1 s) ≤ 120 s; 0 of 312 acknowledged writes lost, RPO 0 s (± 0.1 s) ≤ 300 s; "
                 "error ratio 0.031", id="pass"),
    pytest.param(FAILOVER, measured(rto_s=120.0), "pass", "RTO 120 s (± 0.1 s) ≤ 120 s", id="RTO at the target"),
    pytest.param(FAILOVER, measured(rto_s=120.1), "fail", "RTO 120.1 s (± 0.1 s) > 120 s", id="RTO just over"),
    pytest.param(FAILOVER, measured(rto_s=120.04), "fail", "RTO 120.04 s (± 0.1 s) > 120 s",
                 id="RTO over by less than the shown decimal"),
    pytest.param(FAILOVER, measured(rto_s=None), "fail",
                 "did not recover: no 5 s window with every probe (health, write, db) succeeding", id="no recovery"),
    pytest.param(FAILOVER, measured(aborted="probe write has failed for 312 s without a break (the plan allows 300 s)"),
                 "fail", "stopped: probe write has failed for 312 s", id="aborted"),
    pytest.param(FAILOVER, measured(lost=LOST3, rpo_s=21.0), "fail",
                 "3 of 312 acknowledged writes lost (the plan allows 0), RPO 21 s (± 0.1 s)", id="lost writes"),
    pytest.param(TASK_LOSS, measured(error_ratio=0.081), "fail", "error ratio 0.081 > 0.05", id="error ratio"),
    pytest.param(TASK_LOSS, measured(error_ratio=0.05), "pass", "error ratio 0.05 ≤ 0.05",
                 id="error ratio at the limit"),
    pytest.param(FAILOVER, measured(readback_problem="GET /api/notes/{id}: 503 three times"), "error",
                 "could not read the canary writes back: GET /api/notes/{id}: 503", id="read-back failed"),
    pytest.param(FAILOVER, measured(lost=None), "error", "no read-back was made", id="no read-back"),
    pytest.param(FAILOVER, measured(writes=ACKED[-1:]), "inconclusive", "no canary write was acknowledged",
                 id="nothing acknowledged"),
    pytest.param(FAILOVER, measured(writes=[]), "inconclusive", "no canary write was acknowledged", id="no writes"),
    pytest.param(TASK_LOSS, measured(writes=None, lost=None, rpo_s=None), "pass", "RTO 12.4 s",
                 id="writes not expected"),
    pytest.param(TASK_LOSS, measured(error_ratio=None), "error", "error ratio during the drill was not measured",
                 id="error ratio not measured"),
    pytest.param(FAILOVER, measured(rto_s=131.2, lost=LOST3, rpo_s=21.0, readback_problem=None), "fail",
                 "RTO 131.2 s (± 0.1 s) > 120 s; 3 of 312 acknowledged writes lost", id="several failures, all named"),
    pytest.param(FAILOVER, measured(rto_s=131.2, readback_problem="timeout"), "fail",
                 "RTO 131.2 s (± 0.1 s) > 120 s; could not read the canary writes back: timeout",
                 id="a failure outranks an error"),
    pytest.param(FAILOVER, measured(aborted="hard timeout of 600 s reached", rto_s=None), "fail",
                 "stopped: hard timeout of 600 s reached; did not recover", id="aborted and not recovered"),
])
def test_judge(drill: DrillSpec, given: dict[str, Any], status: str, says: str) -> None:
    verdict = judges.judge(drill, **given)
    assert (verdict.status, says in verdict.message) == (status, True), verdict.message


@pytest.mark.parametrize(("drill", "expect_rpo", "given"), [
    pytest.param(DrillSpec("DRILL-02", "Restore", "restore", ("db",), {"rto_s": 3600, "rpo_s": 300}), True,
                 measured(lost=LOST3, rpo_s=412.0), id="RPO over its target, lost writes not limited"),
    pytest.param(DrillSpec("DRILL-02", "Restore", "restore", ("db",), {"rto_s": 3600, "rpo_s": 300}), False,
                 measured(lost=LOST3, rpo_s=290.0), id="RPO within its target"),
])
def test_judge_rpo(drill: DrillSpec, expect_rpo: bool, given: dict[str, Any]) -> None:
    verdict = judges.judge(drill, **given)
    assert verdict.status == ("fail" if expect_rpo else "pass"), verdict.message
    assert ("RPO 412 s > 300 s" in verdict.message) is expect_rpo


def test_figures_have_exactly_the_summary_keys() -> None:
    verdict = judges.judge(FAILOVER, **measured(rto_s=12.43219, lost=LOST3, rpo_s=21.00004, error_ratio=1 / 3))
    assert list(verdict.figures) == list(judges.FIGURES) == [
        "rto_s", "rto_target_s", "rpo_s", "rpo_target_s", "acknowledged_writes", "lost_writes", "error_ratio",
        "resolution_s"]
    assert verdict.figures == {"rto_s": 12.432, "rto_target_s": 120, "rpo_s": 21.0, "rpo_target_s": 300,
                               "acknowledged_writes": 312, "lost_writes": 3, "error_ratio": 0.3333,
                               "resolution_s": 0.1}
    empty = judges.judge(TASK_LOSS, **measured(rto_s=None, writes=None, lost=None, rpo_s=None, error_ratio=None))
    assert empty.figures["rpo_target_s"] is None and empty.figures["acknowledged_writes"] is None


@pytest.mark.parametrize(("times", "expected"), [
    pytest.param((10.0, 22.5, 70.0, 71.0, 80.0), [("steady", 0, 10), ("fault", 10, 10), ("recovering", 10, 22.5),
                                                  ("recovered", 22.5, 70), ("rollback", 71, 80)], id="full drill"),
    pytest.param((10.0, None, 600.0, 601.0, 650.0), [("steady", 0, 10), ("fault", 10, 10), ("recovering", 10, 600),
                                                     ("rollback", 601, 650)], id="no recovery"),
    pytest.param((None, None, None, None, 4.0), [("steady", 0, 4)], id="no fault"),
    pytest.param((None, None, 3.0, 3.2, 5.0), [("steady", 0, 3), ("rollback", 3.2, 5)], id="aborted before the fault"),
    pytest.param((10.0, 22.5, 70.0, 71.0, 90.0, 80.0), [("steady", 0, 10), ("fault", 10, 10), ("recovering", 10, 22.5),
                                                        ("recovered", 22.5, 70), ("rollback", 71, 80),
                                                        ("steady again", 80, 90)], id="checked again after"),
])
def test_phases(times: tuple, expected: list[tuple]) -> None:
    assert [(p["name"], p["start_s"], p["end_s"]) for p in judges.phases(*times)] == expected


def journal(**changes: Any) -> dict[str, Any]:
    samples = [[s.t, s.probe, s.ok, 20.0 if s.ok else None, "200" if s.ok else "503"]
               for s in run(health=DIP, write=DIP, db=CALM, service=CALM)]
    base = {"drill": "DRILL-01", "title": "Database failover", "env": "local", "target": "dougust-db",
            "fault_t": 1.0, "recovered_t": 1.5, "phases": judges.phases(1.0, 1.5, 3.4, 3.5, 3.6), "samples": samples,
            "writes": [{"probe": "db", "seq": 1, "t": 0.8, "acknowledged": True, "key": "1", "present": False}],
            "actions": [], "verdict": {"status": "fail", "message": "1 lost", "figures": {"rto_s": 0.5}}}
    return {**base, **changes}


@pytest.mark.parametrize("data", [
    pytest.param(journal(), id="normal"),
    pytest.param(journal(samples=[], writes=[], fault_t=None, recovered_t=None, phases=[], verdict=None),
                 id="empty: no fault, no recovery, no verdict"),
])
def test_draw_writes_a_png(tmp_path: Path, data: dict[str, Any]) -> None:
    out = draw(data, tmp_path / "drills" / "drill.png")
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 1000


# -- DRILL-02 and DRILL-04 ------------------------------------------------------------------------------------

RESTORE = DrillSpec("DRILL-02", "Database restore", "db_restore", ("db",), {"rto_s": 3600, "rpo_s": 300})
ROLLBACK = DrillSpec("DRILL-04", "Rollback", "rollback", ("health", "write"), {"rto_s": 300})
TABLES = {"notes": {"rows": 3, "hash": "a"}, "users": {"rows": 1, "hash": "b"}}


@pytest.mark.parametrize(("after", "expected"), [
    pytest.param(TABLES, [], id="the same data"),
    pytest.param({**TABLES, "notes": {"rows": 2, "hash": "c"}}, ["table notes: 2 rows restored, 3 at the restore point"],
                 id="a row missing"),
    pytest.param({**TABLES, "notes": {"rows": 3, "hash": "c"}},
                 ["table notes: its 3 rows differ from those at the restore point"], id="a row changed"),
    pytest.param({"notes": TABLES["notes"]}, ["table users is missing from the restored database"], id="a table missing"),
    pytest.param({**TABLES, "extra": {"rows": 0, "hash": "d"}},
                 ["table extra is in the restored database but was not at the restore point"], id="a table too many"),
])
def test_manifest_differences(after: dict[str, Any], expected: list[str]) -> None:
    assert judges.manifest_diff(TABLES, after) == expected


def restore_verdict(**changes: Any) -> Any:
    given = {"rto_s": 42.0, "rpo_s": 0.05, "restore_problem": None, "verified": True, "diffs": [],
             "canary_rows": 60, "resolution_s": 0.05, **changes}
    return judges.judge_restore(RESTORE, **given)


@pytest.mark.parametrize(("changes", "status", "says"), [
    pytest.param({}, "pass", "restored and verified in 42 s ≤ 3600 s; RPO 0.05 s", id="healthy"),
    pytest.param({"restore_problem": "recovery ended before the target"}, "fail", "the restore failed: recovery ended",
                 id="the point could not be reached"),
    pytest.param({"verified": False, "rpo_s": None, "canary_rows": None}, "inconclusive", "restored, not verified",
                 id="no path to verify"),
    pytest.param({"diffs": ["table notes: 2 rows restored, 3 at the restore point"]}, "fail", "table notes: 2 rows",
                 id="the data differs"),
    pytest.param({"rpo_s": 301.0}, "fail", "RPO 301 s > 300 s", id="RPO over"),
    pytest.param({"rto_s": 3601.0}, "fail", "RTO 3601 s > 3600 s", id="RTO over"),
    pytest.param({"canary_rows": 0, "rpo_s": None}, "fail", "no canary row", id="no canary row restored"),
])
def test_restore_verdict(changes: dict[str, Any], status: str, says: str) -> None:
    verdict = restore_verdict(**changes)
    assert (verdict.status, says in verdict.message) == (status, True), verdict.message
    assert set(verdict.figures) == set(judges.FIGURES)


@pytest.mark.parametrize(("changes", "status", "says"), [
    pytest.param({}, "pass", "rolled back and verified in 30 s ≤ 300 s", id="healthy"),
    pytest.param({"rto_s": 301.0}, "fail", "rolled back and verified in 301 s > 300 s", id="RTO over"),
    pytest.param({"back": (False, "smoke gate expecting 2026.11.1: red: SMK-01: 503")}, "fail",
                 "the rollback was not verified: smoke gate expecting 2026.11.1: red", id="previous revision unhealthy"),
    pytest.param({"forward": (False, "not running after 300 s")}, "fail",
                 "the roll forward to the original revision was not verified", id="roll forward failed"),
    pytest.param({"forward": None}, "fail", "it never ran", id="roll forward never ran"),
    pytest.param({"problem": "stopped by Ctrl-C"}, "fail", "stopped by Ctrl-C", id="interrupted"),
])
def test_rollback_verdict(changes: dict[str, Any], status: str, says: str) -> None:
    given = {"rto_s": 30.0, "back": (True, "green"), "forward": (True, "green"), "problem": None, **changes}
    verdict = judges.judge_rollback(ROLLBACK, **given)
    assert (verdict.status, says in verdict.message) == (status, True), verdict.message


def phase_row(requests: int = 300, p95: float = 40.0, p99: float = 90.0, errors: float = 0.0) -> dict[str, Any]:
    return {"requests": requests, "p95_ms": p95, "p99_ms": p99, "error_ratio": errors}


LOAD_SLO = {"p95_ms": 500, "p99_ms": 1000, "max_error_ratio": 0.01}


@pytest.mark.parametrize(("phases", "expected"), [
    pytest.param({"before": phase_row(), "during": phase_row(errors=0.4, p95=3000), "after": phase_row()}, [],
                 id="the fault's own phase is not judged"),
    pytest.param({"before": phase_row(), "during": phase_row(), "after": phase_row(p95=700)},
                 ["under load after the fault, p95 700 ms > 500 ms"], id="slow after recovery"),
    pytest.param({"before": phase_row(errors=0.02), "during": phase_row(), "after": phase_row()},
                 ["under load before the fault, error_ratio 0.02 > 0.01"], id="errors before the fault"),
    pytest.param({"before": phase_row(), "during": phase_row(), "after": {"requests": 0}},
                 ["the background load measured no request after the fault"], id="nothing measured after"),
])
def test_background_load_before_and_after_the_fault_holds_the_slos(phases: dict[str, Any], expected: list[str]) -> None:
    assert judges.load_phases(phases, LOAD_SLO) == expected


# --- DRILL-01's preflight: the standby in sync, judged as found --------------------------------------------


@pytest.mark.parametrize(("sync_state", "says"), [
    pytest.param("sync", None, id="synchronous standby: in sync"),
    pytest.param("async", "pg_stat_replication shows the standby 'async', not 'sync'", id="asynchronous standby"),
    pytest.param("potential", "'potential', not 'sync'", id="potential standby"),
    pytest.param("quorum", "'quorum', not 'sync'", id="quorum standby"),
    pytest.param(None, "no standby streams to the primary", id="no standby streams"),
])
def test_the_stand_in_s_standby_is_in_sync_only_when_the_primary_waits_for_it(sync_state: str | None,
                                                                               says: str | None) -> None:
    found = judges.local_standby(sync_state)
    assert (found is None) if says is None else (says in found), found


@pytest.mark.parametrize(("multi_az", "status", "pending", "says"), [
    pytest.param(True, "available", {}, None, id="Multi-AZ, available, nothing pending: in sync"),
    pytest.param(True, "available", None, None, id="no PendingModifiedValues at all"),
    pytest.param(False, "available", {}, "database db-1 is not Multi-AZ", id="single-AZ"),
    pytest.param(True, "modifying", {}, "database db-1 is modifying, not available", id="being modified"),
    pytest.param(True, "available", {"MultiAZ": False}, "pending modifications (MultiAZ)", id="Multi-AZ off pending"),
    pytest.param(True, "available", {"DBInstanceClass": "db.t4g.large", "MultiAZ": True},
                 "pending modifications (DBInstanceClass, MultiAZ)", id="several pending, named sorted"),
    pytest.param(False, "storage-optimization", {"MultiAZ": True},
                 "not Multi-AZ; database db-1 is storage-optimization, not available; database db-1 has pending",
                 id="every problem named"),
])
def test_the_rds_standby_is_in_sync_when_multi_az_available_and_nothing_pending(
        multi_az: bool, status: str, pending: dict[str, Any] | None, says: str | None) -> None:
    found = judges.rds_standby("db-1", multi_az, status, pending)
    assert (found is None) if says is None else (says in found), found


def test_an_out_of_sync_standby_fails_in_one_line_naming_the_lost_writes() -> None:
    line = judges.out_of_sync("database db-1 is not Multi-AZ")
    assert line == ("the standby is not in sync (database db-1 is not Multi-AZ): a failover now would lose "
                    "acknowledged writes")


# --- the restore drill's temporary database: its expiry, and the sweep's decision -------------------------

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_restore_expires_only_after_its_restore_verification_and_deletion_have_had_their_time() -> None:
    # 900 s to restore, as long again to verify, 1800 s to delete (the aws backend's bound).
    assert judges.restore_expiry(NOW, 900.0, 1800.0) == NOW + 3600.0
    # Never sooner than the hard timeout plus the deletion: a verification then still has its margin.
    assert judges.restore_expiry(NOW, 8.0, 65.0) - NOW > 8.0 + 65.0


@pytest.mark.parametrize(("tags", "env", "age_s", "removed", "says"), [
    pytest.param({"harness:env": "dev", "harness:expires": iso(NOW - 1)}, "dev", None, True, "expired",
                 id="expired, of the environment swept"),
    pytest.param({"harness:env": "dev", "harness:expires": iso(NOW + 60)}, "dev", None, False,
                 "kept: not expired", id="not expired yet"),
    pytest.param({"harness:env": "dev", "harness:expires": iso(NOW)}, "dev", None, False, "not expired",
                 id="expiring this very second: kept"),
    pytest.param({"harness:env": "staging", "harness:expires": iso(NOW - 3600)}, "dev", None, False,
                 "of environment 'staging', not of 'dev' (--all-envs", id="another environment's: kept"),
    pytest.param({"harness:env": "staging", "harness:expires": iso(NOW - 3600)}, None, None, True, "expired",
                 id="another environment's, --all-envs: removed"),
    pytest.param({"harness:expires": iso(NOW - 3600)}, "dev", None, False, "without a harness:env tag",
                 id="no environment tag: kept"),
    pytest.param({"harness:env": "dev", "harness:expires": "next tuesday"}, "dev", None, False,
                 "not this sweep's to delete: its harness:expires tag ('next tuesday') cannot be read",
                 id="malformed expiry: kept, reported"),
    pytest.param({"harness:env": "dev", "harness:expires": "2027-13-45T99:00:00Z"}, None, None, False,
                 "cannot be read", id="impossible date, even with --all-envs: kept"),
    pytest.param({"harness:env": "dev"}, "dev", None, False, "(None) cannot be read", id="no expiry tag: kept"),
    pytest.param({"harness:env": "dev", "harness:expires": 1_700_000_000}, "dev", None, False, "cannot be read",
                 id="an expiry that is not text: kept"),
    pytest.param({"harness:env": "dev", "harness:expires": "2027-01-15T07:00:00"}, "dev", None, True, "expired",
                 id="no zone named: UTC"),
    pytest.param({"harness:env": "dev", "harness:expires": "2027-01-15T08:30:00+01:00"}, "dev", None, True,
                 "expired", id="another zone: compared as the instant it is"),
    pytest.param(None, "dev", 7 * 3600.0, True, "untagged, 7.0 h old", id="untagged restore dir, old: removed"),
    pytest.param(None, "dev", 3600.0, False, "kept: untagged, 1.0 h old", id="untagged restore dir, young: kept"),
])
def test_the_sweep_removes_only_its_environment_s_expired_resources(
        tags: dict[str, Any] | None, env: str | None, age_s: float | None, removed: bool, says: str) -> None:
    decided, why = judges.sweep(tags, NOW, env, age_s)
    assert (decided, says in why) == (removed, True), why


PASSED = Verdict("pass", "recovered: RTO 4.2 s", figures={"rto_s": 4.2})


@pytest.mark.parametrize(("verdict", "found", "status", "message"), [
    (PASSED, None, "pass", "recovered: RTO 4.2 s"),
    (PASSED, {"ok": True, "after_s": 4.1}, "pass", "recovered: RTO 4.2 s"),
    (PASSED, {"ok": False, "observed": True, "wrong": ["no running standby", "smoke gate red: SMK-01: 503"]}, "fail",
     "recovered: RTO 4.2 s; not restored within 300 s after the rollback: no running standby; smoke gate red: "
     "SMK-01: 503"),
    (PASSED, {"ok": False, "observed": False, "wrong": ["the system's state could not be read: Throttling"]},
     "error", "not known to be restored after the rollback: the system's state could not be read"),
    (Verdict("fail", "RTO 200 s over 120 s"), {"ok": False, "observed": False, "wrong": ["x"]}, "fail",
     "RTO 200 s over 120 s; not known to be restored after the rollback: x"),
    (Verdict("error", "broke"), {"ok": False, "observed": True, "wrong": ["x"]}, "fail", "broke; not restored"),
    (Verdict("inconclusive", "too few samples"), {"ok": False, "observed": False, "wrong": ["x"]}, "inconclusive",
     "too few samples; not known to be restored after the rollback: x"),
], ids=["not checked", "restored", "not restored", "could not be checked", "failed already", "errored already",
        "inconclusive already"])
def test_not_restored_fails_a_drill_that_met_its_targets(verdict, found, status, message) -> None:
    judged = judges.restored(verdict, found, 300)
    assert (judged.status, message in judged.message) == (status, True), judged.message
    assert judged.figures == verdict.figures


def test_failing_and_states_describe_the_probes_for_a_line() -> None:
    samples = [Sample(1.0, "health", True), Sample(2.0, "health", False, detail="503"), Sample(2.5, "db", True),
               Sample(3.0, "health", True), Sample(3.2, "write", False, detail="timed out")]
    assert judges.failing(samples, ("health", "write", "db"), 1.5) == "health failing (503), write failing (timed out)"
    assert judges.failing(samples, ("health", "db"), 2.1) == ""
    assert judges.states(samples, ("health", "write", "db", "service"), 3.3, 1.0) == \
        "health ok, write FAIL (timed out) 1/1 failed, db ok, service -"
