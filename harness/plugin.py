"""The pytest plugin: options, the requirement marker, the session's snapshot, waivers and reports.

Nothing happens unless the collected tests carry `@pytest.mark.requirement(...)`: a run of the project's
own tests never touches a target. When they do, everything that can stop the run (plan, waivers, marker
ids, environment, target, snapshot) is settled after collection and before the first test, and any
problem is one `pytest.UsageError` line.
"""
from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import allure
import botocore.exceptions
import pytest

from harness.util import proc
from harness.report.allure import DRIFT_RESULT, Attachment, write_result
from harness.report.drift import diff, summary_line
from harness.compliance.inventory import PARTS, Inventory, PartFailed, PartUnavailable, take_snapshot
from harness.plan import Plan, PlanError, Requirement, Waiver, load_plan, load_waivers
from harness.smoke.probes import Endpoint
from harness.util.redact import plain_variables, redact
from harness.report.summary import Outcome, classify, drift_section, summarize, write_drift, write_summary
from harness.smoke.gate import GateInput, GateResult, run_gate
from harness.target import LOCAL_ENDPOINT, Target, TargetError, default_endpoint

ALLURE_SEVERITY = {"critical": "blocker", "high": "critical", "medium": "normal", "low": "minor"}
STATE = pytest.StashKey["HarnessState"]()
EVIDENCE = pytest.StashKey[list]()
SUMMARY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "Dougust deployment verification")
    group.addoption("--target", choices=("local", "localstack", "aws"), default="local",
                    help="local: embedded emulator on 127.0.0.1:4566 (default); localstack: --endpoint-url, else "
                         "LocalStack's conventions (AWS_ENDPOINT_URL, LOCALSTACK_HOST); aws: a real account, read-only")
    group.addoption("--env", default="prod", help="environment of the plan to verify (default: prod)")
    group.addoption("--plan", default=None, help="plan file (default: plan/dougust.toml under the rootdir)")
    group.addoption("--waivers", default=None, help="waiver file (default: waivers.toml beside the plan)")
    group.addoption("--endpoint-url", default=None,
                    help="AWS-compatible endpoint (local default http://127.0.0.1:4566; localstack default from "
                         "AWS_ENDPOINT_URL or LOCALSTACK_HOST, else http://localhost:4566)")
    group.addoption("--region", default=None, help="AWS region (default: the plan's region for --env)")
    group.addoption("--profile", default=None,
                    help="AWS profile: the account's on aws; on an emulator, one that enforces IAM")
    group.addoption("--provision", action="store_true",
                    help="localstack: provision the plan's environment first (never allowed on aws)")
    group.addoption("--baseline", default=None, metavar="FILE",
                    help="an earlier snapshot (--snapshot-out of another night): write what changed since, and "
                         "which requirements newly fail, to drift.json and drift.md in --reports-dir")
    group.addoption("--snapshot", default=None, metavar="FILE",
                    help="judge a saved snapshot offline instead of fetching one")
    group.addoption("--snapshot-out", default=None, metavar="FILE", help="save the session's snapshot as JSON")
    group.addoption("--reports-dir", default="reports", help="where summary.json goes (default: reports)")
    group.addoption("--image", default=None, metavar="REF",
                    help="the image checks judge this image instead of the one the service runs: a registry "
                         "reference HOST/REPOSITORY:TAG, docker-archive:FILE (docker save) or oci:DIR")
    smoke = parser.getgroup("harness-smoke", "Dougust smoke gate")
    smoke.addoption("--base-url", default=None,
                    help="HTTPS URL of the load balancer (default on --target local: the local stand-in's)")
    smoke.addoption("--http-url", default=None, help="plain-HTTP URL of the same host (default: derived)")
    smoke.addoption("--stand-in", default=None, metavar="DIR",
                    help="--target local: use the running stand-in whose state is in DIR (default: bring up, or "
                         "reuse, the project's own in .stand-in)")
    smoke.addoption("--ca-bundle", default=None, help="CA file to trust for the HTTPS URL (default: the system's)")
    smoke.addoption("--expect-version", default=None,
                    help="the version the deploy shipped; every response must report it")
    smoke.addoption("--smoke-user", default=None, help="smoke account e-mail (default: the plan's secret)")
    smoke.addoption("--smoke-password", default=None, help="smoke account password (default: the plan's secret)")
    smoke.addoption("--deadline", type=float, default=0.0,
                    help="seconds to keep re-checking until every check holds (default 0: one round)")
    load = parser.getgroup("harness-load", "Dougust load test (Locust)")
    load.addoption("--load-profile", default=None,
                   help="profile of the plan's [load.NAME] (default on the local stand-in: local)")
    load.addoption("--load-users", type=int, default=None, help="override the profile's users")
    load.addoption("--load-rate", type=float, default=None,
                   help="override the profile's total arrival rate per second (0: unpaced)")
    load.addoption("--load-duration", type=float, default=None, help="override the profile's duration_s")
    load.addoption("--load-workers", type=int, default=None,
                   help="Locust processes generating load on this machine (1: one standalone process; "
                        "N > 1: a master and N workers)")
    load.addoption("--load-expect-workers", type=int, default=0,
                   help="wait for this many workers started elsewhere (locust -f load/locustfile.py --worker "
                        "--master-host ...) instead of starting local ones")
    load.addoption("--load-master-bind", default="127.0.0.1:5557", metavar="HOST:PORT",
                   help="where the Locust master listens for workers (default 127.0.0.1:5557)")
    load.addoption("--load-workers-wait", type=int, default=60, metavar="S",
                   help="how long the master waits for its workers to connect (default 60 s)")
    load.addoption("--load-phase-file", default=None, metavar="FILE",
                   help='phases another component marks during the run, JSON lines {"at": epoch, "phase": name}')
    load.addoption("--accounts-file", default=None,
                   help="JSON list of {email, password} for the simulated users (default: the plan's secret "
                        "<env>/dougust/load-accounts; on the local stand-in, made for the run)")
    load.addoption("--confirm", default=None, metavar="ENV",
                   help="confirm load or drills against a protected environment by naming it")
    dr = parser.getgroup("harness-dr", "Dougust disaster-recovery drills")
    dr.addoption("--drill", default=None, metavar="IDS",
                 help="the drills to run, comma-separated (default: every drill the selected tests carry)")
    dr.addoption("--dry-run", action="store_true",
                 help="say what each drill would do, and do nothing (read-only calls only)")
    dr.addoption("--with-load", default=None, metavar="PROFILE",
                 help="run the drills under the plan's load profile PROFILE ([load.NAME]; --load-* options "
                      "apply): its figures are reported before, during and after each fault, and before and "
                      "after must hold LOAD-01's SLOs")
    dr.addoption("--restore-dsn-template", default=None, metavar="URL",
                 help="how the runner reaches a restored database (DRILL-02 on AWS), with {host} and {port}: "
                      "'postgresql://USER:PASSWORD@{host}:{port}/dougust'; without it the restore is not verified")
    dr.addoption("--db-url", default=None, metavar="DSN",
                 help="PostgreSQL URL the runner can reach (inside the VPC): canary inserts every 50 ms straight "
                      "to the database (default on the local stand-in: its multi-host DSN)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(id): the plan requirement this test verifies, e.g. DB-02")
    config.stash[STATE] = HarnessState(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[STATE].close()


@dataclass
class HarnessState:
    """What one session settled before its first test, and what its tests produced."""

    config: pytest.Config
    plan: Plan | None = None
    plan_path: Path | None = None
    env: str = "prod"
    waivers: dict[str, Waiver] = field(default_factory=dict)
    inventory: Inventory | None = None
    carried: dict[str, list[str]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    provision_calls: int = 0
    endpoint: Endpoint | None = None
    gate_input: GateInput | None = None
    gate: GateResult | None = None
    baseline: dict[str, Any] | None = None
    load: Any = None  # harness.load.session.LoadRun, once the session's load run is over
    drills: dict[str, Any] = field(default_factory=dict)  # id -> harness.drills.engine.DrillResult
    image: Any = None  # harness.image.inspect.ImageFacts, or the skip or failure of the image checks
    image_session: Any = None  # harness.image.session.ImageSession
    started: float | None = None
    resources: ExitStack = field(default_factory=ExitStack)

    @property
    def active(self) -> bool:
        return self.plan is not None

    def close(self) -> None:
        self.resources.close()

    def requirement(self, item: pytest.Item) -> Requirement | None:
        marker = item.get_closest_marker("requirement")
        if marker is None or self.plan is None:
            return None
        return self.plan.requirements[marker.args[0]]

    # -- settled after collection ------------------------------------------------------------------------

    def load_plan(self, items: list[pytest.Item]) -> None:
        """Plan, environment, waivers and markers; the state becomes active only when all of them hold."""
        opt = self.config.option
        plan_path = Path(opt.plan) if opt.plan else self.config.rootpath / "plan" / "dougust.toml"
        plan = load_plan(plan_path)
        plan.environment(opt.env)
        waiver_path = Path(opt.waivers) if opt.waivers else plan_path.parent / "waivers.toml"
        today = dt.datetime.now(dt.timezone.utc).date()
        waivers = {w.id: w for w in load_waivers(waiver_path, plan, today) if w.env in (None, opt.env)}
        carried: dict[str, list[str]] = {}
        for item in items:
            marker = item.get_closest_marker("requirement")
            if marker is None:
                continue
            if len(marker.args) != 1 or not isinstance(marker.args[0], str):
                raise PlanError(f"{item.nodeid}: write the marker as @pytest.mark.requirement(\"ID\")")
            rid = marker.args[0]
            if rid not in plan.requirements:
                raise PlanError(f"{item.nodeid} carries requirement '{rid}', which {plan_path} lacks; "
                                f"add it to the plan or fix the marker")
            carried.setdefault(rid, []).append(item.nodeid)
        self.plan, self.plan_path, self.env, self.waivers, self.carried = plan, plan_path, opt.env, waivers, carried

    def prepare_inventory(self) -> None:
        opt = self.config.option
        assert self.plan is not None
        if opt.baseline:
            try:
                baseline = Inventory.load(Path(opt.baseline))
            except ValueError as exc:
                raise TargetError(f"--baseline: {exc}") from None
            if baseline.meta.get("env") != self.env:
                raise TargetError(f"baseline {opt.baseline} is of environment '{baseline.meta.get('env')}' but --env "
                                  f"is '{self.env}'; pass a baseline of {self.env}")
            self.baseline = baseline.to_json()
        if opt.snapshot:
            try:
                inventory = Inventory.load(Path(opt.snapshot))
            except ValueError as exc:
                raise TargetError(str(exc)) from None
            # A snapshot saved by an older harness may hold values the plan does not name as plain.
            inventory.parts = redact(inventory.parts, plain_variables(self.plan, self.env))
            if inventory.meta.get("env") != self.env:
                raise TargetError(f"snapshot {opt.snapshot} is of environment '{inventory.meta.get('env')}' "
                                  f"but --env is '{self.env}'; pass --env {inventory.meta.get('env')}")
            self.started = time.perf_counter()
            self.inventory = inventory
            return
        target = self._target()
        if target.kind == "local":
            from harness.local.emulator import running_emulator

            self.resources.enter_context(running_emulator(target.endpoint_url))
        target.check_reachable()
        if target.kind == "local" or opt.provision:
            from harness.local.provision import provision

            mark = target.recorder.mark()
            try:
                report = provision(target.client, self.plan, self.env)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                raise TargetError(f"provisioning {self.env} at {target.endpoint_url} failed: {exc}; "
                                  f"check the endpoint or run without --provision") from None
            self.provision_calls = len(target.recorder.since(mark))
            for service, reason in sorted(report.skipped.items()):
                self.config.get_terminal_writer().line(f"harness: provisioning skipped {service}: {reason}")
        self.started = time.perf_counter()
        self.inventory = take_snapshot(target, self.plan, self.env)

    def prepare_smoke(self, smoke_ids: set[str]) -> None:
        """Where the gate looks and with which account; on --target local, the stand-in is brought up."""
        opt = self.config.option
        assert self.plan is not None
        expects = {rid: self.plan.requirements[rid].expected(self.env) for rid in sorted(smoke_ids)}
        if bool(opt.smoke_user) != bool(opt.smoke_password):
            raise TargetError("pass both --smoke-user and --smoke-password, or neither (the plan's secret is used)")
        secrets_at = None  # where the smoke account's secret is: the target's, or the stand-in's emulator
        if opt.base_url:
            self.endpoint = Endpoint.of(opt.base_url, opt.http_url, opt.ca_bundle)
        elif opt.target == "local":
            plane = self._stand_in()
            self.endpoint = Endpoint.of(plane.urls["https"], plane.urls["http"], str(plane.ca_file))
            secrets_at = plane.target
        else:
            raise TargetError(f"smoke checks on --target {opt.target} need --base-url (the load balancer's HTTPS URL)")
        account = (opt.smoke_user, opt.smoke_password) if opt.smoke_user else None
        problem = None
        if account is None and "SMK-06" in expects:
            account, problem = self._smoke_account(expects["SMK-06"]["account_secret"], secrets_at)
        self.gate_input = GateInput(expects, opt.expect_version, account, problem)

    def _stand_in(self) -> Any:
        """The local stand-in (harness.local.stand_in.StandIn): the running one --stand-in names, or the
        project's own, brought up for this session if it is not running."""
        from harness.local.stand_in import StandIn, StandInError, StandInRefused

        assert self.plan is not None and self.plan_path is not None
        if self.config.option.stand_in:
            try:
                plane = StandIn.attach(Path(self.config.option.stand_in), self.plan_path)
            except StandInError as exc:
                raise TargetError(f"--stand-in: {exc}") from None
            if plane.env != self.env:
                raise TargetError(f"the stand-in in {plane.root} runs environment '{plane.env}'; pass --env {plane.env}")
            # Used as it is: `up` would provision the emulator again, undoing what its owner changed there.
            if not (plane.status()["tasks"]["supervisor"] and plane.alb.status().get("running")):
                raise TargetError(f"the stand-in in {plane.root} is not running; bring it up with 'harness local up'")
            return plane
        plane = StandIn.for_project(self.config.rootpath, self.plan_path, self.env,
                                      self.config.option.endpoint_url or LOCAL_ENDPOINT)
        # Whatever this session starts goes when it ends, killed included: the watchdog then runs `down`.
        token = proc.on_death([sys.executable, "-c", "import sys; from pathlib import Path; "
                                   "from harness.local.stand_in import StandIn; "
                                   "StandIn.attach(Path(sys.argv[1]), Path(sys.argv[2])).down()",
                                   str(plane.root), str(self.plan_path.resolve())], cwd=self.config.rootpath)
        try:
            started = plane.up()
        except StandInRefused as exc:  # nothing was started or stopped: the running stand-in stays as found
            proc.cancel(token)
            raise TargetError(f"the local stand-in: {exc}") from None
        except StandInError as exc:
            plane.down()
            proc.cancel(token)
            raise TargetError(f"the local stand-in did not come up: {exc}") from None
        if started:
            self.resources.callback(proc.cancel, token)
            self.resources.callback(plane.down)
        else:
            proc.cancel(token)
        return plane

    def prepare_load(self, load_ids: set[str]) -> None:
        """Settle the profile, the URL, the accounts and the confirmation, then make the session's one load
        run (Locust in its own processes), with live progress; the checks judge what it measured."""
        from harness.load import accounts as load_accounts
        from harness.load.chart import draw
        from harness.load.profile import check_slos, resolve
        from harness.load.runner import RunSpec, run
        from harness.load.scaling import ScalingObserver
        from harness.load.session import LoadRun

        opt = self.config.option
        assert self.plan is not None
        stand_in = opt.target == "local" and not opt.base_url
        name = opt.load_profile or ("local" if stand_in else None)
        if name is None:
            raise TargetError(f"load on --target {opt.target} needs --load-profile (the plan defines "
                              f"{', '.join(sorted(self.plan.load))})")
        profile = resolve(self.plan, self.env, name, users=opt.load_users, rate_per_s=opt.load_rate,
                          duration_s=opt.load_duration, workers=opt.load_workers)
        check_slos(self.plan, self.env, load_ids)
        if opt.load_expect_workers < 0:
            raise TargetError("--load-expect-workers must be 0 or more")
        if not stand_in and self.plan.environment(self.env).protected and opt.confirm != self.env:
            raise TargetError(f"environment '{self.env}' is protected: load against it needs --confirm {self.env}")
        if not stand_in and not opt.base_url:
            raise TargetError(f"load on --target {opt.target} needs --base-url (the load balancer's URL, "
                              f"https:// or http://)")
        plane = self._stand_in() if stand_in else None
        base_url = plane.urls["https"] if plane else opt.base_url.rstrip("/")
        ca_bundle = str(plane.ca_file) if plane else opt.ca_bundle
        if not base_url.startswith(("http://", "https://")):
            raise TargetError(f"--base-url {base_url}: give an http:// or https:// URL")
        accounts = self._load_accounts(profile, plane, base_url, ca_bundle)
        time_scale = float(plane.status()["tasks"].get("time_scale", 1.0)) if plane else 1.0
        observer = None
        # Scaling is observed where a service scales: the stand-in's emulator, or the AWS account.
        if "LOAD-03" in load_ids and (plane is not None or opt.target == "aws"):
            observer = ScalingObserver(plane.target if plane else self._target(), self.plan, self.env,
                                       interval_s=1.0 if plane else 15.0,
                                       cpu_reader=plane.service_cpu if plane else None)
        stop_check = None
        if profile.stop.alarms:  # read once before any load: a brake that cannot work refuses the run
            from harness.load.stop import alarm_check

            stop_check = alarm_check(self._target().client("cloudwatch"), profile.stop.alarms)
            try:
                firing = stop_check()
            except Exception as exc:  # noqa: BLE001 (any client error: one line, before any load)
                raise TargetError(f"load profile '{profile.name}': its stop alarms cannot be read ({exc}); fix "
                                  f"stop.alarms in the plan, or the credentials") from None
            if firing:
                raise TargetError(f"load profile '{profile.name}': stop {firing} already; the run would stop at once")
        out_dir = Path(opt.reports_dir) / "load"
        accounts_file = load_accounts.private_file(accounts)
        writer = self.config.get_terminal_writer()
        spec = RunSpec(base_url, profile, accounts_file, out_dir, ca_bundle=ca_bundle,
                       expect_workers=opt.load_expect_workers, master_bind=opt.load_master_bind,
                       phase_file=Path(opt.load_phase_file) if opt.load_phase_file else None,
                       workers_wait_s=opt.load_workers_wait)
        self.started = time.perf_counter()
        origin = time.monotonic()
        if observer is not None:
            observer.start(origin)
        try:
            result = run(spec, report=lambda line: writer.line(f"harness: {line}"), stop_check=stop_check)
        finally:
            accounts_file.unlink(missing_ok=True)
            if observer is not None:
                observer.stop()
        self.load = LoadRun(profile, base_url, result, observer, time_scale, load_start_s=profile.ramp_s,
                            cpu_target=observer.cpu_target if observer else None)
        if result.results and result.results.get("timeline"):
            slo = self.plan.requirements["LOAD-01"].expected(self.env).get("p95_ms") if "LOAD-01" in load_ids else None
            self.load.chart = draw(result.results, out_dir / "load.png", target_rps=profile.rate_per_s,
                                   p95_slo_ms=slo, title=f"{self.plan.project} {self.env}: load profile "
                                                         f"{profile.name} on {base_url}")
        if result.interrupted:
            raise KeyboardInterrupt
        if result.results is None:
            raise TargetError(f"the load run measured nothing: {result.problem}")

    def _load_accounts(self, profile: Any, plane: Any, base_url: str, ca_bundle: str | None) -> list[dict[str, str]]:
        """The simulated users' accounts: none for the health journey alone; --accounts-file; made on the
        stand-in; else the plan's secret."""
        from harness.load import accounts as load_accounts

        assert self.plan is not None
        if set(profile.mix) <= {"health"}:
            return []  # the health journey logs in nowhere
        if self.config.option.accounts_file:
            return load_accounts.from_file(Path(self.config.option.accounts_file))
        if plane is not None:
            return load_accounts.for_stand_in(plane.target, self.plan, self.env, base_url, ca_bundle)
        return load_accounts.from_secret(self._target(), self.plan, self.env)

    def _background_load(self, name: str, plane: Any, endpoint: Endpoint) -> Any:
        """Start the load profile `name` in a thread of its own (Locust itself runs in its processes) for the
        drills to run under, its phases marked by them."""
        import threading

        from harness.load import accounts as load_accounts
        from harness.load.profile import resolve
        from harness.load.runner import RunSpec, run

        assert self.plan is not None
        opt = self.config.option
        profile = resolve(self.plan, self.env, name, users=opt.load_users, rate_per_s=opt.load_rate,
                          duration_s=BACKGROUND_LOAD_S, workers=opt.load_workers)
        # A drill fails requests on purpose and aborts on its own stop conditions (a probe failing for
        # stop_after_failing_s): the load's error and latency brakes wait as long, its alarms stop it at once.
        profile = replace(profile, stop=replace(profile.stop, for_s=max(profile.stop.for_s,
                                                                       self.plan.drills.stop_after_failing_s)))
        out_dir = Path(opt.reports_dir) / "drills" / "load"
        out_dir.mkdir(parents=True, exist_ok=True)
        phase_file = out_dir / "phases.jsonl"
        phase_file.write_text("")
        accounts_file = load_accounts.private_file(self._load_accounts(profile, plane, endpoint.base_url,
                                                                       endpoint.ca_bundle))
        writer = self.config.get_terminal_writer()
        spec = RunSpec(endpoint.base_url, profile, accounts_file, out_dir, ca_bundle=endpoint.ca_bundle,
                       phase_file=phase_file, workers_wait_s=opt.load_workers_wait)
        stop, outcome = threading.Event(), {}
        thread = threading.Thread(target=lambda: outcome.update(result=run(
            spec, report=lambda line: writer.line(f"harness: {line}"), stop=stop)), name="drill-load", daemon=True)
        thread.start()
        writer.line(f"harness: background load {profile.name} ({profile.users} users, "
                    f"{profile.rate_per_s:g} req/s) for the drills; its ramp lasts {profile.ramp_s:g} s")
        return BackgroundLoad(stop, thread, outcome, phase_file, accounts_file, profile.ramp_s)

    def prepare_drills(self, drill_ids: set[str]) -> None:
        """Run the selected drills one after the other before the first test (the checks judge what they
        measured), each with live progress; Ctrl-C and SIGTERM stop the drill and its rollback still runs."""
        from harness.drills import engine
        from harness.smoke.probes import Canary

        opt = self.config.option
        assert self.plan is not None
        if opt.drill:
            asked = [d.strip() for d in opt.drill.split(",") if d.strip()]
            unknown = [d for d in asked if d not in engine.KINDS]
            if unknown:
                raise TargetError(f"--drill {','.join(unknown)}: not a drill this harness runs; pass some of "
                                  f"{', '.join(sorted(engine.KINDS))}")
            drill_ids = {d for d in drill_ids if d in asked}
        if not drill_ids:
            return
        if opt.target == "localstack":
            raise TargetError("drills run on the local stand-in (--target local) or on AWS (--target aws)")
        protected = self.plan.environment(self.env).protected
        if opt.target == "aws" and protected and opt.confirm != self.env and not opt.dry_run:
            raise TargetError(f"environment '{self.env}' is protected: a drill against it needs --confirm {self.env} "
                              f"(or --dry-run to see what it would do)")
        _check_database_url("--db-url", opt.db_url)
        _check_database_url("--restore-dsn-template", opt.restore_dsn_template, host="h", port="5432")
        if opt.target == "aws":
            from harness.drills.backends.aws import AwsBackend

            if not opt.base_url:
                raise TargetError("drills on --target aws need --base-url (the load balancer's URL)")
            try:
                backend: Any = AwsBackend(self._target(), self.plan, self.env, self.plan.drills.stop_alarms,
                                          restore_dsn_template=opt.restore_dsn_template)
            except ValueError as exc:
                raise TargetError(f"--restore-dsn-template: {exc}") from None
            # The service probe reads ECS and ELB: 2 calls a sample, at the spec's 0.5 s resolution on AWS.
            dsn, service_interval_s, plane = opt.db_url, 0.5, None
        else:
            from harness.drills.backends.local import LocalBackend

            plane = self._stand_in()
            backend = LocalBackend(plane)
            dsn, service_interval_s = opt.db_url or plane.database.dsn(), self.plan.drills.probe_interval_s
        writer = self.config.get_terminal_writer()
        self.started = time.perf_counter()
        ordered = sorted(drill_ids)
        if opt.dry_run:
            for rid in ordered:
                result = engine.dry_run(engine.spec_for(self.plan, self.env, rid, bool(dsn)), backend)
                for line in result.dry_run:
                    writer.line(f"harness: {rid} would {line}")
                self.drills[rid] = result
            return
        smk = {rid for rid in self.plan.requirements if rid.startswith("SMK-")}
        self.prepare_smoke(smk)
        assert self.endpoint is not None and self.gate_input is not None
        endpoint, given = self.endpoint, self.gate_input

        def red(version: str | None, deadline_s: float) -> list[str]:
            """The smoke checks that fail (optional and waived ones aside), expecting `version` if given."""
            gate = run_gate(endpoint, replace(given, expected_version=version or given.expected_version),
                            deadline_s=deadline_s)
            return [f"{rid}: {v.message}" for rid, v in sorted(gate.verdicts.items())
                    if not v.ok and rid not in self.waivers and not self.plan.requirements[rid].optional_in(self.env)]

        def verify_version(version: str) -> tuple[bool, str]:
            # A rollout has settled when this is asked; a few rounds more cover HAProxy's checks catching up.
            failing = red(version, deadline_s=max(opt.deadline, 30.0))
            return not failing, "green" if not failing else "red: " + "; ".join(failing)

        sick = [line.split(":", 1)[0] for line in red(None, opt.deadline)]
        account = given.account
        canary = Canary(**self.plan.drills.canary.model_dump())
        out_dir = Path(opt.reports_dir) / "drills"
        load = None
        with _sigterm_interrupts():
            try:
                if opt.with_load and not sick:
                    load = self._background_load(opt.with_load, None if opt.target == "aws" else plane, endpoint)
                    time.sleep(load.ramp_s)  # the drills start on a steady load
                self._run_drills(ordered, sick, account, canary, out_dir, backend, dsn, service_interval_s,
                                 verify_version, load)
            finally:
                if load is not None:
                    load.finish()
        if load is not None:
            slo = self.plan.requirements["LOAD-01"].expected(self.env)
            for rid, result in self.drills.items():
                result.judge_load(load.phases(rid), slo, load.problem)

    def _run_drills(self, ordered: list[str], sick: list[str], account: Any, canary: Any, out_dir: Path,
                    backend: Any, dsn: str | None, service_interval_s: float, verify_version: Any,
                    load: BackgroundLoad | None) -> None:
        from harness.drills import engine
        from harness.smoke.probes import ApiProbes, DatabaseProbe

        assert self.plan is not None and self.endpoint is not None
        opt, endpoint, writer = self.config.option, self.endpoint, self.config.get_terminal_writer()
        for rid in ordered:
            drill = engine.spec_for(self.plan, self.env, rid, bool(dsn))
            run_id = engine.new_run_id(rid)
            if sick:
                self.drills[rid] = engine.refused(drill, f"the smoke gate is red ({', '.join(sick)}): a drill "
                                                         "never injects into a sick system")
                continue
            api = ApiProbes(self.endpoint, account, canary, run_id)
            db = DatabaseProbe(dsn, run_id) if dsn else None
            self.drills[rid] = result = engine.run_drill(
                drill, backend, api, db, out_dir, lambda line: writer.line(f"harness: {line}"), run_id,
                {"env": self.env, "target": opt.target, "base_url": endpoint.base_url},
                service_interval_s=service_interval_s, verify_version=verify_version,
                on_phase=(lambda phase, rid=rid: load.mark(f"{rid} {phase}")) if load else None)
            if result.interrupted:  # its undo is done: the session ends as interrupted, no other drill starts
                raise KeyboardInterrupt(f"{rid} interrupted ({result.interrupted})")
            if load is not None:  # the load goes on for a recovery window more: "after" is measured too
                time.sleep(drill.recovery_window_s)

    def _smoke_account(self, secret: str, target: Target | None = None) -> tuple[tuple[str, str] | None, str | None]:
        """The smoke account from the plan's secret, read (never written) from the target's Secrets Manager."""
        assert self.plan is not None
        name = self.plan.secret_prefix(self.env) + secret
        try:
            secrets = (target or self._target()).client("secretsmanager")
            value = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
            return (value["email"], value["password"]), None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, TargetError,
                ValueError, KeyError, TypeError) as exc:
            return None, f"the smoke account secret {name} could not be read ({exc})"

    def prepare_image(self) -> None:
        """The session's image directory; with --image, the image is fetched now (a reference that does not
        resolve is a usage error). The service's own image waits for the snapshot that names it."""
        from harness.image.session import ImageError, ImageSession

        writer = self.config.get_terminal_writer()
        assert self.plan is not None
        budget_mb = self.plan.requirements["IMG-03"].expected(self.env)["max_size_mb"]
        self.image_session = ImageSession(lambda line: writer.line(f"harness: {line}"), budget_mb)
        self.resources.callback(self.image_session.close)
        if self.config.option.image:
            try:
                self.image = self.image_session.named(self.config.option.image)
            except ImageError as exc:
                raise TargetError(str(exc)) from None

    def deployed_image(self) -> Any:
        """The image the service's task definition names, pulled read-only from its registry (on the local
        target, a registry on loopback started for the session serves ECR's data plane)."""
        from harness.image.ecr import EcrImage
        from harness.image.session import ImageError

        if self.config.option.snapshot:
            pytest.skip("the image checks need the image itself, which a saved snapshot does not hold; pass --image")
        uri, port = self.service_image()
        target = self._target()
        if target.kind == "localstack" and EcrImage.parse(uri) is not None:
            pytest.skip(f"not observable on this target: the service's image {uri} names AWS's registry, which this "
                        f"endpoint does not serve; pass --image to check an image")
        try:
            registry = self._local_registry(uri, target, port) if target.kind == "local" else None
            return self.image_session.deployed(uri, target, registry)
        except ImageError as exc:
            pytest.fail(f"the service's image could not be checked: {exc}", pytrace=False)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError, RuntimeError,
                subprocess.SubprocessError) as exc:
            # The registry token refused, a push or a tool that failed: the image checks error, the rest runs.
            pytest.fail(f"the service's image could not be checked: {type(exc).__name__}: {exc}", pytrace=False)

    def service_image(self) -> tuple[str, int]:
        """The image the service's task definition names, and the container port of the plan (ECS-03)."""
        from harness.compliance.facts import container, the_one

        assert self.inventory is not None and self.plan is not None
        port = int(self.plan.requirements["ECS-03"].expected(self.env)["container_port"])
        try:
            task_definitions = self.inventory.need("task_definitions")
        except PartUnavailable as exc:
            pytest.skip(str(exc))
        except PartFailed as exc:
            pytest.fail(f"the service's image is not known: {exc}", pytrace=False)
        return container(the_one(task_definitions, "task definition of the service"), port).get("image", ""), port

    def _local_registry(self, uri: str, target: Target, port: int) -> str:
        """The local target's ECR data plane for the session, serving the stand-in's image as `uri`."""
        from harness.image.ecr import EcrImage
        from harness.local import registry

        image = EcrImage.parse(uri)
        if image is None:
            pytest.fail(f"the service's image {uri!r} is not an ECR image (ECR-04)", pytrace=False)
        try:
            address = self.resources.enter_context(registry.serving(self.image_session.workdir / "registry"))
            registry.publish(address, image, target, self.image_session.workdir, port)
        except registry.RegistryError as exc:
            pytest.fail(str(exc), pytrace=False)
        return address

    def _target(self) -> Target:
        opt = self.config.option
        assert self.plan is not None
        region = opt.region or self.plan.environment(self.env).region
        if opt.target == "aws":
            if opt.provision:
                raise TargetError("--provision is refused on --target aws: the harness never writes to a real "
                                  "account; drop --provision")
            return Target("aws", region, endpoint_url=opt.endpoint_url, profile=opt.profile)
        return Target(opt.target, region, endpoint_url=opt.endpoint_url or default_endpoint(opt.target),
                      profile=opt.profile)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before -k/-m deselect anything: validate the plan and every marker against it."""
    if not any(item.get_closest_marker("requirement") for item in items):
        return
    state = config.stash[STATE]
    try:
        state.load_plan(items)
    except PlanError as exc:
        raise pytest.UsageError(str(exc)) from None
    for item in items:
        req = state.requirement(item)
        if req is not None:
            _label(item, req, state.env)


def _label(item: pytest.Item, req: Requirement, env: str) -> None:
    """JUnit property and Allure labels from the requirement, set on the item so an errored test has them
    too: suite as epic, plan section as feature, id as story and label, severity, the plan sentence."""
    item.user_properties.append(("requirement", req.id))
    severity = req.severity_in(env)
    labels = {"epic": item.path.parent.name, "feature": req.section, "story": req.id, "requirement": req.id,
              "tag": req.area, "severity": ALLURE_SEVERITY[severity]}
    for label_type, value in labels.items():
        item.add_marker(pytest.mark.allure_label(value, label_type=label_type))
    item.add_marker(pytest.mark.allure_description(f"{req.id} ({severity}): {req.text}"))


def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash[STATE]
    if not state.active or session.config.option.collectonly:
        return
    needs = [getattr(item, "fixturenames", ()) for item in session.items]
    smoke_ids = {state.requirement(item).id for item in session.items  # type: ignore[union-attr]
                 if "smoke_gate" in getattr(item, "fixturenames", ()) and state.requirement(item)}
    try:
        # The stand-in first: its bring-up is part of the environment, not of the suite's duration.
        if smoke_ids:
            state.prepare_smoke(smoke_ids)
        load_ids = {state.requirement(item).id for item in session.items  # type: ignore[union-attr]
                    if "load_run" in getattr(item, "fixturenames", ()) and state.requirement(item)}
        if load_ids:
            state.prepare_load(load_ids)
        drill_ids = {state.requirement(item).id for item in session.items  # type: ignore[union-attr]
                     if "drill_result" in getattr(item, "fixturenames", ()) and state.requirement(item)}
        if drill_ids:
            state.prepare_drills(drill_ids)
        # The image checks by their fixtures, on the plan's tests only (another test may name an argument so).
        image_needs = [getattr(item, "fixturenames", ()) for item in session.items if state.requirement(item)]
        image_checks = any("image" in names or "image_scan" in names for names in image_needs)
        if image_checks:
            state.prepare_image()
        if any("inventory" in names for names in needs) or (image_checks and not session.config.option.image):
            state.prepare_inventory()
        elif session.config.option.baseline:
            raise TargetError("--baseline compares snapshots, and no selected test judges one; run it with "
                              "the compliance suite (pytest compliance --baseline FILE)")
        if any("image" in names for names in image_needs) and state.image is None:
            # Before the first test, so its progress lines reach the terminal; the outcome (the image, or a
            # skip or failure of the image checks alone) is kept for the `image` fixture.
            try:
                state.image = state.deployed_image()
            except (pytest.skip.Exception, pytest.fail.Exception) as exc:
                state.image = exc
    except (TargetError, PlanError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if state.started is None:
        state.started = time.perf_counter()


BACKGROUND_LOAD_S = 6 * 3600  # a drills' background load runs until they are over; this only bounds it


@dataclass
class BackgroundLoad:
    """A load run in a thread of the pytest process while drills run, stopped when they are over."""

    stop: Any  # threading.Event
    thread: Any  # threading.Thread
    outcome: dict[str, Any]
    phase_file: Path
    accounts_file: Path
    ramp_s: float

    def mark(self, phase: str) -> None:
        """Mark a phase, and return once Locust has read it (it polls the file every MARKS_POLL_S): what is
        answered from now on, a request cut by the fault included, is filed under the new phase."""
        from harness.load.exact import MARKS_POLL_S, mark_phase

        mark_phase(self.phase_file, phase, time.time())
        time.sleep(2 * MARKS_POLL_S)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        self.accounts_file.unlink(missing_ok=True)

    @property
    def problem(self) -> str | None:
        """Why the load measured nothing usable (the generator failed), or None."""
        result = self.outcome.get("result")
        if result is None:
            return "the background load never finished"
        return None if result.results else (result.problem or "the background load wrote no results")

    def phases(self, rid: str) -> dict[str, Any]:
        """The load's overall figures in drill `rid`'s phases: {"before"|"during"|"after": row}."""
        result = self.outcome.get("result")
        overall = (result.results or {}).get("overall", {}) if result else {}
        return {phase: _row(overall.get(f"{rid} {phase}")) for phase in ("before", "during", "after")}


def _row(row: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("requests", "failures", "error_ratio", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    return {k: row.get(k) for k in keys} if row else {"requests": 0}


def _check_database_url(option: str, value: str | None, **fields: str) -> None:
    """One line, never repeating the value (it holds a password), when a PostgreSQL URL does not parse;
    `fields` fill a template's placeholders first."""
    if not value:
        return
    from psycopg.conninfo import conninfo_to_dict

    import psycopg

    try:
        conninfo_to_dict(value.format(**fields) if fields else value)
    except (ValueError, KeyError, IndexError, psycopg.Error):
        hint = " with {host} and {port}" if fields else ""
        raise TargetError(f"{option} is not a PostgreSQL URL{hint} (postgresql://USER:PASSWORD@HOST:PORT/DB); "
                          "its value is not shown, as it holds a password") from None


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a CI job cancelled) stops a drill as Ctrl-C does, so its rollback runs; the interrupt names
    the signal."""
    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def harness_state(request: pytest.FixtureRequest) -> HarnessState:
    state = request.config.stash[STATE]
    if not state.active:
        pytest.fail("harness fixtures need tests marked with @pytest.mark.requirement")
    return state


@pytest.fixture(scope="session")
def plan(harness_state: HarnessState) -> Plan:
    assert harness_state.plan is not None
    return harness_state.plan


@pytest.fixture(scope="session")
def env_name(harness_state: HarnessState) -> str:
    return harness_state.env


@pytest.fixture(scope="session")
def inventory(harness_state: HarnessState) -> Inventory:
    if harness_state.inventory is None:
        pytest.fail("no snapshot was taken for this session")
    return harness_state.inventory


@pytest.fixture(scope="session")
def smoke_gate(harness_state: HarnessState) -> GateResult:
    """One run of the smoke gate for the session: re-checked until every check holds or --deadline passes."""
    assert harness_state.endpoint is not None and harness_state.gate_input is not None
    harness_state.gate = run_gate(harness_state.endpoint, harness_state.gate_input,
                                  deadline_s=harness_state.config.option.deadline)
    return harness_state.gate


@pytest.fixture(scope="session")
def load_run(harness_state: HarnessState) -> Any:
    """The session's load run (harness.load.session.LoadRun); an ERROR when it measured nothing."""
    run = harness_state.load
    if run is None or run.results is None:
        pytest.fail(f"the load run gave no results: {run.result.problem if run else 'it did not start'}", pytrace=False)
    return run


