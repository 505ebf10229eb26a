"""ONE snapshot of the deployment, fetched once per session and judged many times.

Discovery follows the contract in docs/design.md: resources are found by the plan's Project/Environment tags,
secrets by their name prefix, everything else by its links (the service's task definition and target
group, the task definition's log group, the alarms whose dimensions name discovered resources). No
name or id chosen by the harness is used, so the same snapshot logic works on an environment someone
else built from the plan.

The tagged resources are found in one paginated call to the Resource Groups Tagging API (`GetResources`
with the plan's tags and TAGGED_TYPES), and only those are described, by id, batched where the API
allows: what else the account holds costs no call. Where the tagging API returns nothing of a type (an
emulator's tagging API may not know it), that type alone falls back to listing and filtering by tags;
`meta["discovery"]` says per resource type which path found it, how many resources and how many calls.

Each part of the snapshot is fetched under a guard: a call that fails records a `Failure` for that part
(and for the parts that depend on it) instead of an empty result, so a check that needs it reports ERROR
(or SKIP when the endpoint does not offer the service), never a pass.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import botocore.exceptions

from harness.util.files import write_atomic
from harness.image.ecr import EcrImage
from harness.plan import Plan
from harness.util.redact import plain_variables, redact
from harness.target import Target, is_unavailable

SNAPSHOT_FORMAT = 1

# Every part a snapshot holds; the plugin offers each one as a fixture of the same name.
PARTS = (
    "vpc", "vpc_attributes", "subnets", "route_tables", "internet_gateways", "nat_gateways", "security_groups",
    "flow_logs", "db_instances", "db_exports", "clusters", "services", "task_definitions", "scalable_targets",
    "scaling_policies", "log_groups", "load_balancers", "lb_attributes", "listeners", "target_groups",
    "tg_attributes", "web_acls", "access_log_buckets", "repositories", "secrets", "alarms", "topics",
    "dashboards", "trails",
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
}
ATTRIBUTE_PARTS = ("vpc_attributes", "lb_attributes", "tg_attributes")

# The types found by the plan's tags, through the tagging API (the rest is reached through them).
TAGGED_TYPES = ("ec2:vpc", "rds:db", "ecs:cluster", "ecs:service", "elasticloadbalancing:loadbalancer",
                "ecr:repository")
TAGGING = "tagging"  # the step that calls the tagging API; the parts of TAGGED_TYPES depend on it

# How a type was found: by tags through the tagging API, by tags after listing the type (the fallback),
# through a link from a discovered resource, by the secrets' name prefix, or account-wide (the trails).
PATHS = ("tagging", "fallback", "link", "prefix", "account")


class PartFailed(Exception):
    """A part of the snapshot could not be fetched: the checks that need it are errors."""


class PartUnavailable(Exception):
    """The target does not offer the service behind a part: the checks that need it are skipped."""


@dataclass(frozen=True)
class Failure:
    kind: Literal["error", "unavailable"]
    message: str


@dataclass
class Inventory:
    meta: dict[str, Any]
    parts: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)

    def need(self, key: str) -> Any:
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


class _Fetcher:
    """Runs each part under a guard and records what failed, and why, and what each part cost."""

    def __init__(self, target: Target, plan: Plan, env: str) -> None:
        self.target = target
        self.wanted = plan.tags(env)
        self.secret_prefix = plan.secret_prefix(env)
        self.plain = plain_variables(plan, env)
        self.inv = Inventory(meta={})
        self.step_failures: dict[str, Failure] = {}  # steps that are not parts (TAGGING)
        self.part_calls: dict[str, int] = {}
        self.tag_index: dict[str, list[dict[str, Any]]] = {}  # resource type -> the tagging API's mappings
        self.tagging: dict[str, Any] = {}  # the tagging step's own figures
        self.tagging_missing: str | None = None  # why no type can be found through the tagging API here
        self.fallbacks: dict[str, str] = {}  # resource type -> why it was listed instead

    def tagged(self, tags: Any) -> bool:
        have = tag_dict(tags)
        return all(have.get(k) == v for k, v in self.wanted.items())

    def run(self, key: str, deps: tuple[str, ...], fetch: Callable[[], Any]) -> None:
        for dep in deps:
            failure = self.inv.failures.get(dep) or self.step_failures.get(dep)
            if failure is not None:
                self.inv.failures[key] = failure
                return
        mark = self.target.recorder.mark()
        try:
            self.inv.parts[key] = fetch()
        except _CallFailed as failed:
            self.inv.failures[key] = self.failure(failed)
        except botocore.exceptions.BotoCoreError as exc:
            self.inv.failures[key] = Failure("error", f"fetching {key} failed: {exc}")
        finally:
            self.part_calls[key] = len(self.target.recorder.since(mark))

    def failure(self, failed: _CallFailed) -> Failure:
        err = failed.error.response.get("Error", {})
        if is_unavailable(failed.error) and self.target.kind != "aws":
            status = failed.error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return Failure("unavailable", f"{failed.service} is not available at this endpoint (HTTP {status})")
        return Failure("error", f"{failed.service}:{failed.error.operation_name} failed: "
                                f"{err.get('Code')}: {err.get('Message')}")

    def index_tags(self) -> None:
        """One paginated GetResources for every type of TAGGED_TYPES carrying the plan's tags. A failed call
        makes the parts of those types fail with it; a tagging API the endpoint does not offer at all makes
        every type fall back, as a type it does not know does."""
        mark = self.target.recorder.mark()
        try:
            found = self.paginate("resourcegroupstaggingapi", "get_resources", "ResourceTagMappingList",
                                  TagFilters=[{"Key": k, "Values": [v]} for k, v in self.wanted.items()],
                                  ResourceTypeFilters=list(TAGGED_TYPES), ResourcesPerPage=100)
            for mapping in found:
                self.tag_index.setdefault(resource_type(mapping["ResourceARN"]), []).append(mapping)
            self.tagging = {"found": len(found)}
        except _CallFailed as failed:
            failure = self.failure(failed)
            if failure.kind == "unavailable":
                self.tagging_missing = f"the tagging API: {failure.message}"
            else:
                self.step_failures[TAGGING] = failure
            self.tagging = {"found": None, "failure": failure.message}
        except botocore.exceptions.BotoCoreError as exc:
            self.step_failures[TAGGING] = Failure("error", f"fetching the tagged resources failed: {exc}")
            self.tagging = {"found": None, "failure": self.step_failures[TAGGING].message}
        self.tagging = {"calls": len(self.target.recorder.since(mark)), **self.tagging,
                        "resource_types": list(TAGGED_TYPES)}

    def by_tags(self, rtype: str) -> list[dict[str, Any]] | None:
        """The tagging API's mappings (ResourceARN, Tags) of this type; None when it returned none of the
        type, and then the caller lists the type itself: that fallback is recorded with its reason."""
        found = self.tag_index.get(rtype)
        if found:
            return found
        self.fallbacks[rtype] = self.fallback_reason(rtype)
        return None

    def fallback_reason(self, rtype: str) -> str:
        return self.tagging_missing or f"the tagging API returned no {rtype} with the plan's tags"

    def paginate(self, service: str, operation: str, result_key: str, **kwargs: Any) -> list[Any]:
        out: list[Any] = []
        try:
            for page in self.target.client(service).get_paginator(operation).paginate(**kwargs):
                out.extend(page.get(result_key, []))
        except botocore.exceptions.ClientError as exc:
            raise _CallFailed(service, exc) from exc
        return out

    def call(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.target.client(service), operation)(**kwargs)
        except botocore.exceptions.ClientError as exc:
            raise _CallFailed(service, exc) from exc


def resource_type(arn: str) -> str:
    """The tagging API's type of an ARN: 'ec2:vpc' for arn:aws:ec2:...:vpc/vpc-1, 'rds:db' for ...:db:name."""
    parts = arn.split(":", 5)
    return f"{parts[2]}:{parts[5].replace(':', '/').split('/', 1)[0]}" if len(parts) == 6 else arn


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class _CallFailed(Exception):
    def __init__(self, service: str, error: botocore.exceptions.ClientError) -> None:
        super().__init__(str(error))
        self.service = service
        self.error = error

    @property
    def code(self) -> str | None:
        return self.error.response.get("Error", {}).get("Code")


