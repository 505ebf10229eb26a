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

from support.suites import GOLDEN, ROOT, run_suite
from test_image import PROVEN as IMAGE_PROVEN
from harness.compliance.facts import AlarmCondition, alarm_misses
from harness.plan import load_plan

Snapshot = dict[str, Any]


@dataclass(frozen=True)
class Mutation:
    rid: str
    what: str
    apply: Callable[[Snapshot], None]
    also: frozenset[str] = field(default_factory=frozenset)
    plan: str | None = None  # a line added to the requirement's block of the plan (e.g. its `expect`)


@dataclass(frozen=True)
class Shape:
    """A compliant deployment built another usual way (CDK's L2 constructs and their defaults): `rid` must
    pass on it, and nothing may fail."""
    rid: str
    what: str
    apply: Callable[[Snapshot], None]
    plan: str | None = None


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


def hand_made_group(s: Snapshot) -> None:
    group = copy.deepcopy(task_group(s))
    group.update(GroupId="sg-0handmade", GroupName="debugging", IpPermissions=[], Tags=[])
    parts(s)["security_groups"].append(group)


def hand_launched_instance(s: Snapshot) -> None:
    parts(s)["vpc_resources"].append({"Kind": "instance", "InstanceId": "i-0handmade", "State": {"Name": "running"},
                                      "Tags": [{"Key": "Name", "Value": "debug-box"}]})


def s3_gateway_endpoint(s: Snapshot) -> None:
    """CDK's S3 gateway endpoint: CloudFormation cannot tag it, and it routes through the deployment's route
    tables."""
    tables = [t["RouteTableId"] for t in parts(s)["route_tables"]
              if any(tag["Key"] == "Project" for tag in t.get("Tags", []))]
    assert tables, "the golden snapshot's route tables carry the plan's tags"
    parts(s)["vpc_resources"].append({"Kind": "vpc_endpoint", "VpcEndpointId": "vpce-0s3", "State": "available",
                                      "VpcEndpointType": "Gateway", "ServiceName": "com.amazonaws.us-east-1.s3",
                                      "Tags": [], "RouteTableIds": tables[:2]})


def db_in_the_stack(s: Snapshot) -> None:
    """A database the stack that made the VPC made, with only CloudFormation's stack tag (the plan's tags
    not propagated to it)."""
    stack = {"Key": "aws:cloudformation:stack-name", "Value": "DougustProd"}
    parts(s)["vpc"].setdefault("Tags", []).append(stack)
    parts(s)["vpc_resources"].append({"Kind": "db_instance", "DBInstanceIdentifier": "dougust-reporting",
                                      "TagList": [stack]})


def interface(description: str, **fields: Any) -> Callable[[Snapshot], None]:
    """An interface AWS manages (RequesterManaged) in the tasks' security group, unless `fields` say else."""
    def apply(s: Snapshot) -> None:
        parts(s)["vpc_resources"].append({"Kind": "network_interface", "NetworkInterfaceId": "eni-0aws",
                                          "Description": description, "InterfaceType": "interface",
                                          "RequesterManaged": True, "Groups": [{"GroupId": task_group(s)["GroupId"]}],
                                          "TagSet": [], **fields})
    return apply


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


def target_group(s: Snapshot) -> dict[str, Any]:
    return parts(s)["target_groups"][0]


def lb_entry(s: Snapshot) -> dict[str, Any]:
    return service(s)["loadBalancers"][0]


def errors_alarm(s: Snapshot) -> dict[str, Any]:
    return alarm(s, "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count")


def alarm_set(namespace: str, metric: str, **values: Any) -> Callable[[Snapshot], None]:
    def apply(s: Snapshot) -> None:
        alarm(s, namespace, metric).update(values)
    return apply


def no_key_reported(s: Snapshot) -> None:
    db(s).pop("KmsKeyId")


