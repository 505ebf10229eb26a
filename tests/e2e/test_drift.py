"""Drift between two snapshots: in-process tables on the recorded compliant snapshot (each edit must show as
exactly its own change, and what changes on its own must not show at all), then the nightly round trip
through a real emulator: break three things through the API, run with last night's baseline, restore.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
import requests

from support.suites import GOLDEN, run_suite
from harness.report.drift import Change, diff, to_markdown
from harness.util.redact import MASK

BASE = json.loads(GOLDEN.read_text())


def part(snapshot: dict[str, Any], name: str) -> Any:
    return snapshot["parts"][name]


def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copy_ = copy.deepcopy(BASE)
    edit(copy_)
    return copy_


def tasks_sg(s: dict[str, Any]) -> dict[str, Any]:
    return next(g for g in part(s, "security_groups") if any(p.get("FromPort") == 3000 for p in g["IpPermissions"]))


def open_to_world(s: dict[str, Any]) -> None:
    tasks_sg(s)["IpPermissions"].append({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                                         "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [],
                                         "PrefixListIds": [], "UserIdGroupPairs": []})


def set_env(name: str, value: str) -> Callable[[dict[str, Any]], None]:
    def edit(s: dict[str, Any]) -> None:
        env = part(s, "task_definitions")[0]["containerDefinitions"][0]["environment"]
        next(e for e in env if e["name"] == name)["value"] = value
    return edit


def volatile(s: dict[str, Any]) -> None:
    """What moves between two nights with nobody touching the deployment."""
    db = part(s, "db_instances")[0]
    db["LatestRestorableTime"] = "2031-01-01T00:00:00+00:00"
    db["DBInstanceStatus"] = "backing-up"
    for alarm in part(s, "alarms"):
        alarm["StateValue"], alarm["StateReason"] = "ALARM", "Threshold crossed"
        alarm["StateUpdatedTimestamp"] = "2031-01-01T00:00:00+00:00"
    service = part(s, "services")[0]
    service["runningCount"], service["pendingCount"] = 7, 3
    service["events"] = [{"id": "e1", "message": "has reached a steady state."}]
    for secret in part(s, "secrets"):
        secret["SecretVersionsToStages"] = {"v-new": ["AWSCURRENT"]}
        secret["LastAccessedDate"] = "2031-01-01T00:00:00+00:00"
    part(s, "log_groups")[0]["storedBytes"] = 123456
    for name in ("subnets", "route_tables", "alarms"):
        part(s, name).reverse()  # the same resources, listed in another order


def changes(new: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c.resource.split("/", 1)[0], c.path) for c in diff(BASE, new).changed}


@pytest.mark.parametrize("case, edit, expected", [
    ("nothing changed", lambda s: None, set()),
    ("only what changes on its own", volatile, set()),
    ("Multi-AZ off", lambda s: part(s, "db_instances")[0].update(MultiAZ=False), {("db_instances", "MultiAZ")}),
    ("a world-open rule", open_to_world, {("security_groups", "IpPermissions[+]")}),
    ("log retention", lambda s: part(s, "log_groups")[0].update(retentionInDays=1),
     {("log_groups", "retentionInDays")}),
    ("a tag changed", lambda s: next(t for t in part(s, "subnets")[0]["Tags"] if t["Key"] == "Project")
     .update(Value="other"), {("subnets", "Tags[Key=Project]")}),
    ("an environment variable", set_env("NODE_ENV", "development"),
     {("task_definitions", "containerDefinitions[name=backend].environment[name=NODE_ENV]")}),
    ("a listener's policy", lambda s: next(ls for ls in part(s, "listeners") if ls["Port"] == 443)
     .update(SslPolicy="ELBSecurityPolicy-2016-08"), {("listeners", "SslPolicy")}),
])
def test_each_edit_is_exactly_its_own_change(case, edit, expected):
    assert changes(edited(edit)) == expected


def test_a_changed_rule_shows_the_rule_and_old_and_new_values():
    found = diff(BASE, edited(lambda s: part(s, "db_instances")[0].update(MultiAZ=False)))
    assert found.changed == [Change(f"db_instances/{part(BASE, 'db_instances')[0]['DBInstanceIdentifier']}",
                                    "MultiAZ", True, False)]
    rule = diff(BASE, edited(open_to_world)).changed[0]
    assert rule.old is None and rule.new["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}] and rule.new["FromPort"] == 22


def test_secret_looking_values_are_masked():
    task = part(BASE, "task_definitions")[0]["containerDefinitions"][0]
    secret_name = "DB_PASSWORD"
    assert not any(e["name"] == secret_name for e in task["environment"])

    def leak(s: dict[str, Any]) -> None:
        part(s, "task_definitions")[0]["containerDefinitions"][0]["environment"].append(
            {"name": secret_name, "value": "hunter2-plain"})
    found = diff(BASE, edited(leak))
    assert [(c.path, c.old, c.new) for c in found.changed] == [
        (f"containerDefinitions[name=backend].environment[name={secret_name}]", None, MASK)]
    assert "hunter2" not in json.dumps(found.to_json()) + to_markdown(found)
    changed = diff(edited(leak), edited(lambda s: (leak(s), set_env(secret_name, "hunter3-plain")(s))))
    assert [(c.old, c.new) for c in changed.changed] == [(MASK, MASK)]
    assert "hunter" not in json.dumps(changed.to_json()) + to_markdown(changed)


def test_added_and_removed_resources_by_kind_and_identity():
    def swap_alarm(s: dict[str, Any]) -> None:
        gone = part(s, "alarms").pop(0)
        part(s, "alarms").append({**gone, "AlarmName": "dougust-prod-new-alarm"})
    found = diff(BASE, edited(swap_alarm))
    assert found.added == [{"kind": "alarms", "id": "dougust-prod-new-alarm"}]
    assert found.removed == [{"kind": "alarms", "id": part(BASE, "alarms")[0]["AlarmName"]}]
    assert found.changed == []


def test_a_part_that_could_not_be_fetched_is_neither_added_nor_removed():
    def lose_rds(s: dict[str, Any]) -> None:
        del s["parts"]["db_instances"]
        s["failures"]["db_instances"] = {"kind": "error", "message": "rds:DescribeDBInstances failed: AccessDenied"}
    assert diff(BASE, edited(lose_rds)).removed == []
    assert diff(edited(lose_rds), BASE).added == []


def test_elements_that_share_a_name_are_compared_as_a_set():
    """Two target-group links of one container share its name: a change to either must still show."""
    links = [{"containerName": "backend", "containerPort": 3000, "targetGroupArn": "arn:tg/a"},
             {"containerName": "backend", "containerPort": 3000, "targetGroupArn": "arn:tg/b"}]
    old = {"parts": {"services": [{"serviceArn": "svc", "loadBalancers": links}]}, "meta": {}}
    new = copy.deepcopy(old)
    new["parts"]["services"][0]["loadBalancers"][0]["targetGroupArn"] = "arn:tg/c"
    assert {(c.path, json.dumps(c.old), json.dumps(c.new)) for c in diff(old, new).changed} == {
        ("loadBalancers[-]", json.dumps(links[0]), "null"),
        ("loadBalancers[+]", "null", json.dumps({**links[0], "targetGroupArn": "arn:tg/c"}))}


@pytest.mark.parametrize("before, after, expected", [
    ({"DB-02": "pass", "NET-08": "fail", "MON-01": "fail", "ALB-07": "waived"},
     {"DB-02": "fail", "NET-08": "fail", "MON-01": "pass", "ALB-07": "waived"},
     {"newly_failing": ["DB-02"], "resolved": ["MON-01"], "still_failing": ["NET-08"], "waived": ["ALB-07"],
      "newly_erroring": []}),
    ({"DB-02": "pass", "DB-03": "error"}, {"DB-02": "error", "DB-03": "pass"},
     {"newly_failing": [], "resolved": ["DB-03"], "still_failing": [], "waived": [], "newly_erroring": ["DB-02"]}),
])
def test_requirements_lists(before, after, expected):
    old, new = copy.deepcopy(BASE), copy.deepcopy(BASE)
    old["meta"]["results"], new["meta"]["results"] = before, after
    assert diff(old, new).requirements == expected


def test_without_statuses_the_requirements_are_not_guessed():
    found = diff(BASE, BASE)
    assert found.requirements is None and "baseline carries no requirement statuses" in found.requirements_note


# -- the nightly round trip through a real emulator --------------------------------------------------------

# Backups kept 1 day; a world-open rule in the tasks' group. (Multi-AZ off would break DB-02, but this
# emulator never reports the standby's zone, so DB-02 could only return to "not observable", not to pass.)
BROKEN_BY_THE_EDITS = {"DB-06", "NET-08", "ECS-13"}


def _nightly(endpoint: str, tmp_path: Path, night: str, baseline: Path | None, *extra: str):
    args = ["--target", "localstack", "--endpoint-url", endpoint, "--env", "prod",
            "--snapshot-out", str(tmp_path / f"{night}.json"), "--alluredir", str(tmp_path / f"allure-{night}"),
            *(["--baseline", str(baseline)] if baseline else []), *extra]
    return run_suite(*args, reports=tmp_path / night)


OPEN_SSH = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}


def _break(endpoint: str, retention: dict[str, int], undo: bool = False) -> None:
    """Three edits an operator might make by hand; `retention` keeps the original values to restore."""
    clients = {s: boto3.client(s, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                               aws_secret_access_key="test") for s in ("rds", "ec2", "logs")}
    db = next(d for d in clients["rds"].describe_db_instances()["DBInstances"] if "prod" in d["DBInstanceIdentifier"])
    retention.setdefault("backups", db["BackupRetentionPeriod"])
    clients["rds"].modify_db_instance(DBInstanceIdentifier=db["DBInstanceIdentifier"], ApplyImmediately=True,
                                      BackupRetentionPeriod=retention["backups"] if undo else 1)
    group = next(g for g in clients["ec2"].describe_security_groups()["SecurityGroups"]
                 if any(p.get("FromPort") == 3000 for p in g["IpPermissions"]) and "prod" in json.dumps(g["Tags"]))
    rule = [OPEN_SSH]
    if undo:
        clients["ec2"].revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=rule)
    else:
        clients["ec2"].authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=rule)
    log_group = next(g for g in clients["logs"].describe_log_groups()["logGroups"] if "prod" in g["logGroupName"])
    retention.setdefault("logs", log_group["retentionInDays"])
    clients["logs"].put_retention_policy(logGroupName=log_group["logGroupName"],
                                         retentionInDays=retention["logs"] if undo else 1)


@pytest.fixture
def fresh_emulator(moto_endpoint: str) -> Iterator[str]:
    """moto keeps its state per process, and other modules of this worker provision the same environment:
    start from an empty emulator, and leave an empty one behind."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    yield moto_endpoint
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()


