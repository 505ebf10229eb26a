"""The load-balancing parts (Elastic Load Balancing v2): the load balancers that carry the plan's tags, their
attributes, listeners and target groups, and what guards them: the WAF web ACL each one is associated with
(WAFv2) and whether its access-log bucket exists (S3)."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import CallFailed, Fetcher, by_ids
from harness.compliance.inventory.tagging import TAGGING


def fetch(f: Fetcher) -> None:
    def load_balancers() -> list[dict[str, Any]]:
        tagged = f.by_tags("elasticloadbalancing:loadbalancer")
        if tagged is None:
            lbs = f.paginate("elbv2", "describe_load_balancers", "LoadBalancers")
            tags = _tags(f, [lb["LoadBalancerArn"] for lb in lbs])
            return [{**lb, "Tags": tags.get(lb["LoadBalancerArn"], [])} for lb in lbs
                    if f.tagged(tags.get(lb["LoadBalancerArn"]))]
        # Application, network and gateway load balancers; a classic one (loadbalancer/<name>) is not elbv2's.
        tags = {m["ResourceARN"]: m.get("Tags", []) for m in tagged
                if m["ResourceARN"].split(":", 5)[-1].split("/")[1] in ("app", "net", "gwy")}
        lbs = by_ids(list(tags), 20, ("LoadBalancerNotFound",), lambda arns: f.call(
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
        tags = _tags(f, list(groups))
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
                except CallFailed as exc:
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


def _tags(f: Fetcher, arns: list[str]) -> dict[str, list[dict[str, str]]]:
    """The tags of load balancers or target groups, 20 ARNs a call (the API's limit)."""
    out: dict[str, list[dict[str, str]]] = {}
    for i in range(0, len(arns), 20):
        for d in f.call("elbv2", "describe_tags", ResourceArns=arns[i:i + 20])["TagDescriptions"]:
            out[d["ResourceArn"]] = d.get("Tags", [])
    return out


def _attributes(resp: dict[str, Any]) -> dict[str, str]:
    return {a["Key"]: a["Value"] for a in resp.get("Attributes", [])}