def the_cdk_shapes(s: Snapshot) -> None:
    """Every default above at once, as one CDK app deploys them."""
    target_group(s)["Port"] = 80
    errors_alarm(s)["ComparisonOperator"] = "GreaterThanOrEqualToThreshold"
    alarm_set("AWS/RDS", "CPUUtilization", ComparisonOperator="GreaterThanOrEqualToThreshold", Period=300,
              EvaluationPeriods=1)(s)
    alarm_set("AWS/ApplicationELB", "HealthyHostCount", Statistic="Average", Period=300)(s)
    no_key_reported(s)


# The key id of the golden snapshot's KmsKeyId (scripts/record-golden makes a new one each time).
GOLDEN_KEY = json.loads(GOLDEN.read_text())["parts"]["db_instances"][0]["KmsKeyId"].rsplit("/", 1)[-1]
OTHER_KEY = "arn:aws:kms:us-east-1:123456789012:key/5b1c0a4e-9d7e-4f7a-8e55-2d7c1f0b9a31"

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
    # TAG-01 also reads the security groups: one without the plan's tags fails it too.
    Mutation("NET-09", "a security group made by hand in the VPC", hand_made_group, also=frozenset({"TAG-01"})),
    Mutation("NET-09", "an EC2 instance launched by hand in the VPC", hand_launched_instance),
    Mutation("NET-09", "a network interface made by hand", interface("", RequesterManaged=False)),
    Mutation("NET-09", "a hand-made interface that says it is the load balancer's",
             interface("ELB app/dougust-prod-alb/e0744a98d2244645", RequesterManaged=False)),
    Mutation("DB-01", "engine 14", setter(db, "EngineVersion", "14.9")),
    Mutation("DB-02", "Multi-AZ off", setter(db, "MultiAZ", False)),
    Mutation("DB-03", "instance class shrunk", setter(db, "DBInstanceClass", "db.t3.micro")),
    Mutation("DB-04", "storage type gp2", setter(db, "StorageType", "gp2")),
    Mutation("DB-05", "storage auto-scaling off", setter(db, "MaxAllocatedStorage", 100)),
    Mutation("DB-06", "backups kept 1 day", setter(db, "BackupRetentionPeriod", 1)),
    Mutation("DB-07", "DB subnet group includes a private subnet", db_subnet_group_uses_private),
    Mutation("DB-08", "DB admits the VPC CIDR on 5432", open_ingress(db_group, 5432, cidr="10.0.0.0/16")),
    Mutation("DB-09", "storage unencrypted", setter(db, "StorageEncrypted", False)),
    Mutation("DB-09", "storage unencrypted, no key reported",
             lambda s: (setter(db, "StorageEncrypted", False)(s), no_key_reported(s))),
    Mutation("DB-09", "the plan names a customer-managed key, another key encrypts", lambda s: None,
             plan=f'expect = {{ kms_key = "{OTHER_KEY}" }}'),
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
    Mutation("ALB-04", "health check on /", setter(target_group, "HealthCheckPath", "/")),
    Mutation("ALB-04", "tasks registered on container port 8080", setter(lb_entry, "containerPort", 8080),
             also=frozenset({"ECS-09"})),
    Mutation("ALB-04", "CDK's group port 80, tasks registered on 8080",
             lambda s: (setter(target_group, "Port", 80)(s), setter(lb_entry, "containerPort", 8080)(s)),
             also=frozenset({"ECS-09"})),
    Mutation("ALB-04", "health checks on port 8081", setter(target_group, "HealthCheckPort", "8081")),
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
    Mutation("MON-02", "unhealthy-host alarm > 1 (fires at 2)",
             alarm_set("AWS/ApplicationELB", "UnHealthyHostCount", Threshold=1.0)),
    Mutation("MON-02", "unhealthy-host alarm >= 1 on the Average (a host unhealthy half the minute: 0.5)",
             alarm_set("AWS/ApplicationELB", "UnHealthyHostCount", ComparisonOperator="GreaterThanOrEqualToThreshold",
                       Threshold=1.0, Statistic="Average")),
    Mutation("MON-03", "RDS CPU alarm at 90", setter(lambda s: alarm(s, "AWS/RDS", "CPUUtilization"), "Threshold", 90.0)),
    Mutation("MON-03", "RDS CPU alarm >= 80 over 10 minutes",
             alarm_set("AWS/RDS", "CPUUtilization", ComparisonOperator="GreaterThanOrEqualToThreshold",
                       EvaluationPeriods=10)),
    Mutation("MON-04", "free storage alarm at 5 %", setter(lambda s: alarm(s, "AWS/RDS", "FreeStorageSpace"),
                                                           "Threshold", 0.05 * 100 * 1024 ** 3)),
    Mutation("MON-05", "5xx alarm over 1 minute", setter(errors_alarm, "Period", 60)),
    Mutation("MON-05", "5xx alarm > 20", setter(errors_alarm, "Threshold", 20.0)),
    Mutation("MON-05", "5xx alarm >= 10 over 600 s", lambda s: errors_alarm(s).update(
        ComparisonOperator="GreaterThanOrEqualToThreshold", Period=600)),
    Mutation("MON-05", "5xx alarm on < 10", setter(errors_alarm, "ComparisonOperator", "LessThanThreshold")),
    Mutation("MON-05", "5xx alarm on the Average", setter(errors_alarm, "Statistic", "Average")),
    Mutation("MON-05", "5xx alarm needs 5 breaching minutes", lambda s: errors_alarm(s).update(
        Period=60, EvaluationPeriods=5, Threshold=2.0)),
    Mutation("MON-06", "healthy-host alarm at 0", setter(lambda s: alarm(s, "AWS/ApplicationELB", "HealthyHostCount"),
                                                         "Threshold", 0.0)),
    Mutation("MON-06", "healthy-host alarm <= 0 on the Average",
             alarm_set("AWS/ApplicationELB", "HealthyHostCount", ComparisonOperator="LessThanOrEqualToThreshold",
                       Threshold=0.0, Statistic="Average")),
    Mutation("MON-07", "no ECS memory alarm", drop_alarm("AWS/ECS", "MemoryUtilization")),
    Mutation("MON-07", "RDS connections alarm on the low side",
             alarm_set("AWS/RDS", "DatabaseConnections", ComparisonOperator="LessThanThreshold")),
    Mutation("MON-08", "an alarm notifies nobody", silence_one_alarm),
    Mutation("MON-08", "the topic has no subscription", unsubscribe_topics),
    Mutation("MON-09", "no dashboard", setter(parts, "dashboards", [])),
    Mutation("MON-10", "trail stopped", setter(lambda s: parts(s)["trails"][0], "IsLogging", False)),
    Mutation("TAG-01", "target group lost its Environment tag", untag_target_group),
    Mutation("DR-01", "latest restorable time an hour old", stale_restore_point),
    Mutation("DR-02", "last export 9 days old", old_export),
]