def take_snapshot(target: Target, plan: Plan, env: str, now: Callable[[], dt.datetime] | None = None) -> Inventory:
    """Fetch the deployment of `env` once, with paginators; the checks never call AWS themselves."""
    f = _Fetcher(target, plan, env)
    mark = target.recorder.mark()
    f.index_tags()
    _network(f)
    _database(f)
    _compute(f)
    _load_balancing(f)
    _registry_and_secrets(f)
    _monitoring(f)
    clock = now or (lambda: dt.datetime.now(dt.timezone.utc))
    f.inv.meta = {
        "project": plan.project,
        "env": env,
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


def _network(f: _Fetcher) -> None:
    def vpc() -> dict[str, Any] | None:
        tagged = f.by_tags("ec2:vpc")
        # By filter rather than by VpcIds: a VPC the tagging API still lists after its deletion is left out
        # instead of failing the call.
        filters = _tag_filters(f) if tagged is None else [
            {"Name": "vpc-id", "Values": [m["ResourceARN"].rsplit("/", 1)[1] for m in tagged]}]
        vpcs = f.paginate("ec2", "describe_vpcs", "Vpcs", Filters=filters)
        return vpcs[0] if len(vpcs) == 1 else ({"ambiguous": [v["VpcId"] for v in vpcs]} if vpcs else None)

    f.run("vpc", (TAGGING,), vpc)

    def vpc_id() -> str | None:
        v = f.inv.parts.get("vpc") or {}
        return v.get("VpcId")

    def per_vpc(operation: str, result_key: str, filter_name: str = "vpc-id") -> Callable[[], list[Any]]:
        def fetch() -> list[Any]:
            vid = vpc_id()
            if vid is None:
                return []
            return f.paginate("ec2", operation, result_key, Filters=[{"Name": filter_name, "Values": [vid]}])
        return fetch

    def vpc_attributes() -> dict[str, bool]:
        vid = vpc_id()
        if vid is None:
            return {}
        support = f.call("ec2", "describe_vpc_attribute", VpcId=vid, Attribute="enableDnsSupport")
        hostnames = f.call("ec2", "describe_vpc_attribute", VpcId=vid, Attribute="enableDnsHostnames")
        return {"EnableDnsSupport": support["EnableDnsSupport"]["Value"],
                "EnableDnsHostnames": hostnames["EnableDnsHostnames"]["Value"]}

    f.run("vpc_attributes", ("vpc",), vpc_attributes)
    f.run("subnets", ("vpc",), per_vpc("describe_subnets", "Subnets"))
    f.run("route_tables", ("vpc",), per_vpc("describe_route_tables", "RouteTables"))
    f.run("internet_gateways", ("vpc",), per_vpc("describe_internet_gateways", "InternetGateways",
                                                 "attachment.vpc-id"))
    f.run("nat_gateways", ("vpc",), per_vpc("describe_nat_gateways", "NatGateways"))
    f.run("security_groups", ("vpc",), per_vpc("describe_security_groups", "SecurityGroups"))
    f.run("flow_logs", ("vpc",), per_vpc("describe_flow_logs", "FlowLogs", "resource-id"))


def _tag_filters(f: _Fetcher) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in f.wanted.items()]


