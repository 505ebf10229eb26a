"""The scaling parts (Application Auto Scaling): the scalable targets and scaling policies of the discovered
ECS services, reached through the services' resource ids."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import Fetcher


def fetch(f: Fetcher) -> None:
    def resource_ids() -> list[str]:
        return [f"service/{s['clusterArn'].split('/')[-1]}/{s['serviceName']}" for s in f.inv.parts["services"]]

    def scalable_targets() -> list[dict[str, Any]]:
        ids = resource_ids()
        return f.paginate("application-autoscaling", "describe_scalable_targets", "ScalableTargets",
                          ServiceNamespace="ecs", ResourceIds=ids) if ids else []

    def scaling_policies() -> list[dict[str, Any]]:
        return [p for rid in resource_ids()
                for p in f.paginate("application-autoscaling", "describe_scaling_policies", "ScalingPolicies",
                                    ServiceNamespace="ecs", ResourceId=rid)]

    f.run("scalable_targets", ("services",), scalable_targets)
    f.run("scaling_policies", ("services",), scaling_policies)