# Correct deployments as CDK v2's L2 constructs build them from the plan (ecs_patterns.
# ApplicationLoadBalancedFargateService, cloudwatch.Alarm's defaults, rds.DatabaseInstance's managed key).
CONFORMING = [
    Shape("NET-09", "CDK's S3 gateway endpoint, untagged, on the deployment's route tables", s3_gateway_endpoint),
    Shape("NET-09", "a database tagged only by the deployment's CloudFormation stack", db_in_the_stack),
    Shape("NET-09", "a Fargate task's network interface",
          interface("arn:aws:ecs:us-east-1:123456789012:attachment/0f3c2b1a-task", RequesterId="578734482556")),
    Shape("NET-09", "a secret rotation Lambda's network interface",
          interface("AWS Lambda VPC ENI-RotationSingleUser-1a2b", InterfaceType="lambda", RequesterId="AROA:x")),
    Shape("NET-09", "the load balancer's network interface",
          interface("ELB app/dougust-prod-alb/e0744a98d2244645", RequesterId="amazon-elb", Groups=[])),
    Shape("ALB-04", "CDK's target group on port 80, tasks registered on container port 3000",
          setter(target_group, "Port", 80)),
    Shape("ALB-04", "health checks on the tasks' port by number", setter(target_group, "HealthCheckPort", "3000")),
    Shape("MON-02", "unhealthy-host alarm >= 1 on the Maximum",
          alarm_set("AWS/ApplicationELB", "UnHealthyHostCount", ComparisonOperator="GreaterThanOrEqualToThreshold",
                    Threshold=1.0)),
    Shape("MON-03", "RDS CPU alarm >= 80 on one 5-minute Average (CDK's defaults)",
          alarm_set("AWS/RDS", "CPUUtilization", ComparisonOperator="GreaterThanOrEqualToThreshold", Period=300,
                    EvaluationPeriods=1)),
    Shape("MON-03", "RDS CPU alarm > 80 on 5 of 10 minutes",
          alarm_set("AWS/RDS", "CPUUtilization", EvaluationPeriods=10, DatapointsToAlarm=5)),
    Shape("MON-04", "free storage alarm <= 20 % on the Average",
          alarm_set("AWS/RDS", "FreeStorageSpace", ComparisonOperator="LessThanOrEqualToThreshold",
                    Statistic="Average")),
    Shape("MON-04", "free storage alarm at 20 GB (not GiB)", alarm_set("AWS/RDS", "FreeStorageSpace", Threshold=20e9)),
    Shape("MON-05", "5xx alarm >= 10 over 300 s (CDK's default operator)",
          setter(errors_alarm, "ComparisonOperator", "GreaterThanOrEqualToThreshold")),
    Shape("MON-05", "5xx alarm > 2 in any minute", lambda s: errors_alarm(s).update(Period=60, Threshold=2.0)),
    Shape("MON-06", "healthy-host alarm < 1 on the 5-minute Average (CDK's defaults)",
          alarm_set("AWS/ApplicationELB", "HealthyHostCount", Statistic="Average", Period=300)),
    Shape("MON-06", "healthy-host alarm <= 0 on the Minimum",
          alarm_set("AWS/ApplicationELB", "HealthyHostCount", ComparisonOperator="LessThanOrEqualToThreshold",
                    Threshold=0.0)),
    Shape("DB-09", "StorageEncrypted with AWS's managed key, no KmsKeyId reported", no_key_reported),
    Shape("DB-09", "the plan's customer-managed key, named by its id", lambda s: None,
          plan=f'expect = {{ kms_key = "{GOLDEN_KEY}" }}'),
    Shape("DB-09", "the CDK defaults above at once", the_cdk_shapes),
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
    assert run.summary["counts"]["pass"] == 62, run.summary["counts"]
    assert run.summary["counts"]["skip"] == 7 and run.summary["requirements_checked"] == 69  # the image checks
    assert run.summary["uncovered"] == []
    assert run.summary["api_calls"] == 0


def plan_with(tmp_path, rid: str, line: str | None) -> list[str]:
    """`--plan` options for a copy of the project's plan with `line` added to requirement `rid`'s block."""
    if line is None:
        return []
    text = (ROOT / "plan" / "dougust.toml").read_text()
    start = text.index(f'id = "{rid}"\n')
    end = text.find("\n\n", start)
    path = tmp_path / "plan.toml"
    path.write_text(text[:end] + "\n" + line + text[end:])
    return ["--plan", str(path)]


def run_on(golden: Snapshot, apply: Callable[[Snapshot], None], plan: str | None, rid: str, tmp_path, reports):
    snapshot = copy.deepcopy(golden)
    apply(snapshot)
    path = tmp_path / "mutated.json"
    path.write_text(json.dumps(snapshot))
    return run_suite("--snapshot", str(path), *plan_with(tmp_path, rid, plan), reports=reports)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: f"{m.rid}: {m.what}")
