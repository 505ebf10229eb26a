"""Runs one drill: preflight, probes, steady state, the fault, observation until recovered or stopped,
read-back, rollback (always), the steady state checked again, verdict, journal and chart.

The drill methods (Recovery, Restore, Rollback) put together the steps of a drill in progress (run.py) and
`run_drill` makes sure the undo and the records happen whatever goes wrong. Fetching apart from judging:
this module acts and records; every decision about the records (recovered yet? a stop condition? the
verdict) is a pure function of harness/drills/judges.py.
"""
from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.drills import judges, manifest
from harness.drills.backends import FaultBackend
from harness.drills.model import DrillRefused, DrillSpec, InjectFailed, PreflightFailed, Restored, Revisions, Unreadable
from harness.verdict import Verdict
from harness.plan import Plan
from harness.drills.run import ALARM_POLL_S, PROGRESS_S, TICK_S, DrillRun, no_figures
from harness.smoke.probes import ApiProbes, DatabaseProbe

# What each drill of the plan does, and which probes decide that the system has recovered. "db" is
# dropped where the runner cannot reach the database (no --db-url on AWS).
KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "DRILL-01": ("Database failover", "db_failover", ("health", "write", "db")),
    "DRILL-02": ("Database restore", "db_restore", ("db",)),
    "DRILL-03": ("Application failure", "task_loss", ("health", "write", "service")),
    "DRILL-04": ("Rollback", "rollback", ("health", "write")),
}
GATE_EVERY_S = 2.0   # the smoke gate's rounds in the check after the rollback, at most this often


def spec_for(plan: Plan, env: str, rid: str, with_db: bool) -> DrillSpec:
    """The drill `rid` for `env`: the plan's [drills] settings, overridden by the requirement's expect."""
    title, fault, probes = KINDS[rid]
    expect = plan.requirements[rid].expected(env)
    settings = plan.drills.model_dump(exclude={"canary", "stop_alarms"})
    settings.update({k: float(v) for k, v in expect.items() if k in settings})
    if not with_db:
        probes = tuple(p for p in probes if p != "db")
    return DrillSpec(rid, title, fault, probes, expect, **settings)


@dataclass
class DrillResult:
    drill: DrillSpec
    verdict: Verdict
    run_id: str
    journal: Path | None = None
    chart: Path | None = None
    cleanup: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    dry_run: list[str] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)  # a background load's overall figures per phase
    restored: dict[str, Any] | None = None  # the steady state checked again after the rollback (DrillRun.restored)
    # Set when Ctrl-C or SIGTERM reached the drill (one line: which, and when): its undo ran to the end, and
    # the caller must end the session as interrupted, starting no other drill.
    interrupted: str | None = None

    def section(self) -> dict[str, Any]:
        """This drill's entry in the summary's `drills` section."""
        return {"verdict": self.verdict.status, "message": self.verdict.message, **self.verdict.figures,
                "journal": str(self.journal) if self.journal else None,
                "chart": str(self.chart) if self.chart else None, "cleanup": self.cleanup,
                "platform_events": self.events, "run_id": self.run_id, "restored": self.restored,
                **({"load": self.load} if self.load else {}),
                **({"interrupted": self.interrupted} if self.interrupted else {})}

    def judge_load(self, phases: dict[str, dict[str, Any]], slo: dict[str, Any], problem: str | None) -> None:
        """Add a background load's figures per phase (before, during, after the fault); before and after
        must hold the load SLOs (LOAD-01), or the drill fails: a system that recovered must serve as well
        as it did. During the fault they are reported, not judged (the drill's own targets are)."""
        self.load = phases
        if problem:  # the generator failed: the system cannot be judged under load, never passed
            self.verdict = Verdict("error" if self.verdict.status == "pass" else self.verdict.status,
                                   f"{self.verdict.message}; under load: {problem}", figures=self.verdict.figures)
            return
        broken = judges.load_phases(phases, slo)
        if broken:
            self.verdict = Verdict("fail" if self.verdict.status == "pass" else self.verdict.status,
                                   "; ".join([self.verdict.message, *broken]), figures=self.verdict.figures)


def new_run_id(rid: str) -> str:
    """Names this run's canary rows and notes (and, on AWS, tags what it creates)."""
    return f"{rid.lower()}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


