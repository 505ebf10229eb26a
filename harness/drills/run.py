"""One drill in progress (DrillRun): its clock, probes, phases and journal, and the steps every drill
method is made of: the steady state before the fault, observation until recovered or stopped, the
read-back of the canary writes, the steady state checked again after the rollback, the verdict and the
journal. The methods (engine.py) put the steps together; every decision about the records is a pure
function of judges.py.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from harness.drills import judges
from harness.drills.backends import FaultBackend
from harness.drills.model import Action, Clock, DrillRefused, DrillSpec, Sample, Write
from harness.smoke.probes import ApiProbes, DatabaseProbe, ProbeLoop, Timeline
from harness.verdict import Verdict

TICK_S = 0.25        # how often the engine looks at the probes while it observes
PROGRESS_S = 3.0     # a progress line at least this often
ALARM_POLL_S = 10.0  # stop alarms are read this often (API calls on AWS)
STEADY_GRACE_S = 15.0  # how long past steady_state_s the probes may take to turn green before refusing


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
            self.next_seq[loop.probe] = loop.seq + 1  # past a step still in flight in a loop not yet stopped
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
        checked), within restored_within_s; Ctrl-C or SIGTERM ends it unknown. What it found is
        `self.restored`."""
        drill = self.drill
        self.phase, self.again_t = "steady again", round(self.clock.now(), 3)
        deadline = self.again_t + drill.restored_within_s
        self.say(f"checking the steady state again (back within {drill.restored_within_s:g} s, or not restored)")
        probes = tuple(self.start_probes())
        last_line, wrong = self.again_t, [(True, "not checked yet")]
        try:
            while True:
                time.sleep(TICK_S * 4)
                now = self.clock.now()
                if self.interrupted:
                    self.restored = {"ok": False, "observed": False, "wrong": [f"not checked: {self.interrupted}"]}
                    self.log("not restored", self.restored)
                    return
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
            return Verdict("error", self.aborted or "the fault was never injected", figures=no_figures(drill))
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


def no_figures(drill: DrillSpec) -> dict[str, Any]:
    figures: dict[str, Any] = dict.fromkeys(judges.FIGURES)
    return {**figures, "rto_target_s": drill.expect.get("rto_s"), "rpo_target_s": drill.expect.get("rpo_s")}