def test_mutation_fails_its_requirement_alone(mutation, golden, tmp_path, reports):
    run = run_on(golden, mutation.apply, mutation.plan, mutation.rid, tmp_path, reports)
    assert run.status(mutation.rid) in ("fail", "optional-fail"), f"{mutation.rid} is {run.status(mutation.rid)}"
    unrelated = run.ids_with(*FAILING) - {mutation.rid} - mutation.also
    assert not unrelated, f"unrelated requirements failed too: {sorted(unrelated)}"
    optional = load_plan(ROOT / "plan" / "dougust.toml").requirements[mutation.rid].optional_in("prod")
    assert (run.returncode == 0) is optional, "a failed enforced requirement must fail the run, an optional one not"


@pytest.mark.parametrize("shape", CONFORMING, ids=lambda m: f"{m.rid}: {m.what}")
def test_conforming_shape_passes(shape, golden, tmp_path, reports):
    run = run_on(golden, shape.apply, shape.plan, shape.rid, tmp_path, reports)
    assert run.status(shape.rid) == "pass", f"{shape.rid} is {run.status(shape.rid)}: {run.message(shape.rid)}"
    assert not run.ids_with(*FAILING), f"failed on a compliant shape: {sorted(run.ids_with(*FAILING))}"
    assert run.returncode == 0, run.stdout[-3000:]


