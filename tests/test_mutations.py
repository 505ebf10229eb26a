"""Every compliance requirement is proven by a violation it catches.

From the recorded compliant snapshot (tests/data/golden-prod.json), each mutation breaks one thing the
way it breaks in a real account (an attribute flipped, a resource removed, a rule widened); the suite,
replaying the mutated snapshot, must fail that requirement and no unrelated one. `also` names the
requirements that fail with it by the plan's own logic (no secret: the task cannot be fed it either).
"""
from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from conftest import GOLDEN, ROOT, run_suite
from test_image import PROVEN as IMAGE_PROVEN
from harness.plan import load_plan

Snapshot = dict[str, Any]


@dataclass(frozen=True)
class Mutation:
    rid: str
    what: str
    apply: Callable[[Snapshot], None]
    also: frozenset[str] = field(default_factory=frozenset)


def parts(s: Snapshot) -> dict[str, Any]:
    return s["parts"]


def tier(s: Snapshot, name: str) -> list[dict[str, Any]]:
    tag = {"public": "Public", "private": "Private", "isolated": "Isolated"}[name]
    return [sn for sn in parts(s)["subnets"]
            if any(t["Key"] == "aws-cdk:subnet-type" and t["Value"] == tag for t in sn.get("Tags", []))]


def table_of(s: Snapshot, subnet_id: str) -> dict[str, Any]:
    return next(rt for rt in parts(s)["route_tables"]
                if any(a.get("SubnetId") == subnet_id for a in rt.get("Associations", [])))


def db(s: Snapshot) -> dict[str, Any]:
    return parts(s)["db_instances"][0]


def service(s: Snapshot) -> dict[str, Any]:
    return parts(s)["services"][0]


def app(s: Snapshot) -> dict[str, Any]:
    return parts(s)["task_definitions"][0]["containerDefinitions"][0]


def group(s: Snapshot, gid: str) -> dict[str, Any]:
    return next(g for g in parts(s)["security_groups"] if g["GroupId"] == gid)


def alb_group(s: Snapshot) -> dict[str, Any]:
    return group(s, parts(s)["load_balancers"][0]["SecurityGroups"][0])


def task_group(s: Snapshot) -> dict[str, Any]:
    return group(s, service(s)["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"][0])


def db_group(s: Snapshot) -> dict[str, Any]:
    return group(s, db(s)["VpcSecurityGroups"][0]["VpcSecurityGroupId"])


def listener(s: Snapshot, port: int) -> dict[str, Any]:
    return next(ls for ls in parts(s)["listeners"] if ls["Port"] == port)


def alarm(s: Snapshot, namespace: str, metric: str) -> dict[str, Any]:
    return next(a for a in parts(s)["alarms"] if a["Namespace"] == namespace and a["MetricName"] == metric
                and not a["AlarmName"].startswith("TargetTracking-"))


def secret(s: Snapshot, suffix: str) -> dict[str, Any]:
    return next(x for x in parts(s)["secrets"] if x["Name"].endswith("/" + suffix))


