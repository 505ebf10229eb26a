"""Credentials in a container's plain environment: ECS-05 fails naming them, and no value of a variable the
plan does not name as plain reaches a snapshot or a report (deny by default, harness.util.redact).

Pure tables first (what a value looks like, which variables ECS-05 flags, what is masked), then the suite:
replaying a snapshot that holds the values, and a nightly run against an emulator whose service runs a task
definition with them, after which every file under the reports directory is searched for every value.
"""
from __future__ import annotations

import copy
import json
from typing import Iterator

import boto3
import pytest
import requests

from support.suites import GOLDEN, ROOT, run_suite
from harness.report.drift import diff, to_markdown
from harness.plan import load_plan
from harness.util.redact import (MASK, credential_kind, mask_url_passwords, plain_credentials, plain_variables, redact,
                            redact_environment)

PLAN = load_plan(ROOT / "plan" / "dougust.toml")
PLAIN = plain_variables(PLAN, "prod")
COMPLIANT_ENV = [{"name": "NODE_ENV", "value": "production"}, {"name": "PORT", "value": "3000"},
                 {"name": "JWT_ACCESS_TOKEN_TTL", "value": "15m"}, {"name": "JWT_REFRESH_TOKEN_TTL", "value": "30d"},
                 {"name": "TENANT_ID", "value": "dougust"},
                 {"name": "NEXT_PUBLIC_API_URL", "value": "https://dougust-prod-alb-1.us-east-1.elb.amazonaws.com"}]

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzZXJ2aWNlLWFjY291bnQiLCJpYXQiOjE3MDAwMDAwMDB9."
       "Qm9ndXNTaWduYXR1cmVGb3JUZXN0c09ubHk")
UNSIGNED_JWT = "eyJhbGciOiJub25lIn0.e30."  # {"alg":"none"}.{}. : a JWT all the same


# Each case: the variables added to the compliant environment, what ECS-05 says of each (None: nothing), and
# the strings that must appear in no report (the values, and the secret part of each).
CASES = {
    "the six of the report": (
        {"DB_PASS": "Tr0ub4dor-and-3-db",
         "REDIS_URL": "redis://:Zr9pW2xQvK@cache.internal:6379",
         "STRIPE_KEY": "sk_live_51HqLyjWDarjtT1zdp7dcXYZq",
         "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/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",
         "GITHUB_PAT": "ghp_R4nd0mL00k1ngT0k3nV4lu3F0rT3st1ng12",
         "JWT_KEY": JWT,
         "LOG_LEVEL": "info-level-not-secret"},
        {"DB_PASS": "its name is a credential's", "REDIS_URL": "its value is a URL with a password",
         "STRIPE_KEY": "its value is a Stripe live key", "SLACK_WEBHOOK_URL": "its value is a Slack webhook",
         "GITHUB_PAT": "its value is a GitHub token", "JWT_KEY": "its value is a JWT"},
        ["Tr0ub4dor-and-3-db", "Zr9pW2xQvK", "sk_live_51HqLyjWDarjtT1zdp7dcXYZq", "Xq7Lm2Np9Rs4Tu6Vw8Yz0Ab1",
         "ghp_R4nd0mL00k1ngT0k3nV4lu3F0rT3st1ng12", "Qm9ndXNTaWduYXR1cmVGb3JUZXN0c09ubHk",
         "eyJzdWIiOiJzZXJ2aWNlLWFjY291bnQiLCJpYXQiOjE3MDAwMDAwMDB9", "info-level-not-secret"]),
    "other names and values": (
        {"SMTP_PASSWORD": "correct-horse-battery-staple",
         "AMQP_URL": "amqps://billing:N0tS0S3cret!x@mq.example.net:5671/jobs",
         "AWS_ACCESS_KEY_ID": "AKIAZ7QW3ERT5YUI8OPL",
         "SIGNING_CERT": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBoguskeymaterialonly4tests\n-----END EC PRIVATE KEY-----",
         "DEPLOY_CREDS": "github_pat_11AZBYCXDW0vUtSrQpOnMl_kJiHgFeDcBa9876543210zyxwv",
         "ALERTS": "https://hooks.slack.com/workflows/T0CCCCCCC/A0DDDDDDD/4455/Pp0Oo9Ii8Uu7",
         "SESSION_TOKEN": "opaque-session-5f1e2d3c",
         "NPM_PAT": "npm_0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f",
         "CALLBACK": UNSIGNED_JWT,
         "API_BASE": "https://svc@api.example.net/v2",
         # Named plain by the plan, and still a credential by its value.
         "NEXT_PUBLIC_API_URL": "https://preview:Sup3rS3cr3tPw@api.example.net"},
        {"SMTP_PASSWORD": "its name is a credential's", "AMQP_URL": "its value is a URL with a password",
         "AWS_ACCESS_KEY_ID": "its value is an AWS access key id", "SIGNING_CERT": "its value is a PEM private key",
         "DEPLOY_CREDS": "its value is a GitHub token", "ALERTS": "its value is a Slack webhook",
         "SESSION_TOKEN": "its name is a credential's", "NPM_PAT": "its name is a credential's",
         "CALLBACK": "its value is a JWT", "NEXT_PUBLIC_API_URL": "its value is a URL with a password"},
        ["correct-horse-battery-staple", "N0tS0S3cret!x", "AKIAZ7QW3ERT5YUI8OPL", "Boguskeymaterialonly4tests",
         "11AZBYCXDW0vUtSrQpOnMl_kJiHgFeDcBa9876543210zyxwv", "Pp0Oo9Ii8Uu7", "opaque-session-5f1e2d3c",
         "npm_0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f", "Sup3rS3cr3tPw"]),
}


