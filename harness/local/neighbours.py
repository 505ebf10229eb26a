"""Unrelated resources in the same account: what a shared account holds besides the plan's environments.

Discovery must leave them out and must not pay for them: `scripts/bench-discovery` measures the snapshot's
calls with 0, 50 and 150 groups of them, and the self-tests check that prod's and dev's verdicts do not
move when they are there. Each group is one small deployment that breaks the plan everywhere (public,
unencrypted, single-AZ, no lifecycle, no redirect, no alarm action), under a label that is close to the
plan's without being it:

- another project (`Project=<other>`, the plan's environment name),
- a look-alike project (`Project=<project>-admin`) and secrets under `<env>/<project>-admin/`,
- a look-alike environment (`Environment=prod-old`, `Environment=dev-old`),
- no tags at all, and secrets named `<env>/<project>-<n>` (the prefix without its separator).

Only emulators are written to: the caller hands in clients for one (the bench's moto server, a test's).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.plan import Plan

KINDS = ("other-project", "lookalike-project", "lookalike-prod", "lookalike-dev", "untagged")
OTHER_PROJECT = "acme-billing"


def group_tags(plan: Plan, index: int) -> dict[str, str]:
    """The tags of group `index`, in the plan's tag keys; {} for an untagged group."""
    project_key, environment_key = plan.tags("prod")  # the plan's tag keys, in that order
    project, kind = plan.project, KINDS[index % len(KINDS)]
    labels = {
        "other-project": (OTHER_PROJECT, "prod"),
        "lookalike-project": (f"{project}-admin", "prod"),
        "lookalike-prod": (project, "prod-old"),
        "lookalike-dev": (project, "dev-old"),
    }
    if kind not in labels:
        return {}
    return {project_key: labels[kind][0], environment_key: labels[kind][1]}


def secret_name(plan: Plan, index: int) -> str:
    """A name next to the plan's secret prefix `<env>/<project>/`, never under it."""
    project, kind = plan.project, KINDS[index % len(KINDS)]
    return {
        "other-project": f"prod/{OTHER_PROJECT}/database-url-{index}",
        "lookalike-project": f"prod/{project}-admin/database-url-{index}",
        "lookalike-prod": f"prod-old/{project}/database-url-{index}",
        "lookalike-dev": f"dev/{project}-admin/database-url-{index}",
        "untagged": f"prod/{project}-{index}/database-url",
    }[kind]


def make_groups(client: Callable[[str], Any], plan: Plan, first: int, count: int) -> None:
    """Create groups `first` to `first + count - 1`, numbered so that a second call grows the account
    (0-49, then 50-149)."""
    for index in range(first, first + count):
        _group(client, plan, index)


def _group(client: Callable[[str], Any], plan: Plan, index: int) -> None:
    tags = group_tags(plan, index)
    name = f"g{index:03d}-{KINDS[index % len(KINDS)]}"
    key_value = [{"Key": k, "Value": v} for k, v in tags.items()]
    lower = [{"key": k, "value": v} for k, v in tags.items()]
    ec2, rds, ecs, elbv2 = client("ec2"), client("rds"), client("ecs"), client("elbv2")
    ecr, secrets, cloudwatch = client("ecr"), client("secretsmanager"), client("cloudwatch")

    def spec(kind: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": key_value}] if tags else []

    vpc = ec2.create_vpc(CidrBlock="10.200.0.0/16", TagSpecifications=spec("vpc"))["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.200.{i}.0/24", AvailabilityZone=zone,
                                 TagSpecifications=spec("subnet"))["Subnet"]["SubnetId"]
               for i, zone in enumerate(zones)]
    group = ec2.create_security_group(GroupName=f"{name}-open", Description="open to the world", VpcId=vpc,
                                      TagSpecifications=spec("security-group"))["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])

    db = rds.create_db_instance(DBInstanceIdentifier=f"{name}-db", Engine="postgres", EngineVersion="13",
                                DBInstanceClass="db.t3.micro", AllocatedStorage=20, MasterUsername="admin",
                                MasterUserPassword="not-a-secret-1", MultiAZ=False, StorageEncrypted=False,
                                PubliclyAccessible=True, BackupRetentionPeriod=0, Tags=key_value)["DBInstance"]
    rds.create_db_snapshot(DBSnapshotIdentifier=f"{name}-snap", DBInstanceIdentifier=db["DBInstanceIdentifier"],
                           Tags=key_value)

    repo = ecr.create_repository(repositoryName=f"{name}/backend", imageTagMutability="MUTABLE",
                                 imageScanningConfiguration={"scanOnPush": False},
                                 **({"tags": key_value} if tags else {}))["repository"]

    alb = elbv2.create_load_balancer(Name=f"{name}-alb", Subnets=subnets, SecurityGroups=[group],
                                     Scheme="internet-facing", Type="application",
                                     **({"Tags": key_value} if tags else {}))["LoadBalancers"][0]
    target_group = elbv2.create_target_group(Name=f"{name}-tg", Protocol="HTTP", Port=80, VpcId=vpc,
                                             TargetType="ip", **({"Tags": key_value} if tags else {})
                                             )["TargetGroups"][0]
    elbv2.create_listener(LoadBalancerArn=alb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group["TargetGroupArn"]}])

    cluster = ecs.create_cluster(clusterName=f"{name}-cluster", **({"tags": lower} if tags else {}))["cluster"]
    task = ecs.register_task_definition(
        family=f"{name}-backend", requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256",
        memory="512", containerDefinitions=[{
            "name": "backend", "image": f"{repo['repositoryUri']}:latest", "essential": True, "user": "root",
            "portMappings": [{"containerPort": 80, "protocol": "tcp"}],
            "environment": [{"name": "DATABASE_PASSWORD", "value": "in-plain-sight"}]}],
        **({"tags": lower} if tags else {}))["taskDefinition"]
    ecs.create_service(cluster=cluster["clusterArn"], serviceName=f"{name}-backend",
                       taskDefinition=task["taskDefinitionArn"], desiredCount=1, launchType="FARGATE",
                       networkConfiguration={"awsvpcConfiguration": {"subnets": subnets, "securityGroups": [group],
                                                                     "assignPublicIp": "ENABLED"}},
                       loadBalancers=[{"targetGroupArn": target_group["TargetGroupArn"], "containerName": "backend",
                                       "containerPort": 80}],
                       **({"tags": lower} if tags else {}))

    secrets.create_secret(Name=secret_name(plan, index), SecretString="postgres://admin:not-a-secret-1@db/app",
                          **({"Tags": key_value} if tags else {}))
    # Alarms naming the group's own resources, with nowhere to send their state.
    cloudwatch.put_metric_alarm(AlarmName=f"{name}-db-cpu", Namespace="AWS/RDS", MetricName="CPUUtilization",
                                Dimensions=[{"Name": "DBInstanceIdentifier", "Value": db["DBInstanceIdentifier"]}],
                                Statistic="Average", Period=300, EvaluationPeriods=1, Threshold=99,
                                ComparisonOperator="GreaterThanThreshold")
    cloudwatch.put_metric_alarm(AlarmName=f"{name}-cluster-cpu", Namespace="AWS/ECS", MetricName="CPUUtilization",
                                Dimensions=[{"Name": "ClusterName", "Value": cluster["clusterName"]}],
                                Statistic="Average", Period=300, EvaluationPeriods=1, Threshold=99,
                                ComparisonOperator="GreaterThanThreshold")
