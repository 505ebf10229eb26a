"""Bad input stops the run before any test with one line that names the problem and the fix."""
from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

from conftest import GOLDEN, ROOT, free_port, run_suite

PLAN = ROOT / "plan" / "dougust.toml"



def _plan_copy(tmp_path: Path, old: str = "", new: str = "") -> Path:
    text = PLAN.read_text()
    if old:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "plan.toml"
    path.write_text(text)
    (tmp_path / "waivers.toml").write_text("")
    return path


def _waivers(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "w.toml"
    path.write_text(body)
    return path


# No credential anywhere, and the instance metadata service (not on loopback) is never asked.
NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
                  "AWS_PROFILE": None, "AWS_DEFAULT_PROFILE": None, "AWS_CONFIG_FILE": "/nonexistent",
                  "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
                  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None, "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
                  "AWS_WEB_IDENTITY_TOKEN_FILE": None}

TOMORROW = (dt.date.today() + dt.timedelta(days=1)).isoformat()
CASES = {
    "plan is not TOML": (lambda t: ["--plan", str(_plan_copy(t, 'project = "dougust"', 'project = dougust'))],
                         r"plan\.toml: not valid TOML .*fix the syntax"),
    "bad severity": (lambda t: ["--plan", str(_plan_copy(t, 'severity = "critical"', 'severity = "urgent"'))],
                     r"plan\.toml: requirement\[3\] \(NET-04\)\.severity: Input should be 'critical', 'high'"),
    "unknown plan key": (lambda t: ["--plan", str(_plan_copy(t, 'severity = "low"', 'severity = "low"\nsevirity = 1'))],
                         r"requirement\[\d+\] \([A-Z]+-\d+\)\.sevirity: is not a known key; remove it or fix its spelling"),
    "missing plan file": (lambda t: ["--plan", str(t / "nope.toml")], r"nope\.toml: file not found"),
    "unknown environment": (lambda t: ["--env", "staging"],
                            r"unknown environment 'staging': the plan defines dev, prod; pass --env"),
    "expired waiver": (lambda t: ["--waivers", str(_waivers(t, '[[waiver]]\nid = "ALB-07"\nreason = "r"\n'
                                                              'owner = "platform"\nexpires = 2020-01-31\n'))],
                       r"waiver for ALB-07 \(owner platform\) expired on 2020-01-31; fix the deviation or renew"),
    "waiver without owner": (lambda t: ["--waivers", str(_waivers(t, '[[waiver]]\nid = "ALB-07"\nreason = "r"\n'
                                                                     f'expires = {TOMORROW}\n'))],
                             r"w\.toml: waiver\[0\] \(ALB-07\)\.owner: is required; add it"),
    "waiver for an unknown id": (lambda t: ["--waivers", str(_waivers(t, '[[waiver]]\nid = "NET-42"\nreason = "r"\n'
                                                                         f'owner = "o"\nexpires = {TOMORROW}\n'))],
                                 r"waiver for 'NET-42' names no requirement of the plan"),
    "unreachable endpoint": (lambda t: ["--target", "localstack", "--endpoint-url", f"http://127.0.0.1:{free_port()}"],
                             r"cannot reach http://127\.0\.0\.1:\d+ \(Connection refused\); start LocalStack"),
    "provision on aws": (lambda t: ["--target", "aws", "--provision"], r"--provision is refused on --target aws"),
    "unknown profile": (lambda t: ["--target", "aws", "--profile", "no-such-profile"],
                        r"AWS profile 'no-such-profile' is not configured"),
    "no credentials": (lambda t: ["--target", "aws", "--region", "us-east-1"], r"no AWS credentials found; pass --profile"),
    "snapshot missing": (lambda t: ["--snapshot", str(t / "gone.json")], r"snapshot .*gone\.json not found"),
    "snapshot not JSON": (lambda t: ["--snapshot", str(_waivers(t, "{nope"))], r"is not JSON .*take it again"),
    "snapshot of another env": (lambda t: ["--snapshot", str(GOLDEN), "--env", "dev"],
                                r"is of environment 'prod' but --env is 'dev'; pass --env prod"),
    "baseline missing": (lambda t: ["--snapshot", str(GOLDEN), "--baseline", str(t / "gone.json")],
                         r"--baseline: snapshot .*gone\.json not found"),
    "baseline of another env": (lambda t: ["--snapshot", str(GOLDEN), "--baseline", str(GOLDEN), "--env", "dev"],
                                r"baseline .* is of environment 'prod' but --env is 'dev'; pass a baseline of dev"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_usage_line(case, tmp_path, reports):
    make_args, expected = CASES[case]
    env = NO_CREDENTIALS if case == "no credentials" else None
    run = run_suite(*make_args(tmp_path), reports=reports, env=env, timeout=60)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert len(run.error_lines) == 1, run.stderr
    assert re.search(expected, run.error_lines[0]), run.error_lines[0]
    assert " passed" not in run.stdout and " failed" not in run.stdout, "a test ran"
    assert run.summary is None, "a summary was written for a run that never started"


def test_marker_with_an_id_the_plan_lacks(tmp_path, reports):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_x.py").write_text('import pytest\n\n@pytest.mark.requirement("NET-99")\ndef test_x():\n    pass\n')
    run = run_suite("--plan", str(PLAN), reports=reports, suite=str(suite))
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert len(run.error_lines) == 1
    assert "carries requirement 'NET-99', which" in run.error_lines[0] and "add it to the plan or fix the marker" \
        in run.error_lines[0]


def test_a_waiver_that_is_valid_is_accepted(tmp_path, reports):
    waivers = _waivers(tmp_path, f'[[waiver]]\nid = "ALB-07"\nreason = "r"\nowner = "o"\nexpires = {TOMORROW}\n')
    run = run_suite("--snapshot", str(GOLDEN), "--waivers", str(waivers), reports=reports)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.summary["waivers_can_go"] == ["ALB-07"]
    assert "waiver for ALB-07 can go" in run.stdout


def test_plan_copy_is_valid(tmp_path, reports):
    """The copies above differ from the real plan only by the fault each case injects."""
    run = run_suite("--plan", str(_plan_copy(tmp_path)), "--snapshot", str(GOLDEN), reports=reports)
    assert run.returncode == 0, run.stdout + run.stderr
    shutil.rmtree(reports)


@pytest.mark.parametrize("variable, value", [("LOCALSTACK_HOST", "127.0.0.1:{port}"),
                                             ("AWS_ENDPOINT_URL", "http://127.0.0.1:{port}")])
def test_localstack_is_looked_for_where_its_own_clients_look(variable, value, reports):
    """Without --endpoint-url, --target localstack follows localstack-client's conventions."""
    port = free_port()
    unset = {name: None for name in ("LOCALSTACK_HOST", "AWS_ENDPOINT_URL", "USE_SSL")}
    run = run_suite("--target", "localstack", reports=reports, timeout=60,
                    env={**unset, variable: value.format(port=port)})
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert len(run.error_lines) == 1 and f"cannot reach http://127.0.0.1:{port} (Connection refused)" in \
        run.error_lines[0], run.stderr


@pytest.mark.parametrize("args, expected", [
    (["--target", "aws"], r"smoke checks on --target aws need --base-url \(the load balancer's HTTPS URL\)"),
    (["--base-url", "https://localhost:1", "--smoke-user", "a@b.c"], r"pass both --smoke-user and --smoke-password"),
    (["--base-url", "https://localhost:1", "--baseline", "x.json"], r"--baseline compares snapshots, and no selected"),
])
def test_smoke_bad_input_is_one_usage_line(args, expected, reports):
    run = run_suite(*args, suite="smoke", reports=reports, timeout=60)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert len(run.error_lines) == 1 and re.search(expected, run.error_lines[0]), run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_a_missing_profile_named_by_aws_profile_is_named(reports):
    run = run_suite("--target", "aws", reports=reports, timeout=60, env={"AWS_PROFILE": "no-such-profile"})
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert run.error_lines == ["ERROR: AWS profile 'no-such-profile' is not configured; run 'aws configure "
                               "--profile no-such-profile' or pass another --profile"], run.stderr
