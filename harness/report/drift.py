"""What changed between two snapshots of the deployment: resources added and removed, attributes changed,
and, when both snapshots carry the statuses their night judged, which requirements newly fail; and, as
driftctl splits them, what in the new snapshot's VPC is not the deployment's (unmanaged, NET-09's reading)
with the coverage line.

Pure: two snapshots (as saved by `--snapshot-out`) in, a `Drift` out. The plugin (`--baseline`) and
`harness diff` only read files and write the result.

Resources are told apart by kind (the snapshot part) and identity (the id AWS gives them), never by
position, so a resource listed in another order is not a change. In lists of named things (tags,
environment variables, container definitions) elements are matched by their name; other lists are
compared as multisets, so a rule added to a security group is one added element, not a shifted list.

Left out, because they change on their own without anyone changing the deployment (`VOLATILE`): clocks
(any key ending in `Time`, `Timestamp` or `Date`, `createdAt`-style keys), counters of running things,
alarm states, service events, a secret's version ids (each rotation makes new ones) and the bytes a log
group holds. Values are masked as everywhere else in the harness (harness.util.redact): a container variable's
value unless the new snapshot names it plain, a URL's password, a value under a secret-looking name. The
comparison sees the values as the snapshots hold them, so a changed value shows as changed, masked.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.compliance.facts import vpc_ownership
from harness.util.redact import MASK, SENSITIVE_NAME, redact, redact_environment

# The key that names a resource in each list-shaped part of the snapshot.
IDENTITY = {
    "subnets": "SubnetId", "route_tables": "RouteTableId", "internet_gateways": "InternetGatewayId",
    "nat_gateways": "NatGatewayId", "security_groups": "GroupId", "flow_logs": "FlowLogId",
    "db_instances": "DBInstanceIdentifier", "db_exports": "ExportTaskIdentifier", "clusters": "clusterArn",
    "services": "serviceArn", "task_definitions": "family", "scalable_targets": "ResourceId",
    "scaling_policies": "PolicyARN", "log_groups": "logGroupName", "load_balancers": "LoadBalancerArn",
    "listeners": "ListenerArn", "target_groups": "TargetGroupArn", "repositories": "repositoryArn",
    "secrets": "Name", "alarms": "AlarmName", "dashboards": "DashboardName", "trails": "TrailARN",
}
# Parts that are another reading of resources other parts hold (what lives in the VPC, NET-09's): compared
# as the unmanaged list, not resource by resource, so one change is not reported twice.
READINGS = frozenset({"vpc_resources"})
# Single-resource parts; every other part not in IDENTITY is a mapping keyed by the resource's ARN or name.
SINGLE = {"vpc": "VpcId", "vpc_attributes": None}

VOLATILE = frozenset({
    "LatestRestorableTime", "DBInstanceStatus", "StateValue", "StateReason", "StateReasonData",
    "runningCount", "pendingCount", "runningTasksCount", "pendingTasksCount", "activeServicesCount",
    "registeredContainerInstancesCount", "events", "rolloutStateReason", "failedTasks", "storedBytes",
    "SecretVersionsToStages", "AvailableIpAddressCount", "DeliverLogsStatus", "createdAt", "updatedAt",
    "registeredAt", "deregisteredAt",
})
VOLATILE_SUFFIX = re.compile(r"(Time|Timestamp|Date)$")
NAME_KEYS = ("name", "Name", "Key", "key", "containerName", "AttributeName", "id")
FAILING = {"fail"}
NOT_JUDGED = {"error"}


@dataclass(frozen=True)
class Change:
    resource: str
    path: str
    old: Any
    new: Any


@dataclass
class Drift:
    baseline_taken_at: str | None
    taken_at: str | None
    added: list[dict[str, str]] = field(default_factory=list)
    removed: list[dict[str, str]] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    requirements: dict[str, list[str]] | None = None  # None: a snapshot carries no statuses
    requirements_note: str = ""
    # What in the new snapshot's VPC is not the deployment's (NET-09), and the share that is; None: not known
    # (a part not fetched, a snapshot from before the harness kept the plan's tags in it)
    unmanaged: list[dict[str, str]] | None = None
    coverage: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["changed"] = [asdict(c) for c in self.changed]
        return data

    def newly_failing_at_or_above(self, severity: str, severities: dict[str, str]) -> list[str]:
        """Requirements that newly fail (or newly could not be judged) at `severity` or worse."""
        order = ("low", "medium", "high", "critical")
        if self.requirements is None:
            return []
        ids = self.requirements["newly_failing"] + self.requirements["newly_erroring"]
        return sorted(i for i in ids if order.index(severities.get(i, "low")) >= order.index(severity))


def resources(snapshot: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """Every resource of a snapshot by (kind, identity); parts that could not be fetched hold none."""
    out: dict[tuple[str, str], Any] = {}
    for kind, part in snapshot.get("parts", {}).items():
        if part is None or kind in READINGS:
            continue
        if kind in SINGLE:
            key = SINGLE[kind]
            out[(kind, str(part.get(key, kind)) if key else kind)] = part
        elif kind in IDENTITY and isinstance(part, list):
            for item in part:
                out[(kind, str(item.get(IDENTITY[kind], "?")))] = item
        elif isinstance(part, dict):
            for identity, item in part.items():
                out[(kind, identity)] = item
    return out


def diff(old: dict[str, Any], new: dict[str, Any]) -> Drift:
    """The drift from snapshot `old` (the baseline) to snapshot `new`."""
    before, after = resources(old), resources(new)
    shared = set(old.get("parts", {})) & set(new.get("parts", {}))
    drift = Drift(old.get("meta", {}).get("taken_at"), new.get("meta", {}).get("taken_at"))
    # A part one snapshot could not fetch says nothing about its resources: neither added nor removed.
    drift.added = [{"kind": k, "id": i} for k, i in sorted(after.keys() - before.keys()) if k in shared]
    drift.removed = [{"kind": k, "id": i} for k, i in sorted(before.keys() - after.keys()) if k in shared]
    plain = frozenset(new.get("meta", {}).get("plain_variables") or ())
    for kind, identity in sorted(before.keys() & after.keys()):
        name = f"{kind}/{identity}"
        drift.changed += [Change(name, path, *_shown(path, o, n, plain))
                          for path, o, n in _compare(before[(kind, identity)], after[(kind, identity)], "")]
    drift.requirements, drift.requirements_note = _requirements(old.get("meta", {}), new.get("meta", {}))
    drift.unmanaged, drift.coverage = _ownership(new)
    return drift


def _ownership(snapshot: dict[str, Any]) -> tuple[list[dict[str, str]] | None, str | None]:
    """The resources in the snapshot's VPC that are not the deployment's, and the coverage line."""
    parts, wanted = snapshot.get("parts", {}), snapshot.get("meta", {}).get("tags")
    needed = ("vpc", "security_groups", "nat_gateways", "route_tables", "vpc_resources")
    if not isinstance(wanted, dict) or not isinstance(parts.get("vpc"), dict) or "VpcId" not in parts["vpc"] \
            or any(parts.get(k) is None for k in needed):
        return None, None
    found = vpc_ownership(*(parts[k] for k in needed), wanted)
    unmanaged = [{"kind": r.kind, "id": r.id, "name": r.name} for r in found if r.owner is None]
    return unmanaged, f"{len(found) - len(unmanaged)} of {len(found)} resources in the VPC are the deployment's"


def _compare(old: Any, new: Any, path: str) -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            if _volatile(str(key)):
                continue
            where = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append((where, _masked(key, old[key]), None))
            elif key not in old:
                out.append((where, None, _masked(key, new[key])))
            elif SENSITIVE_NAME.search(str(key)) and not isinstance(old[key], (dict, list)):
                if old[key] != new[key]:
                    out.append((where, MASK, MASK))
            else:
                out += _compare(old[key], new[key], where)
        return out
    if isinstance(old, list) and isinstance(new, list):
        return _compare_lists(old, new, path)
    return [] if old == new else [(path, old, new)]


def _compare_lists(old: list[Any], new: list[Any], path: str) -> list[tuple[str, Any, Any]]:
    name = _name_key(old) if _name_key(new) == _name_key(old) else None
    if name is not None:
        by_old = {str(item[name]): item for item in old}
        by_new = {str(item[name]): item for item in new}
        out = []
        for key in sorted(by_old.keys() | by_new.keys()):
            if _is_name_value(by_old.get(key) or by_new[key]):  # a `{"name", "value"}` pair: mask by its name
                old_v, new_v = (_pair_value(by_old.get(key)), _pair_value(by_new.get(key)))
                if old_v != new_v:
                    masked = SENSITIVE_NAME.search(key)
                    out.append((f"{path}[{name}={key}]", MASK if masked and old_v is not None else old_v,
                                MASK if masked and new_v is not None else new_v))
            elif key not in by_new:
                out.append((f"{path}[{name}={key}]", _scrub(by_old[key]), None))
            elif key not in by_old:
                out.append((f"{path}[{name}={key}]", None, _scrub(by_new[key])))
            else:
                out += _compare(by_old[key], by_new[key], f"{path}[{name}={key}]")
        return out
    canon_old, canon_new = [_canon(x) for x in old], [_canon(x) for x in new]
    gone = [x for x, c in zip(old, canon_old) if canon_old.count(c) > canon_new.count(c)]
    came = [x for x, c in zip(new, canon_new) if canon_new.count(c) > canon_old.count(c)]
    return [(f"{path}[-]", _scrub(x), None) for x in _unique(gone)] + \
           [(f"{path}[+]", None, _scrub(x)) for x in _unique(came)]


ENV_VARIABLE = re.compile(r"\benvironment\[name=(?P<name>[^\]]*)\](?P<key>\.value)?$")


def _shown(path: str, old: Any, new: Any, plain: frozenset[str]) -> tuple[Any, Any]:
    """A change's old and new values as a report may show them: a container variable's value only when the
    plan names it plain and it looks like no credential, never a URL's password, whole containers masked
    inside."""
    variable = ENV_VARIABLE.search(path)

    def shown(value: Any) -> Any:
        if value is None or variable is None:
            return redact(value, plain)
        if isinstance(value, dict):  # the whole {"name", "value"} pair came or went
            return redact(redact_environment([value], plain)[0], plain)
        return redact_environment([{"name": variable.group("name"), "value": value}], plain)[0]["value"]
    return shown(old), shown(new)


def _name_key(items: list[Any]) -> str | None:
    """The key that names each element, when every element is a dict with a distinct value under it."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for key in NAME_KEYS:
        if all(key in i for i in items) and len({str(i[key]) for i in items}) == len(items):
            return key
    return None


