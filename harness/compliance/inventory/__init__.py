"""The one snapshot of the account that the compliance checks read.

`model` holds the data (Inventory, its parts and failures, saved masked); `snapshot.take_snapshot` fills it
through one fetch module per AWS service (ec2, rds, ecs, autoscaling, logs, elbv2, ecr, secretsmanager,
cloudwatch, cloudtrail) and one for everything else in the deployment's VPC (vpc), after the tagging API found the resources that carry the plan's tags (`tagging`).
Fetching and judging never mix: the checks only read the model.
"""
from harness.compliance.inventory.model import (PARTS, PATHS, Failure, Inventory, PartFailed, PartUnavailable,
                                                elb_metric_id, tag_dict)
from harness.compliance.inventory.snapshot import discovery_lines, take_snapshot
from harness.compliance.inventory.tagging import TAGGED_TYPES, resource_type, tagging_blind_to

__all__ = [
    "PARTS", "PATHS", "TAGGED_TYPES", "Failure", "Inventory", "PartFailed", "PartUnavailable", "discovery_lines",
    "elb_metric_id", "resource_type", "tag_dict", "tagging_blind_to", "take_snapshot",
]