class Recovery:
    """DRILL-01, DRILL-03: inject one fault, observe until every probe has succeeded for the recovery window
    (or a stop condition), read the canary writes back; the backend's rollback restores redundancy."""

    def act(self, run: DrillRun) -> None:
        run.steady_state()
        run.begin_fault()
        hit = run.backend.inject(run.drill, run.log)
        run.say(f"fault injected: {json.dumps(hit, default=str)}")
        run.phase = "recovering"
        run.observe()
        run.stop_probes()
        run.read_back()

    def undo(self, run: DrillRun) -> dict[str, Any]:
        return run.backend.rollback(run.drill, run.log)

    def still_wrong(self, run: DrillRun) -> list[tuple[bool, str]]:
        return []

    def verdict(self, run: DrillRun) -> Verdict:
        return run.verdict()


class Restore:
    """DRILL-02: a manifest of the data and canary rows up to a restore point, a point-in-time restore
    into a temporary database, the data verified there; the temporary database always removed.
    RTO = from the start of the restore to verified; RPO = the restore point minus the newest canary row
    the restored database holds."""

    AFTER_POINT_S = 1.0  # canary rows keep coming this long after the point: recovery must see past it

    def __init__(self) -> None:
        self.restored: Restored | None = None
        self.manifest: dict[str, Any] = {}
        self.restore_point: float | None = None
        self.problem: str | None = None
        self.verified = False
        self.diffs: list[str] = []
        self.canary_rows: int | None = None
        self.rpo_s: float | None = None

    def act(self, run: DrillRun) -> None:
        if run.db is None:
            raise DrillRefused("the restore drill needs a path to the database for its manifest and canary rows: "
                               "pass --db-url (on the stand-in, its DSN is used)")
        run.steady_state()
        self.manifest, self.restore_point = manifest.take(run.db.dsn)
        run.log("manifest", {"restore_point": self.restore_point, "tables": self.manifest})
        run.say(f"manifest of {len(self.manifest)} tables taken; restore point "
                f"{_utc(self.restore_point)}")
        time.sleep(self.AFTER_POINT_S)
        run.stop_probes()
        run.begin_fault("restoring to the restore point")
        try:
            # Expired only once the restore, its verification and its removal have all had their time: by then
            # the drill that made it has ended, or was killed, and `harness drills sweep` may take what it left.
            self.restored = run.backend.restore(run.drill, run.log, self.restore_point, run.run_id,
                                                judges.restore_expiry(time.time(), run.drill.timeout_s,
                                                                      run.backend.discard_s))
        except InjectFailed as exc:
            self.problem = str(exc)
            run.log("restore failed", {"reason": self.problem})
            run.say(f"the restore failed: {self.problem}")
            return
        run.phase = "recovering"
        run.say(f"restored into {self.restored.name}; verifying")
        if self.restored.dsn is None:
            run.log("not verified", {"reason": "no path to the restored database"})
            return
        after, _ = manifest.take(self.restored.dsn)
        self.diffs = judges.manifest_diff(self.manifest, after)
        self.canary_rows, newest, after_point = manifest.canary(self.restored.dsn, run.run_id, self.restore_point)
        self.rpo_s = None if newest is None else max(0.0, self.restore_point - newest)
        if after_point:
            self.diffs.append(f"{after_point} canary rows written after the restore point are in the restored "
                              "database: the restore went past its point")
        self.verified = True
        run.recover(round(run.clock.now(), 3))
        run.observed_end_t = run.recovered_t
        run.log("verified", {"differences": self.diffs, "canary_rows": self.canary_rows, "rpo_s": self.rpo_s})
        newest_s = "-" if self.rpo_s is None else f"{self.rpo_s:.3f}"
        run.say(f"verified: {'the data matches the manifest' if not self.diffs else '; '.join(self.diffs)}; "
                f"{self.canary_rows} canary rows, the newest {newest_s} s before the restore point")

    def undo(self, run: DrillRun) -> dict[str, Any]:
        restored = self.restored or Restored(run.run_id, None, self.restore_point or 0.0, {"run_id": run.run_id})
        return run.backend.discard(restored, run.log)

    def still_wrong(self, run: DrillRun) -> list[tuple[bool, str]]:
        return []

    def verdict(self, run: DrillRun) -> Verdict:
        if run.fault_t is None:
            return run.verdict()
        samples, _ = run.timeline.copy()
        return judges.judge_restore(
            run.drill, rto_s=None if run.recovered_t is None else run.recovered_t - run.fault_t, rpo_s=self.rpo_s,
            restore_problem=self.problem or run.aborted, verified=self.verified, diffs=self.diffs,
            canary_rows=self.canary_rows, resolution_s=judges.resolution(samples, ("db",), 0.0))


