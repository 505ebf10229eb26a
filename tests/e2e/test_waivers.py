"""Waivers and optional requirements change how a failure counts, never whether it is reported."""
from __future__ import annotations

import datetime as dt
import json

from support.suites import GOLDEN, ROOT, run_suite

NEXT_MONTH = (dt.date.today() + dt.timedelta(days=30)).isoformat()


def _snapshot_without_access_logs_or_waf(tmp_path):
    snapshot = json.loads(GOLDEN.read_text())
    for attrs in snapshot["parts"]["lb_attributes"].values():
        attrs["access_logs.s3.enabled"] = "false"
    snapshot["parts"]["web_acls"] = {arn: None for arn in snapshot["parts"]["web_acls"]}
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot))
    return path


def test_waived_failure_is_waived_and_optional_failure_is_not_enforced(tmp_path):
    waivers = tmp_path / "waivers.toml"
    waivers.write_text(f'[[waiver]]\nid = "ALB-07"\nreason = "bucket from the logging account"\n'
                       f'owner = "platform"\nexpires = {NEXT_MONTH}\n')
    run = run_suite("--snapshot", str(_snapshot_without_access_logs_or_waf(tmp_path)), "--waivers", str(waivers),
                    reports=tmp_path / "reports")
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.status("ALB-07") == "waived" and run.status("ALB-08") == "optional-fail"
    assert f"waived until {NEXT_MONTH} by platform: bucket from the logging account" in run.stdout


def test_without_the_waiver_the_failure_fails_the_run(tmp_path):
    run = run_suite("--snapshot", str(_snapshot_without_access_logs_or_waf(tmp_path)), reports=tmp_path / "r")
    assert run.returncode == 1
    assert run.status("ALB-07") == "fail"


def test_a_waiver_for_another_environment_does_not_apply(tmp_path):
    waivers = tmp_path / "waivers.toml"
    waivers.write_text(f'[[waiver]]\nid = "ALB-07"\nenv = "dev"\nreason = "r"\nowner = "o"\nexpires = {NEXT_MONTH}\n')
    run = run_suite("--snapshot", str(_snapshot_without_access_logs_or_waf(tmp_path)), "--waivers", str(waivers),
                    reports=tmp_path / "r")
    assert run.status("ALB-07") == "fail"


def test_a_plan_that_enforces_optional_requirements_fails_on_them(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text((ROOT / "plan" / "dougust.toml").read_text().replace("enforce_optional = false",
                                                                         "enforce_optional = true"))
    run = run_suite("--snapshot", str(_snapshot_without_access_logs_or_waf(tmp_path)), "--plan", str(plan),
                    reports=tmp_path / "r")
    assert run.returncode == 1
    assert run.status("ALB-08") == "fail"
