"""Discovery: every resource the snapshot holds carries the plan's Project and Environment tags."""
from __future__ import annotations

import pytest

from harness.compliance.inventory import tag_dict

# part -> (id field, tags field); resources AWS creates by itself (default security group, main route table)
# carry no tags in a CDK deployment and are left out.
TAGGED_PARTS = {
    "subnets": ("SubnetId", "Tags"), "route_tables": ("RouteTableId", "Tags"),
    "internet_gateways": ("InternetGatewayId", "Tags"), "nat_gateways": ("NatGatewayId", "Tags"),
    "security_groups": ("GroupId", "Tags"), "clusters": ("clusterName", "tags"), "services": ("serviceName", "tags"),
    "task_definitions": ("taskDefinitionArn", "tags"), "load_balancers": ("LoadBalancerName", "Tags"),
    "target_groups": ("TargetGroupName", "Tags"), "repositories": ("repositoryName", "tags"),
    "secrets": ("Name", "Tags"), "db_instances": ("DBInstanceIdentifier", "TagList"),
}


def _created_by_aws(part, resource):
    if part == "security_groups":
        return resource.get("GroupName") == "default"
    if part == "route_tables":
        return any(a.get("Main") for a in resource.get("Associations", []))
    return False


@pytest.mark.requirement("TAG-01")
def test_discovered_resources_carry_the_tags(inventory, plan, env_name, evidence):
    wanted = plan.tags(env_name)
    untagged, unobserved = [], []
    for part, (id_field, tags_field) in TAGGED_PARTS.items():
        if part in inventory.failures:
            unobserved.append(part)
            continue
        for resource in inventory.parts.get(part) or []:
            if _created_by_aws(part, resource):
                continue
            if tags_field not in resource:
                unobserved.append(part)
                break
            have = tag_dict(resource[tags_field])
            if any(have.get(k) != v for k, v in wanted.items()):
                untagged.append(f"{part}: {resource.get(id_field)}")
    evidence("tags", {"untagged": untagged, "tags not observable for": unobserved})
    assert not untagged, f"resources without the tags {wanted}: {untagged}"