def test_three_edits_through_the_api_are_the_nights_drift_and_restoring_them_resolves(fresh_emulator, tmp_path,
                                                                                      capsys):
    moto_endpoint = fresh_emulator
    first = _nightly(moto_endpoint, tmp_path, "night-1", None, "--provision")
    assert first.returncode == 0, first.stdout[-3000:]
    night_1 = json.loads((tmp_path / "night-1.json").read_text())
    assert {night_1["meta"]["results"][rid] for rid in BROKEN_BY_THE_EDITS} == {"pass"}
    original: dict[str, int] = {}
    _break(moto_endpoint, original)
    second = _nightly(moto_endpoint, tmp_path, "night-2", tmp_path / "night-1.json")
    drift = json.loads((tmp_path / "night-2" / "drift.json").read_text())
    assert drift["added"] == drift["removed"] == []
    changed = {(c["resource"].split("/")[0], c["path"]): (c["old"], c["new"]) for c in drift["changed"]}
    assert changed.keys() == {("db_instances", "BackupRetentionPeriod"), ("security_groups", "IpPermissions[+]"),
                              ("log_groups", "retentionInDays")}, drift["changed"]
    assert changed["db_instances", "BackupRetentionPeriod"] == (original["backups"], 1)
    assert changed["log_groups", "retentionInDays"] == (original["logs"], 1)
    old_rule, rule = changed["security_groups", "IpPermissions[+]"]
    # The rule as EC2 describes it: what _break authorized, and nothing else granted beside it.
    assert old_rule is None and {key: rule[key] for key in OPEN_SSH} == OPEN_SSH, rule
    assert not any(rule.get(key) for key in ("Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs")), rule
    assert drift["requirements"]["newly_failing"] == sorted(BROKEN_BY_THE_EDITS), drift["requirements"]
    assert second.summary["drift"]["requirements"]["newly_failing"] == sorted(BROKEN_BY_THE_EDITS)
    assert "drift since" in second.stdout and "newly failing DB-06, ECS-13, NET-08" in second.stdout
    from harness.cli import main

    assert main(["report", "--reports-dir", str(tmp_path / "night-2")]) == 0
    assert "newly failing DB-06, ECS-13, NET-08" in capsys.readouterr().out
    markdown = (tmp_path / "night-2" / "drift.md").read_text()
    assert "**Newly failing** (3):" in markdown and "- DB-06: Automated backups retained" in markdown
    allure = [json.loads(p.read_text()) for p in (tmp_path / "allure-night-2").glob("*-result.json")]
    drift_result = next(r for r in allure if r["name"].startswith("Drift since"))
    assert drift_result["status"] == "failed"
    assert {a["name"] for a in drift_result["attachments"]} == {"drift.md", "drift.json"}
    for attachment in drift_result["attachments"]:
        assert (tmp_path / "allure-night-2" / attachment["source"]).exists()

    _break(moto_endpoint, original, undo=True)
    (tmp_path / "night-2.json").rename(tmp_path / "broken.json")
    third = _nightly(moto_endpoint, tmp_path, "night-3", tmp_path / "broken.json")
    requirements = json.loads((tmp_path / "night-3" / "drift.json").read_text())["requirements"]
    assert requirements["resolved"] == sorted(BROKEN_BY_THE_EDITS) and requirements["newly_failing"] == []
    assert third.returncode == 0, third.stdout[-3000:]