def _is_name_value(item: dict[str, Any]) -> bool:
    return set(item) <= {"name", "value", "Name", "Value", "Key", "key"} and len(item) == 2


def _pair_value(item: dict[str, Any] | None) -> Any:
    if item is None:
        return None
    return next((item[k] for k in ("value", "Value") if k in item), None)


def _volatile(key: str) -> bool:
    return key in VOLATILE or bool(VOLATILE_SUFFIX.search(key))


def _masked(key: Any, value: Any) -> Any:
    return MASK if SENSITIVE_NAME.search(str(key)) and not isinstance(value, (dict, list)) else _scrub(value)


def _scrub(value: Any) -> Any:
    """A whole value shown as added or removed: volatile keys dropped, secret-looking ones masked."""
    if isinstance(value, dict):
        if _is_name_value(value) and SENSITIVE_NAME.search(str(value.get("name", value.get("Name", "")))):
            return {k: (MASK if k in ("value", "Value") else v) for k, v in value.items()}
        return {k: _masked(k, v) for k, v in value.items() if not _volatile(str(k))}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _canon(value: Any) -> str:
    return json.dumps(_scrub(value), sort_keys=True, default=str)


def _unique(items: list[Any]) -> list[Any]:
    seen, out = set(), []
    for item in items:
        if _canon(item) not in seen:
            seen.add(_canon(item))
            out.append(item)
    return out


