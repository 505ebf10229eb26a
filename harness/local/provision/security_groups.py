"""The security groups that chain internet -> ALB -> tasks -> database (ALB-06, ECS-13, DB-08)."""
from __future__ import annotations

from typing import Any

from harness.local.provision.context import Run, first


def _security_group(run: Run, vpc_id: str, role: str, description: str,
                    ingress: list[dict[str, Any]]) -> str:
    ec2 = run.client("ec2")
    name = run.name(role)

    def find() -> dict[str, Any] | None:
        filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
        return first(ec2.describe_security_groups(Filters=filters)["SecurityGroups"])

    def create() -> dict[str, Any]:
        group = ec2.create_security_group(GroupName=name, Description=description, VpcId=vpc_id,
                                          TagSpecifications=run.tag_specs("security-group", name))
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=ingress,
                                             TagSpecifications=run.tag_specs("security-group-rule", name))
        return group

    return run.ensure("ec2 security-group", find, create, lambda g: g["GroupId"])["GroupId"]


def _tcp(port: int, **source: Any) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}


def security_groups(run: Run) -> None:
    """The chain internet -> ALB -> tasks -> database, each hop admitting only the one before it."""
    vpc_id = run.need("vpc")
    world = {"IpRanges": [{"CidrIp": "0.0.0.0/0"}]}  # the ALB is IPv4-only
    alb = _security_group(run, vpc_id, "alb", "Load balancer: HTTP and HTTPS from anywhere",
                          [_tcp(port, **world) for port in run.expect("ALB-06")["ports"]])
    tasks = _security_group(run, vpc_id, "tasks", "ECS tasks: the app port from the load balancer only",
                            [_tcp(run.expect("ECS-13")["port"], UserIdGroupPairs=[{"GroupId": alb}])])
    db = _security_group(run, vpc_id, "db", "Database: PostgreSQL from the ECS tasks only",
                         [_tcp(run.expect("DB-08")["port"], UserIdGroupPairs=[{"GroupId": tasks}])])
    run.built["security groups"] = {"alb": alb, "tasks": tasks, "db": db}
