"""The drills' part of the pytest plugin: their options, and the selected drills run one after the other before
the first test (the checks judge what they measured), each with live progress; Ctrl-C and SIGTERM stop the
drill and its rollback still runs."""
from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness.drills import engine
from harness.drills.backends import FaultBackend
from harness.session import Session
from harness.smoke.plugin import KEY as SMOKE
from harness.smoke.probes import ApiProbes, Canary, DatabaseProbe
from harness.target import TargetError


def add_options(parser: pytest.Parser) -> None:
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
    dr.addoption("--drill-history", default=None, metavar="FILE",
                 help="the drill history each drill run adds a line to (default: REPORTS_DIR/drills/history.jsonl); "
                      "keep it between runs to see recovery over time (harness drills history)")
    dr.addoption("--db-url", default=None, metavar="DSN",
                 help="PostgreSQL URL the runner can reach (inside the VPC): canary inserts every 50 ms straight "
                      "to the database (default on the local stand-in: its multi-host DSN)")


KEY = pytest.StashKey["DrillsSuite"]()


class DrillsSuite:
    """The session's drill results, by requirement id."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.results: dict[str, engine.DrillResult] = {}

    def prepare(self, drill_ids: set[str]) -> None:
        session, opt = self.session, self.session.option
        plan, env = session.plan.plan, session.plan.env
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
        if opt.target == "aws" and plan.environment(env).protected and opt.confirm != env and not opt.dry_run:
            raise TargetError(f"environment '{env}' is protected: a drill against it needs --confirm {env} "
                              f"(or --dry-run to see what it would do)")
        _check_database_url("--db-url", opt.db_url)
        _check_database_url("--restore-dsn-template", opt.restore_dsn_template, host="h", port="5432")
        backend, dsn, service_interval_s, plane = self._backend()
        session.started = time.perf_counter()
        ordered = sorted(drill_ids)
        if opt.dry_run:
            for rid in ordered:
                result = engine.dry_run(engine.spec_for(plan, env, rid, bool(dsn)), backend)
                for line in result.dry_run:
                    session.say(f"{rid} would {line}")
                self.results[rid] = result
            return
        smoke = session.config.stash[SMOKE]
        smoke.prepare({rid for rid in plan.requirements if rid.startswith("SMK-")})

        def verify_version(version: str) -> tuple[bool, str]:
            # A rollout has settled when this is asked; a few rounds more cover HAProxy's checks catching up.
            failing = smoke.red(version, deadline_s=max(opt.deadline, 30.0))
            return not failing, "green" if not failing else "red: " + "; ".join(failing)

        sick = [line.split(":", 1)[0] for line in smoke.red(None, opt.deadline)]
        load = None
        try:
            with _sigterm_interrupts():
                try:
                    if opt.with_load and not sick:
                        from harness.load.plugin import KEY as LOAD

                        load = session.config.stash[LOAD].background(opt.with_load, plane, smoke.endpoint)
                        time.sleep(load.ramp_s)  # the drills start on a steady load
                    self._run(ordered, sick, backend, dsn, service_interval_s, verify_version, load)
                finally:
                    if load is not None:
                        load.finish()
            if load is not None:
                slo = session.plan.expected("LOAD-01")
                for rid, result in self.results.items():
                    result.judge_load(load.phases(rid), slo, load.problem)
        finally:  # an interrupted drill is a run too
            self._add_to_history()

    def _add_to_history(self) -> None:
        """One line per drill run in the drill history (harness/drills/history.py)."""
        from harness.drills import history

        opt = self.session.option
        path = Path(opt.drill_history) if opt.drill_history else history.default_path(opt.reports_dir)
        at, harness_commit = datetime.now(timezone.utc), history.commit()
        lines = [history.entry(rid, result.section(), self.session.plan.env, opt.target, at, harness_commit)
                 for rid, result in sorted(self.results.items())]
        try:
            history.append(path, lines)
        except OSError as exc:
            self.session.say(f"the drill history {path} could not be written: {exc}")
            return
        if lines:
            self.session.say(f"{len(lines)} drill run{'s' if len(lines) > 1 else ''} added to the history {path}")

    def _backend(self) -> tuple[FaultBackend, str | None, float, Any]:
        """The backend the drills act through, the database URL the canary writes to, the service probe's
        interval, and the stand-in (None on AWS)."""
        session, opt = self.session, self.session.option
        plan = session.plan.plan
        if opt.target == "aws":
            from harness.drills.backends.aws import AwsBackend

            if not opt.base_url:
                raise TargetError("drills on --target aws need --base-url (the load balancer's URL)")
            try:
                backend: FaultBackend = AwsBackend(session.target(), plan, session.plan.env, plan.drills.stop_alarms,
                                                   restore_dsn_template=opt.restore_dsn_template)
            except ValueError as exc:
                raise TargetError(f"--restore-dsn-template: {exc}") from None
            # The service probe reads ECS and ELB: 2 calls a sample, at the spec's 0.5 s resolution on AWS.
            return backend, opt.db_url, 0.5, None
        from harness.drills.backends.local import LocalBackend

        plane = session.stand_in()
        return LocalBackend(plane), opt.db_url or plane.database.dsn(), plan.drills.probe_interval_s, plane

    def _run(self, ordered: list[str], sick: list[str], backend: FaultBackend, dsn: str | None,
             service_interval_s: float, verify_version: Any, load: Any) -> None:
        session, opt = self.session, self.session.option
        plan, env = session.plan.plan, session.plan.env
        smoke = session.config.stash[SMOKE]
        canary = Canary(**plan.drills.canary.model_dump())
        out_dir = Path(opt.reports_dir) / "drills"
        for rid in ordered:
            drill = engine.spec_for(plan, env, rid, bool(dsn))
            run_id = engine.new_run_id(rid)
            if sick:
                self.results[rid] = engine.refused(drill, f"the smoke gate is red ({', '.join(sick)}): a drill "
                                                          "never injects into a sick system")
                continue
            api = ApiProbes(smoke.endpoint, smoke.given.account, canary, run_id)
            db = DatabaseProbe(dsn, run_id) if dsn else None
            self.results[rid] = result = engine.run_drill(
                drill, backend, api, db, out_dir, session.say, run_id,
                {"env": env, "target": opt.target, "base_url": smoke.endpoint.base_url},
                service_interval_s=service_interval_s, verify_version=verify_version,
                on_phase=(lambda phase, rid=rid: load.mark(f"{rid} {phase}")) if load else None,
                steady_gate=lambda: [(v.observed, f"{rid}: {v.message}") for rid, v in smoke.failing(None, 0.0)])
            if result.interrupted:  # its undo is done: the session ends as interrupted, no other drill starts
                raise KeyboardInterrupt(f"{rid} interrupted ({result.interrupted})")
            if load is not None:  # the load goes on for a recovery window more: "after" is measured too
                time.sleep(drill.recovery_window_s)

    def section(self) -> dict[str, Any] | None:
        """summary.json's `drills`."""
        return {rid: result.section() for rid, result in sorted(self.results.items())} or None


def _check_database_url(option: str, value: str | None, **fields: str) -> None:
    """One line, never repeating the value (it holds a password), when a PostgreSQL URL does not parse;
    `fields` fill a template's placeholders first."""
    if not value:
        return
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

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


@pytest.fixture
def drill_result(request: pytest.FixtureRequest) -> engine.DrillResult:
    """The session's run of the test's own drill; a skip when --drill did not select it."""
    req = request.config.stash[KEY].session.plan.requirement(request.node)
    if req is None:
        pytest.fail("the 'drill_result' fixture needs a @pytest.mark.requirement marker on the test")
    result = request.config.stash[KEY].results.get(req.id)
    if result is None:
        pytest.skip(f"{req.id} was not selected by --drill {request.config.option.drill}")
    return result