def _requirements(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, list[str]] | None, str]:
    before, after = old.get("results"), new.get("results")
    if before is None or after is None:
        which = "baseline" if before is None else "new snapshot"
        return None, (f"the {which} carries no requirement statuses (save snapshots with pytest's "
                      "--snapshot-out to record them)")
    failing = lambda statuses: {i for i, s in statuses.items() if s in FAILING}  # noqa: E731
    erring = lambda statuses: {i for i, s in statuses.items() if s in NOT_JUDGED}  # noqa: E731
    return {
        "newly_failing": sorted(failing(after) - failing(before)),
        "resolved": sorted(i for i in failing(before) | erring(before) if after.get(i) == "pass"),
        "still_failing": sorted(failing(after) & failing(before)),
        "waived": sorted(i for i, s in after.items() if s == "waived"),
        "newly_erroring": sorted(erring(after) - erring(before) - failing(before)),
    }, ""


def ownership_line(coverage: str, unmanaged: list[dict[str, str]] | None) -> str:
    """The coverage line, and the unmanaged resources by kind and id."""
    return coverage + ("; unmanaged: " + ", ".join(f"{u['kind']} {u['id']}" for u in unmanaged) if unmanaged else "")


def summary_line(drift: Drift) -> str:
    resources_changed = len({c.resource for c in drift.changed})
    line = (f"{len(drift.added)} added, {len(drift.removed)} removed, {len(drift.changed)} attribute(s) changed "
            f"on {resources_changed} resource(s)")
    if drift.requirements is None:
        return f"{line}; {drift.requirements_note}"
    r = drift.requirements
    parts = [f"{label} {', '.join(r[key]) or 'none'}" for key, label in
             (("newly_failing", "newly failing"), ("resolved", "resolved"), ("still_failing", "still failing"))]
    if r["newly_erroring"]:
        parts.append(f"newly not judged (error) {', '.join(r['newly_erroring'])}")
    return f"{line}; " + "; ".join(parts)


