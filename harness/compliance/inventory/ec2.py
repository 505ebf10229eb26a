"""The network parts (EC2): the VPC that carries the plan's tags, its DNS attributes, and what lives in it
(subnets, route tables, gateways, security groups, flow logs)."""
from __future__ import annotations

from typing import Any, Callable

from harness.compliance.inventory.fetcher import Fetcher
from harness.compliance.inventory.tagging import TAGGING


def fetch(f: Fetcher) -> None:
    def vpc() -> dict[str, Any] | None:
        tagged = f.by_tags("ec2:vpc")
        # By filter rather than by VpcIds: a VPC the tagging API still lists after its deletion is left out
        # instead of failing the call.
        filters = _tag_filters(f) if tagged is None else [
            {"Name": "vpc-id", "Values": [m["ResourceARN"].rsplit("/", 1)[1] for m in tagged]}]
        vpcs = f.paginate("ec2", "describe_vpcs", "Vpcs", Filters=filters)
        return vpcs[0] if len(vpcs) == 1 else ({"ambiguous": [v["VpcId"] for v in vpcs]} if vpcs else None)

    f.run("vpc", (TAGGING,), vpc)

    def vpc_id() -> str | None:
        v = f.inv.parts.get("vpc") or {}
        return v.get("VpcId")

    def per_vpc(operation: str, result_key: str, filter_name: str = "vpc-id") -> Callable[[], list[Any]]:
        def in_vpc() -> list[Any]:
            vid = vpc_id()
            if vid is None:
                return []
            return f.paginate("ec2", operation, result_key, Filters=[{"Name": filter_name, "Values": [vid]}])
        return in_vpc

    def vpc_attributes() -> dict[str, bool]:
        vid = vpc_id()
        if vid is None:
            return {}
        support = f.call("ec2", "describe_vpc_attribute", VpcId=vid, Attribute="enableDnsSupport")
        hostnames = f.call("ec2", "describe_vpc_attribute", VpcId=vid, Attribute="enableDnsHostnames")
        return {"EnableDnsSupport": support["EnableDnsSupport"]["Value"],
                "EnableDnsHostnames": hostnames["EnableDnsHostnames"]["Value"]}

    f.run("vpc_attributes", ("vpc",), vpc_attributes)
    f.run("subnets", ("vpc",), per_vpc("describe_subnets", "Subnets"))
    f.run("route_tables", ("vpc",), per_vpc("describe_route_tables", "RouteTables"))
    f.run("internet_gateways", ("vpc",), per_vpc("describe_internet_gateways", "InternetGateways",
                                                 "attachment.vpc-id"))
    f.run("nat_gateways", ("vpc",), per_vpc("describe_nat_gateways", "NatGateways"))
    f.run("security_groups", ("vpc",), per_vpc("describe_security_groups", "SecurityGroups"))
    f.run("flow_logs", ("vpc",), per_vpc("describe_flow_logs", "FlowLogs", "resource-id"))


def _tag_filters(f: Fetcher) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in f.wanted.items()]
