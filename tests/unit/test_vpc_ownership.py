"""NET-09's reading of the VPC as a table: whose each resource is, by tags, stack or AWS's own."""
from __future__ import annotations

import pytest

from harness.compliance.facts import vpc_ownership

WANTED = {"Project": "dougust", "Environment": "prod"}
OURS = [{"Key": "Project", "Value": "dougust"}, {"Key": "Environment", "Value": "prod"}]
STACK = [{"Key": "aws:cloudformation:stack-name", "Value": "DougustProd"}]
VPC = {"VpcId": "vpc-1", "Tags": OURS + STACK}
NAT = {"NatGatewayId": "nat-1", "State": "available", "Tags": OURS,
       "NatGatewayAddresses": [{"NetworkInterfaceId": "eni-nat", "PrivateIp": "10.0.0.5"}]}


def eni(eni_id: str, description: str = "", **fields) -> dict:
    return {"Kind": "network_interface", "NetworkInterfaceId": eni_id, "Description": description,
            "InterfaceType": "interface", "TagSet": [], "RequesterManaged": False, **fields}


def aws(eni_id: str, description: str, requester: str, groups: tuple[str, ...] = ("sg-1",), **fields) -> dict:
    """An interface AWS made and manages for a service (RequesterManaged), in `groups`."""
    return eni(eni_id, description, RequesterManaged=True, RequesterId=requester,
               Groups=[{"GroupId": g} for g in groups], **fields)


GROUPS = [{"GroupId": "sg-d", "GroupName": "default", "Tags": []},
          {"GroupId": "sg-1", "GroupName": "tasks", "Tags": OURS},
          {"GroupId": "sg-x", "GroupName": "debugging", "Tags": []}]
TABLES = [{"RouteTableId": "rtb-1", "Tags": OURS}, {"RouteTableId": "rtb-x", "Tags": []}]


@pytest.mark.parametrize("resources, unmanaged", [
    ([], ["security group sg-x"]),
    ([{"Kind": "instance", "InstanceId": "i-1", "State": {"Name": "running"}, "Tags": []},
      {"Kind": "instance", "InstanceId": "i-2", "State": {"Name": "terminated"}, "Tags": []}], ["EC2 instance i-1"]),
    ([eni("eni-nat"), eni("eni-ip", PrivateIpAddress="10.0.0.5"), eni("eni-i", Attachment={"InstanceId": "i-9"}),
      aws("eni-lb", "ELB app/dougust-prod-alb/1", "amazon-elb"), aws("eni-rds", "RDSNetworkInterface", "amazon-rds"),
      aws("eni-task", "arn:aws:ecs:us-east-1:1:attachment/abc", "578734482556"),
      aws("eni-rotation", "AWS Lambda VPC ENI-rotation-1a2b", "AROA:rotation", InterfaceType="lambda")], []),
    ([eni("eni-fake-lb", "ELB app/dougust-prod-alb/1"), eni("eni-fake-rds", "RDSNetworkInterface"),
      eni("eni-fake-task", "arn:aws:ecs:us-east-1:1:attachment/abc")],
     ["network interface eni-fake-lb", "network interface eni-fake-rds", "network interface eni-fake-task"]),
    ([aws("eni-other-task", "arn:aws:ecs:us-east-1:1:attachment/def", "578734482556", ("sg-x",)),
      aws("eni-classic", "ELB legacy-api", "amazon-elb", ("sg-x",))],
     ["network interface eni-other-task", "network interface eni-classic"]),
    ([eni("eni-tagged", TagSet=OURS)], []),
    ([{"Kind": "vpc_endpoint", "VpcEndpointId": "vpce-ecr", "State": "available", "Tags": [],
       "Groups": [{"GroupId": "sg-1"}], "NetworkInterfaceIds": ["eni-e"]}, eni("eni-e"),
      {"Kind": "vpc_endpoint", "VpcEndpointId": "vpce-s3", "State": "available", "Tags": [],
       "RouteTableIds": ["rtb-1"]},
      {"Kind": "vpc_endpoint", "VpcEndpointId": "vpce-x", "State": "available", "Tags": [],
       "RouteTableIds": ["rtb-x"]}],
     ["VPC endpoint vpce-x"]),
    ([{"Kind": "load_balancer", "LoadBalancerArn": "arn:lb/other", "LoadBalancerName": "other", "Tags": []},
      {"Kind": "db_instance", "DBInstanceIdentifier": "scratch-db", "TagList": []},
      {"Kind": "db_instance", "DBInstanceIdentifier": "cdk-db", "TagList": STACK}],
     ["load balancer arn:lb/other", "DB instance scratch-db"]),
], ids=["a group by hand", "an instance by hand",
        "interfaces of other resources, a Fargate task's and a rotation Lambda's",
        "interfaces that only say whose they are", "AWS's interfaces in a group not the deployment's",
        "an interface with the plan's tags", "endpoints judged by their groups and route tables",
        "a load balancer and a database of another team, one in the stack"])
def test_vpc_ownership(resources, unmanaged):
    found = vpc_ownership(VPC, GROUPS, [NAT], TABLES, resources, WANTED)
    assert [f"{r.kind} {r.id}" for r in found if r.owner is None] == ["security group sg-x", *[
        u for u in unmanaged if u != "security group sg-x"]]
    assert next(r.owner for r in found if r.id == "sg-d") == "the VPC's default security group"
    assert any(r.kind == "NAT gateway" and r.owner == "the plan's tags" for r in found)
