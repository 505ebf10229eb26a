"""The first step of a snapshot: one paginated call to the Resource Groups Tagging API finds the resources
that carry the plan's tags, so only those are described and what else the account holds costs no call.

Where it returns nothing of a type (an emulator's tagging API may not know it), that type alone falls back
to listing and filtering by tags (`Fetcher.by_tags`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import botocore.exceptions

from harness.compliance.inventory.fetcher import CallFailed, Fetcher
from harness.compliance.inventory.model import Failure
from harness.target import Target

# The types found by the plan's tags, through the tagging API (the rest is reached through them).
TAGGED_TYPES = ("ec2:vpc", "rds:db", "ecs:cluster", "ecs:service", "elasticloadbalancing:loadbalancer",
                "ecr:repository")
TAGGING = "tagging"  # the step that calls the tagging API; the parts of TAGGED_TYPES depend on it


def resource_type(arn: str) -> str:
    """The tagging API's type of an ARN: 'ec2:vpc' for arn:aws:ec2:...:vpc/vpc-1, 'rds:db' for ...:db:name."""
    parts = arn.split(":", 5)
    return f"{parts[2]}:{parts[5].replace(':', '/').split('/', 1)[0]}" if len(parts) == 6 else arn


def index_tags(f: Fetcher) -> None:
    """One paginated GetResources for every type of TAGGED_TYPES carrying the plan's tags. A failed call
    makes the parts of those types fail with it; a tagging API the endpoint does not offer at all makes
    every type fall back, as a type it does not know does."""
    mark = f.target.recorder.mark()
    try:
        found = f.paginate("resourcegroupstaggingapi", "get_resources", "ResourceTagMappingList",
                           TagFilters=[{"Key": k, "Values": [v]} for k, v in f.wanted.items()],
                           ResourceTypeFilters=list(TAGGED_TYPES), ResourcesPerPage=100)
        for mapping in found:
            f.tag_index.setdefault(resource_type(mapping["ResourceARN"]), []).append(mapping)
        f.tagging = {"found": len(found)}
    except CallFailed as failed:
        failure = f.failure(failed)
        if failure.kind == "unavailable":
            f.tagging_missing = f"the tagging API: {failure.message}"
        else:
            f.step_failures[TAGGING] = failure
        f.tagging = {"found": None, "failure": failure.message}
    except botocore.exceptions.BotoCoreError as exc:
        f.step_failures[TAGGING] = Failure("error", f"fetching the tagged resources failed: {exc}")
        f.tagging = {"found": None, "failure": f.step_failures[TAGGING].message}
    f.tagging = {"calls": len(f.target.recorder.since(mark)), **f.tagging, "resource_types": list(TAGGED_TYPES)}


@contextmanager
def tagging_blind_to(target: Target, types: Iterable[str] | None = None) -> Iterator[None]:
    """Make the target's tagging API answer as one that does not know these resource types (all of them when
    None): GetResources leaves them out of its answers while the block lasts. What an emulator's partial
    tagging API does, on any endpoint: the IAM derivation takes the fallback paths with it, tests prove them."""
    client = target.client("resourcegroupstaggingapi")
    event = f"after-call.{client.meta.service_model.service_id.hyphenize()}.GetResources"

    def blind(parsed: dict[str, Any], **_: Any) -> None:
        mappings = parsed.get("ResourceTagMappingList")
        if mappings is not None:
            parsed["ResourceTagMappingList"] = [m for m in mappings if types is not None
                                                and resource_type(m["ResourceARN"]) not in set(types)]

    client.meta.events.register(event, blind)
    try:
        yield
    finally:
        client.meta.events.unregister(event, blind)
