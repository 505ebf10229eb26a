"""DRILL-01 and DRILL-02 end to end on a stand-in of their own (about 3 minutes): DRILL-01 fails the
PostgreSQL pair over and passes twice in a row (roles swapped, then back), with an RTO that this test's own
probe loop through HAProxy agrees with; with replication broken outside the harness (the standby
asynchronous) it fails in preflight, injecting nothing, and nothing repairs the pair: not the session's `up`,
not the drill. Archiving broken outside the harness fails DRILL-02 and leaves the standby's server as it was;
DRILL-02 passes with its manifest verified and fails without the archive. A partly running stand-in is
refused, and `up --repair` restores it. Ctrl-C in the middle of a failover leaves the pair whole; Ctrl-C
during DRILL-02's cleanup lets it finish and ends the session as interrupted, as SIGTERM during its restore
does; what a kill -9 leaves, `harness drills sweep` removes once expired; and after a failover, `down` then
`up` brings the pair back whichever node is primary.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import psycopg
import pytest

from support.drills import drill, journal, session_of, strict_plan
from support.stand_in import HttpLoop, stand_in
from support.suites import ROOT, run_suite
from support.waiting import wait_for
from harness.drills.judges import restore_expiry, tag_epoch
from harness.drills.model import TAG_EXPIRES
from harness.local.postgres import DISCARD_TIMEOUT
from harness.local.stand_in import StandIn, StandInRefused

pytestmark = pytest.mark.stand_in


@pytest.fixture(scope="module")
def plane() -> Iterator[StandIn]:
    with stand_in("dg-drdb-", "dev") as plane:
        yield plane


def observed_rto(observer: HttpLoop, fault_at: float, window_s: float) -> float | None:
    """From the test's own probe loop: seconds from the fault to the start of the first window_s all of whose
    samples succeeded."""
    after = [(t, status == 200) for t, status, _, _ in observer.answers if t >= fault_at]
    for i, (start, ok) in enumerate(after):
        if not ok:
            continue
        window = [s for s in after[i:] if s[0] <= start + window_s]
        if all(w[1] for w in window) and after[-1][0] >= start + window_s:
            return start - fault_at
    return None


def pair_whole(plane: StandIn) -> bool:
    return plane.database.healthy()


def test_failover_passes_twice_and_an_independent_observer_agrees_on_rto(plane: StandIn, tmp_path: Path) -> None:
    primaries = []
    for attempt in (1, 2):
        primaries.append(plane.database.roles()["primary"])
        # The test's own probe loop: GET /api/health through HAProxy at 10 Hz.
        with HttpLoop(plane.urls["https"] + "/api/health", str(plane.ca_file), 10, timeout_s=2) as observer:
            run, drills = drill(plane, tmp_path / str(attempt), "DRILL-01")
        result = drills["DRILL-01"]
        assert run.returncode == 0 and result["verdict"] == "pass", run.stdout[-4000:]
        assert result["lost_writes"] == 0 and result["acknowledged_writes"] > 50, result
        assert result["rto_s"] <= result["rto_target_s"] and result["cleanup"]["ok"], result
        assert result["restored"]["ok"] and result["restored"]["after_s"] < 60, result["restored"]
        record = journal(result)
        assert [p["name"] for p in record["phases"]][-2:] == ["rollback", "steady again"], record["phases"]
        seen = observed_rto(observer, record["started_at"] + record["fault_t"], record["spec"]["recovery_window_s"])
        assert seen is not None and abs(seen - result["rto_s"]) <= 1.0, (seen, result["rto_s"])
        assert pair_whole(plane) and Path(result["chart"]).stat().st_size > 10_000
        printed = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--reports-dir",
                                  str(tmp_path / str(attempt) / "reports")], cwd=ROOT, capture_output=True, text=True)
        assert re.search(rf"DRILL-01 +pass +{result['rto_s']:g} s / 120 ", printed.stdout), printed.stdout
        print(f"failover {attempt}: RTO {result['rto_s']} s (observer {seen:.2f} s), "
              f"{result['acknowledged_writes']} acknowledged writes, 0 lost")
    assert primaries[0] != primaries[1] and plane.database.roles()["primary"] == primaries[0]


def test_a_rollback_that_leaves_the_old_primary_down_fails_not_restored(plane: StandIn, tmp_path: Path) -> None:
    """The failover recovers within its RTO, and the rollback says it is done but leaves the old primary
    down: the steady state checked again after it finds no standby, and the drill fails "not restored"."""
    plan = tmp_path / "plan.toml"
    plan.write_text((ROOT / "plan" / "dougust.toml").read_text().replace("restored_within_s = 300",
                                                                          "restored_within_s = 10"))
    try:
        run, drills = drill(plane, tmp_path, "DRILL-01", "--plan", str(plan), "-p", "keep_old_primary_down",
                            env={"PYTHONPATH": str(ROOT / "tests" / "data")})
    finally:
        plane.database.rebuild_standby()
    result = drills["DRILL-01"]
    assert run.returncode == 1 and result["verdict"] == "fail", run.stdout[-4000:]
    assert result["rto_s"] <= result["rto_target_s"] and result["lost_writes"] == 0, result
    assert result["cleanup"]["ok"] and not result["restored"]["ok"], result
    assert re.search(r"; not restored within 10 s after the rollback: the stand-in's PostgreSQL pair in \S+ has no "
                     r"running standby to fail over to", result["message"]), result["message"]
    assert "NOT restored within 10 s" in run.stdout and "steady again?" in run.stdout, run.stdout[-3000:]
    assert pair_whole(plane)


def untouched(plane: StandIn) -> dict[str, Any]:
    """What a session must not change in a running stand-in: every server's PID, each node's ALTER SYSTEM
    settings (postgresql.auto.conf), the pair's roles."""
    pair = plane.database
    status = plane.status()
    return {"pids": {node: entry["pid"] for node, entry in status["database"].items()},
            "supervisor": status["tasks"]["supervisor"], "haproxy": status["load_balancer"]["pid"],
            "auto_conf": {node: (pair.data_dir(node) / "postgresql.auto.conf").read_text() for node in ("primary", "standby")},
            "roles": pair.roles()}


