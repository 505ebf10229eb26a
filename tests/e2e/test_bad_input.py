"""Bad input stops the run before any test with one line that names the problem and the fix."""
from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

from harness.util.net import free_port

from support.suites import GOLDEN, ROOT, run_suite

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
    "no room to be restored": (lambda t: ["--plan", str(_plan_copy(t, "restored_within_s = 300", "restored_within_s = 2"))],
                               r"drills: .*restored_within_s \(2\) must be more than steady_state_s \(3\)"),
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
    "baseline a directory": (lambda t: ["--snapshot", str(GOLDEN), "--baseline", str(t)],
                             r"--baseline: snapshot .* cannot be read \(Is a directory\); pass a file written by"),
    "snapshot not text": (lambda t: (t / "bin.json").write_bytes(b"\xff\xfe\x00") and
                          ["--snapshot", str(t / "bin.json")], r"snapshot .*bin\.json cannot be read"),
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


# -- targets are what they say: an emulator target never gets AWS's own endpoint -------------------------------

AWS_ENDPOINTS = ["https://ec2.us-east-1.amazonaws.com", "https://sts.amazonaws.com", "https://x.api.aws",
                 "https://s3.cn-north-1.amazonaws.com.cn", "HTTPS://RDS.EU-WEST-1.AMAZONAWS.COM:443/",
                 "http://ecs.dualstack.us-east-1.api.aws:80", "sts.us-gov-west-1.amazonaws.com",
                 "https://amazonaws.com", "https://sts.amazonaws.com."]
NOT_AWS_ENDPOINTS = ["http://127.0.0.1:4566", "http://localhost.localstack.cloud:4566", "http://localhost:4566",
                     "https://amazonaws.com.evil.example", "https://evilamazonaws.com", "https://api.aws.example.org",
                     "https://my-alb-1.example.com", None]


@pytest.mark.parametrize("url", AWS_ENDPOINTS)
def test_aws_endpoints_are_aws(url):
    from harness.target import is_aws_endpoint

    assert is_aws_endpoint(url)


@pytest.mark.parametrize("url", NOT_AWS_ENDPOINTS)
def test_other_endpoints_are_not_aws(url):
    from harness.target import is_aws_endpoint

    assert not is_aws_endpoint(url)


@pytest.mark.parametrize("kind", ["local", "localstack"])
@pytest.mark.parametrize("url", AWS_ENDPOINTS)
def test_an_emulator_target_refuses_aws_itself_when_made(kind, url):
    from harness.target import Target, TargetError

    with pytest.raises(TargetError) as refused:
        Target(kind, "us-east-1", endpoint_url=url)
    assert f"--endpoint-url {url} is AWS itself, not an emulator" in str(refused.value)
    assert "use --target aws" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("url", [u for u in NOT_AWS_ENDPOINTS if u])
def test_an_emulator_target_accepts_any_other_endpoint(url):
    from harness.target import Target

    assert not Target("localstack", "us-east-1", endpoint_url=url).on_aws


@pytest.mark.parametrize("url", [None, "https://ec2.us-east-1.amazonaws.com", "http://127.0.0.1:4566"])
def test_the_read_only_guard_holds_on_every_aws_target(url):
    """A write on --target aws is refused before it is signed or sent, whatever endpoint it names."""
    from harness.target import ReadOnlyViolation, Target

    target = Target("aws", "us-east-1", endpoint_url=url)
    assert target.on_aws
    with pytest.raises(ReadOnlyViolation, match="ec2.RunInstances is a write call"):
        target.client("ec2").run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)


@pytest.mark.parametrize("target, url", [("localstack", "https://ec2.us-east-1.amazonaws.com"),
                                         ("local", "https://sts.amazonaws.com"),
                                         ("localstack", "https://rds.cn-north-1.amazonaws.com.cn")])
def test_a_suite_with_an_emulator_target_on_aws_stops_with_one_line(target, url, reports):
    """Before any AWS call: the one line is the refusal, not a failed connection or a DNS error."""
    run = run_suite("--target", target, "--endpoint-url", url, "--provision", reports=reports, timeout=60,
                    env=NO_CREDENTIALS)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert run.error_lines == [f"ERROR: --endpoint-url {url} is AWS itself, not an emulator (the {target} target "
                               f"is for emulators only); to check a real account use --target aws, which is "
                               f"read-only and never provisioned"], run.stderr
    assert run.summary is None


@pytest.mark.parametrize("argv", [
    ["provision", "--endpoint-url", "https://ec2.us-east-1.amazonaws.com"],
    ["snapshot", "--target", "localstack", "--endpoint-url", "https://x.api.aws", "--out", "{tmp}/s.json"],
    ["snapshot", "--target", "local", "--endpoint-url", "https://S3.CN-NORTH-1.AMAZONAWS.COM.CN", "--out", "{tmp}/s.json"],
    ["local", "up", "--endpoint-url", "https://sts.eu-west-1.amazonaws.com"],
])
def test_the_harness_cli_refuses_an_emulator_target_on_aws(argv, tmp_path, capsys):
    from harness.cli import main

    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is AWS itself, not an emulator" in err[0] and "use --target aws" in err[0], err
    assert not (tmp_path / "s.json").exists()


def test_provision_follows_aws_endpoint_url_and_still_refuses_aws(capsys, monkeypatch):
    """An AWS_ENDPOINT_URL left pointing at AWS does not turn `harness provision` into a write on AWS."""
    from harness.cli import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://sts.us-east-1.amazonaws.com")
    monkeypatch.delenv("LOCALSTACK_HOST", raising=False)
    assert main(["provision"]) == 2
    assert "https://sts.us-east-1.amazonaws.com is AWS itself" in capsys.readouterr().err
