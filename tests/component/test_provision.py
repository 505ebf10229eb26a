"""The local provisioner against a real moto server: idempotent re-runs, environments that do not touch
each other.

moto keeps its state per process and per account, whatever server serves it, so each endpoint here is an
account of its own: fresh, and out of the way of anything else using moto in the same process.
An endpoint without some services is LocalStack itself: tests/test_localstack.py.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from harness.local.provision import provision
from harness.target import is_unavailable
from harness.plan import Plan, load_plan

PLAN_FILE = Path(__file__).resolve().parents[2] / "plan" / "dougust.toml"
REGION = "us-east-1"
ACCOUNT = "100000000001"

Clients = Callable[[str], Any]



def _clients(endpoint: str, account: str) -> Clients:
    """Clients for one moto account."""
    cache: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in cache:
            made = boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                                aws_access_key_id="testing", aws_secret_access_key="testing")
            made.meta.events.register("before-sign", _in_account(account))
            cache[service] = made
        return cache[service]

    return client


def _in_account(account: str) -> Callable[..., None]:
    def handler(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account
    return handler


def _census(client: Clients) -> dict[str, int]:
    """How many of each resource type the whole endpoint holds, whoever made them and whatever their
    names: a re-run that creates anything changes one of these numbers."""
    ec2, elbv2, ecs, rds = client("ec2"), client("elbv2"), client("ecs"), client("rds")
    balancers = elbv2.describe_load_balancers()["LoadBalancers"]
    clusters = ecs.list_clusters()["clusterArns"]
    return {
        "vpcs": len(ec2.describe_vpcs()["Vpcs"]),
        "subnets": len(ec2.describe_subnets()["Subnets"]),
        "internet gateways": len(ec2.describe_internet_gateways()["InternetGateways"]),
        "nat gateways": len(ec2.describe_nat_gateways()["NatGateways"]),
        "elastic ips": len(ec2.describe_addresses()["Addresses"]),
        "route tables": len(ec2.describe_route_tables()["RouteTables"]),
        "security groups": len(ec2.describe_security_groups()["SecurityGroups"]),
        "flow logs": len(ec2.describe_flow_logs()["FlowLogs"]),
        "buckets": len(client("s3").list_buckets()["Buckets"]),
        "kms keys": len(client("kms").list_keys()["Keys"]),
        "db instances": len(rds.describe_db_instances()["DBInstances"]),
        "db snapshots": len(rds.describe_db_snapshots()["DBSnapshots"]),
        "db exports": len(rds.describe_export_tasks()["ExportTasks"]),
        "secrets": len(client("secretsmanager").list_secrets()["SecretList"]),
        "repositories": len(client("ecr").describe_repositories()["repositories"]),
        "log groups": len(client("logs").describe_log_groups()["logGroups"]),
        "roles": len(client("iam").list_roles()["Roles"]),
        "load balancers": len(balancers),
        "target groups": len(elbv2.describe_target_groups()["TargetGroups"]),
        "listeners": sum(len(elbv2.describe_listeners(LoadBalancerArn=b["LoadBalancerArn"])["Listeners"])
                         for b in balancers),
        "certificates": len(client("acm").list_certificates()["CertificateSummaryList"]),
        "web acls": len(client("wafv2").list_web_acls(Scope="REGIONAL")["WebACLs"]),
        "clusters": len(clusters),
        "services": sum(len(ecs.list_services(cluster=c)["serviceArns"]) for c in clusters),
        "task definitions": len(ecs.list_task_definitions()["taskDefinitionArns"]),
        "scalable targets": len(client("application-autoscaling")
                                .describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]),
        "scaling policies": len(client("application-autoscaling")
                                .describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"]),
        "topics": len(client("sns").list_topics()["Topics"]),
        "subscriptions": len(client("sns").list_subscriptions()["Subscriptions"]),
        "queues": len(client("sqs").list_queues().get("QueueUrls", [])),
        "alarms": len(client("cloudwatch").describe_alarms()["MetricAlarms"]),
        "dashboards": len(client("cloudwatch").list_dashboards()["DashboardEntries"]),
        "trails": len(client("cloudtrail").describe_trails()["trailList"]),
    }


def _vpcs_tagged(client: Clients, plan: Plan, env: str) -> list[str]:
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in plan.tags(env).items()]
    return [v["VpcId"] for v in client("ec2").describe_vpcs(Filters=filters)["Vpcs"]]


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan(PLAN_FILE)


@pytest.fixture(scope="module")
def server(moto_endpoint: str) -> str:
    return moto_endpoint


@pytest.fixture(scope="module")
def endpoint(server: str) -> Clients:
    return _clients(server, ACCOUNT)


@pytest.fixture(scope="module")
def dev(endpoint: Clients, plan: Plan) -> dict[str, Any]:
    """dev provisioned twice, with the endpoint counted before and after each run."""
    before = _census(endpoint)
    first = provision(endpoint, plan, "dev")
    after_first = _census(endpoint)
    second = provision(endpoint, plan, "dev")
    return {"first": first, "second": second, "before": before, "after_first": after_first,
            "after_second": _census(endpoint), "vpcs": _vpcs_tagged(endpoint, plan, "dev")}


@pytest.fixture(scope="module")
def prod(endpoint: Clients, plan: Plan, dev: dict[str, Any]) -> dict[str, Any]:
    """prod provisioned next to dev, then dev provisioned once more."""
    report = provision(endpoint, plan, "prod")
    return {"report": report, "dev_again": provision(endpoint, plan, "dev"),
            "dev_vpcs": _vpcs_tagged(endpoint, plan, "dev"), "prod_vpcs": _vpcs_tagged(endpoint, plan, "prod")}


def test_moto_offers_every_service_so_nothing_is_skipped(dev: dict[str, Any]) -> None:
    assert dev["first"].skipped == {}
    assert dev["first"].created


def test_rerun_creates_nothing(dev: dict[str, Any]) -> None:
    assert dev["second"].created == []
    assert dev["second"].skipped == {}


def test_rerun_finds_exactly_what_the_first_run_created(dev: dict[str, Any]) -> None:
    assert sorted(dev["second"].existing) == sorted(dev["first"].created)


def test_rerun_adds_no_resource_of_any_type(dev: dict[str, Any]) -> None:
    assert dev["after_second"] == dev["after_first"]
    assert len(dev["vpcs"]) == 1


# Alarms: 8 of the plan's + 4 that the 2 target-tracking policies make (AWS does so too); secrets: 3 of
# the plan's + the master secret RDS manages.
@pytest.mark.parametrize("resource, count", [("vpcs", 1), ("subnets", 6), ("nat gateways", 2), ("elastic ips", 2),
                                             ("alarms", 8 + 4), ("secrets", 3 + 1), ("db instances", 1)])
def test_one_environment_adds_the_planned_number(dev: dict[str, Any], resource: str, count: int) -> None:
    assert dev["after_first"][resource] - dev["before"][resource] == count


def test_prod_gets_its_own_environment(prod: dict[str, Any], dev: dict[str, Any]) -> None:
    assert prod["report"].skipped == {}
    assert len(prod["prod_vpcs"]) == 1
    assert prod["prod_vpcs"] != prod["dev_vpcs"]
    assert not set(prod["report"].created) & set(dev["first"].created)
    assert prod["report"].existing == []


def test_prod_leaves_dev_untouched(prod: dict[str, Any], dev: dict[str, Any]) -> None:
    assert prod["dev_vpcs"] == dev["vpcs"]
    assert prod["dev_again"].created == []
    assert sorted(prod["dev_again"].existing) == sorted(dev["first"].created)


def _by_environment(resources: list[dict[str, Any]], tags_key: str, key: str = "Key",
                    value: str = "Value") -> dict[str, dict[str, Any]]:
    return {next(t[value] for t in r[tags_key] if t[key] == "Environment"): r for r in resources}


def test_each_environment_gets_its_own_plan_values(prod: dict[str, Any], endpoint: Clients, plan: Plan) -> None:
    ecs = endpoint("ecs")
    databases = _by_environment(endpoint("rds").describe_db_instances()["DBInstances"], "TagList")
    clusters = ecs.describe_clusters(clusters=ecs.list_clusters()["clusterArns"], include=["TAGS"])["clusters"]
    services = {env: ecs.describe_services(cluster=c["clusterArn"],
                                           services=ecs.list_services(cluster=c["clusterArn"])["serviceArns"])
                for env, c in _by_environment(clusters, "tags", "key", "value").items()}
    for env in ("dev", "prod"):
        expected = plan.requirements["DB-03"].expected(env), plan.requirements["ECS-09"].expected(env)
        assert databases[env]["DBInstanceClass"] == expected[0]["instance_class"]
        assert services[env]["services"][0]["desiredCount"] == expected[1]["desired_count"]


@pytest.mark.parametrize("exc, expected", [
    (ClientError({"Error": {"Code": "InternalFailure", "Message": "x"},
                  "ResponseMetadata": {"HTTPStatusCode": 501}}, "DescribeDBInstances"), True),
    (ClientError({"Error": {"Code": "InternalFailure", "Message": "API for service 'ecs' not yet implemented"},
                  "ResponseMetadata": {"HTTPStatusCode": 500}}, "ListClusters"), True),
    (ClientError({"Error": {"Code": "NotImplemented", "Message": "x"},
                  "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutBucketLogging"), True),
    (ClientError({"Error": {"Code": "InternalFailure", "Message": "boom"},
                  "ResponseMetadata": {"HTTPStatusCode": 500}}, "ListClusters"), False),
    (ClientError({"Error": {"Code": "AccessDenied", "Message": "no"},
                  "ResponseMetadata": {"HTTPStatusCode": 403}}, "DescribeVpcs"), False),
    (ValueError("not an AWS error"), False),
])
def test_is_unavailable_tells_a_missing_service_from_a_failed_call(exc: BaseException, expected: bool) -> None:
    assert is_unavailable(exc) is expected