def environment(added: dict[str, str]) -> list[dict[str, str]]:
    return [e for e in COMPLIANT_ENV if e["name"] not in added] + [{"name": k, "value": v} for k, v in added.items()]


# -- pure: what a value looks like, what ECS-05 flags, what is masked ----------------------------------------------

@pytest.mark.parametrize("value, kind", [
    ("postgresql://app:s3cret@db.internal:5432/app", "a URL with a password"),
    ("redis://:pw@host:6379", "a URL with a password"),
    ("see mongodb+srv://u:p4ss@cluster0.example.net/db?retryWrites=true", "a URL with a password"),
    ("ASIAY34FZKBOKMUTVV7A", "an AWS access key id"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a Stripe live key"),
    ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "a GitHub token"),
    ("https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", "a Slack webhook"),
    (JWT, "a JWT"),
    (UNSIGNED_JWT, "a JWT"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...", "a PEM private key"),
    ("-----BEGIN PRIVATE KEY-----", "a PEM private key"),
    ("production", None), ("3000", None), ("15m", None),
    ("https://dougust-prod-alb-1.us-east-1.elb.amazonaws.com", None),
    ("https://user@host.example/path", None),  # a user, no password
    ("http://host:8080/a@b", None),
    ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", None),  # a test key moves no money
    ("AKIA-not-a-key", None),
    ("abcdefghijkl.mnopqrstuv.wxyz", None),  # three dotted segments, no JWT header
    ("-----BEGIN CERTIFICATE-----", None),
    (f"redis://:{MASK}@host:6379", None),  # masked already
])
def test_what_a_value_looks_like(value, kind):
    assert credential_kind(value) == kind


@pytest.mark.parametrize("case", sorted(CASES))
def test_ecs05_names_every_plain_variable_holding_a_credential(case):
    added, expected, _ = CASES[case]
    env = environment(added)
    assert plain_credentials(env, PLAIN) == expected
    # Judged alike on the masked environment a snapshot holds: the kinds travel with the masked values.
    assert plain_credentials(redact_environment(env, PLAIN), PLAIN) == expected


def test_ecs05_passes_the_plans_environment():
    assert plain_credentials(COMPLIANT_ENV, PLAIN) == {}
    assert plain_credentials(redact_environment(COMPLIANT_ENV, PLAIN), PLAIN) == {}


def test_ecs05_names_a_credential_named_variable_the_plan_does_not_name_plain():
    """The token TTLs pass because the plan names them plain; by name alone they would not."""
    assert plain_credentials(COMPLIANT_ENV, ()) == {"JWT_ACCESS_TOKEN_TTL": "its name is a credential's",
                                                    "JWT_REFRESH_TOKEN_TTL": "its name is a credential's"}
    assert plain_credentials([{"name": "DB_PASS", "value": ""}], PLAIN) == {}  # empty: holds nothing


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_value_is_masked_unless_the_plan_names_it_plain(case):
    added, _, secrets = CASES[case]
    masked = redact_environment(environment(added), PLAIN)
    shown = {e["name"]: e["value"] for e in masked}
    for name in added:
        assert shown[name] == MASK, name
    for pair in COMPLIANT_ENV:
        if pair["name"] not in added:
            assert shown[pair["name"]] == pair["value"]
    text = json.dumps(masked)
    assert not [s for s in secrets if s in text]
    assert redact_environment(masked, PLAIN) == masked


def test_a_password_in_a_url_is_masked_in_any_string():
    text = "retry postgresql://app:s3cr3t@db:5432/app then amqps://:t0ken@mq/vh; https://a@b/c stays"
    assert mask_url_passwords(text) == (f"retry postgresql://app:{MASK}@db:5432/app then amqps://:{MASK}@mq/vh; "
                                        "https://a@b/c stays")
    nested = {"message": "could not reach redis://u:pw9@h:1", "list": [{"k": "x://:p@h"}], "n": 3}
    assert redact(nested, None) == {"message": f"could not reach redis://u:{MASK}@h:1",
                                    "list": [{"k": f"x://:{MASK}@h"}], "n": 3}


def test_drift_shows_no_value_the_plan_does_not_name_plain():
    """A baseline holding raw values (saved before masking, or edited) against tonight's: the change shows,
    masked; a plain variable's change shows its values."""
    added, _, secrets = CASES["the six of the report"]
    old, new = copy.deepcopy(json.loads(GOLDEN.read_text())), copy.deepcopy(json.loads(GOLDEN.read_text()))
    app_old = old["parts"]["task_definitions"][0]["containerDefinitions"][0]
    app_new = new["parts"]["task_definitions"][0]["containerDefinitions"][0]
    app_old["environment"] = environment({**added, "NODE_ENV": "staging"})
    app_new["environment"] = environment({**{k: v[::-1] for k, v in added.items()}, "REDIS_PORT": "6379"})
    new["meta"]["plain_variables"] = sorted(PLAIN)
    found = diff(old, new)
    changed = {c.path.rsplit("=", 1)[1].rstrip("]"): (c.old, c.new) for c in found.changed}
    assert changed == {**{name: (MASK, MASK) for name in added}, "REDIS_PORT": (None, MASK),
                       "NODE_ENV": ("staging", "production")}
    text = json.dumps(found.to_json()) + to_markdown(found)
    assert not [s for s in secrets + [s[::-1] for s in secrets] if s in text]


def test_every_writer_masks_what_reaches_it(tmp_path):
    """The snapshot file, summary.json, drift.json/.md, the harness's own Allure results and the HTML
    report's staged results: a URL's password is masked in each, and the snapshot file masks every container
    value its meta does not name plain (none, for a snapshot taken before it named them)."""
    from harness.report.allure import Attachment, write_result
    from harness.report.drift import Drift
    from harness.report.html import _without_url_passwords
    from harness.compliance.inventory import Inventory
    from harness.report.summary import write_drift, write_summary

    url, password = "postgresql://app:Wr1t3rsP4ss@db:5432/app", "Wr1t3rsP4ss"
    snapshot = json.loads(GOLDEN.read_text())
    snapshot["parts"]["task_definitions"][0]["containerDefinitions"][0]["environment"] = environment(
        {"EXTRA": "plain-looking-but-unnamed"})
    snapshot["parts"]["secrets"][0]["Description"] = f"was {url}"
    snapshot["meta"].pop("plain_variables", None)  # as a snapshot from before the harness named them
    inventory = Inventory.from_json(snapshot)
    inventory.save(tmp_path / "old.json")
    inventory.meta["plain_variables"] = sorted(PLAIN)
    inventory.save(tmp_path / "new.json")
    old, new = (json.loads((tmp_path / name).read_text()) for name in ("old.json", "new.json"))
    values = lambda s: {e["name"]: e["value"] for e in  # noqa: E731
                        s["parts"]["task_definitions"][0]["containerDefinitions"][0]["environment"]}
    assert set(values(old).values()) == {MASK}
    assert values(new) == {**{e["name"]: e["value"] for e in COMPLIANT_ENV}, "EXTRA": MASK}
    write_summary(tmp_path, {"requirements": [{"id": "X-01", "message": f"could not reach {url}"}]})
    drift = Drift("then", "now")
    drift.requirements_note = f"the baseline names {url}"
    write_drift(tmp_path, drift, PLAN)
    results = tmp_path / "allure"
    write_result(results, "r", "r", "passed", f"see {url}", {}, [Attachment("a", f"at {url}", "text/plain", "txt")])
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "x-result.json").write_text(json.dumps({"statusDetails": {"message": f"failed on {url}"}}))
    _without_url_passwords(staged)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 8
    assert [p.name for p in written if password in p.read_text()] == []
    assert all(MASK in p.read_text() for p in written)