def alter_system(plane: StandIn, node: str, *settings: str) -> None:
    """ALTER SYSTEM on a node of the pair, as an operator would behind the harness's back, then reload."""
    plane.database.cluster.psql(node, "".join(f"ALTER SYSTEM SET {s};\n" for s in settings) + "SELECT pg_reload_conf();\n")


def _other(node: str) -> str:
    return "standby" if node == "primary" else "primary"


AUTO_CONF = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"


def test_replication_broken_outside_the_harness_fails_drill_01_and_nothing_repairs_it(plane: StandIn,
                                                                                         tmp_path: Path) -> None:
    pair = plane.database
    primary = pair.roles()["primary"]
    # The primary waits for a standby of another name, and acknowledges commits locally meanwhile: the real
    # standby still streams, but asynchronously.
    alter_system(plane, primary, "synchronous_standby_names = '\"standby-b\"'", "synchronous_commit = 'local'")
    wait_for(lambda: pair.status()[primary]["standby_sync_state"] == "async", 15, lambda: str(pair.status()))
    before = untouched(plane)
    try:
        assert plane.up() is False  # what a session's start does with a running stand-in: nothing
        assert untouched(plane) == before
        run, drills = drill(plane, tmp_path, "DRILL-01")
        result = drills["DRILL-01"]
        assert run.returncode == 1 and result["verdict"] == "fail", run.stdout[-4000:]
        assert result["message"] == (
            f"the standby is not in sync (node '{_other(primary)}': pg_stat_replication shows the standby 'async', "
            "not 'sync': the primary acknowledges commits without waiting for it): a failover now would lose "
            "acknowledged writes"), result["message"]
        assert result["acknowledged_writes"] is None and result["cleanup"] == {"ok": True, "detail": "no fault injected"}
        actions = [a["action"] for a in journal(result)["actions"]]
        assert "preflight failed" in actions and "fault" not in actions, actions
        assert untouched(plane) == before  # nothing repaired it: the override and every server as they were
        assert pair.status()[primary]["standby_sync_state"] == "async"
    finally:
        assert plane.up(repair=True) is False  # all of it runs: nothing started, the pair repaired
    assert pair_whole(plane) and untouched(plane)["auto_conf"] == {n: AUTO_CONF for n in ("primary", "standby")}


def test_a_partly_running_stand_in_is_refused_and_repair_restores_it(plane: StandIn) -> None:
    pair = plane.database
    standby = pair.roles()["standby"]
    pair.cluster.stop_node(standby)
    before = untouched(plane)
    try:
        with pytest.raises(StandInRefused) as refused:
            plane.up()
        assert str(refused.value) == (
            f"the stand-in in {plane.root} runs in part (PostgreSQL node '{standby}' (standby) down); it is not "
            "changed without asking: run 'harness local up --repair' to start what is down and re-attach the "
            "standby, or 'harness local down' to start afresh")
        assert untouched(plane) == before  # refused: nothing started, nothing stopped
    finally:
        assert plane.up(repair=True) is True
    assert pair_whole(plane) and untouched(plane)["pids"][standby] is not None


