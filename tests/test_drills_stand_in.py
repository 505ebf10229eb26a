"""The drills end to end on a stand-in of their own (about 3 minutes): DRILL-01 fails the PostgreSQL pair
over and passes twice in a row (roles swapped, then back), with an RTO that this test's own probe loop
through HAProxy agrees with; with the pair broken (asynchronous commits, the standby cut off) it fails on
the acknowledged writes it lost. DRILL-03 passes, and fails on RTO when the ECS agent stand-in does not
replace the killed task. Preflight refuses a sick system; Ctrl-C in the middle of a failover leaves the
pair whole; and after a failover, `down` then `up` brings the pair back whichever node is primary.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import requests

from conftest import ROOT, SuiteRun, free_port, run_suite
from harness.local.dataplane import DataPlane, Ports
from harness.local.tasks import AGENT_FAULTS

PORT_OFFSET = 6000  # clear of the defaults and of the other stand-in tests (300, 1000, 2000, 4000)
PLAN = ROOT / "plan" / "dougust.toml"


@pytest.fixture(scope="module")
def plane() -> Iterator[DataPlane]:
    # Not under tmp_path: PostgreSQL runs as its own user and needs traversable parents and a short path.
    root = Path(tempfile.mkdtemp(prefix="dg-drill-", dir="/tmp"))
    root.chmod(0o755)
    plane = DataPlane(root, PLAN, "dev", f"http://127.0.0.1:{free_port()}", Ports().offset(PORT_OFFSET))
    try:
        assert plane.up() is True
        yield plane
    finally:
        plane.down()
        shutil.rmtree(root, ignore_errors=True)


def drill(plane: DataPlane, tmp_path: Path, ids: str, *extra: str) -> tuple[SuiteRun, dict[str, Any]]:
    run = run_suite("--env", "dev", "--stand-in", str(plane.root), "--drill", ids, *extra, suite="dr",
                    reports=tmp_path / "reports", timeout=240)
    assert run.summary is not None, run.stdout[-3000:] + run.stderr[-2000:]
    return run, run.summary.get("drills", {})


def journal(section: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(section["journal"]).read_text())


class Observer:
    """The test's own probe loop: GET /api/health through HAProxy at 10 Hz, (epoch, ok) per sample."""

    def __init__(self, plane: DataPlane) -> None:
        self.url, self.ca = plane.urls["https"] + "/api/health", str(plane.ca_file)
        self.samples: list[tuple[float, bool]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Observer:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        with requests.Session() as session:
            session.verify, session.trust_env = self.ca, False
            while not self.stop.is_set():
                at = time.time()
                try:
                    ok = session.get(self.url, timeout=2).status_code == 200
                except requests.RequestException:
                    ok = False
                self.samples.append((at, ok))
                self.stop.wait(max(0.0, at + 0.1 - time.time()))

    def rto(self, fault_at: float, window_s: float) -> float | None:
        """Seconds from the fault to the start of the first window_s all of whose samples succeeded."""
        after = [(t, ok) for t, ok in self.samples if t >= fault_at]
        for i, (start, ok) in enumerate(after):
            if not ok:
                continue
            window = [s for s in after[i:] if s[0] <= start + window_s]
            if all(w[1] for w in window) and after[-1][0] >= start + window_s:
                return start - fault_at
        return None


def pair_whole(plane: DataPlane) -> bool:
    return plane.database.healthy()


def test_failover_passes_twice_and_an_independent_observer_agrees_on_rto(plane: DataPlane, tmp_path: Path) -> None:
    primaries = []
    for attempt in (1, 2):
        primaries.append(plane.database.roles()["primary"])
        with Observer(plane) as observer:
            run, drills = drill(plane, tmp_path / str(attempt), "DRILL-01")
        result = drills["DRILL-01"]
        assert run.returncode == 0 and result["verdict"] == "pass", run.stdout[-4000:]
        assert result["lost_writes"] == 0 and result["acknowledged_writes"] > 50, result
        assert result["rto_s"] <= result["rto_target_s"] and result["cleanup"]["ok"], result
        record = journal(result)
        seen = observer.rto(record["started_at"] + record["fault_t"], record["spec"]["recovery_window_s"])
        assert seen is not None and abs(seen - result["rto_s"]) <= 1.0, (seen, result["rto_s"])
        assert pair_whole(plane) and Path(result["chart"]).stat().st_size > 10_000
        printed = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--reports-dir",
                                  str(tmp_path / str(attempt) / "reports")], cwd=ROOT, capture_output=True, text=True)
        assert f"DRILL-01  pass            {result['rto_s']:g} s / 120" in printed.stdout, printed.stdout
        print(f"failover {attempt}: RTO {result['rto_s']} s (observer {seen:.2f} s), "
              f"{result['acknowledged_writes']} acknowledged writes, 0 lost")
    assert primaries[0] != primaries[1] and plane.database.roles()["primary"] == primaries[0]


def test_failover_fails_on_lost_acknowledged_writes_when_the_standby_is_cut_off(plane: DataPlane,
                                                                                 tmp_path: Path) -> None:
    plane.database.break_replication()
    run, drills = drill(plane, tmp_path, "DRILL-01")
    result = drills["DRILL-01"]
    assert run.returncode == 1 and result["verdict"] == "fail", run.stdout[-4000:]
    assert result["lost_writes"] > 0 and result["rpo_s"] > 0, result
    assert f"{result['lost_writes']} of {result['acknowledged_writes']} acknowledged writes" in result["message"]
    assert pair_whole(plane), "the rollback leaves a synchronous pair again"


