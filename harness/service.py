"""The plan's ECS service, found as the harness finds what it did not name: by the tags the plan gives the
environment. The local ECS agent, LOAD-03's observer and the smoke gate's SMK-10 each look it up here."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory import tag_dict
from harness.plan import Plan
from harness.target import Target


def find_service(target: Target, plan: Plan, env: str) -> dict[str, Any]:
    """The one ACTIVE ECS service carrying every tag of `env`, as DescribeServices describes it (tags
    included); LookupError when there is none."""
    ecs = target.client("ecs")
    wanted = plan.tags(env)
    clusters = [arn for page in ecs.get_paginator("list_clusters").paginate() for arn in page["clusterArns"]]
    for cluster in clusters:
        arns = [arn for page in ecs.get_paginator("list_services").paginate(cluster=cluster)
                for arn in page["serviceArns"]]
        for i in range(0, len(arns), 10):
            for service in ecs.describe_services(cluster=cluster, services=arns[i:i + 10],
                                                 include=["TAGS"])["services"]:
                have = tag_dict(service.get("tags"))
                if service.get("status") == "ACTIVE" and all(have.get(k) == v for k, v in wanted.items()):
                    return service
    where = target.endpoint_url or f"AWS {target.region}"
    raise LookupError(f"no ACTIVE ECS service tagged {wanted} at {where}")
