"""Small, pure readings of a snapshot that several checks share (which subnet is which tier, where a
route goes, which alarm watches what and whether it fires when the plan says). The compliance tests judge
with them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import pytest

from harness.compliance.inventory import tag_dict
from harness.plan import Plan

NOT_OBSERVABLE = "not observable on this target"


def not_observable(what: str) -> None:
    """Skip, never pass, when the target does not expose the attribute a check needs."""
    pytest.skip(f"{NOT_OBSERVABLE}: {what}")


def the_one(resources: list[dict[str, Any]], what: str) -> dict[str, Any]:
    """The single resource of a kind the plan calls for; its absence (or a duplicate) is a failure."""
    if not resources:
        pytest.fail(f"no {what} was discovered (tags Project/Environment of the plan)")
    if len(resources) > 1:
        pytest.fail(f"{len(resources)} {what}s were discovered where the plan has one")
    return resources[0]


def default_route(table: dict[str, Any] | None) -> dict[str, Any] | None:
    for route in (table or {}).get("Routes", []):
        if route.get("DestinationCidrBlock") == "0.0.0.0/0" or route.get("DestinationIpv6CidrBlock") == "::/0":
            return route
    return None


def route_table_of(subnet_id: str, tables: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The subnet's explicit route table, else the VPC's main one (AWS's own rule)."""
    main = None
    for table in tables:
        for assoc in table.get("Associations", []):
            if assoc.get("SubnetId") == subnet_id:
                return table
            if assoc.get("Main"):
                main = table
    return main


def subnet_tier(subnet: dict[str, Any], tables: list[dict[str, Any]], plan: Plan) -> str:
    """public / private / isolated: the tier tag CDK writes, else what the subnet's default route says."""
    tiers = plan.plan.subnet_tiers
    tag = tag_dict(subnet.get("Tags")).get(plan.plan.subnet_tier_tag)
    by_tag = {tiers.public: "public", tiers.private: "private", tiers.isolated: "isolated"}
    if tag in by_tag:
        return by_tag[tag]
    route = default_route(route_table_of(subnet["SubnetId"], tables))
    if route is None:
        return "isolated"
    return "public" if str(route.get("GatewayId", "")).startswith("igw-") else "private"


def subnets_of_tier(tier: str, subnets: list[dict[str, Any]], tables: list[dict[str, Any]],
                    plan: Plan) -> list[dict[str, Any]]:
    return [s for s in subnets if subnet_tier(s, tables, plan) == tier]


def ingress_sources(group: dict[str, Any]) -> Iterable[tuple[int | None, int | None, str]]:
    """(from port, to port, source) for every ingress grant: a CIDR, an IPv6 CIDR, a prefix list or a group."""
    for perm in group.get("IpPermissions", []):
        low, high = perm.get("FromPort"), perm.get("ToPort")
        if perm.get("IpProtocol") == "-1":
            low, high = 0, 65535
        for r in perm.get("IpRanges", []):
            yield low, high, r["CidrIp"]
        for r in perm.get("Ipv6Ranges", []):
            yield low, high, r["CidrIpv6"]
        for r in perm.get("PrefixListIds", []):
            yield low, high, r["PrefixListId"]
        for r in perm.get("UserIdGroupPairs", []):
            yield low, high, r["GroupId"]


def scaling_owned(alarm: dict[str, Any]) -> bool:
    """Target-tracking policies create their own alarms, whose only actions are the scaling policy."""
    actions = alarm.get("AlarmActions", [])
    return bool(actions) and all(":autoscaling:" in arn for arn in actions)


def alarms_on(alarms: list[dict[str, Any]], namespace: str, metric: str) -> list[dict[str, Any]]:
    """The operator's alarms on one metric (the ones auto scaling manages for itself are not theirs)."""
    return [a for a in alarms if a.get("Namespace") == namespace and a.get("MetricName") == metric
            and not scaling_owned(a)]


def alarm_window_s(alarm: dict[str, Any]) -> int:
    return int(alarm.get("Period", 0)) * int(alarm.get("EvaluationPeriods", 0))


OPERATORS = {"GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">=",
             "LessThanThreshold": "<", "LessThanOrEqualToThreshold": "<="}
# Statistics whose datapoints of a counted metric (hosts, tasks, requests) are whole numbers.
WHOLE_STATISTICS = ("Sum", "Maximum", "Minimum")


@dataclass(frozen=True)
class AlarmCondition:
    """When the plan wants an alarm to fire: the metric `op` (">", ">=", "<", "<=") `threshold` (None: any
    threshold on that side), held for `window_s` (None: the plan names no window); with `total`, the
    metric's Sum over `window_s` instead ("5xx > 10 in 5 minutes"). `whole`: the metric counts things, so
    its Sum, Maximum and Minimum are whole numbers (then "> 0" and ">= 1" are the same condition)."""
    namespace: str
    metric: str
    op: str
    threshold: float | None = None
    window_s: int | None = None
    total: bool = False
    whole: bool = False

    def __str__(self) -> str:
        value = "any threshold" if self.threshold is None else f"{self.threshold:g}"
        window = "" if self.window_s is None else f" {'in' if self.total else 'for'} {self.window_s} s"
        return f"{self.metric}{' (Sum)' if self.total else ''} {self.op} {value}{window}"


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _canonical(op: str, threshold: float, whole: bool) -> tuple[str, float]:
    """On whole numbers a strict comparison is the inclusive one a step further: "> 0" is ">= 1"."""
    if not whole:
        return op, threshold
    if op in (">", ">="):
        return ">=", (math.floor(threshold) + 1 if op == ">" else math.ceil(threshold - 1e-9))
    return "<=", (math.ceil(threshold) - 1 if op == "<" else math.floor(threshold + 1e-9))


