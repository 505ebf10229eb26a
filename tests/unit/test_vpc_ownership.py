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
            "InterfaceType": "interface", "TagSet": [], **fields}


@pytest.mark.parametrize("groups, resources, unmanaged", [
    ([{"GroupId": "sg-d", "GroupName": "default", "Tags": []}, {"GroupId": "sg-1", "GroupName": "alb", "Tags": OURS},
      {"GroupId": "sg-2", "GroupName": "cdk", "Tags": STACK}], [], []),
    ([{"GroupId": "sg-x", "GroupName": "debugging", "Tags": []}], [], ["security group sg-x"]),
    ([{"GroupId": "sg-o", "GroupName": "other", "Tags": [{"Key": "aws:cloudformation:stack-name", "Value": "Other"}]}],
     [], ["security group sg-o"]),
    ([], [{"Kind": "instance", "InstanceId": "i-1", "State": {"Name": "running"}, "Tags": []},
          {"Kind": "instance", "InstanceId": "i-2", "State": {"Name": "terminated"}, "Tags": []}], ["EC2 instance i-1"]),
    ([], [eni("eni-nat"), eni("eni-ip", PrivateIpAddress="10.0.0.5"), eni("eni-i", Attachment={"InstanceId": "i-9"}),
          eni("eni-lb", "ELB app/dougust-prod-alb/1"), eni("eni-rds", "RDSNetworkInterface", RequesterId="amazon-rds"),
          eni("eni-task", "arn:aws:ecs:us-east-1:1:attachment/abc")], []),
    ([], [eni("eni-lambda", "AWS Lambda VPC ENI-fn"), eni("eni-tagged", TagSet=OURS)], ["network interface eni-lambda"]),
    ([], [{"Kind": "vpc_endpoint", "VpcEndpointId": "vpce-1", "State": "available", "Tags": [],
           "NetworkInterfaceIds": ["eni-e"]}, eni("eni-e")], ["VPC endpoint vpce-1"]),
    ([], [{"Kind": "load_balancer", "LoadBalancerArn": "arn:lb/other", "LoadBalancerName": "other", "Tags": []},
          {"Kind": "db_instance", "DBInstanceIdentifier": "scratch-db", "TagList": []}],
     ["load balancer arn:lb/other", "DB instance scratch-db"]),
], ids=["default, tagged and stack groups", "a group by hand", "another stack's group", "an instance by hand",
        "interfaces of other resources and a Fargate task's", "a Lambda's interface", "an endpoint by hand",
        "a load balancer and a database of another team"])
def test_vpc_ownership(groups, resources, unmanaged):
    found = vpc_ownership(VPC, groups, [NAT], resources, WANTED)
    assert [f"{r.kind} {r.id}" for r in found if r.owner is None] == unmanaged
    assert any(r.kind == "NAT gateway" and r.owner == "the plan's tags" for r in found)