def _database(f: _Fetcher) -> None:
    def instances() -> list[dict[str, Any]]:
        tagged = f.by_tags("rds:db")
        if tagged is None:
            return [db for db in f.paginate("rds", "describe_db_instances", "DBInstances")
                    if f.tagged(db.get("TagList"))]
        return [db for arns in batches([m["ResourceARN"] for m in tagged], 100)
                for db in f.paginate("rds", "describe_db_instances", "DBInstances",
                                     Filters=[{"Name": "db-instance-id", "Values": arns}])]

    f.run("db_instances", (TAGGING,), instances)

    def exports() -> list[dict[str, Any]]:
        dbs = f.inv.parts["db_instances"]
        if not dbs:
            return []
        snapshot_arns = {s["DBSnapshotArn"] for db in dbs
                         for s in f.paginate("rds", "describe_db_snapshots", "DBSnapshots",
                                             DBInstanceIdentifier=db["DBInstanceIdentifier"])}
        return [t for t in f.paginate("rds", "describe_export_tasks", "ExportTasks")
                if t.get("SourceArn") in snapshot_arns]

    f.run("db_exports", ("db_instances",), exports)


def _compute(f: _Fetcher) -> None:
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

    def log_groups() -> list[dict[str, Any]]:
        names = {c.get("logConfiguration", {}).get("options", {}).get("awslogs-group")
                 for td in f.inv.parts["task_definitions"] for c in td.get("containerDefinitions", [])}
        found = []
        for name in sorted(n for n in names if n):
            found += [g for g in f.paginate("logs", "describe_log_groups", "logGroups", logGroupNamePrefix=name)
                      if g["logGroupName"] == name]
        return found

    f.run("log_groups", ("task_definitions",), log_groups)