def _covers(alarm: tuple[str, float], plan: tuple[str, float]) -> bool:
    """Every value that meets the plan's comparison also meets the alarm's (both on the same side)."""
    (a_op, a), (p_op, p) = alarm, plan
    if a_op.startswith(">"):
        return a < p and not _close(a, p) if (a_op, p_op) == (">", ">=") else a < p or _close(a, p)
    return a > p and not _close(a, p) if (a_op, p_op) == ("<", "<=") else a > p or _close(a, p)


def alarm_misses(alarm: dict[str, Any], condition: AlarmCondition) -> str | None:
    """None when the alarm fires at the plan's condition or earlier, else why it would fire later or never.

    One rule for every alarm requirement: the alarm compares on the plan's side (above or below); on that
    side its threshold is the plan's or tighter (">=" at the plan's value meets "> value"); it needs no more
    time than the plan's window (period x datapoints to alarm, EvaluationPeriods when DatapointsToAlarm is
    absent). A total ("> 10 in 5 minutes") is a Sum: a shorter period meets it only when it divides the
    window, one breaching datapoint fires, and the threshold is scaled down to the share of a period."""
    operator = OPERATORS.get(str(alarm.get("ComparisonOperator")))
    if operator is None:
        return f"compares with {alarm.get('ComparisonOperator')}, not a threshold"
    if operator[0] != condition.op[0]:
        return f"fires on {operator} {alarm.get('Threshold')}, the other side of the plan's {condition.op}"
    statistic = alarm.get("Statistic") or alarm.get("ExtendedStatistic")
    if statistic == "SampleCount" or (condition.total and statistic != "Sum"):
        return f"measures the {statistic} of the metric, the plan {'a Sum' if condition.total else 'its value'}"
    if statistic == "Sum" and condition.op[0] == "<":
        return "measures the Sum of the metric, which stays high while each value is low"
    period = int(alarm.get("Period") or 0)
    datapoints = int(alarm.get("DatapointsToAlarm") or alarm.get("EvaluationPeriods") or 0)
    if period <= 0 or datapoints <= 0:
        return f"reports no period or evaluation periods ({period} s, {datapoints})"
    plan_op, plan_threshold = condition.op, condition.threshold
    if condition.total and condition.window_s is not None:
        if period > condition.window_s:
            return f"sums over {period} s, longer than the plan's {condition.window_s} s"
        if condition.window_s % period:
            return f"sums over {period} s periods, which do not divide the plan's {condition.window_s} s"
        if datapoints > 1:
            return f"needs {datapoints} breaching periods; a burst within one period never fires it"
        if plan_threshold is not None:
            # A total above T in k periods puts more than T/k in at least one of them.
            share = condition.window_s // period
            plan_op, plan_threshold = _canonical(plan_op, plan_threshold, condition.whole)
            plan_threshold = (math.ceil(plan_threshold / share - 1e-9) if condition.whole
                              else plan_threshold / share)
    elif condition.window_s is not None and period * datapoints > condition.window_s:
        return (f"fires after {period * datapoints} s ({datapoints} x {period} s), the plan within "
                f"{condition.window_s} s")
    if plan_threshold is None:
        return None
    whole = condition.whole and (statistic in WHOLE_STATISTICS)
    if alarm.get("Threshold") is None:
        return "reports no threshold"
    threshold = float(alarm["Threshold"])
    if not _covers(_canonical(operator, threshold, whole), _canonical(plan_op, plan_threshold, whole)):
        per = f" per {period} s" if condition.total and period != condition.window_s else ""
        return f"fires at {operator} {threshold:g}{per}, later than the plan's condition"
    return None


def alarms_meeting(alarms: list[dict[str, Any]], condition: AlarmCondition) -> list[dict[str, Any]]:
    return [a for a in alarms_on(alarms, condition.namespace, condition.metric)
            if alarm_misses(a, condition) is None]


def container(task_definition: dict[str, Any], port: int) -> dict[str, Any]:
    """The app container: the one mapping the plan's port, else the only/first essential one."""
    containers = task_definition.get("containerDefinitions", [])
    for c in containers:
        if any(m.get("containerPort") == port for m in c.get("portMappings", [])):
            return c
    essential = [c for c in containers if c.get("essential", True)]
    if not essential:
        pytest.fail("the task definition has no container")
    return essential[0]


STACK_TAG = "aws:cloudformation:stack-name"


