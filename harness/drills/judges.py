"""The drill verdicts, pure: probe samples, canary writes and the plan's targets in, figures and a verdict
out. No I/O and no clock: every time is seconds since the drill's origin (model.Clock), passed in.

Recovery (RTO). Only the deciding probes count (the drill's `probes`), and only their samples at or after
the fault. interval(p) is the median gap between probe p's samples after the fault (0 with fewer than two).
A window [t0, t0 + W] (W = the drill's recovery_window_s, both ends included) is a recovery when
  1. every deciding-probe sample in it succeeded;
  2. every deciding probe is heard from the window's start: its first sample in the window comes no later
     than t0 + min(interval(p), W). So each probe has a sample in the window (a silent probe is not a
     recovered one), and a probe still silent after the fault, or still waiting on an answer (a sample
     carries the time its request was sent), holds the window back;
  3. the window was observed to its end: every deciding probe has a sample at or after
     t0 + W - interval(p). A sample stands for the interval that follows it, so a probe whose last sample
     comes one interval before the window's end covers it; a window cut short by the end of observation
     does not count.
A gap inside the window is not checked: the probe loops are sequential, so a gap follows a request that
took that long, and that request's outcome (in the window, so a success) covers it.
t0 is the time of a deciding-probe sample: the first that starts such a window, i.e. (within one interval)
the first after the last failure, or the first at or after the fault when nothing failed.
RTO = t0 - fault, to within the resolution: the slowest deciding probe's median interval.

RPO. Lost = acknowledged by the server and absent on read-back; an unacknowledged write that is missing was
never promised. RPO = how long before the fault the oldest lost write was sent (0 when none is lost).
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from statistics import median
from typing import Any, Iterable, Mapping

from harness.drills.model import EXPIRY_S, PHASES, TAG_ENV, TAG_EXPIRES, DrillSpec, Sample, Write
from harness.verdict import Verdict

EPS = 1e-6  # seconds: sample times that differ by less are the same instant (float arithmetic, not physics)
FIGURES = ("rto_s", "rto_target_s", "rpo_s", "rpo_target_s", "acknowledged_writes", "lost_writes",
           "error_ratio", "resolution_s")


def _times(samples: Iterable[Sample], probes: tuple[str, ...], after_t: float) -> dict[str, list[float]]:
    """Per deciding probe, the sorted times of its samples at or after `after_t`."""
    times: dict[str, list[float]] = {p: [] for p in probes}
    for s in samples:
        if s.probe in times and s.t >= after_t - EPS:
            times[s.probe].append(s.t)
    for ts in times.values():
        ts.sort()
    return times


def _median_gap(ts: list[float]) -> float:
    return median(b - a for a, b in zip(ts, ts[1:])) if len(ts) > 1 else 0.0


def recovery(samples: list[Sample], fault_t: float, window_s: float, probes: tuple[str, ...]) -> float | None:
    """The start t0 of the first recovery window (see the module's docstring), or None when there is none.
    O(n log n) for the sort, then one pass over the samples with a pointer per probe."""
    mine = sorted((s for s in samples if s.probe in probes and s.t >= fault_t - EPS), key=lambda s: s.t)
    times = _times(mine, probes, fault_t)
    if not all(times.values()):
        return None  # a deciding probe said nothing after the fault
    interval = {p: _median_gap(ts) for p, ts in times.items()}
    # The latest a window may start and still be observed to its end (rule 3), over all probes.
    last_start = min(ts[-1] + interval[p] for p, ts in times.items()) - window_s
    failures = [s.t for s in mine if not s.ok]
    nxt = dict.fromkeys(probes, 0)  # per probe, the index of its first sample at or after t0
    f = 0                           # index of the first failure at or after t0
    for s in mine:
        t0 = s.t
        if t0 > last_start + EPS:
            return None
        end = t0 + window_s + EPS
        while f < len(failures) and failures[f] < t0 - EPS:
            f += 1
        if f < len(failures) and failures[f] <= end:
            continue  # a failure in the window (rule 1); a later t0 may clear it
        heard = True
        for p, ts in times.items():
            while nxt[p] < len(ts) and ts[nxt[p]] < t0 - EPS:
                nxt[p] += 1
            heard = heard and nxt[p] < len(ts) and ts[nxt[p]] <= t0 + min(interval[p], window_s) + EPS
        if heard:  # rule 2
            return t0
    return None


def resolution(samples: list[Sample], probes: tuple[str, ...], after_t: float) -> float:
    """The probe interval achieved: over the deciding probes, the largest median gap between consecutive
    samples at or after `after_t` (0.0 when no probe has two)."""
    return max((_median_gap(ts) for ts in _times(samples, probes, after_t).values()), default=0.0)


def lost_writes(writes: list[Write], present: set[tuple[str, int]]) -> list[Write]:
    """Acknowledged writes whose (probe, seq) the read-back did not find."""
    return [w for w in writes if w.acknowledged and (w.probe, w.seq) not in present]


def rpo(lost: list[Write], fault_t: float) -> float:
    """How long before the fault the oldest lost write was sent; 0.0 when none is lost (or all were sent
    after the fault)."""
    return max(0.0, fault_t - min(w.t for w in lost)) if lost else 0.0


def error_ratio(samples: list[Sample], start_t: float, end_t: float,
                probes: tuple[str, ...] = ("health", "write")) -> tuple[int, int, float]:
    """(failed, total, failed / total) over the samples of `probes` with start_t <= t < end_t."""
    picked = [s for s in samples if s.probe in probes and start_t <= s.t < end_t]
    failed = sum(1 for s in picked if not s.ok)
    return failed, len(picked), failed / len(picked) if picked else 0.0


def stop_reason(samples: list[Sample], now_t: float, fault_t: float | None, drill: DrillSpec,
                alarms_firing: list[str], probes: tuple[str, ...]) -> str | None:
    """Why the drill must stop now and roll back (one line, several reasons '; '-separated), or None.

    A plan-named alarm in ALARM stops it at any time; from the fault on, so do the hard timeout and a
    deciding probe that has failed on every sample since before now - stop_after_failing_s (its streak
    starts at its first failure after its newest success, and at the fault at the earliest). The samples are
    read backwards from the newest, in the order they were recorded (each probe's in its own time order),
    until every deciding probe has shown a success: a handful when all are healthy; otherwise the current
    failing streak, which the stop itself bounds to stop_after_failing_s of samples, plus, for a probe that
    has not succeeded since the fault, the few seconds of steady state before it."""
    reasons = [f"alarm {name} is in ALARM" for name in alarms_firing]
    if fault_t is None:
        return "; ".join(reasons) or None
    if now_t - fault_t > drill.timeout_s:
        reasons.append(f"hard timeout of {_s(drill.timeout_s)} s reached")
    streak: dict[str, float] = {}   # per probe, the first failure of its current streak
    settled: set[str] = set()       # probes whose newest success has been seen
    for s in reversed(samples):
        if len(settled) == len(probes):
            break
        if s.probe not in probes or s.probe in settled or s.t < fault_t - EPS:
            continue
        if s.ok:
            settled.add(s.probe)
        else:
            streak[s.probe] = min(s.t, streak.get(s.probe, s.t))
    for p in probes:
        if p in streak and now_t - streak[p] > drill.stop_after_failing_s:
            reasons.append(f"probe {p} has failed for {_s(now_t - streak[p], 1)} s without a break "
                           f"(the plan allows {_s(drill.stop_after_failing_s)} s)")
    return "; ".join(reasons) or None


def _s(x: float, decimals: int = 3) -> str:
    """Seconds for a message: at most `decimals` decimals, no trailing zeros (120, 12.4, 0.05)."""
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _write_spacing(writes: list[Write]) -> float:
    """The RPO's resolution: the canary writes' median spacing (the slowest writer's)."""
    by_probe: dict[str, list[float]] = defaultdict(list)
    for w in writes:
        by_probe[w.probe].append(w.t)
    return max((_median_gap(sorted(ts)) for ts in by_probe.values()), default=0.0)


def judge(drill: DrillSpec, *, rto_s: float | None, resolution_s: float, writes: list[Write] | None,
          lost: list[Write] | None, rpo_s: float | None, error_ratio: float | None, aborted: str | None,
          readback_problem: str | None) -> Verdict:
    """pass, fail (every broken rule listed, '; '-separated), error (a figure the drill expects could not
    be measured: never a pass) or inconclusive (no canary write acknowledged: nothing to measure RPO on).
    A definite failure outranks an error, an error outranks inconclusive."""
    expect = drill.expect
    rto_target, rpo_target = expect["rto_s"], expect.get("rpo_s")
    acknowledged = None if writes is None else sum(1 for w in writes if w.acknowledged)
    rto = None if rto_s is None else round(rto_s, 3)
    rpo_v = None if rpo_s is None else round(rpo_s, 3)
    ratio = None if error_ratio is None else round(error_ratio, 4)
    figures = {"rto_s": rto, "rto_target_s": rto_target, "rpo_s": rpo_v, "rpo_target_s": rpo_target,
               "acknowledged_writes": acknowledged, "lost_writes": None if lost is None else len(lost),
               "error_ratio": ratio, "resolution_s": round(resolution_s, 3)}
    fails: list[str] = []
    errors: list[str] = []
    said: list[str] = []  # the figures in words, for a pass and for an aborted drill

    if aborted:
        fails.append(f"stopped: {aborted}")
    res = f"(± {_s(resolution_s)} s)"
    if rto is None:
        fails.append(f"did not recover: no {_s(drill.recovery_window_s)} s window with every probe "
                     f"({', '.join(drill.probes)}) succeeding within the observation (target {_s(rto_target)} s)")
    else:
        shown = _s(rto, 1 if resolution_s >= 0.05 else 2)
        if rto > rto_target:
            shown = shown if float(shown) > rto_target else _s(rto)
            fails.append(f"RTO {shown} s {res} > {_s(rto_target)} s")
        else:
            said.append(f"RTO {shown} s {res} ≤ {_s(rto_target)} s")

    wants_writes = "rpo_s" in expect or "max_lost_writes" in expect
    if wants_writes:
        if readback_problem or lost is None:
            errors.append(f"could not read the canary writes back: {readback_problem or 'no read-back was made'}")
        elif not acknowledged:
            pass  # inconclusive, below, unless something failed
        else:
            limit = expect.get("max_lost_writes")
            lost_text = f"{len(lost)} of {acknowledged} acknowledged writes lost"
            rpo_text = ("RPO not measured" if rpo_v is None
                        else f"RPO {_s(rpo_v)} s (± {_s(_write_spacing(writes or []))} s)")
            over_lost = limit is not None and len(lost) > limit
            over_rpo = rpo_target is not None and rpo_v is not None and rpo_v > rpo_target
            if over_lost:
                fails.append(f"{lost_text} (the plan allows {limit}), {rpo_text}")
            if over_rpo:
                fails.append(f"RPO {_s(rpo_v)} s > {_s(rpo_target)} s")
            if rpo_target is not None and rpo_v is None:
                errors.append("the RPO was not measured")
            if not over_lost and not over_rpo:
                bound = f" ≤ {_s(rpo_target)} s" if rpo_target is not None and rpo_v is not None else ""
                said.append(f"{lost_text}, {rpo_text}{bound}")

    if "max_error_ratio" in expect:
        if ratio is None:
            errors.append("the error ratio during the drill was not measured")
        elif ratio > expect["max_error_ratio"]:
            fails.append(f"error ratio {ratio:g} > {expect['max_error_ratio']:g}")
        else:
            said.append(f"error ratio {ratio:g} ≤ {expect['max_error_ratio']:g}")
    elif ratio is not None:
        said.append(f"error ratio {ratio:g}")

    if fails:
        so_far = f"; so far: {'; '.join(said)}" if aborted and said else ""
        return Verdict("fail", "; ".join(fails + errors) + so_far, figures=figures)
    if errors:
        return Verdict("error", "; ".join(errors), figures=figures)
    if wants_writes and not acknowledged:
        return Verdict("inconclusive", "no canary write was acknowledged: nothing to measure the RPO on"
                       + (f"; {'; '.join(said)}" if said else ""), figures=figures)
    return Verdict("pass", "; ".join(said), figures=figures)


def phases(fault_t: float | None, recovered_t: float | None, observed_end_t: float | None,
           rollback_t: float | None, end_t: float | None, again_t: float | None = None) -> list[dict[str, Any]]:
    """The drill's phases for the journal and the picture, [{"name", "start_s", "end_s"}], in model.PHASES
    order; a phase that did not happen (its start None) is left out. "fault" is the instant of injection,
    kept as a zero-length phase (start_s == end_s) so the journal says when the method ran; "steady again"
    is the check after the rollback (`again_t` its start). Without a fault (dry run, refused preflight)
    only "steady" (and "rollback", if one ran) remain."""
    observed = next((t for t in (observed_end_t, rollback_t, end_t, recovered_t, fault_t) if t is not None), 0.0)
    spans = {
        "steady": (0.0, fault_t if fault_t is not None else observed),
        "fault": (fault_t, fault_t),
        "recovering": (fault_t, recovered_t if recovered_t is not None else observed),
        "recovered": (recovered_t, observed),
        "rollback": (rollback_t, next((t for t in (again_t, end_t) if t is not None), rollback_t)),
        "steady again": (again_t, end_t if end_t is not None else again_t),
    }
    return [{"name": name, "start_s": round(start, 3), "end_s": round(max(start, end), 3)}
            for name in PHASES for start, end in [spans[name]] if start is not None]


def failing(samples: list[Sample], probes: tuple[str, ...], since: float) -> str:
    """Each deciding probe that failed since `since`, with its last failure's detail, for a refusal or a
    progress line."""
    bad = {}
    for s in samples:
        if s.t >= since and s.probe in probes and not s.ok:
            bad[s.probe] = s.detail
    return ", ".join(f"{p} failing ({d})" for p, d in sorted(bad.items()))


def states(samples: list[Sample], probes: tuple[str, ...], now: float, recent_s: float) -> str:
    """Each probe's last result and its failures over the last `recent_s` seconds, for a progress line."""
    last: dict[str, Any] = {}
    recent: dict[str, list[bool]] = {p: [] for p in probes}
    for s in samples:
        if s.probe in probes:
            last[s.probe] = s
            if s.t >= now - recent_s:
                recent[s.probe].append(s.ok)
    parts = []
    for p in probes:
        s = last.get(p)
        if s is None:
            parts.append(f"{p} -")
            continue
        fails = recent[p].count(False)
        parts.append(f"{p} {'ok' if s.ok else 'FAIL'}" + (f" ({s.detail})" if not s.ok else "")
                     + (f" {fails}/{len(recent[p])} failed" if fails else ""))
    return ", ".join(parts)


def restored(verdict: Verdict, found: dict[str, Any] | None, within_s: float) -> Verdict:
    """The verdict once the steady state was checked again after the rollback (`found`: None when it was
    not, as when nothing was injected or the rollback itself failed). Not restored fails the drill, met
    RTO and RPO or not (a finding outranks an error, as in `judge`); not restored only because something
    could not be checked is an error (unknown), never a pass, and leaves a fail a fail."""
    if found is None or found["ok"]:
        return verdict
    status = "fail" if found["observed"] else "error" if verdict.status == "pass" else verdict.status
    said = (f"not restored within {within_s:g} s after the rollback" if found["observed"]
            else "not known to be restored after the rollback")
    return Verdict(status, f"{verdict.message}; {said}: " + "; ".join(found["wrong"]), figures=verdict.figures)


# -- DRILL-02 (restore) and DRILL-04 (rollback): procedures rather than recoveries -------------------------


def manifest_diff(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    """What the restored data lacks or has differently, per application table: its row count and the hash
    of its rows in key order, taken at the restore point and again in the restored database."""
    found = []
    for table in sorted(set(before) | set(after)):
        was, now = before.get(table), after.get(table)
        if now is None:
            found.append(f"table {table} is missing from the restored database")
        elif was is None:
            found.append(f"table {table} is in the restored database but was not at the restore point")
        elif was["rows"] != now["rows"]:
            found.append(f"table {table}: {now['rows']} rows restored, {was['rows']} at the restore point")
        elif was["hash"] != now["hash"]:
            found.append(f"table {table}: its {was['rows']} rows differ from those at the restore point")
    return found


def judge_restore(drill: DrillSpec, *, rto_s: float | None, rpo_s: float | None, restore_problem: str | None,
                  verified: bool, diffs: list[str], canary_rows: int | None, resolution_s: float) -> Verdict:
    """DRILL-02: restored to the point, the data verified against the manifest, within RTO and RPO. A
    restore that could not be made (the point unreachable, the data wrong) fails; a restore the runner
    could not reach to verify is inconclusive ("restored, not verified"), never a pass."""
    rto_target, rpo_target = drill.expect["rto_s"], drill.expect.get("rpo_s")
    figures = {**dict.fromkeys(FIGURES), "rto_s": None if rto_s is None else round(rto_s, 3),
               "rto_target_s": rto_target, "rpo_s": None if rpo_s is None else round(rpo_s, 3),
               "rpo_target_s": rpo_target, "resolution_s": round(resolution_s, 3)}
    if restore_problem:
        return Verdict("fail", f"the restore failed: {restore_problem}", figures=figures)
    if not verified:
        return Verdict("inconclusive", "restored, not verified: the runner has no path to the restored database "
                                       "(pass --restore-dsn-template from inside the VPC)", figures=figures)
    fails = list(diffs)
    said = []
    if canary_rows == 0 or rpo_s is None:
        fails.append("no canary row written before the restore point is in the restored database")
    elif rpo_target is not None and rpo_s > rpo_target:
        fails.append(f"RPO {_s(rpo_s)} s > {_s(rpo_target)} s")
    else:
        said.append(f"RPO {_s(rpo_s)} s (± {_s(resolution_s)} s) ≤ {_s(rpo_target)} s ({canary_rows} canary rows)")
    if rto_s is not None and rto_s > rto_target:
        fails.append(f"RTO {_s(rto_s, 1)} s > {_s(rto_target)} s")
    elif rto_s is not None:
        said.insert(0, f"restored and verified in {_s(rto_s, 1)} s ≤ {_s(rto_target)} s")
    if not diffs:
        said.append("every application table matches the manifest")
    return Verdict("fail" if fails else "pass", "; ".join(fails or said), figures=figures)


def judge_rollback(drill: DrillSpec, *, rto_s: float | None, back: tuple[bool, str] | None,
                   forward: tuple[bool, str] | None, problem: str | None) -> Verdict:
    """DRILL-04: the previous revision deployed and verified by the smoke gate expecting its version within
    RTO, then the original revision deployed and verified again: the service left as it was found."""
    rto_target = drill.expect["rto_s"]
    figures = {**dict.fromkeys(FIGURES), "rto_s": None if rto_s is None else round(rto_s, 3),
               "rto_target_s": rto_target}
    fails = [problem] if problem else []
    said = []
    if back is None or not back[0]:
        fails.append(f"the rollback was not verified: {back[1] if back else 'it never ran'}")
    elif rto_s is not None and rto_s > rto_target:
        fails.append(f"rolled back and verified in {_s(rto_s, 1)} s > {_s(rto_target)} s")
    else:
        said.append(f"rolled back and verified in {_s(rto_s or 0.0, 1)} s ≤ {_s(rto_target)} s ({back[1]})")
    if forward is None or not forward[0]:
        fails.append(f"the roll forward to the original revision was not verified: "
                     f"{forward[1] if forward else 'it never ran'}")
    else:
        said.append(f"rolled forward and verified ({forward[1]})")
    return Verdict("fail" if fails else "pass", "; ".join(fails or said), figures=figures)


def load_phases(phases: dict[str, dict[str, Any]], slo: dict[str, Any]) -> list[str]:
    """A background load's overall figures before and after the fault against the load SLOs (LOAD-01's
    p95_ms, p99_ms, max_error_ratio): one line per broken figure; a phase without requests is a finding too
    (the load was not measured there). The phase during the fault is not judged here."""
    broken = []
    for name in ("before", "after"):
        row = phases.get(name)
        if not row or not row.get("requests"):
            broken.append(f"the background load measured no request {name} the fault")
            continue
        for key, limit, unit in (("p95_ms", slo.get("p95_ms"), " ms"), ("p99_ms", slo.get("p99_ms"), " ms"),
                                 ("error_ratio", slo.get("max_error_ratio"), "")):
            if limit is not None and row[key] > limit:
                broken.append(f"under load {name} the fault, {key.replace('_ms', '')} {row[key]:g}{unit} > {limit:g}{unit}")
    return broken


# -- preflight: DRILL-01's standby ------------------------------------------------------------------------


def out_of_sync(reason: str) -> str:
    """The one line DRILL-01 fails with when preflight finds its standby out of sync (nothing injected)."""
    return f"the standby is not in sync ({reason}): a failover now would lose acknowledged writes"


def local_standby(sync_state: str | None) -> str | None:
    """Why the stand-in's standby is not in sync, from the primary's pg_stat_replication (the sync_state of
    the streaming standby; None when none streams), or None when it is: 'sync' only. Any other state
    ('async', 'potential', 'quorum') means the primary acknowledges a commit the standby may not have."""
    if sync_state == "sync":
        return None
    if sync_state is None:
        return "no standby streams to the primary: pg_stat_replication lists none"
    return (f"pg_stat_replication shows the standby '{sync_state}', not 'sync': the primary acknowledges "
            "commits without waiting for it")


def rds_standby(ident: str, multi_az: Any, status: Any, pending: Mapping[str, Any] | None) -> str | None:
    """Why the RDS instance's standby is not in sync, or None: it must be Multi-AZ, `available`, and have no
    PendingModifiedValues (a pending change, Multi-AZ among them, is not in effect yet)."""
    problems = []
    if not multi_az:
        problems.append(f"database {ident} is not Multi-AZ")
    if status != "available":
        problems.append(f"database {ident} is {status or 'of unknown status'}, not available")
    if pending:
        problems.append(f"database {ident} has pending modifications ({', '.join(sorted(pending))})")
    return "; ".join(problems) or None


# -- the temporary resources of restore drills: expiry and sweep -------------------------------------------


def restore_expiry(started: float, timeout_s: float, discard_s: float) -> float:
    """When a restore drill's temporary database may be swept (epoch seconds): the restore has the drill's
    hard timeout from `started`, the verification as long again, and the removal `discard_s` (the backend's
    bound on a deletion). Before then, the drill that made it may still be verifying or deleting it."""
    return started + 2 * timeout_s + discard_s


def tag_epoch(value: Any) -> float | None:
    """An expiry tag (ISO 8601; UTC when it names no zone) as epoch seconds, None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()


def sweep(tags: Mapping[str, Any] | None, now: float, env: str | None,
          age_s: float | None = None) -> tuple[bool, str]:
    """Whether `harness drills sweep` removes one drill resource, and why (one line). `tags`: its drill tags
    (None: a local restore dir without any, made before its tags were written, so no server ever ran in it:
    removed once older than EXPIRY_S by `age_s`). `env`: the environment swept, None for every one
    (--all-envs); a resource of another environment, or naming none, is kept. An expiry tag that is missing
    or cannot be read is kept and reported: not this sweep's to delete. Otherwise removed once `now` is
    past its expiry."""
    if tags is None:
        if age_s is not None and age_s > EXPIRY_S:
            return True, f"untagged, {age_s / 3600:.1f} h old (> {EXPIRY_S / 3600:g} h)"
        return False, f"kept: untagged, {'of unknown age' if age_s is None else f'{age_s / 3600:.1f} h old'}"
    made_for = tags.get(TAG_ENV)
    if env is not None and made_for != env:
        whose = f"of environment '{made_for}'" if made_for else f"without a {TAG_ENV} tag"
        return False, f"kept: {whose}, not of '{env}' (--all-envs sweeps every environment)"
    raw = tags.get(TAG_EXPIRES)
    expires = tag_epoch(raw)
    if expires is None:
        return False, (f"kept, not this sweep's to delete: its {TAG_EXPIRES} tag ({raw!r}) cannot be read; "
                       "remove it by hand once no drill uses it")
    if expires >= now:
        return False, f"kept: not expired (expires {raw})"
    return True, f"expired {raw}"
