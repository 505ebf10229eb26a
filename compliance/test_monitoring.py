"""§7 Monitoring & Logging, the Recommended Alarms and audit logging."""
from __future__ import annotations

import pytest

from harness.compliance.facts import AlarmCondition, alarm_misses, alarms_meeting, alarms_on, the_one

Groups = list[list[AlarmCondition]]  # every group met by an alarm on any one of its conditions


def _summary(alarms):
    return [{k: a.get(k) for k in ("AlarmName", "Namespace", "MetricName", "Statistic", "ExtendedStatistic",
                                   "ComparisonOperator", "Threshold", "Period", "EvaluationPeriods",
                                   "DatapointsToAlarm", "Dimensions", "AlarmActions")}
            for a in alarms]


def unhealthy_service_alarms(expect, desired_count, **_) -> Groups:
    """MON-02: unhealthy targets above zero, or running tasks below the plan's desired count."""
    return [[AlarmCondition("AWS/ApplicationELB", "UnHealthyHostCount", ">", 0.0, whole=True),
             AlarmCondition("ECS/ContainerInsights", "RunningTaskCount", "<",
                            None if desired_count is None else float(desired_count), whole=True)]]


def rds_cpu_alarms(expect, **_) -> Groups:
    return [[AlarmCondition("AWS/RDS", "CPUUtilization", ">", expect["threshold"], expect["window_s"])]]


def rds_storage_alarms(expect, db_instances, **_) -> Groups:
    """MON-04: FreeStorageSpace (bytes) below the plan's share of the allocated GiB; the plan's tolerance
    covers an alarm written in GB rather than GiB."""
    allocated = _allocated(db_instances) * 1024 ** 3
    return [[AlarmCondition("AWS/RDS", "FreeStorageSpace", "<",
                            (expect["free_ratio"] - expect.get("tolerance", 0.0)) * allocated)]]


def alb_5xx_alarms(expect, **_) -> Groups:
    return [[AlarmCondition("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", ">", expect["threshold"],
                            expect["window_s"], total=True, whole=True)]]


def healthy_hosts_alarms(expect, **_) -> Groups:
    return [[AlarmCondition("AWS/ApplicationELB", "HealthyHostCount", "<", expect["threshold"], whole=True)]]


def capacity_alarms(expect, **_) -> Groups:
    """MON-07: one alarm each on ECS CPU, ECS memory and RDS connections, all on the high side."""
    return [[AlarmCondition(namespace, metric, ">")] for namespace, metric in (
        ("AWS/ECS", "CPUUtilization"), ("AWS/ECS", "MemoryUtilization"), ("AWS/RDS", "DatabaseConnections"))]


PLAN_ALARMS = {"MON-02": unhealthy_service_alarms, "MON-03": rds_cpu_alarms, "MON-04": rds_storage_alarms,
               "MON-05": alb_5xx_alarms, "MON-06": healthy_hosts_alarms, "MON-07": capacity_alarms}


def judge_alarms(alarms, groups: Groups) -> tuple[list[dict], list[str]]:
    """The alarms that fire at the plan's conditions or earlier, and for each group none meets, why not
    (naming each alarm on the metric and what makes it late)."""
    met, problems = [], []
    for group in groups:
        found = [a for c in group for a in alarms_meeting(alarms, c)]
        met += found
        if not found:
            late = [f"{a['AlarmName']} {alarm_misses(a, c)}" for c in group
                    for a in alarms_on(alarms, c.namespace, c.metric)]
            problems.append(f"no alarm fires on {' or '.join(map(str, group))}"
                            + (f": {'; '.join(late)}" if late else ""))
    return met, problems


def _allocated(db_instances):
    return the_one(db_instances, "RDS instance")["AllocatedStorage"]


@pytest.fixture
def plan_alarms(plan, env_name, db_instances):
    """rid -> the plan's alarm conditions for it, in this environment."""
    desired = plan.requirements["ECS-09"].expected(env_name).get("desired_count")
    context = {"db_instances": db_instances, "desired_count": desired}
    return lambda rid: PLAN_ALARMS[rid](plan.requirements[rid].expected(env_name), **context)


def _judged(rid, alarms, plan_alarms, evidence):
    groups = plan_alarms(rid)
    met, problems = judge_alarms(alarms, groups)
    evidence("alarms on the metrics", {str(c): _summary(alarms_on(alarms, c.namespace, c.metric))
                                       for group in groups for c in group})
    evidence("matching alarms", [a["AlarmName"] for a in met])
    assert not problems, "; ".join(problems)


@pytest.mark.requirement("MON-01")
def test_log_group_retention(log_groups, evidence):
    evidence("log groups", log_groups)
    group = the_one(log_groups, "app log group")
    assert group.get("retentionInDays"), f"log group {group['logGroupName']} keeps logs forever"


@pytest.mark.requirement("MON-02")
def test_alarm_service_unhealthy(alarms, plan_alarms, evidence):
    _judged("MON-02", alarms, plan_alarms, evidence)


@pytest.mark.requirement("MON-03")
def test_alarm_rds_cpu(alarms, plan_alarms, evidence):
    _judged("MON-03", alarms, plan_alarms, evidence)


@pytest.mark.requirement("MON-04")
def test_alarm_rds_free_storage(alarms, plan_alarms, evidence):
    _judged("MON-04", alarms, plan_alarms, evidence)


@pytest.mark.requirement("MON-05")
def test_alarm_alb_5xx(alarms, plan_alarms, evidence):
    _judged("MON-05", alarms, plan_alarms, evidence)


@pytest.mark.requirement("MON-06")
def test_alarm_healthy_hosts(alarms, plan_alarms, evidence):
    _judged("MON-06", alarms, plan_alarms, evidence)


@pytest.mark.requirement("MON-07")
def test_alarms_capacity(alarms, plan_alarms, evidence):
    _judged("MON-07", alarms, plan_alarms, evidence)


@pytest.mark.requirement("MON-08")
def test_alarms_notify_a_subscribed_topic(alarms, topics, plan_alarms, evidence):
    chosen = {a["AlarmArn"]: a for rid in PLAN_ALARMS for a in judge_alarms(alarms, plan_alarms(rid))[0]}
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
