"""The load suite's part of the pytest plugin: its options, and the session's one load run (Locust in its own
processes, with live progress), made before the first test; the checks judge what it measured. Drills run
under a background load made here too."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.load import accounts as load_accounts
from harness.load.baseline import compare, differences, identity
from harness.load.profile import Profile, check_slos, resolve
from harness.load.runner import RunResult, RunSpec, run
from harness.load.session import FIGURES, LoadRun
from harness.session import Session
from harness.smoke.probes import Endpoint
from harness.target import TargetError
from harness.util.files import write_atomic

if TYPE_CHECKING:
    from harness.local.stand_in import StandIn

BACKGROUND_LOAD_S = 6 * 3600  # a drills' background load runs until they are over; this only bounds it


def add_options(parser: pytest.Parser) -> None:
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
                   help="wait for this many workers started elsewhere (locust -f harness/load/generator/locustfile.py "
                        "--worker --master-host ...) instead of starting local ones")
    load.addoption("--load-master-bind", default="127.0.0.1:5557", metavar="HOST:PORT",
                   help="where the Locust master listens for workers (default 127.0.0.1:5557)")
    load.addoption("--load-workers-wait", type=int, default=60, metavar="S",
                   help="how long the master waits for its workers to connect (default 60 s)")
    load.addoption("--load-phase-file", default=None, metavar="FILE",
                   help='phases another component marks during the run, JSON lines {"at": epoch, "phase": name}')
    load.addoption("--accounts-file", default=None,
                   help="JSON list of {email, password} for the simulated users (default: the plan's secret "
                        "<env>/dougust/load-accounts; on the local stand-in, made for the run)")
    load.addoption("--load-baseline", default=None, metavar="FILE",
                   help="an earlier run's results (reports/load/results.json) to compare this run with (LOAD-04)")
    load.addoption("--confirm", default=None, metavar="ENV",
                   help="confirm load or drills against a protected environment by naming it")


KEY = pytest.StashKey["LoadSuite"]()


class LoadSuite:
    """The session's load run, once made."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.run: LoadRun | None = None

    def prepare(self, load_ids: set[str]) -> None:
        """Settle the profile, the URL, the accounts and the confirmation, then make the run."""
        from harness.load.chart import draw, draw_against_baseline
        from harness.load.scaling import ScalingObserver

        session, opt = self.session, self.session.option
        plan, env = session.plan.plan, session.plan.env
        stand_in = opt.target == "local" and not opt.base_url
        name = opt.load_profile or ("local" if stand_in else None)
        if name is None:
            raise TargetError(f"load on --target {opt.target} needs --load-profile (the plan defines "
                              f"{', '.join(sorted(plan.load))})")
        profile = resolve(plan, env, name, users=opt.load_users, rate_per_s=opt.load_rate,
                          duration_s=opt.load_duration, workers=opt.load_workers)
        check_slos(plan, env, load_ids)
        earlier = read_baseline(Path(opt.load_baseline)) if opt.load_baseline else None
        if opt.load_expect_workers < 0:
            raise TargetError("--load-expect-workers must be 0 or more")
        if not stand_in and plan.environment(env).protected and opt.confirm != env:
            raise TargetError(f"environment '{env}' is protected: load against it needs --confirm {env}")
        if not stand_in and not opt.base_url:
            raise TargetError(f"load on --target {opt.target} needs --base-url (the load balancer's URL, "
                              f"https:// or http://)")
        plane = session.stand_in() if stand_in else None
        base_url = plane.urls["https"] if plane else opt.base_url.rstrip("/")
        ca_bundle = str(plane.ca_file) if plane else opt.ca_bundle
        if not base_url.startswith(("http://", "https://")):
            raise TargetError(f"--base-url {base_url}: give an http:// or https:// URL")
        if earlier is not None:  # refused before any load is sent, not after
            unlike = differences(earlier, {"run": identity(profile, base_url, env, opt.target, plan.project)})
            if unlike:
                raise TargetError(f"--load-baseline {opt.load_baseline} is not comparable with this run: "
                                  f"{'; '.join(unlike)}; pass a baseline of the same load, or none")
        accounts = self.accounts(profile, plane, base_url, ca_bundle)
        time_scale = float(plane.status()["tasks"].get("time_scale", 1.0)) if plane else 1.0
        observer = None
        # Scaling is observed where a service scales: the stand-in's emulator, or the AWS account.
        if "LOAD-03" in load_ids and (plane is not None or opt.target == "aws"):
            observer = ScalingObserver(plane.target if plane else session.target(), plan, env,
                                       interval_s=1.0 if plane else 15.0,
                                       cpu_reader=plane.service_cpu if plane else None)
        stop_check = self._stop_check(profile)
        out_dir = Path(opt.reports_dir) / "load"
        accounts_file = load_accounts.private_file(accounts)
        spec = RunSpec(base_url, profile, accounts_file.path, out_dir, ca_bundle=ca_bundle,
                       expect_workers=opt.load_expect_workers, master_bind=opt.load_master_bind,
                       phase_file=Path(opt.load_phase_file) if opt.load_phase_file else None,
                       workers_wait_s=opt.load_workers_wait)
        session.started = time.perf_counter()
        if observer is not None:
            observer.start(time.monotonic())
        try:
            result = run(spec, report=session.say, stop_check=stop_check)
        finally:
            accounts_file.remove()
            if observer is not None:
                observer.stop()
        self.run = LoadRun(profile, base_url, result, observer, time_scale, load_start_s=profile.ramp_s,
                           cpu_target=observer.cpu_target if observer else None)
        if result.results is not None:  # what a later run compares itself with (LOAD-04)
            result.results["run"] = identity(profile, base_url, env, opt.target, plan.project)
            write_atomic(Path(result.files["results"]), json.dumps(result.results))
        if earlier is not None and result.results is not None:
            allowance = float(plan.requirements["LOAD-04"].expected(env)["max_regression"]) \
                if "LOAD-04" in plan.requirements else 0.25
            rows, verdict = compare(earlier, result.results, allowance)
            chart = draw_against_baseline(earlier, result.results, out_dir / "baseline.png",
                                          title=f"{plan.project} {env}: profile {profile.name}, baseline and this run")
            self.run.baseline = {"file": opt.load_baseline, "rows": [r.to_json() for r in rows],
                                 "status": verdict.status, "message": verdict.message, "chart": str(chart)}
            self.run.baseline_verdict = verdict
        if result.results and result.results.get("timeline"):
            slo = session.plan.expected("LOAD-01").get("p95_ms") if "LOAD-01" in load_ids else None
            self.run.chart = draw(result.results, out_dir / "load.png", target_rps=profile.rate_per_s,
                                  p95_slo_ms=slo, title=f"{plan.project} {env}: load profile "
                                                        f"{profile.name} on {base_url}")
        if result.interrupted:
            raise KeyboardInterrupt
        if result.results is None:
            raise TargetError(f"the load run measured nothing: {result.problem}")

    def _stop_check(self, profile: Profile) -> Any:
        """The alarms brake, read once before any load: a brake that cannot work refuses the run."""
        if not profile.stop.alarms:
            return None
        from harness.load.stop import alarm_check

        stop_check = alarm_check(self.session.target().client("cloudwatch"), profile.stop.alarms)
        try:
            firing = stop_check()
        except Exception as exc:  # noqa: BLE001 (any client error: one line, before any load)
            raise TargetError(f"load profile '{profile.name}': its stop alarms cannot be read ({exc}); fix "
                              f"stop.alarms in the plan, or the credentials") from None
        if firing:
            raise TargetError(f"load profile '{profile.name}': stop {firing} already; the run would stop at once")
        return stop_check

    def accounts(self, profile: Profile, plane: StandIn | None, base_url: str,
                 ca_bundle: str | None) -> list[dict[str, str]]:
        """The simulated users' accounts: none for the health journey alone; --accounts-file; made on the
        stand-in; else the plan's secret."""
        plan, env = self.session.plan.plan, self.session.plan.env
        if set(profile.mix) <= {"health"}:
            return []  # the health journey logs in nowhere
        if self.session.option.accounts_file:
            return load_accounts.from_file(Path(self.session.option.accounts_file))
        if plane is not None:
            return load_accounts.for_stand_in(plane.target, plan, env, base_url, ca_bundle)
        return load_accounts.from_secret(self.session.target(), plan, env)

    def background(self, name: str, plane: StandIn | None, endpoint: Endpoint) -> BackgroundLoad:
        """Start the load profile `name` in a thread of its own (Locust itself runs in its processes) for the
        drills to run under, its phases marked by them."""
        opt, plan, env = self.session.option, self.session.plan.plan, self.session.plan.env
        profile = resolve(plan, env, name, users=opt.load_users, rate_per_s=opt.load_rate,
                          duration_s=BACKGROUND_LOAD_S, workers=opt.load_workers)
        # A drill fails requests on purpose and aborts on its own stop conditions (a probe failing for
        # stop_after_failing_s): the load's error and latency brakes wait as long, its alarms stop it at once.
        profile = replace(profile, stop=replace(profile.stop, for_s=max(profile.stop.for_s,
                                                                       plan.drills.stop_after_failing_s)))
        out_dir = Path(opt.reports_dir) / "drills" / "load"
        out_dir.mkdir(parents=True, exist_ok=True)
        phase_file = out_dir / "phases.jsonl"
        phase_file.write_text("")
        accounts_file = load_accounts.private_file(self.accounts(profile, plane, endpoint.base_url,
                                                                 endpoint.ca_bundle))
        spec = RunSpec(endpoint.base_url, profile, accounts_file.path, out_dir, ca_bundle=endpoint.ca_bundle,
                       phase_file=phase_file, workers_wait_s=opt.load_workers_wait)
        stop, outcome = threading.Event(), {}
        thread = threading.Thread(target=lambda: outcome.update(result=run(spec, report=self.session.say, stop=stop)),
                                  name="drill-load", daemon=True)
        thread.start()
        self.session.say(f"background load {profile.name} ({profile.users} users, {profile.rate_per_s:g} req/s) "
                         f"for the drills; its ramp lasts {profile.ramp_s:g} s")
        return BackgroundLoad(stop, thread, outcome, phase_file, accounts_file, profile.ramp_s)

    def finish(self, session: pytest.Session) -> dict[str, Any] | None:
        """summary.json's `load`; a run its brakes stopped is never a green session."""
        if self.run is None:
            return None
        if self.run.result.stopped and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return self.run.section()