@dataclass(frozen=True)
class VpcResource:
    """One resource in the deployment's VPC, and why it is the deployment's (None: it is not, unmanaged)."""

    kind: str
    id: str
    name: str
    owner: str | None


def vpc_ownership(vpc: dict[str, Any], security_groups: list[dict[str, Any]], nat_gateways: list[dict[str, Any]],
                  route_tables: list[dict[str, Any]], vpc_resources: list[dict[str, Any]],
                  wanted: dict[str, str]) -> list[VpcResource]:
    """Every resource in the VPC and whose it is. The deployment's: it carries the plan's tags, or the tag of
    the CloudFormation stack that made the VPC; an endpoint CloudFormation cannot tag is the deployment's when
    its security groups are (interface) or its route tables are (gateway). AWS's on the deployment's behalf:
    the VPC's default security group, and an interface AWS manages (RequesterManaged: a Fargate task's, a
    Lambda's) in security groups that are all the deployment's. An interface that is another listed
    resource's (an instance's, a NAT gateway's, an endpoint's, an Application, Network or Gateway load
    balancer's, a DB instance's, as AWS marks them) is judged as that resource, not again; one that only
    says so in its description is judged by its own tags. What was deleted already is left out."""
    stack = tag_dict(vpc.get("Tags")).get(STACK_TAG)

    def owner(tags: Any) -> str | None:
        have = tag_dict(tags)
        if wanted and all(have.get(k) == v for k, v in wanted.items()):
            return "the plan's tags"
        if stack and have.get(STACK_TAG) == stack:
            return f"stack {stack}"
        return None

    groups = {g["GroupId"] for g in security_groups if g.get("GroupName") != "default" and owner(g.get("Tags"))}
    tables = {t["RouteTableId"] for t in route_tables if owner(t.get("Tags"))}

    def within(ids: list[str], ours: set[str], what: str) -> str | None:
        return f"its {what} are the deployment's" if ids and set(ids) <= ours else None

    found = [VpcResource("security group", g["GroupId"], g.get("GroupName", ""), "the VPC's default security group"
                         if g.get("GroupName") == "default" else owner(g.get("Tags"))) for g in security_groups]
    found += [VpcResource("NAT gateway", n["NatGatewayId"], "", owner(n.get("Tags"))) for n in nat_gateways
              if n.get("State") not in ("deleting", "deleted")]
    # Interfaces the NAT gateways and endpoints name as theirs (by id, or by address where an emulator's ids
    # disagree), judged as those resources.
    linked = {v for n in nat_gateways for a in n.get("NatGatewayAddresses", [])
              for v in (a.get("NetworkInterfaceId"), a.get("PrivateIp")) if v} | {
              i for r in vpc_resources if r.get("Kind") == "vpc_endpoint" for i in r.get("NetworkInterfaceIds", [])}
    for r in vpc_resources:
        kind = r.get("Kind")
        if kind == "instance" and (r.get("State") or {}).get("Name") not in ("shutting-down", "terminated"):
            name = tag_dict(r.get("Tags")).get("Name", "")
            found.append(VpcResource("EC2 instance", r["InstanceId"], name, owner(r.get("Tags"))))
        elif kind == "vpc_endpoint" and str(r.get("State", "")).lower() not in ("deleting", "deleted"):
            found.append(VpcResource("VPC endpoint", r["VpcEndpointId"], r.get("ServiceName", ""), owner(r.get("Tags"))
                                     or within([g["GroupId"] for g in r.get("Groups", [])], groups, "security groups")
                                     or within(r.get("RouteTableIds", []), tables, "route tables")))
        elif kind == "load_balancer":
            found.append(VpcResource("load balancer", r["LoadBalancerArn"], r.get("LoadBalancerName", ""),
                                     owner(r.get("Tags"))))
        elif kind == "db_instance":
            found.append(VpcResource("DB instance", r["DBInstanceIdentifier"], "", owner(r.get("TagList"))))
        elif kind == "network_interface" and not _another_resources(r, linked):
            managed = within([g["GroupId"] for g in r.get("Groups", [])], groups, "security groups") \
                if r.get("RequesterManaged") else None
            found.append(VpcResource("network interface", r["NetworkInterfaceId"], r.get("Description", ""),
                                     owner(r.get("TagSet")) or (f"AWS's, and {managed}" if managed else None)))
    return found


def _another_resources(eni: dict[str, Any], linked: set[Any]) -> bool:
    """A network interface that is part of another resource judged on its own: linked from it, attached to
    an instance, or made by AWS for it (RequesterManaged, so no one can fake it by a description)."""
    if eni.get("NetworkInterfaceId") in linked or eni.get("PrivateIpAddress") in linked \
            or (eni.get("Attachment") or {}).get("InstanceId"):
        return True
    if not eni.get("RequesterManaged"):
        return False
    description, requester = str(eni.get("Description", "")), eni.get("RequesterId")
    return eni.get("InterfaceType") in ("nat_gateway", "vpc_endpoint", "gateway_load_balancer_endpoint") \
        or (requester == "amazon-elb" and description.startswith(("ELB app/", "ELB net/", "ELB gwy/"))) \
        or (requester == "amazon-rds" and description == "RDSNetworkInterface")
