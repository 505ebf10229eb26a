"""Runs Locust in processes of its own and collects what it measured.

Locust patches its process with gevent, so the pytest process (boto3, psycopg) only starts it and reads
the files it writes: the results (exact statistics, harness/load/generator/stats.py), the progress lines,
Locust's HTML report and each process's log. One standalone process (workers = 1), a master with N local
workers (workers = N > 1), or a master that waits for workers started elsewhere
(`locust -f harness/load/generator/locustfile.py --worker --master-host ...`).

Every run is bounded: Locust stops itself after the profile's duration plus a drain, and the runner kills
what is still running past a grace period. Ctrl-C stops the processes and keeps whatever results were
written, marked incomplete. Every Locust process is bound to the harness (harness.util.proc): however the
pytest process ends, SIGKILL included, none outlives it by more than a few seconds.

The brakes: Locust stops the run itself when the profile's stop conditions hold
(harness/load/generator/brakes.py); a `stop_check` given to `run` (CloudWatch alarms, polled here) stops it
through a stop file Locust watches. Either way the results say why and when, and the run counts as stopped.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.util import proc
from harness.util.files import write_atomic
from harness.load.profile import Profile
from harness.load.stop import stop_line

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "harness" / "load" / "generator" / "locustfile.py"
# Locust runs this much past the measurement window: requests in flight when it closes finish, and the
# workers' next reports (every 3 s) bring them to the master before it stops.
DRAIN_S = 5
GRACE_S = 30  # past the drain, a run that has not ended is stopped
PROGRESS_EVERY_S = 5.0
WORKERS_WAIT_S = 60  # how long a master waits for its workers to connect
STOP_CHECK_S = 2.0  # how often a run's stop_check (CloudWatch alarms) is polled
STOP_WAIT_S = 15.0  # after a stop is asked for, Locust has this long to end before it is stopped


@dataclass(frozen=True)
class RunSpec:
    base_url: str
    profile: Profile
    accounts_file: Path
    out_dir: Path  # results.json, progress.jsonl, locust.html and the logs go here
    ca_bundle: str | None = None
    expect_workers: int = 0  # > 0: workers started elsewhere join; no local workers are started
    master_bind: str = "127.0.0.1:5557"
    phase_file: Path | None = None
    workers_wait_s: int = WORKERS_WAIT_S


@dataclass
class RunResult:
    results: dict[str, Any] | None
    complete: bool
    interrupted: bool
    elapsed_s: float
    files: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # why the run gave no (or partial) results
    stopped: dict[str, Any] | None = None  # the brakes stopped the run: {"at_s", "condition", "reason", ...}
    notes: list[str] = field(default_factory=list)  # what went wrong without spoiling the figures (a stop check)


def locust_args(spec: RunSpec) -> list[str]:
    """The options every generating process shares (workers get theirs from the master)."""
    p = spec.profile
    stop = p.stop
    args = ["--headless", "--host", spec.base_url, "-u", str(p.users), "-r", f"{p.spawn_rate:g}",
            "-t", f"{int(p.duration_s + DRAIN_S)}s", "--window-s", f"{p.duration_s:g}", "--ramp-s", f"{p.ramp_s:g}",
            "--rate-per-s", f"{p.rate_per_s:g}", "--mix", json.dumps(p.mix),
            "--accounts-file", str(spec.accounts_file), "--exit-code-on-error", "0", "--only-summary",
            "--results-file", str(spec.out_dir / "results.json"), "--progress-file", str(spec.out_dir / "progress.jsonl"),
            "--html", str(spec.out_dir / "locust.html"),
            "--stop-error-ratio", f"{stop.error_ratio:g}", "--stop-p99-ms", f"{stop.p99_ms or 0:g}",
            "--stop-for-s", f"{stop.for_s:g}", "--stop-file", str(spec.out_dir / "stop.json")]
    if spec.ca_bundle:
        args += ["--ca-bundle", spec.ca_bundle]
    if spec.phase_file:
        args += ["--phase-file", str(spec.phase_file)]
    return args


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A Locust process in a process group of its own (Ctrl-C in the terminal reaches the runner, which stops
    Locust in order), bound to the harness so that it dies with it."""
    log.unlink(missing_ok=True)
    return proc.spawn([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args], log=log, cwd=ROOT)