@pytest.fixture
def drill_result(request: pytest.FixtureRequest, harness_state: HarnessState) -> Any:
    """The session's run of the test's own drill (harness.drills.engine.DrillResult); a skip when --drill
    did not select it."""
    req = harness_state.requirement(request.node)
    if req is None:
        pytest.fail("the 'drill_result' fixture needs a @pytest.mark.requirement marker on the test")
    result = harness_state.drills.get(req.id)
    if result is None:
        pytest.skip(f"{req.id} was not selected by --drill {request.config.option.drill}")
    return result


@pytest.fixture(scope="session")
def image(harness_state: HarnessState) -> Any:
    """The facts of the image the checks judge (harness.image.inspect.ImageFacts): --image's, else the one
    the service runs; ERROR when it could not be fetched."""
    if isinstance(harness_state.image, BaseException):
        raise harness_state.image
    return harness_state.image


@pytest.fixture(scope="session")
def image_scan(harness_state: HarnessState) -> Any:
    """ECR's completed scan of the image the service runs (describe_image_scan_findings)."""
    from harness.image.ecr import EcrImage, scan_findings

    if harness_state.config.option.image:
        pytest.skip("ECR's scan findings are of the deployed image; --image checks an image before its push")
    if harness_state.config.option.snapshot:
        pytest.skip("ECR's scan findings are read live; a saved snapshot does not hold them")
    if harness_state.config.option.target != "aws":
        pytest.skip("not observable on this target: an emulator's scan findings are canned, not a scan of the image")
    uri, _ = harness_state.service_image()
    ecr = EcrImage.parse(uri)
    if ecr is None:
        pytest.fail(f"the service's image {uri!r} is not in ECR, so ECR has no scan of it", pytrace=False)
    try:
        scan = scan_findings(harness_state._target(), ecr)
    except botocore.exceptions.ClientError as exc:
        pytest.fail(f"ecr:DescribeImageScanFindings of {uri} failed: {exc}", pytrace=False)
    status = scan.get("imageScanStatus") or {}
    if status.get("status") != "COMPLETE":
        pytest.fail(f"the scan of {uri} is {status.get('status')}: {status.get('description')}", pytrace=False)
    return scan


