"""What a snapshot holds: its parts, the failures of the parts it could not fetch, and how it is saved.

The checks judge only this data; the fetch modules beside it fill it in. A saved snapshot is the same data
masked (harness.util.redact), so a replay judges exactly what the live run judged.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.util.files import write_atomic
from harness.util.redact import redact

SNAPSHOT_FORMAT = 1

# Every part a snapshot holds; the plugin offers each one as a fixture of the same name.
PARTS = (
    "vpc", "vpc_attributes", "subnets", "route_tables", "internet_gateways", "nat_gateways", "security_groups",
    "flow_logs", "db_instances", "db_exports", "clusters", "services", "task_definitions", "scalable_targets",
    "scaling_policies", "log_groups", "load_balancers", "lb_attributes", "listeners", "target_groups",
    "tg_attributes", "web_acls", "access_log_buckets", "repositories", "secrets", "alarms", "topics",
    "dashboards", "trails", "vpc_resources",
)

# The resource type each part holds, named as the Resource Groups Tagging API names them; the parts that
# hold attributes of another part's resources count their calls for that type.
PART_TYPES = {
    "vpc": "ec2:vpc", "vpc_attributes": "ec2:vpc", "subnets": "ec2:subnet", "route_tables": "ec2:route-table",
    "internet_gateways": "ec2:internet-gateway", "nat_gateways": "ec2:natgateway",
    "security_groups": "ec2:security-group", "flow_logs": "ec2:vpc-flow-log", "db_instances": "rds:db",
    "db_exports": "rds:snapshot-export-task", "clusters": "ecs:cluster", "services": "ecs:service",
    "task_definitions": "ecs:task-definition", "scalable_targets": "application-autoscaling:scalable-target",
    "scaling_policies": "application-autoscaling:scaling-policy", "log_groups": "logs:log-group",
    "load_balancers": "elasticloadbalancing:loadbalancer", "lb_attributes": "elasticloadbalancing:loadbalancer",
    "listeners": "elasticloadbalancing:listener", "target_groups": "elasticloadbalancing:targetgroup",
    "tg_attributes": "elasticloadbalancing:targetgroup", "web_acls": "wafv2:webacl", "access_log_buckets": "s3:bucket",
    "repositories": "ecr:repository", "secrets": "secretsmanager:secret", "alarms": "cloudwatch:alarm",
    "topics": "sns:topic", "dashboards": "cloudwatch:dashboard", "trails": "cloudtrail:trail",
    # Not one tagging type: whatever else lives in the VPC (network interfaces, instances, endpoints, load
    # balancers, DB instances), found through the VPC.
    "vpc_resources": "ec2:vpc-resource",
}
ATTRIBUTE_PARTS = ("vpc_attributes", "lb_attributes", "tg_attributes")

# How a type was found: by tags through the tagging API, by tags after listing the type (the fallback),
# through a link from a discovered resource, by the secrets' name prefix, or account-wide (the trails).
PATHS = ("tagging", "fallback", "link", "prefix", "account")


class PartFailed(Exception):
    """A part of the snapshot could not be fetched: the checks that need it are errors."""


class PartUnavailable(Exception):
    """The target does not offer the service behind a part: the checks that need it are skipped."""


@dataclass(frozen=True)
class Failure:
    """Why a part is missing, kept in its place so a check that needs it says so instead of passing on
    nothing: "error" (a call failed) or "unavailable" (an endpoint without the service)."""
    kind: Literal["error", "unavailable"]
    message: str


@dataclass
class Inventory:
    """One snapshot: `meta` (what was asked of which target, when, at what cost), a part or a failure per
    name of PARTS."""
    meta: dict[str, Any]
    parts: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)

    def need(self, key: str) -> Any:
        """The part `key`, or the exception that makes a check needing it an error or a skip."""
        if key in self.failures:
            failure = self.failures[key]
            raise (PartUnavailable if failure.kind == "unavailable" else PartFailed)(failure.message)
        if key not in self.parts:
            raise PartFailed(f"the snapshot has no part '{key}'; take a new snapshot with this harness version")
        return self.parts[key]

    @property
    def taken_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.meta["taken_at"])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "meta": self.meta,
            "parts": self.parts,
            "failures": {k: {"kind": f.kind, "message": f.message} for k, f in self.failures.items()},
        }

    def save(self, path: Path) -> None:
        """Written masked (harness.util.redact) with the plain variables the snapshot names; one that names none
        (taken before the harness kept them) has every container value masked."""
        data = redact(json.loads(json.dumps(self.to_json(), default=str)), self.meta.get("plain_variables", ()))
        write_atomic(path, json.dumps(data, indent=1, default=str, sort_keys=True))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        return cls(meta=data["meta"], parts=data["parts"],
                   failures={k: Failure(v["kind"], v["message"]) for k, v in data.get("failures", {}).items()})

    @classmethod
    def load(cls, path: Path) -> Inventory:
        """A saved snapshot; a file that is not one is a ValueError that says which command writes one."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"snapshot {path} not found; pass a file written by --snapshot-out") from None
        except (OSError, UnicodeDecodeError) as exc:  # a directory, unreadable, not text
            raise ValueError(f"snapshot {path} cannot be read ({getattr(exc, 'strerror', None) or exc.reason}); "
                             f"pass a file written by --snapshot-out") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"snapshot {path} is not JSON ({exc.msg} at line {exc.lineno}); "
                             f"take it again with --snapshot-out") from None
        if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot {path} is not a format-{SNAPSHOT_FORMAT} harness snapshot; "
                             f"take it again with --snapshot-out")
        return cls.from_json(data)


def tag_dict(tags: Any) -> dict[str, str]:
    """Tags as a dict, whatever shape the service returns them in (Key/Value, key/value or a mapping)."""
    if isinstance(tags, dict):
        return dict(tags)
    out: dict[str, str] = {}
    for t in tags or []:
        key = t.get("Key", t.get("key"))
        if key is not None:
            out[key] = t.get("Value", t.get("value", ""))
    return out


def elb_metric_id(arn: str) -> str:
    """CloudWatch names ALBs and target groups by the ARN's tail: 'app/name/id', 'targetgroup/name/id'."""
    return arn.split(":", 5)[5].removeprefix("loadbalancer/")
