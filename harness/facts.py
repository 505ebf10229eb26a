"""Small, pure readings of a snapshot that several checks share (which subnet is which tier, where a
route goes, which alarm watches what). They judge nothing: the compliance tests do.
"""
from __future__ import annotations

from typing import Any, Iterable

import pytest

from harness.inventory import tag_dict
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