@pytest.fixture
def expect(request: pytest.FixtureRequest, harness_state: HarnessState) -> dict[str, Any]:
    """The expected values of the test's own requirement, for the environment under test."""
    req = harness_state.requirement(request.node)
    if req is None:
        pytest.fail("the 'expect' fixture needs a @pytest.mark.requirement marker on the test")
    return req.expected(harness_state.env)


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """Record what the judgement was based on: shown in Allure and in the summary, never a secret."""
    def record(label: str, data: Any) -> None:
        request.node.stash.setdefault(EVIDENCE, []).append({"label": label, "data": data})
        allure.attach(json.dumps(data, indent=2, default=str), name=label,
                      attachment_type=allure.attachment_type.JSON)
    return record


def _part_fixture(key: str) -> Any:
    @pytest.fixture(name=key, scope="session")
    def fixture(inventory: Inventory) -> Any:
        try:
            return inventory.need(key)
        except PartUnavailable as exc:
            pytest.skip(str(exc))
    fixture.__doc__ = f"The snapshot's '{key}' part; ERROR when it could not be fetched."
    return fixture


for _key in PARTS:
    globals()[f"_part_{_key}"] = _part_fixture(_key)


# -- outcomes, waivers, reports ----------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    result = yield
    report: pytest.TestReport = result.get_result()
    state = item.config.stash[STATE]
    req = state.requirement(item)
    if req is None:
        return
    if report.skipped and isinstance(report.longrepr, tuple):
        # Show a skip at the check it skipped, not at the helper that raised it.
        path, line, _ = item.reportinfo()
        report.longrepr = (str(path), (line or 0) + 1, report.longrepr[2])
    waiver = state.waivers.get(req.id)
    optional = req.optional_in(state.env) and not state.plan.plan.enforce_optional  # type: ignore[union-attr]
    if report.when == "call" and report.failed and waiver:
        report.outcome = "skipped"
        report.wasxfail = f"waived until {waiver.expires} by {waiver.owner}: {waiver.reason}"
    elif report.when == "call" and report.failed and optional:
        report.outcome = "skipped"
        report.wasxfail = f"optional requirement {req.id} failed (not enforced by the plan)"
    elif report.when == "call" and report.passed and waiver:
        report.wasxfail = f"waiver for {req.id} can go: the requirement passes"
    outcome = classify(report, waiver is not None, optional)
    if outcome is not None:
        outcome.evidence = item.stash.get(EVIDENCE, [])
        previous = state.outcomes.get(item.nodeid)
        if previous is None or outcome.rank > previous.rank:
            state.outcomes[item.nodeid] = outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash[STATE]
    if not state.active or state.started is None:
        return
    summary = summarize(state, duration_s=time.perf_counter() - state.started)
    opt = session.config.option
    if state.inventory is not None:
        # The night's verdicts travel with its snapshot, so tomorrow's run can say what newly fails.
        state.inventory.meta["results"] = {row["id"]: row["status"] for row in summary["requirements"]
                                           if state.plan.requirements[row["id"]].suite == "compliance"}
        if opt.snapshot_out:
            state.inventory.save(Path(opt.snapshot_out))
        if state.baseline is not None:
            summary["drift"] = _report_drift(state, Path(opt.reports_dir))
    if state.load is not None:
        summary["load"] = state.load.section()
        if state.load.result.stopped and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # the brakes fired: never a green run
    if state.drills:
        summary["drills"] = {rid: result.section() for rid, result in sorted(state.drills.items())}
    session.config.stash[SUMMARY] = summary
    write_summary(Path(opt.reports_dir), summary)


