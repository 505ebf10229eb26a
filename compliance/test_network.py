"""§1 Network and the network rules of Security 1: VPC, subnet tiers, gateways, routes, flow logs, and
nothing in the VPC that is not the deployment's."""
from __future__ import annotations

import ipaddress

import pytest

from harness.compliance.facts import default_route, ingress_sources, route_table_of, subnets_of_tier, vpc_ownership


def _vpc(vpc):
    assert vpc is not None, "no VPC tagged for the project and environment"
    assert "ambiguous" not in vpc, f"several VPCs carry the project's tags: {vpc.get('ambiguous')}"
    return vpc


@pytest.mark.requirement("NET-01")
def test_vpc_cidr_and_dns(vpc, vpc_attributes, expect, evidence):
    evidence("vpc", {"vpc": vpc, "attributes": vpc_attributes})
    vpc = _vpc(vpc)
    assert vpc["CidrBlock"] == expect["cidr"], f"VPC CIDR is {vpc['CidrBlock']}, the plan says {expect['cidr']}"
    assert vpc_attributes["EnableDnsSupport"] is expect["dns_support"], "DNS support is off"
    assert vpc_attributes["EnableDnsHostnames"] is expect["dns_hostnames"], "DNS hostnames are off"


def _tier(tier, subnets, route_tables, plan, expect, evidence):
    found = subnets_of_tier(tier, subnets, route_tables, plan)
    evidence(f"{tier} subnets", [{k: s.get(k) for k in ("SubnetId", "AvailabilityZone", "CidrBlock", "Tags")}
                                 for s in found])
    assert len(found) == expect["count"], f"{len(found)} {tier} subnets, the plan has {expect['count']}"
    azs = {s["AvailabilityZone"] for s in found}
    assert len(azs) == expect["azs"], f"{tier} subnets span {len(azs)} AZ(s) {sorted(azs)}, the plan has {expect['azs']}"
    return found


@pytest.mark.requirement("NET-02")
def test_public_subnets(vpc, subnets, route_tables, plan, expect, evidence):
    cidr = ipaddress.ip_network(_vpc(vpc)["CidrBlock"])
    for s in _tier("public", subnets, route_tables, plan, expect, evidence):
        assert ipaddress.ip_network(s["CidrBlock"]).subnet_of(cidr), f"{s['SubnetId']} is outside the VPC CIDR"
        route = default_route(route_table_of(s["SubnetId"], route_tables))
        assert route and str(route.get("GatewayId", "")).startswith("igw-"), \
            f"public subnet {s['SubnetId']} has no default route to an Internet Gateway: {route}"


@pytest.mark.requirement("NET-03")
def test_private_subnets_route_through_nat_in_same_az(subnets, route_tables, nat_gateways, plan, expect, evidence):
    nat_az = {}
    by_id = {s["SubnetId"]: s for s in subnets}
    for nat in nat_gateways:
        if nat.get("SubnetId") in by_id:
            nat_az[nat["NatGatewayId"]] = by_id[nat["SubnetId"]]["AvailabilityZone"]
    for s in _tier("private", subnets, route_tables, plan, expect, evidence):
        route = default_route(route_table_of(s["SubnetId"], route_tables))
        nat = (route or {}).get("NatGatewayId")
        assert nat, f"private subnet {s['SubnetId']} has no default route to a NAT gateway: {route}"
        assert nat_az.get(nat) == s["AvailabilityZone"], \
            f"private subnet {s['SubnetId']} ({s['AvailabilityZone']}) routes through {nat} in {nat_az.get(nat)}"


@pytest.mark.requirement("NET-04")
def test_database_subnets_are_isolated(subnets, route_tables, plan, expect, evidence):
    for s in _tier("isolated", subnets, route_tables, plan, expect, evidence):
        route = default_route(route_table_of(s["SubnetId"], route_tables))
        assert route is None, f"isolated subnet {s['SubnetId']} has a default route: {route}"


