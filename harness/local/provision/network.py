"""The VPC and its tiers (NET-01..06): public, private and isolated subnets over the plan's AZs, an
internet gateway, one NAT per AZ and the route tables that make each tier what it is; and the VPC's flow
logs (NET-07)."""
from __future__ import annotations

import ipaddress
from typing import Any

from botocore.exceptions import ClientError

from harness.local.provision.context import Run, first


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The item whose Name tag is `name`: moto 5.2.5 ignores tag filters on describe_nat_gateways, so the
    Name is matched here rather than trusted to the server."""
    return next((i for i in items if {"Key": "Name", "Value": name} in i.get("Tags", [])), None)


def _availability_zones(run: Run) -> list[str]:
    letters = "abcdefghij"
    return [f"{run.region}{letters[i]}" for i in range(run.expect("NET-02")["azs"])]


def _vpc(run: Run) -> dict[str, Any]:
    ec2 = run.client("ec2")
    expect = run.expect("NET-01")

    def find() -> dict[str, Any] | None:
        return _named(ec2.describe_vpcs(Filters=run.tag_filters())["Vpcs"], run.name("vpc"))

    def create() -> dict[str, Any]:
        vpc = ec2.create_vpc(CidrBlock=expect["cidr"], TagSpecifications=run.tag_specs("vpc", run.name("vpc")))["Vpc"]
        ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsSupport={"Value": expect["dns_support"]})
        ec2.modify_vpc_attribute(VpcId=vpc["VpcId"], EnableDnsHostnames={"Value": expect["dns_hostnames"]})
        _tag_vpc_defaults(run, vpc["VpcId"])
        return vpc

    return run.ensure("ec2 vpc", find, create, lambda v: v["VpcId"])


def _tag_vpc_defaults(run: Run, vpc_id: str) -> None:
    """The default security group and main route table come with the VPC; discovery by VPC sees them,
    so they carry the plan's tags too (TAG-01)."""
    ec2 = run.client("ec2")
    in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    groups = ec2.describe_security_groups(Filters=[*in_vpc, {"Name": "group-name", "Values": ["default"]}])
    tables = ec2.describe_route_tables(Filters=[*in_vpc, {"Name": "association.main", "Values": ["true"]}])
    ids = [g["GroupId"] for g in groups["SecurityGroups"]] + [t["RouteTableId"] for t in tables["RouteTables"]]
    ec2.create_tags(Resources=ids, Tags=run.tag_list())


def _subnet_layout(run: Run, vpc_cidr: str) -> list[tuple[str, int, str, str]]:
    """(tier, number in tier, AZ, CIDR) for every subnet: /20 blocks in order, each tier over the AZs."""
    azs = _availability_zones(run)
    blocks = ipaddress.ip_network(vpc_cidr).subnets(new_prefix=20)
    counts = {"public": run.expect("NET-02")["count"], "private": run.expect("NET-03")["count"],
              "isolated": run.expect("NET-04")["count"]}
    return [(tier, i + 1, azs[i % len(azs)], str(next(blocks)))
            for tier, count in counts.items() for i in range(count)]


def _subnets(run: Run, vpc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    ec2 = run.client("ec2")
    tier_tag = run.plan.plan.subnet_tier_tag
    tiers = run.plan.plan.subnet_tiers.model_dump()
    subnets: dict[str, list[dict[str, Any]]] = {tier: [] for tier in tiers}
    for tier, number, az, cidr in _subnet_layout(run, vpc["CidrBlock"]):
        name = run.name(f"{tier}-{number}")

        def find(name: str = name) -> dict[str, Any] | None:
            filters = [*run.tag_filters(), {"Name": "vpc-id", "Values": [vpc["VpcId"]]}]
            return _named(ec2.describe_subnets(Filters=filters)["Subnets"], name)

        def create(name: str = name, tier: str = tier, az: str = az, cidr: str = cidr) -> dict[str, Any]:
            specs = [{"ResourceType": "subnet", "Tags": run.tag_list(Name=name, **{tier_tag: tiers[tier]})}]
            return ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=cidr, AvailabilityZone=az,
                                     TagSpecifications=specs)["Subnet"]

        subnets[tier].append(run.ensure("ec2 subnet", find, create, lambda s: s["SubnetId"]))
    return subnets


