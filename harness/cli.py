"""The `harness` command: list the plan's requirements, provision the plan into an emulator, take a snapshot,
print the last summary.

The suites themselves run under pytest; this command is for the steps around them (a LocalStack init
hook provisioning the environment, a nightly job keeping the snapshot it judged).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.catalogue import FORMATS, render
from harness.compliance.inventory import discovery_lines, take_snapshot
from harness.drills.history import default_path
from harness.plan import PlanError, load_plan
from harness.target import LOCAL_ENDPOINT, Target, TargetError, default_endpoint, refuse_aws_endpoint


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--plan", default="plan/dougust.toml", help="plan file (default: plan/dougust.toml)")
        p.add_argument("--env", default="prod", help="environment of the plan (default: prod)")
        p.add_argument("--endpoint-url", default=None,
                       help=f"AWS-compatible endpoint (default: {LOCAL_ENDPOINT} for the stand-in and --target local; "
                            "LocalStack's conventions, AWS_ENDPOINT_URL or LOCALSTACK_HOST, to provision or for "
                            "--target localstack)")
        p.add_argument("--region", default=None, help="region (default: the plan's region for --env)")

    prov = sub.add_parser("provision", help="build the plan's compliant environment in an emulator (never AWS)")
    common(prov)
    snap = sub.add_parser("snapshot", help="fetch the deployment once and save it as JSON")
    common(snap)
    snap.add_argument("--target", choices=("local", "localstack", "aws"), default="local")
    snap.add_argument("--profile", default=None, help="AWS profile for --target aws")
    snap.add_argument("--out", required=True, help="file to write")
    cat = sub.add_parser("plan", help="print the plan's requirements: severity, flags, expected values per environment")
    cat.add_argument("--plan", default="plan/dougust.toml", help="plan file (default: plan/dougust.toml)")
    cat.add_argument("--format", choices=FORMATS, default="text",
                     help="text for the terminal (default); markdown is docs/requirements.md")
    pol = sub.add_parser("iam-policy", help="print the least-privilege IAM policy a suite needs, derived from "
                                            "the calls it makes (plan/iam/ holds the committed ones)")
    pol.add_argument("--suite", choices=("compliance", "smoke", "load", "dr"), default="compliance")
    pol.add_argument("--env", default=None, help="one environment of the plan (default: all of them)")
    pol.add_argument("--plan", default="plan/dougust.toml", help="plan file (default: plan/dougust.toml)")
    rep = sub.add_parser("report", help="print the last run's summary; with --html, render the HTML report (Allure 3)")
    rep.add_argument("--reports-dir", default="reports", help="where summary.json is (default: reports)")
    rep.add_argument("--html", default=None, metavar="DIR",
                     help="render the HTML report into DIR/index.html (one file) from --results and the summary")
    rep.add_argument("--results", default="reports/allure-results", metavar="DIR",
                     help="the run's Allure results, as --alluredir wrote them (default: reports/allure-results)")
    rep.add_argument("--drill-history", default=None, metavar="FILE",
                     help="with --html: the drill history to chart per drill "
                          "(default: REPORTS_DIR/drills/history.jsonl)")
    rep.add_argument("--history", default=None, metavar="FILE",
                     help="with --html: the report history (JSON lines) to read earlier runs from and add this one to")
    dif = sub.add_parser("diff", help="what changed between two snapshots, and which requirements newly fail")
    dif.add_argument("old", help="the baseline snapshot (e.g. last night's --snapshot-out)")
    dif.add_argument("new", help="the later snapshot")
    dif.add_argument("--plan", default="plan/dougust.toml", help="plan file (default: plan/dougust.toml)")
    dif.add_argument("--reports-dir", default="reports", help="where drift.json and drift.md go (default: reports)")
    dif.add_argument("--fail-on", choices=("critical", "high", "medium", "low"), default=None,
                     help="exit 1 when a requirement of this severity or worse newly fails or newly errors")
    local = sub.add_parser("local", help="the local stand-in of the running system: up, down, status")
    local.add_argument("action", choices=("up", "down", "status"))
    common(local)
    local.add_argument("--port-offset", type=int, default=0,
                       help="add this to every stand-in port (defaults: PostgreSQL 15432/15433, tasks 13001/13002, "
                            "their admin 13101/13102, HTTP 18080, HTTPS 18443, HAProxy stats 18404)")
    local.add_argument("--repair", action="store_true",
                       help="up: start what of a partly running stand-in is down and make the PostgreSQL pair "
                            "Multi-AZ again (re-attach or rebuild the standby, undoing ALTER SYSTEM settings); "
                            "without it, a running stand-in is left as it is and a partly running one refused")
    local.add_argument("--time-scale", type=float, default=1.0,
                       help="multiply the scaling policy's periods (datapoints, cooldowns) for the stand-in's ECS "
                            "agent: 0.05 makes a 300 s cooldown 15 s (default 1.0)")
    drills = sub.add_parser("drills", help="the disaster-recovery drills' housekeeping")
    drills.add_argument("action", choices=("sweep", "history"),
                        help="sweep: remove the temporary resources (restored databases) of --env's drills whose "
                             "expiry has passed, e.g. of a drill that was killed; a resource without the drill tags "
                             "is never touched, nor one whose expiry cannot be read (reported). history: print "
                             "the drill history, one row per run")
    drills.add_argument("--drill", default=None, metavar="ID", help="history: only this drill's runs")
    drills.add_argument("--drill-history", default=str(default_path("reports")), metavar="FILE",
                        help=f"history: the drill history (default: {default_path('reports')})")
    common(drills)
    drills.add_argument("--all-envs", action="store_true",
                        help="sweep the expired drill resources of every environment, not only --env's")
    drills.add_argument("--target", choices=("local", "aws"), default="local")
    drills.add_argument("--profile", default=None, help="AWS profile for --target aws")
    drills.add_argument("--stand-in", default=".stand-in", metavar="DIR",
                        help="--target local: the stand-in's state directory (default: .stand-in)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "report":
            return _report(Path(args.reports_dir)) if args.html is None and args.history is None else _html_report(args)
        if args.command == "plan":
            return _plan(args.plan, args.format)
        if args.command == "iam-policy":
            return _iam_policy(args)
        if args.command == "diff":
            return _diff(args)
        if args.command == "local":
            return _local(args)
        if args.command == "drills":
            return _drill_history(args) if args.action == "history" else _sweep(args)
        plan = load_plan(Path(args.plan))
        region = args.region or plan.environment(args.env).region
        if args.command == "provision":
            from harness.local.provision import provision

            target = Target("localstack", region, endpoint_url=args.endpoint_url or default_endpoint("localstack"))
            target.check_reachable()
            report = provision(target.client, plan, args.env)
            print(f"provisioned {args.env} at {target.endpoint_url}: {len(report.created)} created, "
                  f"{len(report.existing)} already there, {len(target.recorder.calls)} API calls")
            for service, reason in sorted(report.skipped.items()):
                print(f"skipped {service}: {reason}")
            return 0
        kind = args.target
        target = Target(kind, region, endpoint_url=None if kind == "aws" else args.endpoint_url or default_endpoint(kind),
                        profile=args.profile)
        target.check_reachable()
        inventory = take_snapshot(target, plan, args.env)
        inventory.save(Path(args.out))
        failed = ", ".join(f"{k} ({f.message})" for k, f in inventory.failures.items())
        print(f"snapshot of {args.env} written to {args.out}: {inventory.meta['api_calls']} API calls"
              + (f"; not fetched: {failed}" if failed else ""))
        for line in discovery_lines(inventory.meta["discovery"]):
            print(line)
        return 0
    except (PlanError, TargetError) as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2


def _drill_history(args: argparse.Namespace) -> int:
    """The drill history as a table; lines it cannot read are skipped with a warning on stderr."""
    from harness.drills import history

    path = Path(args.drill_history)
    if not path.is_file():
        raise TargetError(f"no drill history at {path}: a drill run (pytest dr) writes it, or pass --drill-history")
    entries, warnings = history.read(path, args.drill)
    for warning in warnings:
        print(f"harness: {warning}", file=sys.stderr)
    if not entries:
        print(f"no runs{f' of {args.drill}' if args.drill else ''} in {path}")
        return 0
    print("\n".join(history.table(entries)))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """Remove expired drill resources, on the stand-in or on AWS; one line per resource found. Exit 1 when
    an expired one could not be removed."""
    from harness.drills.model import DrillRefused

    plan_path = Path(args.plan)
    plan = load_plan(plan_path)
    if args.target == "local":
        from harness.drills.backends.local import LocalBackend
        from harness.local.stand_in import StandIn, StandInError

        try:
            backend: Any = LocalBackend(StandIn.attach(Path(args.stand_in), plan_path))
        except StandInError as exc:
            raise TargetError(str(exc)) from None
    else:
        from harness.drills.backends.aws import AwsBackend

        region = args.region or plan.environment(args.env).region
        target = Target("aws", region, endpoint_url=args.endpoint_url, profile=args.profile)
        target.check_reachable()
        backend = AwsBackend(target, plan, args.env)
    try:
        found = backend.sweep(time.time(), lambda action, detail: None, None if args.all_envs else args.env)
    except DrillRefused as exc:
        raise TargetError(f"sweep: {exc}") from None
    stuck = [i for i in found if i["expired"] and not i["removed"]]
    for item in found:
        state = "removed" if item["removed"] else "FAILED" if item in stuck else "kept"
        print(f"{state:<7} {item['name']} ({item['drill']}, run {item['run_id']}, expires {item['expires']}): "
              f"{item['detail']}")
    removed = sum(i["removed"] for i in found)
    print(f"{removed} removed, {len(found) - len(stuck) - removed} kept, {len(stuck)} could not be removed"
          + ("" if args.all_envs else f" (environment {args.env} only; --all-envs sweeps every one)"))
    return 1 if stuck else 0


def _local(args: argparse.Namespace) -> int:
    from harness.local.stand_in import StandIn, StandInError

    load_plan(Path(args.plan)).environment(args.env)
    refuse_aws_endpoint("local", args.endpoint_url)
    plane = StandIn.for_project(Path.cwd(), Path(args.plan), args.env, args.endpoint_url or LOCAL_ENDPOINT,
                                  args.port_offset, time_scale=args.time_scale)
    if args.action == "up":
        start = time.monotonic()
        try:
            started = plane.up(repair=args.repair)
        except StandInError as exc:
            print(f"harness: {exc}", file=sys.stderr)
            return 1
        said = "up" if started else "repaired where needed" if args.repair else "already up, left as it is"
        print(f"stand-in of {args.env} {said} in {time.monotonic() - start:.1f} s")
        for name, url in plane.urls.items():
            print(f"  {name:<9} {url}")
        print(f"  CA        {plane.ca_file}   (pass --ca-bundle {plane.ca_file})")
        if (database := plane.database).relocated:
            print(f"  database  {database.state}   (PostgreSQL's user cannot reach the project; down removes it)")
        return 0
    if args.action == "down":
        plane.down()
        print("stand-in stopped")
        return 0
    print(json.dumps(plane.status(), indent=2, default=str))
    return 0


def _iam_policy(args: argparse.Namespace) -> int:
    """The policy for the nightly job's role (compliance), the deploy pipeline's (smoke) or the pre-launch
    load job's (load), for one environment or for every environment of the plan."""
    from harness import iam

    plan = load_plan(Path(args.plan))
    envs = [args.env] if args.env else sorted(plan.environments)
    for env in envs:
        plan.environment(env)  # an unknown environment stops here, with the plan's own message
    if args.suite == "smoke":
        policy = iam.smoke_policy(plan, envs)
    else:
        try:
            derive = {"load": iam.load_policy, "dr": iam.dr_policy}.get(args.suite, iam.compliance_policy)
            policy = derive(plan, envs)
        except iam.DerivationError as exc:
            print(f"harness: {exc}", file=sys.stderr)
            return 1
    sys.stdout.write(iam.render(policy))
    return 0