def test_a_named_key_the_target_does_not_report_is_not_observable(golden, tmp_path, reports):
    run = run_on(golden, no_key_reported, f'expect = {{ kms_key = "{GOLDEN_KEY}" }}', "DB-09", tmp_path, reports)
    assert run.status("DB-09") == "skip", run.status("DB-09")
    assert "reports no KmsKeyId" in run.message("DB-09") and GOLDEN_KEY in run.message("DB-09")


# The alarm rule every alarm requirement shares, on its own: (condition, alarm, why it misses or None).
ERRORS = AlarmCondition("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", ">", 10.0, 300, total=True, whole=True)
CPU = AlarmCondition("AWS/RDS", "CPUUtilization", ">", 80.0, 300)
HEALTHY = AlarmCondition("AWS/ApplicationELB", "HealthyHostCount", "<", 1.0, whole=True)
UNHEALTHY = AlarmCondition("AWS/ApplicationELB", "UnHealthyHostCount", ">", 0.0, whole=True)
FREE = AlarmCondition("AWS/RDS", "FreeStorageSpace", "<", 20e9)
HIGH = AlarmCondition("AWS/ECS", "MemoryUtilization", ">")


def cw(op: str, threshold: float, period: int = 300, periods: int = 1, statistic: str = "Average",
       datapoints: int | None = None) -> dict[str, Any]:
    names = {">": "GreaterThanThreshold", ">=": "GreaterThanOrEqualToThreshold", "<": "LessThanThreshold",
             "<=": "LessThanOrEqualToThreshold"}
    alarm = {"ComparisonOperator": names.get(op, op), "Threshold": threshold, "Period": period,
             "EvaluationPeriods": periods, "Statistic": statistic}
    return alarm | ({"DatapointsToAlarm": datapoints} if datapoints else {})


