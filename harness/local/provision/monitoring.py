"""Monitoring (MON-02..10): the alarm topic and its subscribed queue, the alarms on the load balancer,
database and service, the overview dashboard, and the CloudTrail trail."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.compliance.inventory import elb_metric_id
from harness.local.provision.context import Run, absent_on, first
from harness.local.provision.iam import policy_document

# Choices the plan leaves open, each a reasonable production default.
ECS_CPU_ALARM = 85.0
ECS_MEMORY_ALARM = 85.0
DB_CONNECTIONS_ALARM = 100.0


def alarm_topic(run: Run) -> None:
    """The topic every alarm notifies (MON-08), with a queue subscribed: unlike e-mail, a queue
    subscription is confirmed at once, on AWS as on the emulators."""
    sns, sqs = run.client("sns"), run.client("sqs")
    name = run.name("alarms")
    topic_arn = run.arn("sns", name)

    def find_topic() -> str | None:
        return absent_on(lambda: sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]["TopicArn"], "NotFound")

    def create_topic() -> str:
        return sns.create_topic(Name=name, Tags=run.tag_list())["TopicArn"]

    topic = run.ensure("sns topic", find_topic, create_topic, lambda t: t)

    def find_queue() -> str | None:
        return absent_on(lambda: sqs.get_queue_url(QueueName=name)["QueueUrl"],
                         "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")

    def create_queue() -> str:
        policy = policy_document({"Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
                                  "Action": "sqs:SendMessage", "Resource": run.arn("sqs", name),
                                  "Condition": {"ArnEquals": {"aws:SourceArn": topic}}})
        return sqs.create_queue(QueueName=name, Attributes={"Policy": policy},
                                tags=run.plan.tags(run.env))["QueueUrl"]

    run.ensure("sqs queue", find_queue, create_queue, lambda url: url.rsplit("/", 1)[1])

    def find_subscription() -> dict[str, Any] | None:
        return first(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"])

    def create_subscription() -> dict[str, Any]:
        return sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=run.arn("sqs", name),
                             ReturnSubscriptionArn=True)

    run.ensure("sns subscription", find_subscription, create_subscription, lambda s: s["SubscriptionArn"])
    run.built["alarm topic"] = topic


@dataclass(frozen=True)
class _Alarm:
    """One metric alarm; each notifies the alarm topic on ALARM and on OK."""

    suffix: str
    namespace: str
    metric: str
    dimensions: dict[str, str]
    comparison: str
    threshold: float
    period: int = 60
    periods: int = 1
    statistic: str = "Average"
    missing_data: str = "notBreaching"


def _alarms(run: Run, alarms: list[_Alarm]) -> None:
    cw = run.client("cloudwatch")
    topic = run.need("alarm topic")
    names = [run.name(a.suffix) for a in alarms]
    present = {a["AlarmName"] for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    for alarm, name in zip(alarms, names):
        def create(alarm: _Alarm = alarm, name: str = name) -> str:
            cw.put_metric_alarm(
                AlarmName=name, Namespace=alarm.namespace, MetricName=alarm.metric,
                Dimensions=[{"Name": k, "Value": v} for k, v in alarm.dimensions.items()],
                Statistic=alarm.statistic, Period=alarm.period, EvaluationPeriods=alarm.periods,
                Threshold=alarm.threshold, ComparisonOperator=alarm.comparison,
                TreatMissingData=alarm.missing_data, AlarmActions=[topic], OKActions=[topic], Tags=run.tag_list())
            return name

        run.ensure("cloudwatch alarm", lambda name=name: name if name in present else None, create, lambda n: n)


def _balancer_dimensions(run: Run) -> tuple[dict[str, str], dict[str, str]]:
    alb = elb_metric_id(run.need("load balancer")["LoadBalancerArn"])
    group = elb_metric_id(run.need("target group")["TargetGroupArn"])
    return {"LoadBalancer": alb}, {"TargetGroup": group, "LoadBalancer": alb}


def load_balancer_alarms(run: Run) -> None:
    """MON-02 (unhealthy targets), MON-05 (ELB 5xx), MON-06 (no healthy target)."""
    alb, group = _balancer_dimensions(run)
    errors, healthy = run.expect("MON-05"), run.expect("MON-06")
    _alarms(run, [
        _Alarm("ecs-unhealthy-targets", "AWS/ApplicationELB", "UnHealthyHostCount", group,
               "GreaterThanThreshold", 0.0, periods=3, statistic="Maximum"),
        _Alarm("alb-5xx", "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", alb, "GreaterThanThreshold",
               errors["threshold"], period=errors["window_s"], statistic="Sum"),
        _Alarm("alb-no-healthy-targets", "AWS/ApplicationELB", "HealthyHostCount", group, "LessThanThreshold",
               healthy["threshold"], statistic="Minimum", missing_data="breaching"),
    ])


def database_alarms(run: Run) -> None:
    """MON-03 (CPU over the window), MON-04 (free storage below the ratio), MON-07 (connections)."""
    database = run.need("database")
    dims = {"DBInstanceIdentifier": database["DBInstanceIdentifier"]}
    cpu, storage = run.expect("MON-03"), run.expect("MON-04")
    free_bytes = storage["free_ratio"] * database["AllocatedStorage"] * 1024 ** 3
    _alarms(run, [
        _Alarm("rds-cpu-high", "AWS/RDS", "CPUUtilization", dims, "GreaterThanThreshold", cpu["threshold"],
               periods=cpu["window_s"] // 60),
        _Alarm("rds-free-storage-low", "AWS/RDS", "FreeStorageSpace", dims, "LessThanThreshold", free_bytes,
               period=300, statistic="Minimum"),
        _Alarm("rds-connections-high", "AWS/RDS", "DatabaseConnections", dims, "GreaterThanThreshold",
               DB_CONNECTIONS_ALARM, periods=5),
    ])


def service_alarms(run: Run) -> None:
    """MON-07: the service's CPU and memory."""
    dims = {"ClusterName": run.need("cluster"), "ServiceName": run.need("service")}
    _alarms(run, [
        _Alarm("ecs-cpu-high", "AWS/ECS", "CPUUtilization", dims, "GreaterThanThreshold", ECS_CPU_ALARM, periods=5),
        _Alarm("ecs-memory-high", "AWS/ECS", "MemoryUtilization", dims, "GreaterThanThreshold", ECS_MEMORY_ALARM,
               periods=5),
    ])


