"""The compute parts (ECS): the clusters and services that carry the plan's tags, and the task definitions
those services run, masked as soon as they are fetched."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import Fetcher, batches
from harness.compliance.inventory.tagging import TAGGING
from harness.util.redact import redact


def fetch(f: Fetcher) -> None:
    def clusters() -> list[dict[str, Any]]:
        tagged = f.by_tags("ecs:cluster")
        arns = (f.paginate("ecs", "list_clusters", "clusterArns") if tagged is None
                else [m["ResourceARN"] for m in tagged])
        found = []
        for batch in batches(arns, 100):
            resp = f.call("ecs", "describe_clusters", clusters=batch, include=["TAGS", "SETTINGS"])
            found += [c for c in resp["clusters"] if f.tagged(c.get("tags")) and c.get("status") != "INACTIVE"]
        return found

    f.run("clusters", (TAGGING,), clusters)

    def services() -> list[dict[str, Any]]:
        clusters = [c["clusterArn"] for c in f.inv.parts["clusters"]]
        tagged = f.by_tags("ecs:service")
        if tagged is None:
            by_cluster = {arn: f.paginate("ecs", "list_services", "serviceArns", cluster=arn) for arn in clusters}
        else:
            by_cluster = {arn: [m["ResourceARN"] for m in tagged if _service_in(m["ResourceARN"], arn)]
                          for arn in clusters}
        found = []
        for cluster, arns in by_cluster.items():
            for batch in batches(arns, 10):
                resp = f.call("ecs", "describe_services", cluster=cluster, services=batch, include=["TAGS"])
                found += [s for s in resp["services"] if f.tagged(s.get("tags")) and s.get("status") != "INACTIVE"]
        return found

    f.run("services", ("clusters", TAGGING), services)

    def task_definitions() -> list[dict[str, Any]]:
        out = []
        for service in f.inv.parts["services"]:
            resp = f.call("ecs", "describe_task_definition", taskDefinition=service["taskDefinition"],
                          include=["TAGS"])
            td = resp["taskDefinition"]
            # Masked as soon as it is fetched: the values of the variables the plan does not name as plain
            # never reach the snapshot, its evidence or a report.
            td["containerDefinitions"] = [redact(c, f.plain) for c in td.get("containerDefinitions", [])]
            out.append({**td, "tags": resp.get("tags", [])})
        return out

    f.run("task_definitions", ("services",), task_definitions)


def _service_in(service_arn: str, cluster_arn: str) -> bool:
    """Whether a service ARN is of that cluster: 'service/<cluster>/<name>'; an ARN in the old format,
    'service/<name>', does not say, so it is asked of every cluster (ECS answers MISSING where it is not)."""
    resource = service_arn.split(":", 5)[-1].split("/")
    return len(resource) == 2 or resource[1] == cluster_arn.rsplit("/", 1)[-1]