def policy(s: Snapshot, metric: str) -> dict[str, Any]:
    return next(p["TargetTrackingScalingPolicyConfiguration"] for p in parts(s)["scaling_policies"]
                if p["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]
                ["PredefinedMetricType"] == metric)


def setter(getter: Callable[[Snapshot], dict[str, Any]], key: str, value: Any) -> Callable[[Snapshot], None]:
    def apply(s: Snapshot) -> None:
        getter(s)[key] = value
    return apply


def open_ingress(getter: Callable[[Snapshot], dict[str, Any]], port: int, cidr: str | None = None,
                 source_group: Callable[[Snapshot], dict[str, Any]] | None = None) -> Callable[[Snapshot], None]:
    def apply(s: Snapshot) -> None:
        perm: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [],
                                "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []}
        if cidr:
            perm["IpRanges"].append({"CidrIp": cidr})
        if source_group:
            perm["UserIdGroupPairs"].append({"GroupId": source_group(s)["GroupId"]})
        getter(s)["IpPermissions"].append(perm)
    return apply


def swap_nat_route(s: Snapshot) -> None:
    a, b = tier(s, "private")
    ta, tb = table_of(s, a["SubnetId"]), table_of(s, b["SubnetId"])
    ra = next(r for r in ta["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0")
    rb = next(r for r in tb["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0")
    ra["NatGatewayId"], rb["NatGatewayId"] = rb["NatGatewayId"], ra["NatGatewayId"]


def drop_public_default_route(s: Snapshot) -> None:
    table = table_of(s, tier(s, "public")[0]["SubnetId"])
    table["Routes"] = [r for r in table["Routes"] if r.get("DestinationCidrBlock") != "0.0.0.0/0"]


def isolated_gets_nat(s: Snapshot) -> None:
    nat = parts(s)["nat_gateways"][0]["NatGatewayId"]
    table_of(s, tier(s, "isolated")[0]["SubnetId"])["Routes"].append(
        {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": nat, "State": "active"})


def bastion_open_to_world(s: Snapshot) -> None:
    bastion = copy.deepcopy(task_group(s))
    bastion.update(GroupId="sg-0bastion", GroupName="bastion", IpPermissions=[])
    parts(s)["security_groups"].append(bastion)
    open_ingress(lambda _: bastion, 22, cidr="0.0.0.0/0")(s)


def db_subnet_group_uses_private(s: Snapshot) -> None:
    db(s)["DBSubnetGroup"]["Subnets"][0]["SubnetIdentifier"] = tier(s, "private")[0]["SubnetId"]


def env_var(name: str, value: str) -> Callable[[Snapshot], None]:
    def apply(s: Snapshot) -> None:
        environment = app(s)["environment"]
        environment[:] = [e for e in environment if e["name"] != name] + [{"name": name, "value": value}]
    return apply


def drop_secret(suffix: str) -> Callable[[Snapshot], None]:
    def apply(s: Snapshot) -> None:
        parts(s)["secrets"].remove(secret(s, suffix))
    return apply


def no_credentials_secret(s: Snapshot) -> None:
    db(s).pop("MasterUserSecret", None)
    drop_secret("database-url")(s)


def set_rules(text: str | None) -> Callable[[Snapshot], None]:
    return setter(lambda s: parts(s)["repositories"][0], "lifecyclePolicyText", text)


KEEP_20 = json.dumps({"rules": [
    {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                                      "countNumber": 7}, "action": {"type": "expire"}},
    {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 20},
     "action": {"type": "expire"}}]})


def drop_alarm(namespace: str, metric: str) -> Callable[[Snapshot], None]:
    def apply(s: Snapshot) -> None:
        parts(s)["alarms"].remove(alarm(s, namespace, metric))
    return apply


def silence_one_alarm(s: Snapshot) -> None:
    alarm(s, "AWS/RDS", "CPUUtilization")["AlarmActions"] = []


def unsubscribe_topics(s: Snapshot) -> None:
    for topic in parts(s)["topics"].values():
        topic["Subscriptions"] = []


def untag_target_group(s: Snapshot) -> None:
    tg = parts(s)["target_groups"][0]
    tg["Tags"] = [t for t in tg["Tags"] if t["Key"] != "Environment"]


def stale_restore_point(s: Snapshot) -> None:
    taken = dt.datetime.fromisoformat(s["meta"]["taken_at"])
    db(s)["LatestRestorableTime"] = str(taken - dt.timedelta(hours=1))


def old_export(s: Snapshot) -> None:
    taken = dt.datetime.fromisoformat(s["meta"]["taken_at"])
    for task in parts(s)["db_exports"]:
        task["TaskEndTime"] = task["SnapshotTime"] = str(taken - dt.timedelta(days=9))


MUTATIONS = [
    Mutation("NET-01", "VPC CIDR widened to /8", setter(lambda s: parts(s)["vpc"], "CidrBlock", "10.0.0.0/8")),
    Mutation("NET-01", "DNS hostnames off", setter(lambda s: parts(s)["vpc_attributes"], "EnableDnsHostnames", False)),
    Mutation("NET-02", "a public subnet lost its route to the IGW", drop_public_default_route),
    Mutation("NET-03", "private subnets route through the other AZ's NAT", swap_nat_route),
    Mutation("NET-04", "an isolated subnet routes to a NAT", isolated_gets_nat),
    Mutation("NET-05", "the IGW is detached", setter(lambda s: parts(s)["internet_gateways"][0], "Attachments", [])),
    Mutation("NET-06", "a NAT gateway is not available", setter(lambda s: parts(s)["nat_gateways"][0], "State", "pending")),
    Mutation("NET-07", "flow logs capture rejected traffic only",
             setter(lambda s: parts(s)["flow_logs"][0], "TrafficType", "REJECT")),
    Mutation("NET-08", "a bastion group admits 0.0.0.0/0 on 22", bastion_open_to_world),
    Mutation("DB-01", "engine 14", setter(db, "EngineVersion", "14.9")),
    Mutation("DB-02", "Multi-AZ off", setter(db, "MultiAZ", False)),
    Mutation("DB-03", "instance class shrunk", setter(db, "DBInstanceClass", "db.t3.micro")),
    Mutation("DB-04", "storage type gp2", setter(db, "StorageType", "gp2")),
    Mutation("DB-05", "storage auto-scaling off", setter(db, "MaxAllocatedStorage", 100)),
    Mutation("DB-06", "backups kept 1 day", setter(db, "BackupRetentionPeriod", 1)),
    Mutation("DB-07", "DB subnet group includes a private subnet", db_subnet_group_uses_private),
    Mutation("DB-08", "DB admits the VPC CIDR on 5432", open_ingress(db_group, 5432, cidr="10.0.0.0/16")),
    Mutation("DB-09", "storage unencrypted", setter(db, "StorageEncrypted", False)),
    Mutation("DB-10", "publicly accessible", setter(db, "PubliclyAccessible", True)),
    Mutation("DB-11", "maintenance on Saturday", setter(db, "PreferredMaintenanceWindow", "sat:02:00-sat:03:00")),
    Mutation("DB-11", "maintenance at 05:00", setter(db, "PreferredMaintenanceWindow", "sun:03:30-sun:04:30")),
    Mutation("DB-12", "postgresql logs not exported", setter(db, "EnabledCloudwatchLogsExports", [])),
    Mutation("DB-13", "no managed secret and no database-url secret", no_credentials_secret,
             also=frozenset({"SEC-01", "SEC-02", "ECS-05"})),
    Mutation("ECS-01", "Container Insights off",
             setter(lambda s: parts(s)["clusters"][0], "settings", [{"name": "containerInsights", "value": "disabled"}])),
    Mutation("ECS-02", "CPU 256", setter(lambda s: parts(s)["task_definitions"][0], "cpu", "256")),
    Mutation("ECS-03", "container port 8080",
             setter(app, "portMappings", [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}])),
    Mutation("ECS-04", "NODE_ENV development", env_var("NODE_ENV", "development")),
    Mutation("ECS-05", "JWT_SECRET in plain environment", env_var("JWT_SECRET", "***redacted***")),
    Mutation("ECS-06", "logs to splunk", setter(lambda s: app(s)["logConfiguration"], "logDriver", "splunk")),
    Mutation("ECS-07", "runs as root", setter(app, "user", "root")),
    Mutation("ECS-08", "no task role", setter(lambda s: parts(s)["task_definitions"][0], "taskRoleArn", None)),
    Mutation("ECS-09", "public IP assigned",
             setter(lambda s: service(s)["networkConfiguration"]["awsvpcConfiguration"], "assignPublicIp", "ENABLED")),
    Mutation("ECS-09", "desired count 1", setter(service, "desiredCount", 1)),
    Mutation("ECS-10", "circuit breaker does not roll back",
             setter(lambda s: service(s)["deploymentConfiguration"]["deploymentCircuitBreaker"], "rollback", False)),
    Mutation("ECS-11", "max capacity 4", setter(lambda s: parts(s)["scalable_targets"][0], "MaxCapacity", 4)),
    Mutation("ECS-12", "CPU target 90", setter(lambda s: policy(s, "ECSServiceAverageCPUUtilization"),
                                               "TargetValue", 90.0)),
    Mutation("ECS-12", "memory scale-in cooldown 60", setter(lambda s: policy(s, "ECSServiceAverageMemoryUtilization"),
                                                             "ScaleInCooldown", 60)),
    Mutation("ECS-13", "tasks admit 22 from the ALB", open_ingress(task_group, 22, source_group=alb_group)),
    Mutation("ALB-01", "internal scheme", setter(lambda s: parts(s)["load_balancers"][0], "Scheme", "internal")),
    Mutation("ALB-02", "HTTP forwards", setter(lambda s: listener(s, 80), "DefaultActions",
                                               [{"Type": "forward", "TargetGroupArn": "arn:tg"}])),
    Mutation("ALB-03", "legacy TLS policy", setter(lambda s: listener(s, 443), "SslPolicy", "ELBSecurityPolicy-2016-08")),
    Mutation("ALB-04", "health check on /", setter(lambda s: parts(s)["target_groups"][0], "HealthCheckPath", "/")),
    Mutation("ALB-05", "stickiness off", lambda s: next(iter(parts(s)["tg_attributes"].values())).update(
        {"stickiness.enabled": "false"})),
    Mutation("ALB-06", "ALB admits 8080", open_ingress(alb_group, 8080, cidr="0.0.0.0/0")),
    Mutation("ALB-07", "access logs off", lambda s: next(iter(parts(s)["lb_attributes"].values())).update(
        {"access_logs.s3.enabled": "false"})),
    Mutation("ALB-08", "no web ACL", lambda s: parts(s)["web_acls"].update({k: None for k in parts(s)["web_acls"]})),
    Mutation("ECR-01", "no repository", setter(parts, "repositories", []),
             also=frozenset({"ECR-02", "ECR-03", "ECR-04"})),
    Mutation("ECR-02", "scan on push off", setter(lambda s: parts(s)["repositories"][0], "imageScanningConfiguration",
                                                  {"scanOnPush": False})),
    Mutation("ECR-03", "no lifecycle policy", set_rules(None)),
    Mutation("ECR-03", "keeps 20 images", set_rules(KEEP_20)),
    Mutation("ECR-04", "image from Docker Hub", setter(app, "image", "docker.io/library/node:20")),
    Mutation("SEC-01", "jwt-refresh-secret missing", drop_secret("jwt-refresh-secret"), also=frozenset({"ECS-05"})),
    Mutation("SEC-02", "no rotation", setter(lambda s: secret(s, "database-url"), "RotationEnabled", False)),
    Mutation("MON-01", "logs kept forever", lambda s: parts(s)["log_groups"][0].pop("retentionInDays")),
    Mutation("MON-02", "no unhealthy-host alarm", drop_alarm("AWS/ApplicationELB", "UnHealthyHostCount")),
    Mutation("MON-03", "RDS CPU alarm at 90", setter(lambda s: alarm(s, "AWS/RDS", "CPUUtilization"), "Threshold", 90.0)),
    Mutation("MON-04", "free storage alarm at 5 %", setter(lambda s: alarm(s, "AWS/RDS", "FreeStorageSpace"),
                                                           "Threshold", 0.05 * 100 * 1024 ** 3)),
    Mutation("MON-05", "5xx alarm over 1 minute", setter(lambda s: alarm(s, "AWS/ApplicationELB",
                                                                         "HTTPCode_ELB_5XX_Count"), "Period", 60)),
    Mutation("MON-06", "healthy-host alarm at 0", setter(lambda s: alarm(s, "AWS/ApplicationELB", "HealthyHostCount"),
                                                         "Threshold", 0.0)),
    Mutation("MON-07", "no ECS memory alarm", drop_alarm("AWS/ECS", "MemoryUtilization")),
    Mutation("MON-08", "an alarm notifies nobody", silence_one_alarm),
    Mutation("MON-08", "the topic has no subscription", unsubscribe_topics),
    Mutation("MON-09", "no dashboard", setter(parts, "dashboards", [])),
    Mutation("MON-10", "trail stopped", setter(lambda s: parts(s)["trails"][0], "IsLogging", False)),
    Mutation("TAG-01", "target group lost its Environment tag", untag_target_group),
    Mutation("DR-01", "latest restorable time an hour old", stale_restore_point),
    Mutation("DR-02", "last export 9 days old", old_export),
]

FAILING = ("fail", "optional-fail", "error")


@pytest.fixture(scope="module")
def golden() -> Snapshot:
    return json.loads(GOLDEN.read_text())


def test_every_compliance_requirement_has_a_mutation():
    plan = load_plan(ROOT / "plan" / "dougust.toml")
    compliance = {rid for rid, req in plan.requirements.items() if req.suite == "compliance"}
    # The image checks are proven on images with one violation each (tests/test_image.py), not on snapshots.
    missing = sorted(compliance - {m.rid for m in MUTATIONS} - IMAGE_PROVEN)
    assert not missing, f"requirements no mutation proves: {missing}"


def test_golden_snapshot_passes_everything(reports):
    run = run_suite("--snapshot", str(GOLDEN), reports=reports)
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.summary["counts"]["pass"] == 61, run.summary["counts"]
    assert run.summary["counts"]["skip"] == 7 and run.summary["requirements_checked"] == 68  # the image checks
    assert run.summary["uncovered"] == []
    assert run.summary["api_calls"] == 0


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: f"{m.rid}: {m.what}")
def test_mutation_fails_its_requirement_alone(mutation, golden, tmp_path, reports):
    snapshot = copy.deepcopy(golden)
    mutation.apply(snapshot)
    path = tmp_path / "mutated.json"
    path.write_text(json.dumps(snapshot))
    run = run_suite("--snapshot", str(path), reports=reports)
    assert run.status(mutation.rid) in ("fail", "optional-fail"), f"{mutation.rid} is {run.status(mutation.rid)}"
    unrelated = run.ids_with(*FAILING) - {mutation.rid} - mutation.also
    assert not unrelated, f"unrelated requirements failed too: {sorted(unrelated)}"
    optional = load_plan(ROOT / "plan" / "dougust.toml").requirements[mutation.rid].optional_in("prod")
    assert (run.returncode == 0) is optional, "a failed enforced requirement must fail the run, an optional one not"
