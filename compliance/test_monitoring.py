"""§7 Monitoring & Logging, the Recommended Alarms and audit logging."""
from __future__ import annotations

import pytest

from harness.facts import alarm_window_s, alarms_on, the_one

ABOVE = ("GreaterThanThreshold", "GreaterThanOrEqualToThreshold")
BELOW = ("LessThanThreshold", "LessThanOrEqualToThreshold")


def _summary(alarms):
    return [{k: a.get(k) for k in ("AlarmName", "Namespace", "MetricName", "Statistic", "ComparisonOperator",
                                   "Threshold", "Period", "EvaluationPeriods", "Dimensions", "AlarmActions")}
            for a in alarms]


def unhealthy_service_alarms(alarms, **_):
    """MON-02: unhealthy targets above zero, or running tasks below the desired count."""
    unhealthy = [a for a in alarms_on(alarms, "AWS/ApplicationELB", "UnHealthyHostCount")
                 if a.get("ComparisonOperator") in ABOVE and a.get("Threshold", 1) <= 1]
    running = [a for a in alarms_on(alarms, "ECS/ContainerInsights", "RunningTaskCount")
               if a.get("ComparisonOperator") in BELOW]
    return unhealthy + running


def rds_cpu_alarms(alarms, expect, **_):
    return [a for a in alarms_on(alarms, "AWS/RDS", "CPUUtilization")
            if a.get("ComparisonOperator") in ABOVE and a.get("Threshold") == expect["threshold"]
            and alarm_window_s(a) == expect["window_s"]]


def rds_storage_alarms(alarms, expect, allocated_gb, **_):
    allocated = allocated_gb * 1024 ** 3
    return [a for a in alarms_on(alarms, "AWS/RDS", "FreeStorageSpace")
            if a.get("ComparisonOperator") in BELOW
            and abs(a.get("Threshold", 0) / allocated - expect["free_ratio"]) <= expect["tolerance"]]


def alb_5xx_alarms(alarms, expect, **_):
    return [a for a in alarms_on(alarms, "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count")
            if a.get("ComparisonOperator") == "GreaterThanThreshold" and a.get("Threshold") == expect["threshold"]
            and a.get("Statistic") == "Sum" and alarm_window_s(a) == expect["window_s"]]


def healthy_hosts_alarms(alarms, expect, **_):
    return [a for a in alarms_on(alarms, "AWS/ApplicationELB", "HealthyHostCount")
            if a.get("ComparisonOperator") == "LessThanThreshold" and a.get("Threshold") == expect["threshold"]]


def capacity_alarms(alarms, **_):
    """MON-07: one alarm each on ECS CPU, ECS memory and RDS connections, all on the high side."""
    found = {}
    for namespace, metric in (("AWS/ECS", "CPUUtilization"), ("AWS/ECS", "MemoryUtilization"),
                              ("AWS/RDS", "DatabaseConnections")):
        found[f"{namespace} {metric}"] = [a for a in alarms_on(alarms, namespace, metric)
                                          if a.get("ComparisonOperator") in ABOVE]
    return found


PLAN_ALARMS = {"MON-02": unhealthy_service_alarms, "MON-03": rds_cpu_alarms, "MON-04": rds_storage_alarms,
               "MON-05": alb_5xx_alarms, "MON-06": healthy_hosts_alarms}


def _allocated(db_instances):
    return the_one(db_instances, "RDS instance")["AllocatedStorage"]


@pytest.mark.requirement("MON-01")
def test_log_group_retention(log_groups, evidence):
    evidence("log groups", log_groups)
    group = the_one(log_groups, "app log group")
    assert group.get("retentionInDays"), f"log group {group['logGroupName']} keeps logs forever"


@pytest.mark.requirement("MON-02")
def test_alarm_service_unhealthy(alarms, evidence):
    found = unhealthy_service_alarms(alarms)
    evidence("matching alarms", _summary(found))
    assert found, "no alarm on unhealthy targets (> 0) or running tasks below desired"


@pytest.mark.requirement("MON-03")
def test_alarm_rds_cpu(alarms, expect, evidence):
    found = rds_cpu_alarms(alarms, expect)
    evidence("RDS CPU alarms", _summary(alarms_on(alarms, "AWS/RDS", "CPUUtilization")))
    assert found, f"no alarm on RDS CPUUtilization > {expect['threshold']} over {expect['window_s']} s"


@pytest.mark.requirement("MON-04")
def test_alarm_rds_free_storage(alarms, db_instances, expect, evidence):
    found = rds_storage_alarms(alarms, expect, _allocated(db_instances))
    evidence("RDS storage alarms", _summary(alarms_on(alarms, "AWS/RDS", "FreeStorageSpace")))
    assert found, f"no alarm on RDS FreeStorageSpace below {expect['free_ratio']:.0%} of the allocated storage"


@pytest.mark.requirement("MON-05")
def test_alarm_alb_5xx(alarms, expect, evidence):
    found = alb_5xx_alarms(alarms, expect)
    evidence("ALB 5xx alarms", _summary(alarms_on(alarms, "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count")))
    assert found, f"no alarm on ALB 5xx (Sum) > {expect['threshold']} in {expect['window_s']} s"


@pytest.mark.requirement("MON-06")
def test_alarm_healthy_hosts(alarms, expect, evidence):
    found = healthy_hosts_alarms(alarms, expect)
    evidence("healthy host alarms", _summary(alarms_on(alarms, "AWS/ApplicationELB", "HealthyHostCount")))
    assert found, f"no alarm on HealthyHostCount < {expect['threshold']}"


@pytest.mark.requirement("MON-07")
def test_alarms_capacity(alarms, evidence):
    found = capacity_alarms(alarms)
    evidence("capacity alarms", {k: _summary(v) for k, v in found.items()})
    missing = [k for k, v in found.items() if not v]
    assert not missing, f"no high alarm on {missing}"


@pytest.mark.requirement("MON-08")
def test_alarms_notify_a_subscribed_topic(alarms, topics, db_instances, plan, env_name, evidence):
    chosen = {}
    for rid, select in PLAN_ALARMS.items():
        expect = plan.requirements[rid].expected(env_name)
        chosen.update({a["AlarmArn"]: a for a in select(alarms, expect=expect, allocated_gb=_allocated(db_instances))})
    for group in capacity_alarms(alarms).values():
        chosen.update({a["AlarmArn"]: a for a in group})
    assert chosen, "none of the plan's alarms exists"
    subscribed = {arn for arn, t in topics.items()
                  if any(s.get("SubscriptionArn", "").startswith("arn:") for s in t.get("Subscriptions", []))}
    silent = sorted(a["AlarmName"] for a in chosen.values()
                    if not any(arn in subscribed for arn in a.get("AlarmActions", [])))
    evidence("alarm actions", {a["AlarmName"]: a.get("AlarmActions") for a in chosen.values()})
    assert not silent, f"alarms that notify no subscribed SNS topic: {silent}"


@pytest.mark.requirement("MON-09")
def test_dashboard(dashboards, evidence):
    evidence("dashboards", [d["DashboardName"] for d in dashboards])
    assert dashboards, "no CloudWatch dashboard shows the deployment's resources"


@pytest.mark.requirement("MON-10")
def test_cloudtrail(trails, evidence):
    evidence("trails", trails)
    good = [t for t in trails if t.get("IsMultiRegionTrail") and t.get("IsLogging")
            and t.get("LogFileValidationEnabled")]
    assert good, "no multi-region CloudTrail trail is logging with log file validation"
