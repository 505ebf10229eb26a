"""Taking ONE snapshot of the deployment, fetched once per session and judged many times.

Discovery follows the contract in docs/design.md: resources are found by the plan's Project/Environment tags,
secrets by their name prefix, everything else by its links (the service's task definition and target
group, the task definition's log group, the alarms whose dimensions name discovered resources). No
name or id chosen by the harness is used, so the same snapshot logic works on an environment someone
else built from the plan.

The tagged resources are found in one call to the tagging API (harness.compliance.inventory.tagging) and
only those are described, by id, batched where the API allows; each service's module fetches its parts in
the order below, as later parts follow links from earlier ones. `meta["discovery"]` says per resource type
which path found it, how many resources and how many calls.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Callable

from harness.compliance.inventory import (autoscaling, cloudtrail, cloudwatch, ec2, ecr, ecs, elbv2, logs, rds,
                                          secretsmanager, vpc)
from harness.compliance.inventory.fetcher import Fetcher
from harness.compliance.inventory.model import ATTRIBUTE_PARTS, PART_TYPES, PARTS, Failure, Inventory
from harness.compliance.inventory.tagging import TAGGED_TYPES, TAGGING, index_tags
from harness.plan import Plan
from harness.target import Target
from harness.util.redact import redact

# The fetch modules in the order they run: a part can follow links only from parts fetched before it.
SERVICES = (ec2, rds, ecs, autoscaling, logs, elbv2, ecr, secretsmanager, cloudwatch, cloudtrail, vpc)


def take_snapshot(target: Target, plan: Plan, env: str, now: Callable[[], dt.datetime] | None = None, *,
                  vpc_contents: bool = True) -> Inventory:
    """Fetch the deployment of `env` once, with paginators; the checks never call AWS themselves. Without
    `vpc_contents` the snapshot finds the deployment only (what a drill acts on), and does not list what
    else lives in its VPC: a role that only drills needs no permission for that."""
    f = Fetcher(target, plan, env)
    mark = target.recorder.mark()
    index_tags(f)
    for service in SERVICES:
        if vpc_contents or service is not vpc:
            service.fetch(f)
    clock = now or (lambda: dt.datetime.now(dt.timezone.utc))
    f.inv.meta = {
        "project": plan.project,
        "env": env,
        "tags": plan.tags(env),  # what the deployment's resources carry: a drift report judges ownership by it
        "target": target.kind,
        "endpoint": redact(target.endpoint_url),
        "region": target.region,
        "taken_at": clock().isoformat(),
        "api_calls": len(target.recorder.since(mark)),
        "calls": target.recorder.summary(mark),
        "discovery": _discovery(f),
        # The container variables shown as they are; every other value is masked (harness.util.redact).
        "plain_variables": sorted(f.plain),
    }
    # Judge exactly what a saved snapshot would hold, so a live run and a replay of it cannot disagree; a
    # URL's password anywhere in it (a tag, a description, an error) is masked like the variables.
    f.inv.parts = redact(json.loads(json.dumps(f.inv.parts, default=str)), f.plain)
    f.inv.failures = {k: Failure(v.kind, redact(v.message)) for k, v in f.inv.failures.items()}
    return f.inv


def _discovery(f: Fetcher) -> dict[str, Any]:
    """Per resource type: the path that found it (PATHS), how many were found and the calls it cost,
    its attributes' calls included; why a type fell back; the failure of a part that could not be fetched.
    The tagging call is counted once, in `tagging`, for all the types it serves."""
    types: dict[str, dict[str, Any]] = {}
    for part in PARTS:
        if part not in f.inv.parts and part not in f.inv.failures:  # not asked for
            continue
        rtype = PART_TYPES[part]
        entry = types.setdefault(rtype, {"path": _path(f, rtype), "found": 0, "calls": 0})
        entry["calls"] += f.part_calls.get(part, 0)
        if part in ATTRIBUTE_PARTS:
            continue
        if part in f.inv.failures:
            entry.update(found=None, failure=f.inv.failures[part].message)
        else:
            entry["found"] = _count(f.inv.parts[part])
        if entry["path"] == "fallback":
            entry["reason"] = f.fallbacks.get(rtype, f.fallback_reason(rtype))
    return {"tagging": f.tagging, "types": types}


def discovery_lines(discovery: dict[str, Any] | None) -> list[str]:
    """The `discovery` section in a few lines: the tagging call, what each path found, and every fallback
    with its reason."""
    if not discovery:
        return []
    tagging, types = discovery["tagging"], discovery["types"]
    head = (f"discovery: the tagging API failed ({tagging['failure']})" if tagging.get("failure")
            else f"discovery: {tagging['found']} tagged resource(s) in {tagging['calls']} tagging call(s)")
    by_path: dict[str, list[str]] = {}
    for rtype, entry in types.items():
        by_path.setdefault(entry["path"], []).append(rtype)
    counts = ", ".join(f"{len(found)} type(s) by {path}" for path, found in by_path.items())
    lines = [f"{head}; {counts}"]
    for rtype in by_path.get("fallback", []):
        entry = types[rtype]
        found = "not fetched" if entry["found"] is None else f"{entry['found']} found"
        lines.append(f"  fallback {rtype}: {found} in {entry['calls']} call(s): {entry['reason']}")
    return lines


def _path(f: Fetcher, rtype: str) -> str:
    """A tagged type the tagging API did not return is on the fallback path, also when a part it depends on
    failed first (its entry then carries that failure)."""
    if rtype in TAGGED_TYPES:
        return "tagging" if rtype in f.tag_index or TAGGING in f.step_failures else "fallback"
    return {"secretsmanager:secret": "prefix", "cloudtrail:trail": "account"}.get(rtype, "link")


def _count(value: Any) -> int:
    """Resources in a part: a list's items, a mapping's values that name one (a web ACL or a bucket that
    exists), the VPC (or the several that carry the tags)."""
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict):
        if "VpcId" in value:
            return 1
        if "ambiguous" in value:
            return len(value["ambiguous"])
        return sum(1 for v in value.values() if v)
    return 0