def test_harness_diff_does_the_same_offline_and_gates_on_severity(tmp_path):
    from harness.cli import main

    old = copy.deepcopy(BASE)
    old["meta"]["results"] = {"DB-02": "pass", "MON-01": "pass"}
    new = edited(lambda s: part(s, "db_instances")[0].update(MultiAZ=False))
    new["meta"]["results"] = {"DB-02": "fail", "MON-01": "fail"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    args = ["diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--reports-dir", str(tmp_path / "r")]
    assert main(args) == 0
    assert json.loads((tmp_path / "r" / "drift.json").read_text())["requirements"]["newly_failing"] == \
        ["DB-02", "MON-01"]
    assert main([*args, "--fail-on", "critical"]) == 1  # DB-02 is critical
    new["meta"]["results"]["DB-02"] = "pass"
    (tmp_path / "new.json").write_text(json.dumps(new))
    assert main([*args, "--fail-on", "high"]) == 0  # MON-01 is low
    assert main([*args, "--fail-on", "low"]) == 1


def test_the_drift_lists_what_in_the_vpc_is_not_the_deployments_with_the_coverage():
    """As driftctl splits them: the new snapshot's unmanaged resources, and how many of all in the VPC are
    the deployment's; an older snapshot without the plan's tags in its meta says nothing of them."""
    def hand_made(s: dict[str, Any]) -> None:
        part(s, "vpc_resources").append({"Kind": "instance", "InstanceId": "i-0handmade", "State": {"Name": "running"},
                                         "Tags": [{"Key": "Name", "Value": "debug-box"}]})

    clean = diff(BASE, BASE)
    assert clean.unmanaged == [] and clean.coverage is not None
    total = int(clean.coverage.split(" of ")[1].split()[0])
    assert clean.coverage == f"{total} of {total} resources in the VPC are the deployment's"
    drift = diff(BASE, edited(hand_made))
    assert drift.unmanaged == [{"kind": "EC2 instance", "id": "i-0handmade", "name": "debug-box"}]
    assert drift.coverage == f"{total} of {total + 1} resources in the VPC are the deployment's"
    assert drift.added == [] and drift.changed == []  # a reading of the VPC, not resources of its own
    markdown = to_markdown(drift)
    assert "## Unmanaged (1)\n\n- EC2 instance `i-0handmade` (debug-box)" in markdown and drift.coverage in markdown
    older = edited(lambda s: s["meta"].pop("tags"))
    assert diff(BASE, older).unmanaged is None and "## Unmanaged" not in to_markdown(diff(BASE, older))