@pytest.mark.parametrize("condition, alarm, misses", [
    (ERRORS, cw(">", 10, statistic="Sum"), None),
    (ERRORS, cw(">=", 10, statistic="Sum"), None),  # CDK's default operator
    (ERRORS, cw(">", 5, statistic="Sum"), None),
    (ERRORS, cw(">", 2, period=60, statistic="Sum"), None),  # 11 in 5 minutes: 3 or more in one of them
    (ERRORS, cw(">", 2, period=60, periods=5, datapoints=1, statistic="Sum"), None),
    (ERRORS, cw(">", 20, statistic="Sum"), "later than the plan's"),
    (ERRORS, cw(">=", 12, statistic="Sum"), "later than the plan's"),
    (ERRORS, cw(">", 10, period=60, statistic="Sum"), "per 60 s, later than the plan's"),
    (ERRORS, cw(">", 3, period=60, statistic="Sum"), "later than the plan's"),
    (ERRORS, cw(">", 10, period=600, statistic="Sum"), "longer than the plan's 300 s"),
    (ERRORS, cw(">", 1, period=120, statistic="Sum"), "do not divide the plan's 300 s"),
    (ERRORS, cw(">", 2, period=60, periods=5, statistic="Sum"), "needs 5 breaching periods"),
    (ERRORS, cw("<", 10, statistic="Sum"), "the other side"),
    (ERRORS, cw(">", 10, statistic="Average"), "a Sum"),
    (CPU, cw(">", 80, period=60, periods=5), None),
    (CPU, cw(">=", 80), None),
    (CPU, cw(">", 70, statistic="Maximum"), None),
    (CPU, cw(">", 80, period=60, periods=10, datapoints=5), None),
    (CPU, cw(">", 80, period=60, periods=10), "fires after 600 s"),
    (CPU, cw(">", 90), "later than the plan's"),
    (CPU, cw(">", 80, period=600), "fires after 600 s"),
    (CPU, cw(">", 80, statistic="SampleCount"), "SampleCount"),
    (CPU, cw("LessThanLowerOrGreaterThanUpperThreshold", 2), "not a threshold"),
    (CPU, {"ComparisonOperator": "GreaterThanThreshold", "Threshold": 80, "Statistic": "Average"}, "no period"),
    (CPU, cw(">", 80) | {"Threshold": None}, "no threshold"),
    (HEALTHY, cw("<", 1, statistic="Minimum"), None),
    (HEALTHY, cw("<", 1), None),  # CDK's default statistic; the plan names none and no window
    (HEALTHY, cw("<=", 0, statistic="Minimum"), None),  # whole hosts: "<= 0" is "< 1"
    (HEALTHY, cw("<", 2, statistic="Minimum"), None),
    (HEALTHY, cw("<=", 0), "later than the plan's"),  # an Average of 0.5 is below 1, not at 0
    (HEALTHY, cw("<", 0.5, statistic="Minimum"), None),  # whole hosts: below 0.5 is below 1
    (HEALTHY, cw("<", 0.5), "later than the plan's"),
    (HEALTHY, cw("<", 1, statistic="Sum"), "Sum"),
    (HEALTHY, cw(">", 1, statistic="Minimum"), "the other side"),
    (UNHEALTHY, cw(">", 0, statistic="Maximum"), None),
    (UNHEALTHY, cw(">=", 1, statistic="Maximum"), None),
    (UNHEALTHY, cw(">", 0), None),
    (UNHEALTHY, cw(">=", 1), "later than the plan's"),
    (UNHEALTHY, cw(">", 1, statistic="Maximum"), "later than the plan's"),
    (FREE, cw("<", 20e9, statistic="Minimum"), None),
    (FREE, cw("<=", 20e9, statistic="Minimum"), None),
    (FREE, cw("<", 30e9), None),  # a higher floor fires earlier
    (FREE, cw("<", 19e9, statistic="Minimum"), "later than the plan's"),
    (FREE, cw("<", 20, statistic="Minimum"), "later than the plan's"),  # 20 read as bytes, not percent
    (HIGH, cw(">", 85, period=60, periods=5), None),
    (HIGH, cw(">=", 99), None),
    (HIGH, cw("<", 10), "the other side"),
])
def test_alarm_rule(condition, alarm, misses):
    found = alarm_misses(alarm, condition)
    assert (found is None) if misses is None else (found is not None and misses in found), found


def test_a_key_the_plan_names_by_alias_is_one_line_naming_the_fix(golden, tmp_path, reports):
    run = run_on(golden, lambda s: None, 'expect = { kms_key = "alias/dougust-rds" }', "DB-09", tmp_path, reports)
    assert run.status("DB-09") == "fail"
    assert run.message("DB-09") == ("the plan names the KMS key by alias (alias/dougust-rds), which the instance "
                                     "does not report; give kms_key as the key's ARN or id in the plan")
