"""Runs one drill: preflight, probes, steady state, the fault, observation until recovered or stopped,
read-back, rollback (always), the steady state checked again, verdict, journal and chart.

Fetching apart from judging: this module acts and records; every decision about the records (recovered
yet? a stop condition? the verdict) is a pure function of harness/drills/judges.py.
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
from harness.drills.model import (Action, Clock, DrillRefused, DrillSpec, InjectFailed, PreflightFailed,
                                   Restored, Revisions, Sample, Write)
from harness.verdict import Verdict
from harness.plan import Plan
from harness.smoke.probes import ApiProbes, DatabaseProbe, ProbeLoop, Timeline

# What each drill of the plan does, and which probes decide that the system has recovered. "db" is
# dropped where the runner cannot reach the database (no --db-url on AWS).
KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "DRILL-01": ("Database failover", "db_failover", ("health", "write", "db")),
    "DRILL-02": ("Database restore", "db_restore", ("db",)),
    "DRILL-03": ("Application failure", "task_loss", ("health", "write", "service")),
    "DRILL-04": ("Rollback", "rollback", ("health", "write")),
}
TICK_S = 0.25        # how often the engine looks at the probes while it observes
PROGRESS_S = 3.0     # a progress line at least this often
ALARM_POLL_S = 10.0  # stop alarms are read this often (API calls on AWS)
STEADY_GRACE_S = 15.0  # how long past steady_state_s the probes may take to turn green before refusing


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


class DrillRun:
    """One drill in progress: its clock, probes, phase and journal."""

    def __init__(self, drill: DrillSpec, backend: FaultBackend, api: ApiProbes | None, db: DatabaseProbe | None,
                 out_dir: Path, report: Callable[[str], None], service_interval_s: float, run_id: str,
                 context: dict[str, Any], on_phase: Callable[[str], None] | None = None) -> None:
        self.drill, self.backend, self.api, self.db, self.context = drill, backend, api, db, context
        # Told "before", "during" and "after" the fault, as they begin (a background load marks its phases).
        self.on_phase: Callable[[str], None] = on_phase or (lambda phase: None)
        self.out_dir, self.report, self.service_interval_s, self.run_id = out_dir, report, service_interval_s, run_id
        self.clock = Clock()
        self.timeline = Timeline(self.clock)
        self.phase = "steady"
        self.actions: list[Action] = []
        self.loops: list[ProbeLoop] = []
        self.next_seq: dict[str, int] = {}  # per probe, the seq its next loop starts at (canary keys stay unique)
        self.fault_t: float | None = None
        self.recovered_t: float | None = None
        self.observed_end_t: float | None = None
        self.rollback_t: float | None = None
        self.again_t: float | None = None  # when the steady state began to be checked again, after the rollback
        self.restored: dict[str, Any] | None = None  # what that check found: {"ok", "after_s" | "wrong"}
        self.aborted: str | None = None
        self.present: set[tuple[str, int]] = set()
        self.readback_problem: str | None = None
        self.injected = False  # whether anything was done that the undo must reverse
        self.read_back_done = False
        self.measured = False  # the method's act ran to its end: what the verdict judges is all in
        self.interrupted: str | None = None  # Ctrl-C or SIGTERM reached the drill: which, and in which phase

    def interrupt(self, signal_name: str) -> None:
        """Note Ctrl-C or SIGTERM (the first one counts); the undo still runs to its end."""
        if self.interrupted is None:
            when = "after the measurement was complete" if self.measured else f"in phase '{self.phase}'"
            self.interrupted = f"{signal_name} {when}"
        self.log("interrupted", {"signal": signal_name})

    def begin_fault(self, doing: str = "injecting the fault") -> None:
        """The instant the method acts: RTO counts from here, and from here on the undo must run."""
        self.on_phase("during")  # first: a background load files what is answered from here under the fault
        self.phase = "fault"
        self.fault_t = round(self.clock.now(), 3)
        self.injected = True
        self.say(f"{doing} through the {self.backend.name} backend")

    def recover(self, t: float) -> None:
        self.recovered_t, self.phase = t, "recovered"
        self.on_phase("after")

    def log(self, action: str, detail: dict[str, Any] | None = None) -> None:
        self.actions.append(Action(round(self.clock.now(), 3), self.phase, action, detail or {}))

    def say(self, line: str) -> None:
        self.report(f"{self.drill.id} {line}")

    # -- the steps --------------------------------------------------------------------------------------

    def start_probes(self) -> list[str]:
        """Start the drill's probes; returns the names of those started."""
        drill, steps = self.drill, []
        if self.api is not None:
            steps += [(name, drill.probe_interval_s, step) for name, step in
                      (("health", self.api.health), ("write", self.api.write)) if name in drill.probes]
        if self.db is not None and "db" in drill.probes:
            steps.append(("db", drill.db_interval_s, self.db.insert))
        if "service" in drill.probes:
            steps.append(("service", self.service_interval_s, lambda t, seq: self._service()))
        for name, interval, step in steps:
            loop = ProbeLoop(name, interval, step, self.timeline, self.next_seq.get(name, 0))
            loop.start()
            self.loops.append(loop)
        self.log("probes started", {"probes": [name for name, _, _ in steps]})
        return [name for name, _, _ in steps]

    def _service(self) -> tuple:
        ok, line = self.backend.service_state()
        return ok, None, line, None

    def stop_probes(self) -> None:
        for loop in self.loops:
            loop.stop()
        for loop in self.loops:
            loop.join(timeout=10)
            self.next_seq[loop.probe] = loop.seq
        self.loops = []

    def steady_state(self) -> None:
        """The deciding probes all green for steady_state_s, or refuse: never inject into a sick system."""
        drill = self.drill
        deadline = self.clock.now() + drill.steady_state_s + STEADY_GRACE_S
        while True:
            time.sleep(TICK_S)
            now = self.clock.now()
            samples, _ = self.timeline.copy()
            if judges.recovery(samples, 0.0, drill.steady_state_s, drill.probes) is not None:
                self.log("steady state holds", {"seconds": drill.steady_state_s})
                return
            if now > deadline:
                failing = judges.failing(samples, drill.probes, now - drill.steady_state_s)
                raise DrillRefused(f"the steady state does not hold: {failing or 'probes silent'}; "
                                   "a drill never injects into a sick system")

    def steady_again(self, still_wrong: Callable[[], list[tuple[bool, str]]]) -> None:
        """After the rollback: the drill's probes green for steady_state_s since their last failure, then
        nothing `still_wrong` (each item: (observed, what is wrong); observed False: it could not be
        checked), within restored_within_s. What it found is `self.restored`."""
        drill = self.drill
        self.phase, self.again_t = "steady again", round(self.clock.now(), 3)
        deadline = self.again_t + drill.restored_within_s
        self.say(f"checking the steady state again (back within {drill.restored_within_s:g} s, or not restored)")
        probes = tuple(p for p in self.start_probes() if p in drill.probes)
        last_line, wrong = self.again_t, [(True, "not checked yet")]
        try:
            while True:
                time.sleep(TICK_S * 4)
                now = self.clock.now()
                samples, _ = self.timeline.copy()
                since = max([self.again_t] + [s.t for s in samples if s.probe in probes and not s.ok])
                if probes and judges.recovery(samples, since, drill.steady_state_s, probes) is None:
                    failing = judges.failing(samples, probes, now - drill.steady_state_s)
                    wrong = [(True, f"probes not green for {drill.steady_state_s:g} s: "
                                    f"{failing or 'green for ' + format(now - since, '.1f') + ' s so far'}")]
                else:
                    wrong = still_wrong()
                if not wrong:
                    after = round(now - self.again_t, 1)
                    self.restored = {"ok": True, "after_s": after}
                    self.log("steady again", self.restored)
                    self.say(f"restored: the steady state holds again {after:g} s after the rollback")
                    return
                if now >= deadline:
                    self.restored = {"ok": False, "observed": any(seen for seen, _ in wrong),
                                     "wrong": [line for _, line in wrong]}
                    self.log("not restored", self.restored)
                    self.say(f"NOT restored within {drill.restored_within_s:g} s: "
                             + "; ".join(self.restored["wrong"]))
                    return
                if now - last_line >= PROGRESS_S:
                    last_line = now
                    self.say(f"steady again? {now - self.again_t:.0f} of {drill.restored_within_s:g} s: "
                             + "; ".join(line for _, line in wrong))
        finally:
            self.stop_probes()

    def observe(self) -> None:
        drill, backend = self.drill, self.backend
        last_line, last_alarm, alarms = 0.0, -ALARM_POLL_S, []
        assert self.fault_t is not None
        while True:
            time.sleep(TICK_S)
            now = self.clock.now()
            samples, _ = self.timeline.copy()
            if now - last_alarm >= ALARM_POLL_S:
                alarms, last_alarm = backend.alarms_firing(), now
            recovered = judges.recovery(samples, self.fault_t, drill.recovery_window_s, drill.probes)
            if recovered is not None:
                self.recover(recovered)
                self.log("recovered", {"rto_s": round(recovered - self.fault_t, 3)})
                self.say(f"recovered: RTO {recovered - self.fault_t:.1f} s, then {drill.recovery_window_s:g} s of "
                         "every probe succeeding")
                break
            stop = judges.stop_reason(samples, now, self.fault_t, drill, alarms, drill.probes)
            if stop:
                self.aborted = stop
                self.log("stop condition", {"reason": stop})
                self.say(f"stopping: {stop}")
                break
            if now - last_line >= PROGRESS_S:
                last_line = now
                self.say(f"{self.phase} t+{now - self.fault_t:.1f} s since the fault: "
                         + judges.states(samples, drill.probes, now, PROGRESS_S))
        self.observed_end_t = self.clock.now()

    def read_back(self) -> None:
        _, writes = self.timeline.copy()
        problems = []
        if self.api is not None and "write" in self.drill.probes:
            present, problem = self.api.read_back(writes)
            self.present |= present
            problems.append(problem)
        if self.db is not None and "db" in self.drill.probes:
            present, problem = self.db.read_back()
            self.present |= present
            problems.append(problem)
        self.readback_problem = "; ".join(p for p in problems if p) or None
        self.read_back_done = True
        acknowledged = sum(w.acknowledged for w in writes)
        self.log("read back", {"acknowledged": acknowledged, "present": len(self.present),
                               "problem": self.readback_problem})

    # -- the verdict and its records ------------------------------------------------------------------------

    def evidence(self) -> tuple[list[Sample], list[Write]]:
        """The probes' samples, and the canary writes the drill judges: those sent before the steady state
        was checked again (the writes of that check are traffic, never read back)."""
        samples, writes = self.timeline.copy()
        return samples, [w for w in writes if self.again_t is None or w.t < self.again_t]

    def verdict(self) -> Verdict:
        drill = self.drill
        samples, writes = self.evidence()
        if self.fault_t is None:
            return Verdict("error", self.aborted or "the fault was never injected", figures=_no_figures(drill))
        wants_writes = any(k in drill.expect for k in ("rpo_s", "max_lost_writes"))
        lost = judges.lost_writes(writes, self.present) if wants_writes and not self.readback_problem else None
        end = (self.recovered_t + drill.recovery_window_s) if self.recovered_t is not None else self.observed_end_t
        _, _, ratio = judges.error_ratio(samples, self.fault_t, end or self.clock.now())
        return judges.judge(
            drill, rto_s=None if self.recovered_t is None else self.recovered_t - self.fault_t,
            resolution_s=judges.resolution(samples, drill.probes, self.fault_t),
            writes=[w for w in writes if w.probe in drill.probes] if wants_writes else None, lost=lost,
            rpo_s=judges.rpo(lost, self.fault_t) if lost is not None else None,
            error_ratio=ratio, aborted=self.aborted, readback_problem=self.readback_problem)

    def journal(self, verdict: Verdict, cleanup: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
        samples, writes = self.timeline.copy()
        judged = {(w.probe, w.seq) for w in self.evidence()[1]}
        end_t = round(self.clock.now(), 3)
        return {
            "drill": self.drill.id, "title": self.drill.title, "run_id": self.run_id, "backend": self.backend.name,
            **self.context,
            "started_at": self.clock.epoch, "spec": asdict(self.drill),
            "fault_t": self.fault_t, "recovered_t": self.recovered_t,
            "phases": judges.phases(self.fault_t, self.recovered_t, self.observed_end_t, self.rollback_t, end_t,
                                    self.again_t),
            "restored": self.restored,
            "actions": [asdict(a) for a in self.actions],
            "samples": [[s.t, s.probe, s.ok, s.latency_ms, s.detail] for s in samples],
            # present: None where nothing was read back (a rollback drill's writes, and those of the check
            # after the rollback, are traffic, not evidence).
            "writes": [{**asdict(w), "present": (w.probe, w.seq) in self.present
                        if self.read_back_done and (w.probe, w.seq) in judged else None} for w in writes],
            "platform_events": events, "cleanup": cleanup,
            "verdict": {"status": verdict.status, "message": verdict.message, "figures": verdict.figures},
        }


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
              steady_gate: Callable[[], list[str]] | None = None) -> DrillResult:
    """Run the drill with probes made for `run_id` (`context`: env, target, base_url, for the journal;
    `verify_version`: the smoke gate expecting a version, for the rollback drill; `steady_gate`: the smoke
    gate's failing checks now, for the steady state after the rollback). Its undo (the rollback,
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
        if run.injected and cleanup.get("ok") and not run.interrupted:
            run.steady_again(lambda: _still_wrong(run, method, steady_gate))
        for probe in (run.api, run.db):
            close = getattr(probe, "close", None)
            if close:
                close()
        verdict = method.verdict(run)
        if failed:
            verdict = Verdict("fail", failed, figures=_no_figures(drill))
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


def _still_wrong(run: DrillRun, method: Any, gate: Callable[[], list[str]] | None) -> list[tuple[bool, str]]:
    """What keeps the system from its steady state once the drill's probes are green again: the system
    not as fit for the drill as before it (the backend's preflight: the standby in sync, the service
    whole), what the drill's method checks (DRILL-04: the original revision), the smoke gate red."""
    wrong: list[tuple[bool, str]] = []
    try:
        run.backend.preflight(run.drill, lambda action, detail: None)
    except (DrillRefused, PreflightFailed) as exc:
        wrong.append((True, str(exc)))
    except Exception as exc:  # noqa: BLE001 - not checked is not fine: it keeps the drill from passing
        wrong.append((False, f"the system's state could not be read: {_one_line(exc)}"))
    try:
        wrong += method.still_wrong(run)
    except Exception as exc:  # noqa: BLE001
        wrong.append((False, f"the drill's own check could not be made: {_one_line(exc)}"))
    if gate is not None:
        red = gate()
        if red:
            wrong.append((True, "smoke gate red: " + "; ".join(red)))
    return wrong


def _unverifiable(version: str) -> tuple[bool, str]:
    return False, "no smoke gate to verify with"


def _tail(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds")


def refused(drill: DrillSpec, reason: str) -> DrillResult:
    """A drill that preflight refused before anything ran: could not be judged, never a pass."""
    return DrillResult(drill, Verdict("error", f"refused before any fault: {reason}", figures=_no_figures(drill)),
                       "refused")


def dry_run(drill: DrillSpec, backend: FaultBackend) -> DrillResult:
    try:
        lines = backend.plan(drill)
    except DrillRefused as exc:
        return refused(drill, str(exc))
    return DrillResult(drill, Verdict("skip", "dry run: nothing was done; it would " + "; then ".join(lines),
                                      figures=_no_figures(drill)), "dry-run", dry_run=lines)


def _no_figures(drill: DrillSpec) -> dict[str, Any]:
    figures: dict[str, Any] = dict.fromkeys(judges.FIGURES)
    return {**figures, "rto_target_s": drill.expect.get("rto_s"), "rpo_target_s": drill.expect.get("rpo_s")}