def test_ctrl_c_during_a_failover_leaves_the_pair_whole_and_no_process(plane: StandIn, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    code, output, _ = interrupted_run(plane, reports, "DRILL-01", "fault injected", signal.SIGINT)
    assert code != 0, output[-3000:]
    assert "rollback done" in output, output[-3000:]
    assert pair_whole(plane)
    assert json.loads((reports / "drills" / "DRILL-01.journal.json").read_text())["cleanup"]["ok"]


def test_down_then_up_after_a_failover_brings_the_pair_back(plane: StandIn, tmp_path: Path) -> None:
    pair = plane.database
    if pair.roles()["primary"] == "primary":  # make sure the roles are swapped
        pair.fail_over()
        pair.rebuild_standby()
    assert pair.roles()["primary"] == "standby"
    pair.fail_over()  # and a failover whose rebuild never ran, as after a kill -9 of the drill
    plane.down()
    assert plane.up() is True and pair_whole(plane)
    smoke = run_suite("--env", "dev", "--stand-in", str(plane.root), suite="smoke", reports=tmp_path / "smoke")
    assert smoke.returncode == 0, smoke.stdout[-3000:]


# --- DRILL-02: point-in-time restore ---------------------------------------------------------------------------


def test_archiving_broken_outside_the_harness_fails_drill_02_and_leaves_the_standby_as_it_was(
        plane: StandIn, tmp_path: Path) -> None:
    pair = plane.database
    primary = pair.roles()["primary"]
    alter_system(plane, primary, "archive_command = '/bin/true'")  # every segment "archived" nowhere
    before = untouched(plane)
    try:
        assert plane.up() is False and untouched(plane) == before
        run, drills = drill(plane, tmp_path, "DRILL-02")
        result = drills["DRILL-02"]
        assert run.returncode == 1 and result["verdict"] == "fail", run.stdout[-4000:]
        assert result["message"].startswith("the restore failed: ") and "was not archived" in result["message"], result
        no_restore_left(plane)
        assert untouched(plane) == before  # the standby's server the same process, the override still there
    finally:
        plane.up(repair=True)
        pair.take_base_backup()  # what /bin/true dropped is missing from the archive: start the chain afresh
    assert pair_whole(plane) and "archive_command" not in (pair.data_dir(primary) / "postgresql.auto.conf").read_text()
    pair.switch_wal()  # archiving works again


def no_restore_left(plane: StandIn) -> None:
    assert plane.database.restores() == []
    state = plane.database.state / "restores"
    assert not state.exists() or list(state.iterdir()) == []


def test_restore_passes_with_the_manifest_verified_and_fails_without_the_archive(plane: StandIn,
                                                                                  tmp_path: Path) -> None:
    run, drills = drill(plane, tmp_path / "ok", "DRILL-02")
    result = drills["DRILL-02"]
    assert run.returncode == 0 and result["verdict"] == "pass", run.stdout[-4000:]
    assert "every application table matches the manifest" in result["message"] and result["rpo_s"] <= 1.0, result
    no_restore_left(plane)
    archive = plane.database.archive_dir
    for segment in archive.iterdir():
        segment.unlink()
    try:
        run, drills = drill(plane, tmp_path / "empty", "DRILL-02")
        result = drills["DRILL-02"]
        assert run.returncode == 1 and result["verdict"] == "fail", run.stdout[-4000:]
        assert result["message"].startswith("the restore failed"), result["message"]
        no_restore_left(plane)
    finally:
        plane.database.take_base_backup()  # the WAL since the old one is gone: start the chain afresh


def test_sigint_during_a_restore_and_kill_9_then_sweep_leave_nothing_behind(plane: StandIn, tmp_path: Path) -> None:
    def start(reports: Path, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pytest", "dr", "-q", "-p", "no:cacheprovider", "--reports-dir", str(reports),
             "--env", "dev", "--stand-in", str(plane.root), "--drill", "DRILL-02", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def until_restoring(process: subprocess.Popen[str]) -> str:
        seen = []
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if "restoring to the restore point" in line:
                time.sleep(0.3)  # pg_basebackup's copy and the restored server's start are under way
                return "".join(seen)
        return "".join(seen)

    process = start(tmp_path / "int")
    try:
        output = until_restoring(process)
        process.send_signal(signal.SIGINT)
        output += process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert "restoring to the restore point" in output and "rollback done" in output, output[-3000:]
    no_restore_left(plane)

    options = strict_plan(tmp_path, "DRILL-02", "{ rto_s = 3600, rpo_s = 300, timeout_s = 8 }")
    point = time.time()
    with psycopg.connect(plane.database.dsn(), autocommit=True) as conn:  # a commit past the point, archived
        conn.execute("CREATE TABLE IF NOT EXISTS sweep_marker (at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO sweep_marker DEFAULT VALUES")
    plane.database.switch_wal()
    other = plane.database.restore(point, "keep", "DRILL-02", time.time() + 3600)  # not expired: kept
    try:
        started_at = time.time()
        process = start(tmp_path / "kill", *options)
        try:
            killed = until_restoring(process)
            # Killed once its temporary server exists (its directory and tags are written first).
            wait_for(lambda: [r for r in plane.database.restores() if r["name"] != "keep"], 60,
                     lambda: f"no restore appeared: {killed[-2000:]}")
            os.killpg(process.pid, signal.SIGKILL)  # no rollback can run
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        killed_at = time.time()
        left = [r for r in plane.database.restores() if r["name"] != "keep"]
        assert len(left) == 1, killed[-3000:]  # something for the sweep to remove
        # Expired only once the restore (8 s), its verification (as long again) and its removal have had
        # their time from when it began, between the drill's start and the kill.
        expires = tag_epoch(left[0][TAG_EXPIRES])
        assert expires is not None and (restore_expiry(started_at, 8, DISCARD_TIMEOUT) - 1 <= expires
                                         <= restore_expiry(killed_at, 8, DISCARD_TIMEOUT) + 1), (left, started_at)
        sweep = [sys.executable, "-m", "harness.cli", "drills", "sweep", "--stand-in", str(plane.root), *options[:2],
                 "--env", "dev"]
        # Another environment's sweep keeps it, expired or not; this one's keeps it until it expires.
        other_env = subprocess.run([*sweep[:-1], "prod"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert other_env.returncode == 0 and "\n0 removed, " in other_env.stdout, other_env.stdout
        assert "not of 'prod'" in other_env.stdout and "(environment prod only" in other_env.stdout, other_env.stdout
        early = subprocess.run(sweep, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert early.returncode == 0 and "\n0 removed, " in early.stdout, early.stdout + early.stderr
        assert re.search(rf"^kept +{left[0]['name']} \(.*\): kept: not expired", early.stdout, re.M), early.stdout
        # The same sweep with the clock 5 s past the expiry (libfaketime shifts this process's clock alone),
        # rather than waiting the minute and a half for it.
        ahead_s = expires + 5 - time.time()
        done = subprocess.run(["faketime", "-f", f"+{ahead_s:.0f}s", *sweep], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "\n1 removed, " in done.stdout and f"removed {left[0]['name']} (" in done.stdout, done.stdout
        assert [r["name"] for r in plane.database.restores()] == ["keep"], done.stdout
    finally:
        plane.database.discard_restore(other["name"])
    no_restore_left(plane)


def interrupted_run(plane: StandIn, reports: Path, drills: str, when: str, sig: int,
                    delay_s: float = 0.0) -> tuple[int, str, dict[str, Any]]:
    """`pytest dr` with these drills, sent `sig` `delay_s` after the first line holding `when`; its exit code,
    output and summary."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "dr", "-q", "-p", "no:cacheprovider", "--reports-dir", str(reports),
         "--env", "dev", "--stand-in", str(plane.root), "--drill", drills],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if when in line:
                time.sleep(delay_s)
                process.send_signal(sig)
                break
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert not [p for p in psutil.process_iter(["pid"]) if session_of(p) == process.pid]
    return process.returncode, "".join(seen) + rest, json.loads((reports / "summary.json").read_text())


def test_sigint_during_drill_02_s_cleanup_lets_it_finish_and_ends_the_session_as_interrupted(
        plane: StandIn, tmp_path: Path) -> None:
    code, output, summary = interrupted_run(plane, tmp_path / "reports", "DRILL-02,DRILL-03",
                                            "DRILL-02 rolling back", signal.SIGINT)
    assert code == 2, output[-3000:]  # pytest's "interrupted"
    assert "rollback done" in output and "the rollback goes on, then the session ends" in output, output[-3000:]
    no_restore_left(plane)  # the temporary server went, interrupt or not
    section = summary["drills"]["DRILL-02"]
    assert section["interrupted"] == "SIGINT after the measurement was complete", section
    # Measured in full, but whether the system came back is not known: the check after the rollback never ran.
    assert section["verdict"] == "error" and section["cleanup"]["ok"], section
    assert section["message"].endswith("; not known to be restored after the rollback: not checked: SIGINT after "
                                       "the measurement was complete"), section["message"]
    assert "DRILL-03" not in summary["drills"] and "harness: DRILL-03" not in output, output[-3000:]
    assert "interrupted" in [a["action"] for a in journal(section)["actions"]]


def test_sigterm_during_drill_02_s_restore_is_no_verdict_and_ends_the_session_as_interrupted(
        plane: StandIn, tmp_path: Path) -> None:
    code, output, summary = interrupted_run(plane, tmp_path / "reports", "DRILL-02",
                                            "restoring to the restore point", signal.SIGTERM, delay_s=0.2)
    assert code == 2 and "rollback done" in output, output[-3000:]
    no_restore_left(plane)
    section = summary["drills"]["DRILL-02"]
    assert section["verdict"] == "error" and section["interrupted"] == "SIGTERM in phase 'fault'", section
    assert section["message"] == "interrupted (SIGTERM in phase 'fault') before the measurement was complete"