# -- the suite --------------------------------------------------------------------------------------------------

def test_replaying_a_snapshot_that_holds_the_values_fails_ecs05_and_the_summary_holds_none(tmp_path, reports):
    added, expected, secrets = CASES["other names and values"]
    snapshot = json.loads(GOLDEN.read_text())
    snapshot["parts"]["task_definitions"][0]["containerDefinitions"][0]["environment"] = environment(added)
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot))
    run = run_suite("--snapshot", str(path), reports=reports, timeout=120)
    assert run.status("ECS-05") == "fail", run.stdout[-3000:]
    assert run.ids_with("fail", "error") == {"ECS-05"}, run.message("ECS-05")
    message = run.message("ECS-05")
    assert all(f"{name} ({why})" in message for name, why in expected.items()), message
    summary = (reports / "summary.json").read_text()
    assert not [s for s in secrets if s in summary + run.stdout + run.stderr]


@pytest.fixture
def fresh_emulator(moto_endpoint: str) -> Iterator[str]:
    """moto keeps its state per process: start from an empty emulator, and leave an empty one behind."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    yield moto_endpoint
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()


def _run_with_environment(endpoint: str, added: dict[str, str]) -> None:
    """A new revision of the service's task definition with `added` in the app container's plain environment,
    and the service moved to it, as a deploy would."""
    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                       aws_secret_access_key="test")
    cluster = next(arn for arn in ecs.list_clusters()["clusterArns"] if "prod" in arn)
    service = ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])[
        "services"][0]
    td = ecs.describe_task_definition(taskDefinition=service["taskDefinition"], include=["TAGS"])
    definition = td["taskDefinition"]
    containers = copy.deepcopy(definition["containerDefinitions"])
    app = next(c for c in containers if any(m.get("containerPort") == 3000 for m in c.get("portMappings", [])))
    app["environment"] = [e for e in app.get("environment", []) if e["name"] not in added] + \
        [{"name": k, "value": v} for k, v in added.items()]
    keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "requiresCompatibilities", "cpu", "memory")
    arn = ecs.register_task_definition(**{k: definition[k] for k in keep if definition.get(k)},
                                       containerDefinitions=containers, tags=td.get("tags") or [])[
        "taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=cluster, service=service["serviceName"], taskDefinition=arn)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_nightly_run_on_an_emulator_fails_ecs05_and_writes_no_value_anywhere(case, fresh_emulator, tmp_path):
    """Night 1 provisions the plan's environment and saves its snapshot; then a deploy adds the variables;
    night 2 judges it against night 1 with every output on (summary, snapshot, Allure results, drift, JUnit).
    ECS-05 fails naming each variable, and no value appears in any file under the reports directory."""
    added, expected, secrets = CASES[case]
    reports = tmp_path / "reports"
    common = ["--target", "localstack", "--endpoint-url", fresh_emulator, "--env", "prod"]
    first = run_suite(*common, "--provision", "--snapshot-out", str(tmp_path / "night-1.json"),
                      reports=tmp_path / "night-1")
    assert first.status("ECS-05") == "pass", first.stdout[-3000:]
    _run_with_environment(fresh_emulator, added)
    run = run_suite(*common, "--baseline", str(tmp_path / "night-1.json"),
                    "--snapshot-out", str(reports / "snapshot.json"), "--alluredir", str(reports / "allure-results"),
                    "--junitxml", str(reports / "junit.xml"), reports=reports)
    assert run.status("ECS-05") == "fail", run.stdout[-3000:]
    message = run.message("ECS-05")
    assert all(f"{name} ({why})" in message for name, why in expected.items()), message
    assert {"drift.json", "drift.md", "summary.json", "snapshot.json", "junit.xml"} <= \
        {p.name for p in reports.iterdir()}
    assert len(list((reports / "allure-results").iterdir())) > 50
    drift = json.loads((reports / "drift.json").read_text())
    variables = {c["path"].rsplit("=", 1)[1].rstrip("]") for c in drift["changed"] if "environment[" in c["path"]}
    assert set(added) - set(PLAIN) <= variables, drift["changed"]
    leaks = [(str(path.relative_to(reports)), secret) for path in sorted(reports.rglob("*")) if path.is_file()
             for secret in secrets if secret in path.read_text(encoding="utf-8", errors="replace")]
    assert leaks == []
    assert not [s for s in secrets if s in run.stdout + run.stderr]
    # The snapshot says what it masked: the masked values are there, with what they looked like.
    saved = json.loads((reports / "snapshot.json").read_text())
    app = saved["parts"]["task_definitions"][0]["containerDefinitions"][0]
    shown = {e["name"]: e for e in app["environment"]}
    assert all(shown[name]["value"] == MASK for name in added)
    assert shown["NODE_ENV"]["value"] == "production" and saved["meta"]["plain_variables"] == sorted(PLAIN)
