"""ONE snapshot of the deployment, fetched once per session and judged many times.

Discovery follows the contract in docs/design.md: resources are found by the plan's Project/Environment tags,
secrets by their name prefix, everything else by its links (the service's task definition and target
group, the task definition's log group, the alarms whose dimensions name discovered resources). No
name or id chosen by the harness is used, so the same snapshot logic works on an environment someone
else built from the plan.

Each part of the snapshot is fetched under a guard: a call that fails records a `Failure` for that part
(and for the parts that depend on it) instead of an empty result, so a check that needs it reports ERROR
(or SKIP when the endpoint does not offer the service), never a pass.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import botocore.exceptions

from harness.files import write_atomic
from harness.plan import Plan
from harness.redact import redact_environment
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
        write_atomic(path, json.dumps(self.to_json(), indent=1, default=str, sort_keys=True))

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
    """Runs each part under a guard and records what failed, and why."""

    def __init__(self, target: Target, plan: Plan, env: str) -> None:
        self.target = target
        self.wanted = plan.tags(env)
        self.secret_prefix = plan.secret_prefix(env)
        self.inv = Inventory(meta={})

    def tagged(self, tags: Any) -> bool:
        have = tag_dict(tags)
        return all(have.get(k) == v for k, v in self.wanted.items())

    def run(self, key: str, deps: tuple[str, ...], fetch: Callable[[], Any]) -> None:
        for dep in deps:
            if dep in self.inv.failures:
                self.inv.failures[key] = self.inv.failures[dep]
                return
        try:
            self.inv.parts[key] = fetch()
        except _CallFailed as failed:
            err = failed.error.response.get("Error", {})
            if is_unavailable(failed.error) and self.target.kind != "aws":
                status = failed.error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                self.inv.failures[key] = Failure("unavailable",
                                                 f"{failed.service} is not available at this endpoint (HTTP {status})")
            else:
                self.inv.failures[key] = Failure("error", f"{failed.service}:{failed.error.operation_name} failed: "
                                                          f"{err.get('Code')}: {err.get('Message')}")
        except botocore.exceptions.BotoCoreError as exc:
            self.inv.failures[key] = Failure("error", f"fetching {key} failed: {exc}")

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
        "endpoint": target.endpoint_url,
        "region": target.region,
        "taken_at": clock().isoformat(),
        "api_calls": len(target.recorder.since(mark)),
        "calls": target.recorder.summary(mark),
    }
    # Judge exactly what a saved snapshot would hold, so a live run and a replay of it cannot disagree.
    f.inv.parts = json.loads(json.dumps(f.inv.parts, default=str))
    return f.inv


def _network(f: _Fetcher) -> None:
    def vpc() -> dict[str, Any] | None:
        vpcs = f.paginate("ec2", "describe_vpcs", "Vpcs", Filters=_tag_filters(f))
        return vpcs[0] if len(vpcs) == 1 else ({"ambiguous": [v["VpcId"] for v in vpcs]} if vpcs else None)

    f.run("vpc", (), vpc)

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
        return [db for db in f.paginate("rds", "describe_db_instances", "DBInstances")
                if f.tagged(db.get("TagList"))]

    f.run("db_instances", (), instances)

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
        arns = f.paginate("ecs", "list_clusters", "clusterArns")
        if not arns:
            return []
        found = []
        for i in range(0, len(arns), 100):
            resp = f.call("ecs", "describe_clusters", clusters=arns[i:i + 100], include=["TAGS", "SETTINGS"])
            found += [c for c in resp["clusters"] if f.tagged(c.get("tags"))]
        return found

    f.run("clusters", (), clusters)

    def services() -> list[dict[str, Any]]:
        found = []
        for cluster in f.inv.parts["clusters"]:
            arns = f.paginate("ecs", "list_services", "serviceArns", cluster=cluster["clusterArn"])
            for i in range(0, len(arns), 10):
                resp = f.call("ecs", "describe_services", cluster=cluster["clusterArn"],
                              services=arns[i:i + 10], include=["TAGS"])
                found += [s for s in resp["services"] if f.tagged(s.get("tags"))]
        return found

    f.run("services", ("clusters",), services)

    def task_definitions() -> list[dict[str, Any]]:
        out = []
        for service in f.inv.parts["services"]:
            resp = f.call("ecs", "describe_task_definition", taskDefinition=service["taskDefinition"],
                          include=["TAGS"])
            td = resp["taskDefinition"]
            for c in td.get("containerDefinitions", []):
                c["environment"] = redact_environment(c.get("environment", []))
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


def _load_balancing(f: _Fetcher) -> None:
    def load_balancers() -> list[dict[str, Any]]:
        lbs = f.paginate("elbv2", "describe_load_balancers", "LoadBalancers")
        tags = _elbv2_tags(f, [lb["LoadBalancerArn"] for lb in lbs])
        return [{**lb, "Tags": tags.get(lb["LoadBalancerArn"], [])} for lb in lbs
                if f.tagged(tags.get(lb["LoadBalancerArn"]))]

    f.run("load_balancers", (), load_balancers)

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


def _elbv2_tags(f: _Fetcher, arns: list[str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for i in range(0, len(arns), 20):
        for d in f.call("elbv2", "describe_tags", ResourceArns=arns[i:i + 20])["TagDescriptions"]:
            out[d["ResourceArn"]] = d.get("Tags", [])
    return out


def _attributes(resp: dict[str, Any]) -> dict[str, str]:
    return {a["Key"]: a["Value"] for a in resp.get("Attributes", [])}


def _registry_and_secrets(f: _Fetcher) -> None:
    def repositories() -> list[dict[str, Any]]:
        found = []
        for repo in f.paginate("ecr", "describe_repositories", "repositories"):
            tags = f.call("ecr", "list_tags_for_resource", resourceArn=repo["repositoryArn"]).get("tags", [])
            if not f.tagged(tags):
                continue
            try:
                policy = f.call("ecr", "get_lifecycle_policy", repositoryName=repo["repositoryName"])
                repo["lifecyclePolicyText"] = policy.get("lifecyclePolicyText")
            except _CallFailed as exc:
                if exc.code != "LifecyclePolicyNotFoundException":
                    raise
                repo["lifecyclePolicyText"] = None
            found.append({**repo, "tags": tags})
        return found

    f.run("repositories", (), repositories)

    def secrets() -> list[dict[str, Any]]:
        return [s for s in f.paginate("secretsmanager", "list_secrets", "SecretList",
                                      Filters=[{"Key": "name", "Values": [f.secret_prefix]}])
                if s["Name"].startswith(f.secret_prefix)]

    f.run("secrets", (), secrets)


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