def _internet_gateway(run: Run, vpc_id: str) -> str:
    ec2 = run.client("ec2")

    def find() -> dict[str, Any] | None:
        filters = [{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
        return first(ec2.describe_internet_gateways(Filters=filters)["InternetGateways"])

    def create() -> dict[str, Any]:
        igw = ec2.create_internet_gateway(TagSpecifications=run.tag_specs("internet-gateway", run.name("igw")))
        igw_id = igw["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
        return igw["InternetGateway"]

    return run.ensure("ec2 internet-gateway", find, create, lambda g: g["InternetGatewayId"])["InternetGatewayId"]


def _nat_gateways(run: Run, vpc_id: str, public: list[dict[str, Any]]) -> dict[str, str]:
    """One NAT per AZ, each in that AZ's public subnet with its own EIP (NET-06); returns AZ -> NAT id."""
    ec2 = run.client("ec2")
    nats: dict[str, str] = {}
    for subnet in public[: run.expect("NET-06")["count"]]:
        az = subnet["AvailabilityZone"]
        name = run.name(f"nat-{az[-1]}")

        def find_eip(name: str = name) -> dict[str, Any] | None:
            return _named(ec2.describe_addresses(Filters=run.tag_filters())["Addresses"], name)

        def create_eip(name: str = name) -> dict[str, Any]:
            return ec2.allocate_address(Domain="vpc", TagSpecifications=run.tag_specs("elastic-ip", name))

        eip = run.ensure("ec2 elastic-ip", find_eip, create_eip, lambda a: a["AllocationId"])

        def find_nat(name: str = name) -> dict[str, Any] | None:
            filters = [*run.tag_filters(), {"Name": "vpc-id", "Values": [vpc_id]},
                       {"Name": "state", "Values": ["pending", "available"]}]
            return _named(ec2.describe_nat_gateways(Filters=filters)["NatGateways"], name)

        def create_nat(name: str = name, subnet: dict[str, Any] = subnet, eip: dict[str, Any] = eip) -> dict[str, Any]:
            return ec2.create_nat_gateway(SubnetId=subnet["SubnetId"], AllocationId=eip["AllocationId"],
                                          TagSpecifications=run.tag_specs("natgateway", name))["NatGateway"]

        nats[az] = run.ensure("ec2 nat-gateway", find_nat, create_nat, lambda n: n["NatGatewayId"])["NatGatewayId"]
    return nats


def _route_table(run: Run, vpc_id: str, name: str, subnets: list[dict[str, Any]],
                 default_route: dict[str, str] | None) -> None:
    """A route table for these subnets; `default_route` is the 0.0.0.0/0 target, None for isolated ones."""
    ec2 = run.client("ec2")

    def find() -> dict[str, Any] | None:
        filters = [*run.tag_filters(), {"Name": "vpc-id", "Values": [vpc_id]}]
        return _named(ec2.describe_route_tables(Filters=filters)["RouteTables"], name)

    def create() -> dict[str, Any]:
        table = ec2.create_route_table(VpcId=vpc_id, TagSpecifications=run.tag_specs("route-table", name))["RouteTable"]
        if default_route:
            ec2.create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", **default_route)
        for subnet in subnets:
            ec2.associate_route_table(RouteTableId=table["RouteTableId"], SubnetId=subnet["SubnetId"])
        return table

    run.ensure("ec2 route-table", find, create, lambda t: t["RouteTableId"])


def network(run: Run) -> None:
    vpc = _vpc(run)
    subnets = _subnets(run, vpc)
    igw = _internet_gateway(run, vpc["VpcId"])
    nats = _nat_gateways(run, vpc["VpcId"], subnets["public"])
    _route_table(run, vpc["VpcId"], run.name("public"), subnets["public"], {"GatewayId": igw})
    for subnet in subnets["private"]:
        az = subnet["AvailabilityZone"]
        _route_table(run, vpc["VpcId"], run.name(f"private-{az[-1]}"), [subnet], {"NatGatewayId": nats[az]})
    _route_table(run, vpc["VpcId"], run.name("isolated"), subnets["isolated"], None)
    run.built["vpc"] = vpc["VpcId"]
    run.built["subnets"] = {tier: [s["SubnetId"] for s in items] for tier, items in subnets.items()}


def flow_logs(run: Run) -> None:
    """To the bucket ARN alone: moto 5.2.5 reads a key prefix as part of the bucket name and refuses it
    (NET-07). A refusal comes back in `Unsuccessful` with HTTP 200, on AWS too, so it is raised here."""
    ec2 = run.client("ec2")
    vpc_id = run.need("vpc")
    bucket = run.need("log bucket")
    name = run.name("flow-logs")

    def find() -> dict[str, Any] | None:
        filters = [{"Name": "resource-id", "Values": [vpc_id]}]
        return first(ec2.describe_flow_logs(Filters=filters)["FlowLogs"])

    def create() -> dict[str, Any]:
        made = ec2.create_flow_logs(ResourceType="VPC", ResourceIds=[vpc_id],
                                    TrafficType=run.expect("NET-07")["traffic_type"],
                                    LogDestinationType="s3", LogDestination=f"arn:aws:s3:::{bucket}",
                                    TagSpecifications=run.tag_specs("vpc-flow-log", name))
        if made.get("Unsuccessful"):
            raise ClientError({"Error": made["Unsuccessful"][0]["Error"]}, "CreateFlowLogs")
        return {"FlowLogId": made["FlowLogIds"][0]}

    run.ensure("ec2 flow-log", find, create, lambda f: f["FlowLogId"])