@dataclass
class BackgroundLoad:
    """A load run in a thread of the pytest process while drills run, stopped when they are over."""

    stop: threading.Event
    thread: threading.Thread
    outcome: dict[str, RunResult]
    phase_file: Path
    accounts_file: load_accounts.AccountsFile
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
        self.accounts_file.remove()

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
        rows = {phase: overall.get(f"{rid} {phase}") for phase in ("before", "during", "after")}
        return {phase: {key: row.get(key) for key in FIGURES} if row else {"requests": 0} for phase, row in rows.items()}


def read_baseline(path: Path) -> dict[str, Any]:
    """An earlier run's results, or one line naming what is wrong with the file and what to pass."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(f"--load-baseline {path}: file not found; pass an earlier run's "
                          f"reports/load/results.json") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise TargetError(f"--load-baseline {path}: not a load run's results ({why}); pass an earlier run's "
                          f"reports/load/results.json") from None
    if not isinstance(data, dict) or not isinstance(data.get("endpoints"), dict):
        raise TargetError(f"--load-baseline {path}: not a load run's results (no endpoints); pass an earlier "
                          f"run's reports/load/results.json")
    if not data.get("complete") or data.get("stopped"):
        why = f"its brakes stopped it ({data['stopped']})" if data.get("stopped") else "it did not run to its end"
        raise TargetError(f"--load-baseline {path}: {why}; a baseline must be a whole run")
    return data


@pytest.fixture(scope="session")
def load_run(request: pytest.FixtureRequest) -> LoadRun:
    """The session's load run; an ERROR when it measured nothing."""
    made = request.config.stash[KEY].run
    if made is None or made.results is None:
        pytest.fail(f"the load run gave no results: {made.result.problem if made else 'it did not start'}",
                    pytrace=False)
    return made