@pytest.mark.requirement("NET-05")
def test_internet_gateway_attached(vpc, internet_gateways, evidence):
    vpc_id = _vpc(vpc)["VpcId"]
    evidence("internet gateways", internet_gateways)
    attached = [g for g in internet_gateways
                if any(a.get("VpcId") == vpc_id and a.get("State") in ("available", "attached")
                       for a in g.get("Attachments", []))]
    assert attached, f"no Internet Gateway is attached to {vpc_id}"


@pytest.mark.requirement("NET-06")
def test_nat_gateway_per_az(subnets, route_tables, nat_gateways, plan, expect, evidence):
    live = [n for n in nat_gateways if n.get("State") not in ("deleted", "deleting", "failed")]
    evidence("NAT gateways", live)
    public = {s["SubnetId"]: s for s in subnets_of_tier("public", subnets, route_tables, plan)}
    assert len(live) == expect["count"], f"{len(live)} NAT gateways, the plan has {expect['count']}"
    for n in live:
        assert n["SubnetId"] in public, f"{n['NatGatewayId']} is not in a public subnet ({n['SubnetId']})"
        assert n.get("State") == "available", f"{n['NatGatewayId']} is {n.get('State')}"
        assert any(a.get("AllocationId") for a in n.get("NatGatewayAddresses", [])), \
            f"{n['NatGatewayId']} has no Elastic IP"
    azs = {public[n["SubnetId"]]["AvailabilityZone"] for n in live}
    assert len(azs) == expect["count"], f"the NAT gateways share AZs: {sorted(azs)}"


@pytest.mark.requirement("NET-07")
def test_flow_logs(vpc, flow_logs, expect, evidence):
    vpc_id = _vpc(vpc)["VpcId"]
    evidence("flow logs", flow_logs)
    active = [fl for fl in flow_logs if fl.get("ResourceId") == vpc_id and fl.get("FlowLogStatus", "ACTIVE") == "ACTIVE"
              and fl.get("LogDestinationType", "cloud-watch-logs") in ("cloud-watch-logs", "s3")]
    assert active, f"no active flow log on {vpc_id}"
    assert any(fl.get("TrafficType") == expect["traffic_type"] for fl in active), \
        f"flow logs capture {[fl.get('TrafficType') for fl in active]}, the plan wants {expect['traffic_type']}"


@pytest.mark.requirement("NET-08")
def test_only_the_alb_is_open_to_the_internet(security_groups, load_balancers, expect, evidence):
    alb_groups = {g for lb in load_balancers for g in lb.get("SecurityGroups", [])}
    open_groups = sorted({(g["GroupId"], g.get("GroupName", "")) for g in security_groups
                          if g["GroupId"] not in alb_groups
                          for _, _, src in ingress_sources(g) if src in expect["open_cidrs"]})
    evidence("security groups open to the internet (other than the ALB's)", open_groups)
    assert not open_groups, f"security groups other than the ALB's admit the internet: {open_groups}"


@pytest.mark.requirement("NET-09")
def test_every_resource_in_the_vpc_is_the_deployments(vpc, security_groups, nat_gateways, route_tables, vpc_resources,
                                                      plan, env_name, evidence):
    found = vpc_ownership(_vpc(vpc), security_groups, nat_gateways, route_tables, vpc_resources, plan.tags(env_name))
    unmanaged = [r for r in found if r.owner is None]
    evidence("resources in the VPC", [{"kind": r.kind, "id": r.id, "name": r.name, "owner": r.owner} for r in found])
    assert not unmanaged, (
        f"{len(unmanaged)} of {len(found)} resources in the VPC are not the deployment's (no plan tags, not in "
        f"its stack, not AWS's on its behalf): " + ", ".join(f"{r.kind} {r.id}" + (f" ({r.name})" if r.name else "")
                                                              for r in unmanaged))