def dashboard(run: Run) -> None:
    """MON-09: one graph per part of the deployment that this endpoint offers."""
    cw = run.client("cloudwatch")
    name = run.name("overview")
    graphs: list[tuple[str, list[list[str]]]] = []
    if "service" in run.built:
        ecs = ["ClusterName", run.built["cluster"], "ServiceName", run.built["service"]]
        graphs.append(("ECS service", [["AWS/ECS", "CPUUtilization", *ecs], ["AWS/ECS", "MemoryUtilization", *ecs]]))
    if "load balancer" in run.built:
        alb = ["LoadBalancer", elb_metric_id(run.built["load balancer"]["LoadBalancerArn"])]
        graphs.append(("Load balancer", [["AWS/ApplicationELB", "RequestCount", *alb],
                                         ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", *alb]]))
    if "database" in run.built:
        db = ["DBInstanceIdentifier", run.built["database"]["DBInstanceIdentifier"]]
        graphs.append(("Database", [["AWS/RDS", "CPUUtilization", *db], ["AWS/RDS", "DatabaseConnections", *db],
                                    ["AWS/RDS", "FreeStorageSpace", *db]]))
    body = {"widgets": [{"type": "metric", "x": 0, "y": 6 * i, "width": 24, "height": 6,
                         "properties": {"title": title, "metrics": metrics, "region": run.region, "period": 300}}
                        for i, (title, metrics) in enumerate(graphs)]}

    def find() -> str | None:
        listed = cw.list_dashboards(DashboardNamePrefix=name)["DashboardEntries"]
        return next((d["DashboardName"] for d in listed if d["DashboardName"] == name), None)

    def create() -> str:
        cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
        return name

    run.ensure("cloudwatch dashboard", find, create, lambda d: d)


def trail(run: Run) -> None:
    """MON-10: multi-region, validated, logging."""
    cloudtrail = run.client("cloudtrail")
    name = run.name("trail")
    bucket = run.need("log bucket")

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: cloudtrail.get_trail(Name=name)["Trail"], "TrailNotFoundException")

    def create() -> dict[str, Any]:
        made = cloudtrail.create_trail(Name=name, S3BucketName=bucket, S3KeyPrefix="cloudtrail",
                                       IsMultiRegionTrail=True, IncludeGlobalServiceEvents=True,
                                       EnableLogFileValidation=True, TagsList=run.tag_list())
        cloudtrail.start_logging(Name=name)
        return made

    run.ensure("cloudtrail trail", find, create, lambda t: t["Name"])
