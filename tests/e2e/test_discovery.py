"""Discovery in a shared account: the tagging API finds the plan's resources, unrelated ones cost nothing and
change nothing, and where the tagging API misses a type that type alone falls back, as `discovery` says.

One moto server serves the module, in this process. The tables take snapshots in process, each in an
account of its own, and shape the tagging API's answers (leave a type out, add a deleted resource, refuse
the call) with botocore event hooks on the snapshot's own client. The look-alike test, last in the file,
builds prod under names nobody in the harness chose and dev under the provisioner's in moto's default
account (the only one the suite, run apart, can use), after emptying the server, and fills that account
with harness/local/neighbours.py's groups (the bench's).
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
import requests
from botocore.awsrequest import AWSResponse

from support.suites import ROOT, SuiteRun, run_suite
from harness import cli
from harness.report.drift import diff
from harness.compliance.inventory import PARTS, PATHS, TAGGED_TYPES, Inventory, resource_type, tagging_blind_to, take_snapshot
from harness.local import provision as provisioner
from harness.local.neighbours import KINDS, make_groups
from harness.plan import load_plan
from harness.target import Target

PLAN = load_plan(ROOT / "plan" / "dougust.toml")
REGION = PLAN.environment("prod").region
FOREIGN = "acme-platform"
GROUPS = 2 * len(KINDS)
# moto 5.2's tagging API answers for every tagged type but ECR repositories.
MOTO_TAGGED = [t for t in TAGGED_TYPES if t != "ecr:repository"]
# Parts that need nothing from the tagging API: the secrets (name prefix) and the account's trails.
WITHOUT_TAGGING = {"secrets", "trails"}
_accounts = itertools.count(222000000001)


def _in_account(target: Target, account: str) -> Target:
    def header(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account
    target.session.events.register("before-sign", header)
    return target


def _same(a: Inventory, b: Inventory) -> bool:
    """Both snapshots hold the same resources with the same attributes (clocks and counters aside)."""
    drift = diff(a.to_json(), b.to_json())
    return not (drift.added or drift.removed or drift.changed) and set(a.parts) == set(b.parts)


def _types(inventory: Inventory) -> dict[str, dict[str, Any]]:
    return inventory.meta["discovery"]["types"]


@contextmanager
def _answering(target: Target, edit: Any) -> Iterator[None]:
    """Let `edit(mappings)` change every GetResources answer the target's tagging client gets."""
    client = target.client("resourcegroupstaggingapi")
    event = "after-call.resource-groups-tagging-api.GetResources"

    def hook(parsed: dict[str, Any], **_: Any) -> None:
        if "ResourceTagMappingList" in parsed:
            parsed["ResourceTagMappingList"] = edit(parsed["ResourceTagMappingList"])

    client.meta.events.register(event, hook)
    try:
        yield
    finally:
        client.meta.events.unregister(event, hook)