class Rollback:
    """DRILL-04: deploy the previous revision of the service's task definition, wait until it runs, verify
    it with the smoke gate expecting its version; then, always, roll forward to the original revision and
    verify again, so the drill leaves the service as it found it. RTO = start to the rollback verified."""

    def __init__(self, verify: Callable[[str], tuple[bool, str]]) -> None:
        self.verify = verify
        self.revisions: Revisions | None = None
        self.back: tuple[bool, str] | None = None
        self.forward: tuple[bool, str] | None = None

    def act(self, run: DrillRun) -> None:
        self.revisions = revisions = run.backend.revisions()
        run.log("revisions", asdict(revisions))
        run.steady_state()
        run.begin_fault("rolling back to the previous revision")
        self.back = self._deploy(run, revisions.previous, revisions.previous_version, "back")
        if self.back[0]:
            run.recover(round(run.clock.now(), 3))
        run.observed_end_t = round(run.clock.now(), 3)

    def undo(self, run: DrillRun) -> dict[str, Any]:
        if self.revisions is None:
            return {"ok": True, "detail": "nothing was deployed"}
        self.forward = self._deploy(run, self.revisions.current, self.revisions.current_version, "forward")
        return {"ok": self.forward[0], "detail": f"rolled forward to {_tail(self.revisions.current)}: "
                                                 f"{self.forward[1]}"}

    def still_wrong(self, run: DrillRun) -> list[tuple[bool, str]]:
        """The service back on the revision it ran before the drill."""
        if self.revisions is None:
            return []
        done, line = run.backend.deployed(self.revisions.current)
        return [] if done else [(True, f"not on the original revision {_tail(self.revisions.current)}: {line}")]

    def _deploy(self, run: DrillRun, task_definition: str, version: str, way: str) -> tuple[bool, str]:
        drill, backend = run.drill, run.backend
        run.say(f"rolling {way} to {_tail(task_definition)} (version {version})")
        backend.deploy(task_definition, run.log)
        deadline, last, last_alarm = run.clock.now() + drill.timeout_s, 0.0, run.clock.now()
        done, line = backend.deployed(task_definition)
        while not done and run.clock.now() < deadline:
            time.sleep(TICK_S * 2)
            done, line = backend.deployed(task_definition)
            if run.clock.now() - last >= PROGRESS_S:
                last = run.clock.now()
                run.say(f"rolling {way}: {line}")
            if way == "back" and run.clock.now() - last_alarm >= ALARM_POLL_S:
                last_alarm = run.clock.now()
                firing = backend.alarms_firing()
                if firing:  # a stop condition: the roll forward (the undo) follows at once
                    run.aborted = f"alarm {', '.join(firing)} in ALARM"
                    run.log("stop condition", {"reason": run.aborted})
                    return False, f"stopped: {run.aborted}"
        if not done:
            run.log(f"roll {way} not done", {"state": line})
            return False, f"{_tail(task_definition)} not running after {drill.timeout_s:g} s: {line}"
        ok, gate = self.verify(version)
        run.log(f"rolled {way}", {"task_definition": task_definition, "state": line, "gate": gate, "ok": ok})
        run.say(f"rolled {way}: {line}; smoke gate expecting {version}: {gate}")
        return ok, f"smoke gate expecting {version}: {gate}"

    def verdict(self, run: DrillRun) -> Verdict:
        if run.fault_t is None:
            return run.verdict()
        return judges.judge_rollback(run.drill, rto_s=None if run.recovered_t is None else run.recovered_t - run.fault_t,
                                     back=self.back, forward=self.forward, problem=run.aborted)


