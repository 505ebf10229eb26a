"""The monitoring parts (CloudWatch): the alarms and dashboards that name a discovered resource by one of
its metric dimensions, and the subscriptions of the SNS topics those alarms notify."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import Fetcher
from harness.compliance.inventory.model import elb_metric_id

# Alarms and dashboards are found through the resources they watch, so they are known only when those are.
LINK_SOURCES = ("db_instances", "clusters", "services", "load_balancers", "target_groups")


def fetch(f: Fetcher) -> None:
    def alarms() -> list[dict[str, Any]]:
        dims = _linked_dimensions(f)
        return [a for a in f.paginate("cloudwatch", "describe_alarms", "MetricAlarms")
                if any((d["Name"], d["Value"]) in dims for d in a.get("Dimensions", []))]

    f.run("alarms", LINK_SOURCES, alarms)

    def topics() -> dict[str, Any]:
        arns = sorted({arn for a in f.inv.parts["alarms"] for arn in a.get("AlarmActions", [])
                       if arn.startswith("arn:aws:sns:")})
        return {arn: {"Subscriptions": f.paginate("sns", "list_subscriptions_by_topic", "Subscriptions",
                                                  TopicArn=arn)} for arn in arns}

    f.run("topics", ("alarms",), topics)

    def dashboards() -> list[dict[str, Any]]:
        names = [v for _, v in _linked_dimensions(f)]
        found = []
        for entry in f.paginate("cloudwatch", "list_dashboards", "DashboardEntries"):
            body = f.call("cloudwatch", "get_dashboard", DashboardName=entry["DashboardName"]).get("DashboardBody", "")
            if any(name in body for name in names):
                found.append({"DashboardName": entry["DashboardName"], "DashboardBody": body})
        return found

    f.run("dashboards", LINK_SOURCES, dashboards)


def _linked_dimensions(f: Fetcher) -> set[tuple[str, str]]:
    """The (dimension name, value) pairs by which CloudWatch names the discovered resources."""
    parts = f.inv.parts
    dims: set[tuple[str, str]] = set()
    dims |= {("DBInstanceIdentifier", db["DBInstanceIdentifier"]) for db in parts.get("db_instances") or []}
    dims |= {("ClusterName", c["clusterName"]) for c in parts.get("clusters") or []}
    dims |= {("ServiceName", s["serviceName"]) for s in parts.get("services") or []}
    dims |= {("LoadBalancer", elb_metric_id(lb["LoadBalancerArn"])) for lb in parts.get("load_balancers") or []}
    dims |= {("TargetGroup", elb_metric_id(tg["TargetGroupArn"]))
             for tg in parts.get("target_groups") or []}
    return dims