@contextmanager
def _refusing(target: Target, status: int, code: str) -> Iterator[None]:
    """The target's GetResources answers with this error and sends nothing."""
    client = target.client("resourcegroupstaggingapi")
    event = "before-call.resource-groups-tagging-api.GetResources"

    def hook(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return (AWSResponse("http://tagging", status, {}, None),
                {"Error": {"Code": code, "Message": "refused by the test"},
                 "ResponseMetadata": {"HTTPStatusCode": status}})

    client.meta.events.register(event, hook)
    try:
        yield
    finally:
        client.meta.events.unregister(event, hook)


# --- the tables, in process --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(moto_endpoint: str) -> tuple[Target, Inventory]:
    """prod built in an account of its own, and its snapshot as the tagging API finds it."""
    target = _in_account(Target("localstack", REGION, endpoint_url=moto_endpoint), str(next(_accounts)))
    assert provisioner.provision(target.client, PLAN, "prod").skipped == {}
    reference = take_snapshot(target, PLAN, "prod")
    assert not reference.failures, reference.failures
    return target, reference


def test_tagging_api_finds_the_tagged_types_and_ecr_falls_back_on_moto(built):
    target, reference = built
    types = _types(reference)
    assert {t: types[t]["path"] for t in TAGGED_TYPES} == {**{t: "tagging" for t in MOTO_TAGGED},
                                                           "ecr:repository": "fallback"}
    assert all(types[t]["found"] == 1 for t in TAGGED_TYPES), types
    assert types["ecr:repository"]["reason"] == ("the tagging API returned no ecr:repository with the plan's "
                                                 "tags; looked up the repositories the task definitions pull from")
    assert "reason" not in types["rds:db"]
    assert {types[t]["path"] for t in ("ecs:task-definition", "elasticloadbalancing:targetgroup",
                                       "cloudwatch:alarm", "logs:log-group")} == {"link"}
    assert (types["secretsmanager:secret"]["path"], types["cloudtrail:trail"]["path"]) == ("prefix", "account")
    assert {e["path"] for e in types.values()} == set(PATHS)
    tagging = reference.meta["discovery"]["tagging"]
    assert (tagging["calls"], tagging["found"]) == (1, len(MOTO_TAGGED))
    # Every call of the snapshot is counted once: the tagging call, then each type's own.
    assert tagging["calls"] + sum(e["calls"] for e in types.values()) == reference.meta["api_calls"]


@pytest.mark.parametrize("rtype", MOTO_TAGGED)
def test_a_type_the_tagging_api_misses_falls_back_alone_and_finds_the_same(built, rtype):
    target, reference = built
    with tagging_blind_to(target, [rtype]):
        listed = take_snapshot(target, PLAN, "prod")
    types = _types(listed)
    assert types[rtype]["path"] == "fallback"
    assert types[rtype]["reason"] == f"the tagging API returned no {rtype} with the plan's tags"
    assert {t for t in MOTO_TAGGED if types[t]["path"] == "tagging"} == set(MOTO_TAGGED) - {rtype}
    assert not listed.failures and _same(reference, listed)


@pytest.mark.parametrize("rtype, stale_arn", [
    ("ec2:vpc", "arn:aws:ec2:{region}:{account}:vpc/vpc-0123456789abcdef0"),
    ("rds:db", "arn:aws:rds:{region}:{account}:db:deleted-db"),
    ("ecs:cluster", "arn:aws:ecs:{region}:{account}:cluster/deleted-cluster"),
    ("ecs:service", "arn:aws:ecs:{region}:{account}:service/{cluster}/deleted-service"),
    ("elasticloadbalancing:loadbalancer", "arn:aws:elasticloadbalancing:{region}:{account}:loadbalancer/app/gone/1"),
    ("ecr:repository", "arn:aws:ecr:{region}:{account}:repository/deleted/backend"),
])
def test_a_deleted_resource_the_tagging_api_still_lists_is_left_out(built, rtype, stale_arn):
    """The tagging API lists a resource for a while after its deletion, and several describe calls refuse
    a whole batch for one unknown id: the deleted one is left out, the rest is described as before."""
    target, reference = built
    account = reference.parts["vpc"]["OwnerId"]
    cluster = reference.parts["clusters"][0]["clusterName"]
    extra = [{"ResourceARN": stale_arn.format(region=REGION, account=account, cluster=cluster),
              "Tags": [{"Key": k, "Value": v} for k, v in PLAN.tags("prod").items()]}]
    if rtype == "ecr:repository":  # moto's tagging API knows no repository: answer for the real one too
        repo = reference.parts["repositories"][0]
        extra.append({"ResourceARN": repo["repositoryArn"], "Tags": repo["tags"]})
    with _answering(target, lambda mappings: extra + mappings):
        seen = take_snapshot(target, PLAN, "prod")
    assert resource_type(extra[0]["ResourceARN"]) == rtype
    assert _types(seen)[rtype]["path"] == "tagging" and _types(seen)[rtype]["found"] == 1
    assert not seen.failures and _same(reference, seen)


def test_ecr_through_the_tagging_api_reads_no_tags_of_its_own(built):
    """Where the tagging API knows ECR (AWS), the repository is described by name and its tags are the
    tagging API's: no ListTagsForResource per repository."""
    target, reference = built
    repo = reference.parts["repositories"][0]
    with _answering(target, lambda m: m + [{"ResourceARN": repo["repositoryArn"], "Tags": repo["tags"]}]):
        seen = take_snapshot(target, PLAN, "prod")
    assert _types(seen)["ecr:repository"] == {"path": "tagging", "found": 1, "calls": 2}
    assert "ecr.ListTagsForResource" not in seen.meta["calls"] and _same(reference, seen)


@pytest.mark.parametrize("kind, status, code, outcome", [
    ("localstack", 400, "AccessDeniedException", "error"),
    ("localstack", 400, "ThrottlingException", "error"),
    ("localstack", 501, "InternalFailure", "fallback"),
    ("aws", 501, "InternalFailure", "error"),
])
def test_a_failed_tagging_call(moto_endpoint, built, monkeypatch, kind, status, code, outcome):
    """Refused or throttled: every part that needs the tagging API fails with its message, the rest is
    fetched. Not offered at all by an emulator: every tagged type falls back and is found. On AWS a missing
    service is an error, never a reason to read the whole account."""
    _, reference = built
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(name, value)
    account = reference.parts["vpc"]["OwnerId"]
    target = _in_account(Target(kind, REGION, endpoint_url=moto_endpoint), account)
    with _refusing(target, status, code):
        seen = take_snapshot(target, PLAN, "prod")
    tagging = seen.meta["discovery"]["tagging"]
    if outcome == "fallback":
        assert not seen.failures and _same(reference, seen)
        reason = "the tagging API: resourcegroupstaggingapi is not available at this endpoint (HTTP 501)"
        assert {t: (e["path"], e.get("reason")) for t, e in _types(seen).items() if t in TAGGED_TYPES} == {
            t: ("fallback", reason + ("; looked up the repositories the task definitions pull from"
                                      if t == "ecr:repository" else "")) for t in TAGGED_TYPES}
        assert tagging["found"] is None and "not available" in tagging["failure"]
        return
    message = f"resourcegroupstaggingapi:GetResources failed: {code}: refused by the test"
    assert set(seen.failures) == set(PARTS) - WITHOUT_TAGGING
    assert {f.kind for f in seen.failures.values()} == {"error"}
    assert {f.message for f in seen.failures.values()} == {message}
    assert tagging["failure"] == message and tagging["found"] is None
    assert {e["path"] for t, e in _types(seen).items() if t in TAGGED_TYPES} == {"tagging"}
    assert seen.parts["secrets"] == reference.parts["secrets"]


@pytest.fixture(scope="module")
def untagged_tagging_snapshot(built, tmp_path_factory) -> Any:
    target, _ = built
    with _refusing(target, 400, "AccessDeniedException"):
        seen = take_snapshot(target, PLAN, "prod")
    path = tmp_path_factory.mktemp("denied") / "snapshot.json"
    seen.save(path)
    return path


def test_checks_that_need_the_tagging_api_error_when_it_fails(untagged_tagging_snapshot, tmp_path):
    """The snapshot judged offline, so the verdicts are the snapshot's alone: everything discovered through
    the tagging API (and what is linked from it) errors, naming the failed call; the checks on the secrets
    and the trail alone are judged as usual. TAG-01 judges the parts that were fetched and lists the others
    as not observable, as for any failed part."""
    run = run_suite("--snapshot", str(untagged_tagging_snapshot), "--env", "prod", reports=tmp_path / "r")
    assert run.returncode == 1, run.stdout[-3000:]
    erroring = run.ids_with("error")
    judged = run.ids_with("pass", "fail")
    assert judged == {"SEC-01", "SEC-02", "MON-10", "TAG-01"}, (judged, run.summary["counts"])
    assert erroring and all("resourcegroupstaggingapi:GetResources failed: AccessDeniedException"
                            in run.message(rid) for rid in erroring), run.stdout[-3000:]
    assert erroring | judged | run.ids_with("skip") == {r["id"] for r in run.summary["requirements"]}
    assert run.summary["discovery"]["tagging"]["failure"].startswith("resourcegroupstaggingapi:GetResources")


def test_ecr_fallback_reads_every_repository_when_the_service_runs_another_ones_image(moto_endpoint, tmp_path):
    """ECR-04 stays judged on an endpoint whose tagging API misses ECR: when the service's image comes from
    a repository without the plan's tags, the fallback reads every repository's tags and still finds the
    plan's one, so ECR-04 fails on its own."""
    target = _in_account(Target("localstack", REGION, endpoint_url=moto_endpoint), str(next(_accounts)))
    assert provisioner.provision(target.client, PLAN, "prod").skipped == {}
    before = take_snapshot(target, PLAN, "prod")
    ecs = target.client("ecs")
    service = before.parts["services"][0]
    other = target.client("ecr").create_repository(repositoryName="someone-else/backend")["repository"]
    td = dict(before.parts["task_definitions"][0])
    containers = [{**c, "image": f"{other['repositoryUri']}:latest"} for c in td["containerDefinitions"]]
    new = ecs.register_task_definition(
        family=td["family"], containerDefinitions=containers, networkMode=td["networkMode"], cpu=td["cpu"],
        memory=td["memory"], requiresCompatibilities=td["requiresCompatibilities"])["taskDefinition"]
    ecs.update_service(cluster=service["clusterArn"], service=service["serviceName"],
                       taskDefinition=new["taskDefinitionArn"])
    after = take_snapshot(target, PLAN, "prod")
    entry = _types(after)["ecr:repository"]
    assert entry["path"] == "fallback" and entry["reason"].endswith("read every repository's tags"), entry
    assert [r["repositoryName"] for r in after.parts["repositories"]] == \
        [r["repositoryName"] for r in before.parts["repositories"]]
    after.save(tmp_path / "after.json")
    run = run_suite("--snapshot", str(tmp_path / "after.json"), "-k", "registry", reports=tmp_path / "reports")
    assert run.status("ECR-04") == "fail" and "someone-else/backend" in run.message("ECR-04"), run.stdout[-3000:]
    assert {run.status(rid) for rid in ("ECR-01", "ECR-02", "ECR-03")} == {"pass"}, run.stdout[-3000:]


# --- look-alikes in the same account, through the suite -----------------------------------------------------


@pytest.fixture(scope="module")
def shared(moto_endpoint: str) -> Iterator[Target]:
    """prod built by someone else, dev by the provisioner, in moto's default account (the suite's, which
    runs apart and cannot pick another). moto keeps its state per process, so the server is emptied first,
    of what another module run in this process left there, and afterwards, of the look-alikes."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    target = Target("localstack", REGION, endpoint_url=moto_endpoint)
    with mock.patch.object(provisioner.Run, "name", lambda run, suffix: f"{FOREIGN}-{run.env[0]}-{suffix}"):
        assert provisioner.provision(target.client, PLAN, "prod").skipped == {}
    assert provisioner.provision(target.client, PLAN, "dev").skipped == {}
    yield target
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()


def _night(endpoint: str, env: str, tmp_path: Any, name: str) -> SuiteRun:
    run = run_suite("--target", "localstack", "--endpoint-url", endpoint, "--env", env,
                    "--snapshot-out", str(tmp_path / f"{name}.json"), reports=tmp_path / name)
    assert run.summary is not None, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def _verdicts(run: SuiteRun) -> dict[str, tuple[str, str]]:
    return {r["id"]: (r["status"], r["message"]) for r in run.summary["requirements"]}


def test_lookalike_resources_leave_prod_and_dev_verdicts_exactly_as_without_them(shared, moto_endpoint, tmp_path,
                                                                                  capsys):
    without = {env: _night(moto_endpoint, env, tmp_path, f"{env}-without") for env in ("prod", "dev")}
    assert all(run.summary["counts"]["fail"] == run.summary["counts"]["error"] == 0 for run in without.values())

    make_groups(shared.client, PLAN, 0, GROUPS)
    # The look-alikes are there, and close: their tag values differ from the plan's by a suffix, and a name
    # filter on the secret prefix without its separator would take their secrets.
    tagging = shared.client("resourcegroupstaggingapi")
    for project, env in (("dougust-admin", "prod"), ("dougust", "prod-old"), ("dougust", "dev-old")):
        found = tagging.get_resources(TagFilters=[{"Key": "Project", "Values": [project]},
                                                  {"Key": "Environment", "Values": [env]}])
        assert {resource_type(m["ResourceARN"]) for m in found["ResourceTagMappingList"]} >= {
            "ec2:vpc", "rds:db", "ecs:cluster", "ecs:service", "elasticloadbalancing:loadbalancer"}
    names = [s["Name"] for s in shared.client("secretsmanager").list_secrets(
        Filters=[{"Key": "name", "Values": ["prod/dougust"]}])["SecretList"]]
    assert any(n.startswith("prod/dougust-admin/") for n in names) and any(n.startswith("prod/dougust-")
                                                                           for n in names), names

    for env in ("prod", "dev"):
        with_them = _night(moto_endpoint, env, tmp_path, f"{env}-with")
        assert _verdicts(with_them) == _verdicts(without[env]), env
        assert with_them.summary["api_calls"] == without[env].summary["api_calls"], env
        drift = diff(json.loads((tmp_path / f"{env}-without.json").read_text()),
                     json.loads((tmp_path / f"{env}-with.json").read_text()))
        assert (drift.added, drift.removed, drift.changed) == ([], [], []), env
        discovery = with_them.summary["discovery"]
        assert discovery["types"]["ecr:repository"]["path"] == "fallback", discovery
        assert discovery["types"]["rds:db"] == without[env].summary["discovery"]["types"]["rds:db"]

    assert cli.main(["report", "--reports-dir", str(tmp_path / "prod-with")]) == 0
    out = capsys.readouterr().out
    assert "discovery: 5 tagged resource(s) in 1 tagging call(s)" in out, out
    assert "fallback ecr:repository: 1 found in 3 call(s): the tagging API returned no ecr:repository" in out, out