def run_drill(drill: DrillSpec, backend: FaultBackend, api: ApiProbes | None, db: DatabaseProbe | None,
              out_dir: Path, report: Callable[[str], None], run_id: str, context: dict[str, Any],
              service_interval_s: float = 0.5,
              verify_version: Callable[[str], tuple[bool, str]] | None = None,
              on_phase: Callable[[str], None] | None = None,
              steady_gate: Callable[[], list[tuple[bool, str]]] | None = None) -> DrillResult:
    """Run the drill with probes made for `run_id` (`context`: env, target, base_url, for the journal;
    `verify_version`: the smoke gate expecting a version, for the rollback drill; `steady_gate`: the smoke
    gate's failing checks now, each (observed, line), for the steady state after the rollback). Its undo
    (the rollback,
    the temporary database's removal, the roll forward) runs whatever happens: a failure, Ctrl-C, SIGTERM
    turned into KeyboardInterrupt("SIGTERM") by the caller; and the journal is written even then. An
    interrupt is never swallowed: the result's `interrupted` names it, and the caller ends the session as
    interrupted. A verdict measured in full before it stands; one interrupted before is an error."""
    from harness.drills.chart import draw

    run = DrillRun(drill, backend, api, db, out_dir, report, service_interval_s, run_id, context, on_phase)
    method: Any = {"db_restore": Restore, "rollback": lambda: Rollback(verify_version or _unverifiable)}.get(
        drill.fault, Recovery)()
    cleanup: dict[str, Any] = {}
    broke = failed = None
    escaping: BaseException | None = None  # anything else that ends the process (SystemExit): after the undo
    try:
        backend.preflight(drill, run.log)
        run.on_phase("before")
        run.start_probes()
        method.act(run)
        run.measured = True
    except PreflightFailed as exc:  # what the drill exists to catch: it fails, and nothing is injected
        failed = str(exc)
        run.measured = True
        run.log("preflight failed", {"reason": failed})
        run.say(f"preflight failed, nothing injected: {failed}")
    except (DrillRefused, InjectFailed) as exc:
        injected = run.fault_t is not None
        run.aborted = f"refused before any fault: {exc}" if not injected else f"the fault could not be injected: {exc}"
        run.log("refused" if not injected else "fault failed", {"reason": str(exc)})
        run.fault_t = None  # no fault to measure from: the verdict is an error, never a pass or a fail
        run.say(run.aborted)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM made one by the caller: undo, then end the session
        run.interrupt(str(exc) or "SIGINT")
        run.say(f"interrupted ({run.interrupted}): rolling back, then the session ends")
    except BaseException as exc:  # noqa: BLE001 - passed on once the undo has run
        escaping = exc
        run.interrupt(type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a drill that broke is an ERROR of its own check, and is undone
        broke = _one_line(exc)
        run.log("broke", {"error": broke})
        run.say(f"the drill broke: {broke}")
    # From here to the result, a Ctrl-C or SIGTERM is noted, never acted on at once: the undo and the records
    # run to their end, and the result says the session was interrupted.
    with _interrupts_deferred(run):
        if not isinstance(method, Rollback):  # a roll forward is watched as the roll back was
            run.stop_probes()
        if run.observed_end_t is None and run.fault_t is not None:
            run.observed_end_t = run.clock.now()
        run.phase, run.rollback_t = "rollback", round(run.clock.now(), 3)
        try:
            if run.injected:
                run.say("rolling back")
                cleanup = method.undo(run)
                run.say(f"rollback {'done' if cleanup.get('ok') else 'FAILED'}: {cleanup.get('detail', '')}")
            else:
                cleanup = {"ok": True, "detail": "no fault injected"}
                run.say("nothing to roll back: no fault was injected")
        except Exception as exc:  # noqa: BLE001 - a rollback that broke is reported, and the journal still written
            cleanup = {"ok": False, "detail": f"the rollback broke: {_one_line(exc)}"}
            run.log("rollback broke", cleanup)
            run.say(cleanup["detail"])
        finally:
            run.stop_probes()
        if run.injected and cleanup.get("ok"):
            if run.interrupted:  # the session ends now: whether the system came back is not known
                if run.measured:  # else the verdict is an error already
                    run.restored = {"ok": False, "observed": False, "wrong": [f"not checked: {run.interrupted}"]}
            else:
                run.steady_again(_StillWrong(run, method, steady_gate))
        for probe in (run.api, run.db):
            close = getattr(probe, "close", None)
            if close:
                close()
        verdict = method.verdict(run)
        if failed:
            verdict = Verdict("fail", failed, figures=no_figures(drill))
        if broke:
            verdict = Verdict("error", f"the drill could not be completed: {broke}", figures=verdict.figures)
        if run.interrupted and not run.measured:  # never a pass, nor a fail measured on half the evidence
            verdict = Verdict("error", f"interrupted ({run.interrupted}) before the measurement was complete",
                              figures=verdict.figures)
        if not cleanup.get("ok"):
            verdict = Verdict("fail" if verdict.status == "pass" else verdict.status,
                              f"{verdict.message}; the rollback failed: {cleanup.get('detail')}",
                              figures=verdict.figures)
        verdict = judges.restored(verdict, run.restored, drill.restored_within_s)
        events = backend.events(run.clock.epoch)
        out_dir.mkdir(parents=True, exist_ok=True)
        journal = run.journal(verdict, cleanup, events)
        journal_path = out_dir / f"{drill.id}.journal.json"
        journal_path.write_text(json.dumps(journal, indent=1, default=str))
        chart_path = draw(journal, out_dir / f"{drill.id}.png")
    if escaping is not None:
        raise escaping
    if run.interrupted:
        run.say(f"interrupted ({run.interrupted}); the rollback ran to its end; no further drill starts")
    return DrillResult(drill, verdict, run_id, journal_path, chart_path, cleanup, events,
                       interrupted=run.interrupted, restored=run.restored)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


@contextmanager
def _interrupts_deferred(run: DrillRun) -> Iterator[None]:
    """Ctrl-C or SIGTERM (a CI cancel sends both, maybe twice) must not cut the rollback short, nor vanish:
    while it runs they are noted on the run (`run.interrupt`), which then ends as interrupted. Signals are
    the main thread's alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def noted(signum: int, _: Any) -> None:
        run.interrupt(signal.Signals(signum).name)
        run.say(f"interrupted ({signal.Signals(signum).name}): the rollback goes on, then the session ends")
    previous = {sig: signal.signal(sig, noted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StillWrong:
    """What keeps the system from its steady state once the drill's probes are green again, each item
    (observed, line): the system not as fit for the drill as before it (the backend's preflight: the
    standby in sync, the service whole), what the drill's method checks (DRILL-04: the original revision),
    then, once those hold, the smoke gate red (a round every GATE_EVERY_S at most). What could not be read
    is not observed: it keeps the drill from passing without making it a finding."""

    def __init__(self, run: DrillRun, method: Any, gate: Callable[[], list[tuple[bool, str]]] | None) -> None:
        self.run, self.method, self.gate = run, method, gate
        self.gate_at = -GATE_EVERY_S
        self.gate_red: list[tuple[bool, str]] = [(True, "smoke gate not asked yet")]

    def __call__(self) -> list[tuple[bool, str]]:
        run, wrong = self.run, []
        try:
            run.backend.preflight(run.drill, lambda action, detail: None)
        except Unreadable as exc:
            wrong.append((False, str(exc)))
        except DrillRefused as exc:  # PreflightFailed too: what preflight found wrong
            wrong.append((True, str(exc)))
        except Exception as exc:  # noqa: BLE001 - not checked is not fine: it keeps the drill from passing
            wrong.append((False, f"the system's state could not be read: {_one_line(exc)}"))
        try:
            wrong += self.method.still_wrong(run)
        except Exception as exc:  # noqa: BLE001
            wrong.append((False, f"the drill's own check could not be made: {_one_line(exc)}"))
        if wrong or self.gate is None:
            return wrong
        if run.clock.now() - self.gate_at >= GATE_EVERY_S:
            self.gate_at = run.clock.now()
            try:
                red = self.gate()
            except Exception as exc:  # noqa: BLE001
                red = [(False, f"could not be run: {_one_line(exc)}")]
            self.gate_red = [(observed, f"smoke gate red: {line}") for observed, line in red]
        return self.gate_red


def _unverifiable(version: str) -> tuple[bool, str]:
    return False, "no smoke gate to verify with"


def _tail(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds")


def refused(drill: DrillSpec, reason: str) -> DrillResult:
    """A drill that preflight refused before anything ran: could not be judged, never a pass."""
    return DrillResult(drill, Verdict("error", f"refused before any fault: {reason}", figures=no_figures(drill)),
                       "refused")


def dry_run(drill: DrillSpec, backend: FaultBackend) -> DrillResult:
    try:
        lines = backend.plan(drill)
    except DrillRefused as exc:
        return refused(drill, str(exc))
    lines = [*lines, f"check the steady state again (probes, preflight, smoke gate) and fail 'not restored' if it "
                     f"is not back within {drill.restored_within_s:g} s"]
    return DrillResult(drill, Verdict("skip", "dry run: nothing was done; it would " + "; then ".join(lines),
                                      figures=no_figures(drill)), "dry-run", dry_run=lines)