def _service_in(service_arn: str, cluster_arn: str) -> bool:
    """Whether a service ARN is of that cluster: 'service/<cluster>/<name>'; an ARN in the old format,
    'service/<name>', does not say, so it is asked of every cluster (ECS answers MISSING where it is not)."""
    resource = service_arn.split(":", 5)[-1].split("/")
    return len(resource) == 2 or resource[1] == cluster_arn.rsplit("/", 1)[-1]


def _load_balancing(f: _Fetcher) -> None:
    def load_balancers() -> list[dict[str, Any]]:
        tagged = f.by_tags("elasticloadbalancing:loadbalancer")
        if tagged is None:
            lbs = f.paginate("elbv2", "describe_load_balancers", "LoadBalancers")
            tags = _elbv2_tags(f, [lb["LoadBalancerArn"] for lb in lbs])
            return [{**lb, "Tags": tags.get(lb["LoadBalancerArn"], [])} for lb in lbs
                    if f.tagged(tags.get(lb["LoadBalancerArn"]))]
        # Application, network and gateway load balancers; a classic one (loadbalancer/<name>) is not elbv2's.
        tags = {m["ResourceARN"]: m.get("Tags", []) for m in tagged
                if m["ResourceARN"].split(":", 5)[-1].split("/")[1] in ("app", "net", "gwy")}
        lbs = _by_ids(f, list(tags), 20, ("LoadBalancerNotFound",), lambda arns: f.call(
            "elbv2", "describe_load_balancers", LoadBalancerArns=arns)["LoadBalancers"])
        return [{**lb, "Tags": tags[lb["LoadBalancerArn"]]} for lb in lbs]

    f.run("load_balancers", (TAGGING,), load_balancers)

    def lb_attributes() -> dict[str, dict[str, str]]:
        return {lb["LoadBalancerArn"]: _attributes(f.call("elbv2", "describe_load_balancer_attributes",
                                                          LoadBalancerArn=lb["LoadBalancerArn"]))
                for lb in f.inv.parts["load_balancers"]}

    def listeners() -> list[dict[str, Any]]:
        return [ls for lb in f.inv.parts["load_balancers"]
                for ls in f.paginate("elbv2", "describe_listeners", "Listeners",
                                     LoadBalancerArn=lb["LoadBalancerArn"])]

    def target_groups() -> list[dict[str, Any]]:
        linked = {lb["targetGroupArn"] for s in f.inv.parts["services"] for lb in s.get("loadBalancers", [])
                  if lb.get("targetGroupArn")}
        groups = {}
        for lb in f.inv.parts["load_balancers"]:
            for tg in f.paginate("elbv2", "describe_target_groups", "TargetGroups",
                                 LoadBalancerArn=lb["LoadBalancerArn"]):
                groups[tg["TargetGroupArn"]] = tg
        missing = sorted(linked - set(groups))
        if missing:
            for tg in f.call("elbv2", "describe_target_groups", TargetGroupArns=missing)["TargetGroups"]:
                groups[tg["TargetGroupArn"]] = tg
        tags = _elbv2_tags(f, list(groups))
        return [{**tg, "Tags": tags.get(arn, []), "LinkedToService": arn in linked} for arn, tg in groups.items()]

    def tg_attributes() -> dict[str, dict[str, str]]:
        return {tg["TargetGroupArn"]: _attributes(f.call("elbv2", "describe_target_group_attributes",
                                                         TargetGroupArn=tg["TargetGroupArn"]))
                for tg in f.inv.parts["target_groups"]}

    def web_acls() -> dict[str, Any]:
        return {lb["LoadBalancerArn"]: f.call("wafv2", "get_web_acl_for_resource",
                                              ResourceArn=lb["LoadBalancerArn"]).get("WebACL")
                for lb in f.inv.parts["load_balancers"]}

    def access_log_buckets() -> dict[str, bool]:
        out = {}
        for attrs in f.inv.parts["lb_attributes"].values():
            bucket = attrs.get("access_logs.s3.bucket")
            if bucket:
                try:
                    f.call("s3", "head_bucket", Bucket=bucket)
                    out[bucket] = True
                except _CallFailed as exc:
                    if exc.code not in ("404", "NoSuchBucket"):
                        raise
                    out[bucket] = False
        return out

    f.run("lb_attributes", ("load_balancers",), lb_attributes)
    f.run("listeners", ("load_balancers",), listeners)
    f.run("target_groups", ("load_balancers", "services"), target_groups)
    f.run("tg_attributes", ("target_groups",), tg_attributes)
    f.run("web_acls", ("load_balancers",), web_acls)
    f.run("access_log_buckets", ("lb_attributes",), access_log_buckets)


