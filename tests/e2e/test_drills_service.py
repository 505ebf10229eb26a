"""DRILL-03 and DRILL-04 end to end on a stand-in of their own (about 2.5 minutes): DRILL-03 passes, also
under background load measured before, during and after the fault, and fails on RTO when the ECS agent
stand-in does not replace the killed task; DRILL-04 passes, and fails when the previous revision is
unhealthy, rolling forward whatever happened. Preflight refuses a sick system; an unconfirmed protected
environment and an unknown drill are refused in one line; `--dry-run` on the aws backend says what it would
do and changes nothing.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from support.drills import PLAN, drill, journal, strict_plan
from support.stand_in import stand_in
from support.suites import ROOT, run_suite
from support.waiting import wait_for
from harness.local.ecs_agent.state import TaskState
from harness.local.ecs_agent.supervisor import AGENT_FAULTS
from harness.local.stand_in import StandIn
from harness.report.html import drill_history_charts
from harness.util.wait import WaitTimeout, until

pytestmark = pytest.mark.stand_in


@pytest.fixture(scope="module")
def plane() -> Iterator[StandIn]:
    with stand_in("dg-drsv-", "dev") as plane:
        yield plane


def test_task_loss_under_background_load_is_measured_before_during_and_after(plane: StandIn, tmp_path: Path) -> None:
    run, drills = drill(plane, tmp_path, "DRILL-03", "--with-load", "local", "--load-users", "4",
                        "--load-rate", "12", "--load-workers", "1")
    result = drills["DRILL-03"]
    assert run.returncode == 0 and result["verdict"] == "pass", run.stdout[-4000:]
    load = result["load"]
    assert all(load[phase]["requests"] > 0 for phase in ("before", "during", "after")), load
    assert "background load: before" in run.stdout and "stopped by its caller" in run.stdout, run.stdout[-3000:]
    assert not [p for p in psutil.process_iter(["cmdline"]) if "locustfile.py" in " ".join(p.info["cmdline"] or [])
                and str(tmp_path) in " ".join(p.info["cmdline"] or [])]


def test_task_loss_passes_and_fails_on_rto_when_the_agent_does_not_replace_tasks(plane: StandIn,
                                                                                  tmp_path: Path) -> None:
    """Also the drill history: the two runs leave two lines, which `harness drills history` prints and the
    HTML report's chart draws; a line from a newer harness and a broken one are skipped with a warning.
    The first run has the smoke suite in its session too: its gate, judged after the drill, passes every
    check but SMK-10, which names the task the drill killed (a stop the load balancer hid)."""
    history = tmp_path / "history.jsonl"
    run, drills = drill(plane, tmp_path / "ok", "DRILL-03", "--drill-history", str(history), "smoke")
    assert drills["DRILL-03"]["verdict"] == "pass", run.stdout[-4000:]
    assert drills["DRILL-03"]["error_ratio"] <= 0.05 and drills["DRILL-03"]["restored"]["ok"]
    killed = next(a["detail"] for a in journal(drills["DRILL-03"])["actions"] if a["action"] == "fault")
    assert run.returncode == 1 and run.ids_with("fail", "error") == {"SMK-10"}, run.stdout[-4000:]
    assert f"{killed['task']} (pid {killed['pid']}) of " in run.message("SMK-10") and \
        "exit code 137: Essential container in task exited" in run.message("SMK-10"), run.message("SMK-10")
    strict = tmp_path / "plan.toml"  # a 4 s RTO target and a 15 s hard timeout, to fail quickly
    text = PLAN.read_text().replace("expect = { rto_s = 300, max_error_ratio = 0.05 }",
                                    "expect = { rto_s = 4, max_error_ratio = 0.05, timeout_s = 15 }")
    assert text != PLAN.read_text()
    strict.write_text(text)
    (plane.root / AGENT_FAULTS).write_text(json.dumps({"restart_tasks": False}))
    try:
        run, drills = drill(plane, tmp_path / "stuck", "DRILL-03", "--plan", str(strict),
                            "--waivers", str(ROOT / "plan" / "waivers.toml"), "--drill-history", str(history))
    finally:
        (plane.root / AGENT_FAULTS).unlink()
    result = drills["DRILL-03"]
    assert run.returncode == 1 and result["verdict"] == "fail" and result["rto_s"] is None, run.stdout[-4000:]
    # The task is never replaced: the service probe fails until the drill's 15 s hard timeout stops it.
    assert "did not recover" in result["message"] and "hard timeout of 15 s reached" in result["message"], \
        result["message"]
    with suppress(WaitTimeout):
        until(lambda: len([t for t in TaskState.read(plane.root).tasks if t.registered]) >= 2, 30,
              "two registered tasks", poll_s=0.5)

    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert [(h["drill"], h["verdict"], h["env"], h["target"], h["rto_target_s"]) for h in lines] == [
        ("DRILL-03", "pass", "dev", "local", 300), ("DRILL-03", "fail", "dev", "local", 4)], lines
    assert lines[0]["rto_s"] is not None and lines[1]["rto_s"] is None
    assert lines[1]["run_id"] == result["run_id"] and re.fullmatch(r"[0-9a-f]{12}", lines[0]["commit"] or "")
    with history.open("a") as out:
        out.write('{"format": 2, "drill": "DRILL-03"}\n{"truncated\n')
    printed = subprocess.run([sys.executable, "-m", "harness.cli", "drills", "history", "--drill", "DRILL-03",
                              "--drill-history", str(history)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    rows = printed.stdout.splitlines()
    assert len(rows) == 3 and " pass " in rows[1] and " fail " in rows[2] and "/ 300" in rows[1], printed.stdout
    assert printed.stderr.splitlines() == [
        f"harness: {history}:3: skipped: written in format 2 by a newer harness (this one reads format 1)",
        f"harness: {history}:4: skipped: not a JSON line"], printed.stderr
    charts = drill_history_charts(history, tmp_path / "charts")
    assert [c.name for c in charts] == ["DRILL-03 history.png"] and charts[0].stat().st_size > 10_000


def test_preflight_refuses_a_sick_system_and_injects_nothing(plane: StandIn, tmp_path: Path) -> None:
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


def test_unconfirmed_protected_environment_and_unknown_drills_are_refused_in_one_line(tmp_path: Path) -> None:
    run = run_suite("--target", "aws", "--env", "prod", "--base-url", "https://127.0.0.1:9", suite="dr",
                    reports=tmp_path / "a")
    assert run.returncode == 4 and run.error_lines == ["ERROR: environment 'prod' is protected: a drill against it "
                                                       "needs --confirm prod (or --dry-run to see what it would do)"]
    run = run_suite("--drill", "DRILL-09", suite="dr", reports=tmp_path / "b")
    assert run.returncode == 4 and len(run.error_lines) == 1 and "DRILL-09" in run.error_lines[0], run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_dry_run_on_aws_says_what_it_would_do_and_writes_nothing(plane: StandIn, tmp_path: Path) -> None:
    """The aws backend against the stand-in's emulator (dev, as the plan builds it), read-only as on a real
    account: the plan of each drill names what discovery found; nothing in the emulator changes."""
    ecs = plane.target.client("ecs")
    cluster = ecs.list_clusters()["clusterArns"][0]
    before = ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_PROFILE": None,
            "AWS_SESSION_TOKEN": None}
    run = run_suite("--target", "aws", "--env", "dev", "--endpoint-url", plane.endpoint_url, "--dry-run",
                    "--base-url", plane.urls["https"], suite="dr", reports=tmp_path / "reports", env=keys)
    assert run.returncode == 0 and run.summary["counts"]["skip"] == 4, run.stdout[-3000:] + run.stderr[-2000:]
    assert "DRILL-01 would reboot RDS instance" in run.stdout and "ForceFailover=True" in run.stdout, run.stdout
    assert "DRILL-03 would stop one of" in run.stdout, run.stdout
    assert "DRILL-02 would restore RDS instance" in run.stdout, run.stdout
    assert "DRILL-04 would deploy dougust-dev-backend:1 (version 2026.11.1)" in run.stdout, run.stdout
    after = ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])
    assert [s["runningCount"] for s in after["services"]] == [s["runningCount"] for s in before["services"]]


# --- DRILL-04: rollback to the previous revision ----------------------------------------------------------------


def service(plane: StandIn) -> dict[str, Any]:
    ecs = plane.target.client("ecs")
    cluster = ecs.list_clusters()["clusterArns"][0]
    return ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])["services"][0]


def test_rollback_passes_and_fails_when_the_previous_revision_is_unhealthy(plane: StandIn, tmp_path: Path) -> None:
    before = service(plane)["taskDefinition"]
    run, drills = drill(plane, tmp_path / "ok", "DRILL-04")
    result = drills["DRILL-04"]
    assert run.returncode == 0 and result["verdict"] == "pass", run.stdout[-4000:]
    assert service(plane)["taskDefinition"] == before
    # The tasks of the revision rolled away from drain for a few seconds after the roll forward settled.
    wait_for(lambda: {t.task_definition for t in TaskState.read(plane.root).tasks} == {before}, 30,
             lambda: str(TaskState.read(plane.root)))

    ecs = plane.target.client("ecs")
    good = ecs.describe_task_definition(taskDefinition=before)["taskDefinition"]
    keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions",
            "requiresCompatibilities", "cpu", "memory")

    def register(environment: list[dict[str, str]] | None = None) -> str:
        definition = {k: good[k] for k in keep if k in good}
        if environment is not None:
            definition["containerDefinitions"] = [{**c, "environment": c.get("environment", []) + environment}
                                                  for c in good["containerDefinitions"]]
        return ecs.register_task_definition(**definition)["taskDefinition"]["taskDefinitionArn"]

    register([{"name": "HARNESS_FAULTS", "value": json.dumps({"health_down": True})}])  # the previous: unhealthy
    latest = register()
    ecs.update_service(cluster=service(plane)["clusterArn"], service=service(plane)["serviceName"], taskDefinition=latest)
    wait_for(lambda: {t.task_definition for t in TaskState.read(plane.root).tasks} == {latest}, 60,
             lambda: str(TaskState.read(plane.root)), poll_s=0.5)
    options = strict_plan(tmp_path, "DRILL-04", "{ rto_s = 300, timeout_s = 15 }")
    run, drills = drill(plane, tmp_path / "sick", "DRILL-04", *options)
    result = drills["DRILL-04"]
    assert run.returncode == 1 and result["verdict"] == "fail", run.stdout[-4000:]
    assert "the rollback was not verified" in result["message"] and result["cleanup"]["ok"], result
    assert service(plane)["taskDefinition"] == latest, "rolled forward whatever happened"