def _report_drift(state: HarnessState, reports_dir: Path) -> dict[str, Any]:
    """drift.json and drift.md in the reports, and in Allure as a result of its own beside the checks."""
    assert state.baseline is not None and state.inventory is not None and state.plan is not None
    found = diff(state.baseline, state.inventory.to_json())
    json_path, md_path = write_drift(reports_dir, found, state.plan)
    results_dir = getattr(state.config.option, "allure_report_dir", None)
    if results_dir:
        lists = found.requirements or {}
        # Failed when something newly fails or newly cannot be judged: what `harness diff --fail-on` gates on.
        worse = lists.get("newly_failing", []) + lists.get("newly_erroring", [])
        write_result(Path(results_dir), f"Drift since {found.baseline_taken_at}", DRIFT_RESULT,
                     "failed" if worse else "passed", summary_line(found),
                     {"epic": "compliance", "feature": "Drift", "story": "drift since the baseline"},
                     [Attachment("drift.md", md_path.read_text(encoding="utf-8"), "text/markdown", "md"),
                      Attachment("drift.json", json_path.read_text(encoding="utf-8"), "application/json", "json")])
    return {**drift_section(found), "files": [str(json_path), str(md_path)]}



def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summary = config.stash.get(SUMMARY, None)
    if summary is None:
        return
    tr = terminalreporter
    tr.section("plan coverage")
    counts = ", ".join(f"{n} {status}" for status, n in summary["counts"].items() if n)
    tr.line(f"target {summary['target']} env {summary['env']}: {summary['requirements_checked']} requirements: {counts}")
    for area, counts_ in summary["by_area"].items():
        tr.line(f"  {area:<18} " + ", ".join(f"{n} {s}" for s, n in counts_.items() if n))
    tr.line(f"api_calls {summary['api_calls']}, duration_s {summary['duration_s']:.2f}")
    gate = summary["gate"]
    if gate:
        rounds = gate["rounds"]
        tr.line(f"smoke gate on {gate['base_url']}: {len(rounds)} round(s) in {gate['elapsed_s']:.2f} s, "
                f"last failing: {', '.join(rounds[-1]['failing']) or 'none'}")
    if summary.get("load"):
        from harness.load.session import table

        load = summary["load"]
        tr.line(f"load profile {load['profile']} on {load['base_url']}: "
                + ("complete" if load["complete"] else f"INCOMPLETE ({load['problem']})"))
        for line in table(load):
            tr.line(f"  {line}")
        for rid, verdict in load["verdicts"].items():
            tr.line(f"  {rid} {verdict['status']}: {verdict['message']}")
    if summary.get("drills"):
        from harness.report.summary import drills_table

        for line in drills_table(summary["drills"]):
            tr.line(line)
    if summary.get("drift"):
        tr.line(f"drift since {summary['drift']['baseline_taken_at']}: {summary['drift']['line']}")
        tr.line(f"  details: {summary['drift']['files'][1]}")
    for rid in summary["waivers_can_go"]:
        tr.line(f"waiver for {rid} can go: the requirement passes", yellow=True)
    if summary["uncovered"]:
        tr.line(f"plan requirements no test carries: {', '.join(summary['uncovered'])}", red=True)