def progress_line(line: dict[str, Any], spec: RunSpec) -> str:
    p = spec.profile
    planned = f"/{p.rate_per_s:g}" if p.paced else " (unpaced)"
    return (f"load {p.name} [{line.get('phase', '?')}] {line.get('t_s', 0):.0f}/{p.duration_s:.0f} s  "
            f"users {line.get('users', 0)}/{p.users}  req/s {line.get('rps', 0):.1f}{planned}  "
            f"p95 {line.get('p95_ms', 0):.0f} ms  errors {100 * line.get('error_ratio', 0):.2f} %  "
            f"generator cpu {100 * line.get('cpu', 0):.0f} %")


def run(spec: RunSpec, report: Callable[[str], None] = print, stop: threading.Event | None = None,
        stop_check: Callable[[], str | None] | None = None) -> RunResult:
    """One load run: start the processes, report progress, wait for the end (bounded), read the results.
    `stop` ends the run early when set (a drill's background load, stopped when the drills are over): the
    results then cover the run up to that moment, and count as complete. `stop_check`, polled every
    STOP_CHECK_S while the run goes on, returns why the run must stop (a CloudWatch alarm in ALARM) or None;
    when it says why, Locust stops the run as its own brakes would. An exception from it is reported, and
    kept in the result's notes."""
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    stop_file = spec.out_dir / "stop.json"
    for name in ("results.json", "progress.jsonl", "locust.html", stop_file.name):
        (spec.out_dir / name).unlink(missing_ok=True)
    p = spec.profile
    common = locust_args(spec)
    local_workers = 0 if spec.expect_workers or p.workers == 1 else p.workers
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    files = {"results": str(spec.out_dir / "results.json"), "progress": str(spec.out_dir / "progress.jsonl"),
             "html": str(spec.out_dir / "locust.html")}
    distributed = bool(spec.expect_workers or local_workers)
    logs = ["master", *(f"worker-{i + 1}" for i in range(local_workers))] if distributed else ["locust"]
    files.update({name: str(spec.out_dir / f"{name}.log") for name in logs})
    started = time.monotonic()
    deadline = started + p.duration_s + DRAIN_S + GRACE_S + (spec.workers_wait_s if distributed else 0)
    progress_path, seen_lines, next_report = spec.out_dir / "progress.jsonl", 0, started + PROGRESS_EVERY_S
    next_check, asked_to_stop = started + STOP_CHECK_S, None
    interrupted, problem, notes = False, None, []

    def terminated(*_: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (a CI job cancelled) stops the run as Ctrl-C does

    # Only the main thread may handle signals; a background run leaves SIGTERM to its caller.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if in_main else None
    stopped = False
    try:  # from before the first process starts: an interrupt while they start stops those already started
        if distributed:
            host, _, port = spec.master_bind.rpartition(":")
            expected = spec.expect_workers or local_workers
            processes.append(("master", _spawn([*common, "--master", "--expect-workers", str(expected),
                                                "--expect-workers-max-wait", str(spec.workers_wait_s),
                                                "--master-bind-host", host or "127.0.0.1", "--master-bind-port", port],
                                               spec.out_dir / "master.log")))
            for i in range(local_workers):
                worker = _spawn(["--worker", "--master-host", "127.0.0.1", "--master-port", port],
                                spec.out_dir / f"worker-{i + 1}.log")
                processes.append((f"worker-{i + 1}", worker))
            if spec.expect_workers:
                report(f"load {p.name}: waiting up to {spec.workers_wait_s} s for {spec.expect_workers} worker(s) "
                       f"at {spec.master_bind} (locust -f harness/load/generator/locustfile.py --worker "
                       f"--master-host HOST --master-port {port})")
        else:
            processes.append(("locust", _spawn(common, spec.out_dir / "locust.log")))
        main = processes[0][1]
        while main.poll() is None:
            time.sleep(0.2)
            now = time.monotonic()
            if stop is not None and stop.is_set():
                stopped = True
                report(f"load {p.name}: stopped by its caller after {now - started:.0f} s")
                break
            if now > deadline:
                problem = f"Locust did not stop within {deadline - started:.0f} s; it was stopped"
                break
            if asked_to_stop is not None and now > asked_to_stop + STOP_WAIT_S:
                problem = f"Locust did not stop within {STOP_WAIT_S:.0f} s of being asked to; it was stopped"
                break
            if stop_check is not None and asked_to_stop is None and now >= next_check:
                next_check = now + STOP_CHECK_S
                reason = checked(stop_check, notes, report, p.name)
                if reason:
                    asked_to_stop = now
                    report(f"load {p.name}: stopping the run at {now - started:.0f} s: {reason}")
                    write_atomic(stop_file, json.dumps({"reason": reason}))
            if now >= next_report:
                next_report = now + PROGRESS_EVERY_S
                line = last_progress(progress_path)
                if line is not None and line[0] > seen_lines:
                    seen_lines = line[0]
                    report(progress_line(line[1], spec))
                else:
                    report(f"load {p.name}: starting ({now - started:.0f} s)")
    except KeyboardInterrupt:
        interrupted = True
        problem = "interrupted (Ctrl-C): the results cover the run up to then"
        report(f"load {p.name}: interrupted, stopping Locust")
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        for _, process in processes:
            proc.stop(process)
    elapsed = time.monotonic() - started
    results, unreadable = read(Path(files["results"]))
    if unreadable and problem is None:
        problem = unreadable
    if results is None and problem is None:
        log = Path(files[logs[0]])
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        if distributed and any("workers" in line.lower() for line in tail):
            problem = (f"{spec.expect_workers or local_workers} worker(s) were expected and did not all connect "
                       f"within {spec.workers_wait_s} s; start them, or check that they reach {spec.master_bind}")
        else:
            problem = f"Locust wrote no results ({(tail or ['no output'])[0]}); see {log}"
    complete = bool(results and (results.get("complete") or stopped)) and not interrupted and problem is None
    braked = results.get("stopped") if results else None
    if braked:
        report(f"load {p.name}: {stop_line(braked)}")
    if results is not None:
        results["complete"] = complete
        results["interrupted"] = interrupted
    return RunResult(results, complete, interrupted, elapsed, files, problem, stopped=braked, notes=notes)


def checked(stop_check: Callable[[], str | None], notes: list[str], report: Callable[[str], None],
            name: str) -> str | None:
    """The stop check's answer; a check that fails is reported (each distinct failure once), never taken
    for a pass in silence."""
    try:
        return stop_check()
    except Exception as exc:  # noqa: BLE001 (whatever the check's client raises, the run goes on, reported)
        note = f"the stop check failed: {exc}"
        if note not in notes:
            notes.append(note)
            report(f"load {name}: {note}")
        return None


def last_progress(path: Path) -> tuple[int, dict[str, Any]] | None:
    """(lines so far, the last whole progress line), or None before the first one. Locust appends the lines
    while this reads them: a last line still being written is left for the next look."""
    lines = path.read_text().splitlines() if path.exists() else []
    for count in (len(lines), len(lines) - 1):
        if count > 0:
            try:
                return count, json.loads(lines[count - 1])
            except ValueError:
                continue
    return None


def read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The results file and None, or None and why it cannot be used (one line)."""
    if not path.exists():
        return None, None
    try:
        results = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        return None, f"{path.name} is incomplete ({exc}); see {path}"
    if not isinstance(results, dict) or not isinstance(results.get("overall"), dict):
        return None, f"{path.name} is incomplete (not a results object); see {path}"
    return results, None