def test_task_loss_passes_and_fails_on_rto_when_the_agent_does_not_replace_tasks(plane: DataPlane,
                                                                                  tmp_path: Path) -> None:
    run, drills = drill(plane, tmp_path / "ok", "DRILL-03")
    assert run.returncode == 0 and drills["DRILL-03"]["verdict"] == "pass", run.stdout[-4000:]
    assert drills["DRILL-03"]["error_ratio"] <= 0.05
    strict = tmp_path / "plan.toml"  # a 4 s RTO target and a 15 s hard timeout, to fail quickly
    text = PLAN.read_text().replace("expect = { rto_s = 300, max_error_ratio = 0.05 }",
                                    "expect = { rto_s = 4, max_error_ratio = 0.05, timeout_s = 15 }")
    assert text != PLAN.read_text()
    strict.write_text(text)
    (plane.root / AGENT_FAULTS).write_text(json.dumps({"restart_tasks": False}))
    try:
        run, drills = drill(plane, tmp_path / "stuck", "DRILL-03", "--plan", str(strict),
                            "--waivers", str(ROOT / "plan" / "waivers.toml"))
    finally:
        (plane.root / AGENT_FAULTS).unlink()
    result = drills["DRILL-03"]
    assert run.returncode == 1 and result["verdict"] == "fail" and result["rto_s"] is None, run.stdout[-4000:]
    assert "did not recover" in result["message"] or "timeout" in result["message"], result["message"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len([t for t in plane.status()["tasks"]["tasks"] if t["registered"]]) < 2:
        time.sleep(0.5)


def test_preflight_refuses_a_sick_system_and_injects_nothing(plane: DataPlane, tmp_path: Path) -> None:
    before = plane.database.roles()
    plane.set_faults(health_down=True)
    try:
        run, drills = drill(plane, tmp_path, "DRILL-01")
    finally:
        plane.set_faults()
    result = drills["DRILL-01"]
    assert run.returncode == 1 and result["verdict"] == "error", run.stdout[-3000:]
    assert result["message"].startswith("refused before any fault: the smoke gate is red"), result["message"]
    assert plane.database.roles() == before


def test_ctrl_c_during_a_failover_leaves_the_pair_whole_and_no_process(plane: DataPlane, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "dr", "-q", "-p", "no:cacheprovider", "--reports-dir", str(reports),
         "--env", "dev", "--stand-in", str(plane.root), "--drill", "DRILL-01"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if "fault injected" in line:
                process.send_signal(signal.SIGINT)
                break
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(seen) + rest
    assert "fault injected" in output and process.returncode != 0, output[-3000:]
    assert "rollback done" in output, output[-3000:]
    assert pair_whole(plane)
    left = [p for p in psutil.process_iter(["pid"]) if _session(p) == process.pid]
    assert left == [], left
    assert json.loads((reports / "drills" / "DRILL-01.journal.json").read_text())["cleanup"]["ok"]


def test_down_then_up_after_a_failover_brings_the_pair_back(plane: DataPlane, tmp_path: Path) -> None:
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


def _session(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except OSError:
        return None


def test_unconfirmed_protected_environment_and_unknown_drills_are_refused_in_one_line(tmp_path: Path) -> None:
    run = run_suite("--target", "aws", "--env", "prod", "--base-url", "https://127.0.0.1:9", suite="dr",
                    reports=tmp_path / "a")
    assert run.returncode == 4 and run.error_lines == ["ERROR: environment 'prod' is protected: a drill against it "
                                                       "needs --confirm prod (or --dry-run to see what it would do)"]
    run = run_suite("--drill", "DRILL-09", suite="dr", reports=tmp_path / "b")
    assert run.returncode == 4 and len(run.error_lines) == 1 and "DRILL-09" in run.error_lines[0], run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_dry_run_on_aws_says_what_it_would_do_and_writes_nothing(plane: DataPlane, tmp_path: Path) -> None:
    """The aws backend against the stand-in's emulator (dev, as the plan builds it), read-only as on a real
    account: the plan of each drill names what discovery found; nothing in the emulator changes."""
    ecs = plane.target.client("ecs")
    cluster = ecs.list_clusters()["clusterArns"][0]
    before = ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_PROFILE": None,
            "AWS_SESSION_TOKEN": None}
    run = run_suite("--target", "aws", "--env", "dev", "--endpoint-url", plane.endpoint_url, "--dry-run",
                    "--base-url", plane.urls["https"], suite="dr", reports=tmp_path / "reports", env=keys)
    assert run.returncode == 0 and run.summary["counts"]["skip"] == 2, run.stdout[-3000:] + run.stderr[-2000:]
    assert "DRILL-01 would reboot RDS instance" in run.stdout and "ForceFailover=True" in run.stdout, run.stdout
    assert "DRILL-03 would stop one of" in run.stdout, run.stdout
    after = ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])
    assert [s["runningCount"] for s in after["services"]] == [s["runningCount"] for s in before["services"]]