def to_markdown(drift: Drift, plan_texts: dict[str, str] | None = None) -> str:
    """The drift for a person: requirements first (what needs doing), then the resources."""
    texts = plan_texts or {}
    lines = [f"# Drift since {drift.baseline_taken_at}", "",
             f"Baseline taken {drift.baseline_taken_at}; this snapshot taken {drift.taken_at}.", "",
             summary_line(drift), ""] + ([drift.coverage, ""] if drift.coverage else [])
    if drift.requirements is not None:
        lines += ["## Requirements", ""]
        for key, title in (("newly_failing", "Newly failing"), ("newly_erroring", "Newly not judged (error)"),
                           ("resolved", "Resolved"), ("still_failing", "Still failing"), ("waived", "Waived")):
            ids = drift.requirements[key]
            lines.append(f"**{title}** ({len(ids)})" + (":" if ids else ": none"))
            lines += [f"- {i}: {texts.get(i, '')}".rstrip(": ") for i in ids]
            lines.append("")
    if drift.unmanaged is not None:
        lines += [f"## Unmanaged ({len(drift.unmanaged)})", "",
                  *([f"- {u['kind']} `{u['id']}`" + (f" ({u['name']})" if u["name"] else "") for u in drift.unmanaged]
                    or ["none: everything in the VPC is the deployment's"]), ""]
    for title, items in (("Added", drift.added), ("Removed", drift.removed)):
        lines += [f"## {title} ({len(items)})", ""] + ([f"- {i['kind']} `{i['id']}`" for i in items] or ["none"]) + [""]
    lines += [f"## Changed ({len(drift.changed)})", ""]
    if drift.changed:
        lines += ["| resource | attribute | old | new |", "|---|---|---|---|"]
        lines += [f"| `{c.resource}` | `{c.path}` | {_cell(c.old)} | {_cell(c.new)} |" for c in drift.changed]
    else:
        lines.append("none")
    return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    text = text if len(text) <= 160 else text[:157] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"