def _by_ids(f: _Fetcher, ids: list[str], size: int, not_found: tuple[str, ...],
            describe: Callable[[list[str]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Describe resources by id in batches of `size`. The tagging API may still list a resource for a while
    after it is deleted, and these describe calls refuse a whole batch for one unknown id: such a batch is
    asked again one id at a time, and the unknown ones are left out."""
    found = []
    for batch in batches(ids, size):
        try:
            found += describe(batch)
        except _CallFailed as exc:
            if exc.code not in not_found:
                raise
            if len(batch) > 1:
                found += _by_ids(f, batch, 1, not_found, describe)
    return found


def _elbv2_tags(f: _Fetcher, arns: list[str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for i in range(0, len(arns), 20):
        for d in f.call("elbv2", "describe_tags", ResourceArns=arns[i:i + 20])["TagDescriptions"]:
            out[d["ResourceArn"]] = d.get("Tags", [])
    return out


def _attributes(resp: dict[str, Any]) -> dict[str, str]:
    return {a["Key"]: a["Value"] for a in resp.get("Attributes", [])}


def _registry_and_secrets(f: _Fetcher) -> None:
    def describe(names: list[str]) -> list[dict[str, Any]]:
        return _by_ids(f, names, 100, ("RepositoryNotFoundException",), lambda batch: f.call(
            "ecr", "describe_repositories", repositoryNames=batch)["repositories"])

    def with_tags(repos: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
        return [(repo, f.call("ecr", "list_tags_for_resource", resourceArn=repo["repositoryArn"]).get("tags", []))
                for repo in repos]

    def listed() -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
        """The fallback: ECR gives a repository's tags one call at a time, so the repositories the service's
        task definitions pull from are asked first; only when none of them carries the plan's tags is every
        repository of the account read (so a service running another repository's image is still judged
        against the tagged one). A tagged repository that no task definition names is missed when another one
        is found: the tagging API, where it knows ECR, finds both."""
        pulled = _pulled_repositories(f)
        found = [(repo, tags) for repo, tags in with_tags(describe(pulled)) if f.tagged(tags)] if pulled else []
        if found:
            f.fallbacks["ecr:repository"] += "; looked up the repositories the task definitions pull from"
            return found
        f.fallbacks["ecr:repository"] += "; read every repository's tags"
        return [(repo, tags) for repo, tags in with_tags(f.paginate("ecr", "describe_repositories", "repositories"))
                if f.tagged(tags)]

    def repositories() -> list[dict[str, Any]]:
        tagged = f.by_tags("ecr:repository")
        if tagged is None:
            pairs = listed()
        else:
            tags = {m["ResourceARN"].split(":repository/", 1)[1]: m.get("Tags", []) for m in tagged}
            pairs = [(repo, tags[repo["repositoryName"]]) for repo in describe(list(tags))]
        found = []
        for repo, repo_tags in pairs:
            try:
                policy = f.call("ecr", "get_lifecycle_policy", repositoryName=repo["repositoryName"])
                repo["lifecyclePolicyText"] = policy.get("lifecyclePolicyText")
            except _CallFailed as exc:
                if exc.code != "LifecyclePolicyNotFoundException":
                    raise
                repo["lifecyclePolicyText"] = None
            found.append({**repo, "tags": repo_tags})
        return found

    f.run("repositories", (TAGGING,), repositories)

    def secrets() -> list[dict[str, Any]]:
        return [s for s in f.paginate("secretsmanager", "list_secrets", "SecretList",
                                      Filters=[{"Key": "name", "Values": [f.secret_prefix]}])
                if s["Name"].startswith(f.secret_prefix)]

    f.run("secrets", (), secrets)


def _pulled_repositories(f: _Fetcher) -> list[str]:
    """The names of the ECR repositories the discovered task definitions' images come from
    (<account>.dkr.ecr.<region>.amazonaws.com/<name>[:tag|@digest]), when those are known."""
    images = (EcrImage.parse(str(container.get("image", ""))) for td in f.inv.parts.get("task_definitions") or []
              for container in td.get("containerDefinitions", []))
    return sorted({image.repository for image in images if image is not None})


def _linked_dimensions(f: _Fetcher) -> set[tuple[str, str]]:
    """The (dimension name, value) pairs by which CloudWatch names the discovered resources."""
    parts = f.inv.parts
    dims: set[tuple[str, str]] = set()
    dims |= {("DBInstanceIdentifier", db["DBInstanceIdentifier"]) for db in parts.get("db_instances") or []}
    dims |= {("ClusterName", c["clusterName"]) for c in parts.get("clusters") or []}
    dims |= {("ServiceName", s["serviceName"]) for s in parts.get("services") or []}
    dims |= {("LoadBalancer", elb_metric_id(lb["LoadBalancerArn"])) for lb in parts.get("load_balancers") or []}
    dims |= {("TargetGroup", elb_metric_id(tg["TargetGroupArn"]))
             for tg in parts.get("target_groups") or []}
    return dims


# Alarms and dashboards are found through the resources they watch, so they are known only when those are.
LINK_SOURCES = ("db_instances", "clusters", "services", "load_balancers", "target_groups")


def _monitoring(f: _Fetcher) -> None:
    def alarms() -> list[dict[str, Any]]:
        dims = _linked_dimensions(f)
        return [a for a in f.paginate("cloudwatch", "describe_alarms", "MetricAlarms")
                if any((d["Name"], d["Value"]) in dims for d in a.get("Dimensions", []))]

    f.run("alarms", LINK_SOURCES, alarms)

    def topics() -> dict[str, Any]:
        arns = sorted({arn for a in f.inv.parts["alarms"] for arn in a.get("AlarmActions", [])
                       if arn.startswith("arn:aws:sns:")})
        return {arn: {"Subscriptions": f.paginate("sns", "list_subscriptions_by_topic", "Subscriptions",
                                                  TopicArn=arn)} for arn in arns}

    f.run("topics", ("alarms",), topics)

    def dashboards() -> list[dict[str, Any]]:
        names = [v for _, v in _linked_dimensions(f)]
        found = []
        for entry in f.paginate("cloudwatch", "list_dashboards", "DashboardEntries"):
            body = f.call("cloudwatch", "get_dashboard", DashboardName=entry["DashboardName"]).get("DashboardBody", "")
            if any(name in body for name in names):
                found.append({"DashboardName": entry["DashboardName"], "DashboardBody": body})
        return found

    f.run("dashboards", LINK_SOURCES, dashboards)

    def trails() -> list[dict[str, Any]]:
        out = []
        for trail in f.call("cloudtrail", "describe_trails", includeShadowTrails=False).get("trailList", []):
            status = f.call("cloudtrail", "get_trail_status", Name=trail["TrailARN"])
            out.append({**trail, "IsLogging": status.get("IsLogging")})
        return out

    f.run("trails", (), trails)


def _discovery(f: _Fetcher) -> dict[str, Any]:
    """Per resource type: the path that found it (PATHS), how many were found and the calls it cost,
    its attributes' calls included; why a type fell back; the failure of a part that could not be fetched.
    The tagging call is counted once, in `tagging`, for all the types it serves."""
    types: dict[str, dict[str, Any]] = {}
    for part in PARTS:
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


def _path(f: _Fetcher, rtype: str) -> str:
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