def _plan(source: str, fmt: str) -> int:
    text = render(load_plan(Path(source)), fmt, source)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # A reader that stops early (`| head`) is not a failure; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _diff(args: argparse.Namespace) -> int:
    from harness.report.drift import diff, ownership_line, summary_line
    from harness.compliance.inventory import Inventory
    from harness.report.summary import write_drift

    plan = load_plan(Path(args.plan))
    try:
        old, new = (Inventory.load(Path(p)).to_json() for p in (args.old, args.new))
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    if old["meta"].get("env") != new["meta"].get("env"):
        raise PlanError(f"{args.old} is of environment '{old['meta'].get('env')}' and {args.new} of "
                        f"'{new['meta'].get('env')}'; compare two snapshots of one environment")
    found = diff(old, new)
    _, markdown = write_drift(Path(args.reports_dir), found, plan)
    print(f"drift since {found.baseline_taken_at}: {summary_line(found)}\n  details: {markdown}")
    if found.coverage:
        print(f"  {ownership_line(found.coverage, found.unmanaged)}")
    if args.fail_on:
        env = new["meta"]["env"]
        blocking = found.newly_failing_at_or_above(
            args.fail_on, {rid: r.severity_in(env) for rid, r in plan.requirements.items()})
        if blocking:
            print(f"newly failing at {args.fail_on} or worse: {', '.join(blocking)}")
            return 1
    return 0


def _report(reports_dir: Path) -> int:
    path = reports_dir / "summary.json"
    if not path.exists():
        print(f"harness: {path} does not exist; run a suite first (make verify)", file=sys.stderr)
        return 2
    summary = json.loads(path.read_text(encoding="utf-8"))
    from harness.report.text import render

    print("\n".join(render(summary)))
    return 0


def _html_report(args: argparse.Namespace) -> int:
    from harness.report.html import ReportInputError, ReportToolError, render

    if args.html is None:
        print("harness: --history goes with --html DIR (the report it belongs to)", file=sys.stderr)
        return 2
    history = Path(args.history) if args.history else None
    try:
        drill_history = Path(args.drill_history) if args.drill_history else default_path(args.reports_dir)
        done = render(Path(args.results), Path(args.reports_dir) / "summary.json", Path(args.html), history,
                      Path(args.reports_dir), drill_history)
    except (ReportInputError, OSError) as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    except ReportToolError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 1
    print(f"HTML report of {done.results} results written to {done.index} (Allure took {done.seconds:.1f} s)")
    if history is not None:
        again = "; this run's earlier entry replaced" if done.replaced_same_run else ""
        print(f"history {history}: {done.history_runs} run(s){again}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
