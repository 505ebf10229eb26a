"""Everything else that lives in the deployment's VPC (NET-09), whoever made it: its network interfaces,
EC2 instances, VPC endpoints, load balancers and DB instances, each with its tags, listed by the VPC (not
by the plan's tags: what lacks them is what NET-09 looks for). Security groups and NAT gateways are the ec2
module's parts already. Five calls (and one per 20 load balancers in the VPC that are not the deployment's,
for their tags), whatever the account holds outside the VPC but its load balancers' and DB instances'
pages: those two APIs cannot filter by VPC."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import Fetcher, batches


def fetch(f: Fetcher) -> None:
    def in_vpc() -> list[dict[str, Any]]:
        vpc_id = (f.inv.parts.get("vpc") or {}).get("VpcId")
        if vpc_id is None:
            return []
        by_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
        found = [{"Kind": "network_interface", **eni} for eni in
                 f.paginate("ec2", "describe_network_interfaces", "NetworkInterfaces", Filters=by_vpc)]
        found += [{"Kind": "instance", **instance}
                  for reservation in f.paginate("ec2", "describe_instances", "Reservations", Filters=by_vpc)
                  for instance in reservation.get("Instances", [])]
        found += [{"Kind": "vpc_endpoint", **endpoint} for endpoint in
                  f.paginate("ec2", "describe_vpc_endpoints", "VpcEndpoints", Filters=by_vpc)]
        found += [{"Kind": "load_balancer", **lb} for lb in _load_balancers(f, vpc_id)]
        found += [{"Kind": "db_instance", **db} for db in f.paginate("rds", "describe_db_instances", "DBInstances")
                  if (db.get("DBSubnetGroup") or {}).get("VpcId") == vpc_id]
        return found

    f.run("vpc_resources", ("vpc",), in_vpc)


def _load_balancers(f: Fetcher, vpc_id: str) -> list[dict[str, Any]]:
    """The load balancers in the VPC with their tags; the deployment's already carry theirs."""
    known = {lb["LoadBalancerArn"]: lb.get("Tags", []) for lb in f.inv.parts.get("load_balancers") or []}
    lbs = [lb for lb in f.paginate("elbv2", "describe_load_balancers", "LoadBalancers") if lb.get("VpcId") == vpc_id]
    tags = dict(known)
    for arns in batches([lb["LoadBalancerArn"] for lb in lbs if lb["LoadBalancerArn"] not in known], 20):
        tags.update({d["ResourceArn"]: d.get("Tags", []) for d in
                     f.call("elbv2", "describe_tags", ResourceArns=arns)["TagDescriptions"]})
    return [{**lb, "Tags": tags.get(lb["LoadBalancerArn"], [])} for lb in lbs]
