"""Runs Locust in processes of its own and collects what it measured.

Locust patches its process with gevent, so the pytest process (boto3, psycopg) only starts it and reads
the files it writes: the results (exact statistics, load/exact_stats.py), the progress lines, Locust's
HTML report and each process's log. One standalone process (workers = 1), a master with N local workers
(workers = N > 1), or a master that waits for workers started elsewhere
(`locust -f load/locustfile.py --worker --master-host ...`).

Every run is bounded: Locust stops itself after the profile's duration plus a drain, and the runner kills
what is still running past a grace period. Ctrl-C stops the processes and keeps whatever results were
written, marked incomplete.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.load.profile import Profile

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "load" / "locustfile.py"
# Locust runs this much past the measurement window: requests in flight when it closes finish, and the
# workers' next reports (every 3 s) bring them to the master before it stops.
DRAIN_S = 5
GRACE_S = 30  # past the drain, a run that has not ended is stopped
PROGRESS_EVERY_S = 5.0
WORKERS_WAIT_S = 60  # how long a master waits for its workers to connect


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


def locust_args(spec: RunSpec) -> list[str]:
    """The options every generating process shares (workers get theirs from the master)."""
    p = spec.profile
    args = ["--headless", "--host", spec.base_url, "-u", str(p.users), "-r", f"{p.spawn_rate:g}",
            "-t", f"{int(p.duration_s + DRAIN_S)}s", "--window-s", f"{p.duration_s:g}", "--ramp-s", f"{p.ramp_s:g}",
            "--rate-per-s", f"{p.rate_per_s:g}", "--mix", json.dumps(p.mix),
            "--accounts-file", str(spec.accounts_file), "--exit-code-on-error", "0", "--only-summary",
            "--results-file", str(spec.out_dir / "results.json"), "--progress-file", str(spec.out_dir / "progress.jsonl"),
            "--html", str(spec.out_dir / "locust.html")]
    if spec.ca_bundle:
        args += ["--ca-bundle", spec.ca_bundle]
    if spec.phase_file:
        args += ["--phase-file", str(spec.phase_file)]
    return args


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # A session of its own: Ctrl-C in the terminal reaches the runner, which stops Locust in order.
        return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def progress_line(line: dict[str, Any], spec: RunSpec) -> str:
    p = spec.profile
    planned = f"/{p.rate_per_s:g}" if p.paced else " (unpaced)"
    return (f"load {p.name} [{line.get('phase', '?')}] {line.get('t_s', 0):.0f}/{p.duration_s:.0f} s  "
            f"users {line.get('users', 0)}/{p.users}  req/s {line.get('rps', 0):.1f}{planned}  "
            f"p95 {line.get('p95_ms', 0):.0f} ms  errors {100 * line.get('error_ratio', 0):.2f} %  "
            f"generator cpu {100 * line.get('cpu', 0):.0f} %")


def run(spec: RunSpec, report: Callable[[str], None] = print, stop: threading.Event | None = None) -> RunResult:
    """One load run: start the processes, report progress, wait for the end (bounded), read the results.
    `stop` ends the run early when set (a drill's background load, stopped when the drills are over): the
    results then cover the run up to that moment, and count as complete."""
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "progress.jsonl", "locust.html"):
        (spec.out_dir / name).unlink(missing_ok=True)
    p = spec.profile
    common = locust_args(spec)
    local_workers = 0 if spec.expect_workers or p.workers == 1 else p.workers
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    files = {"results": str(spec.out_dir / "results.json"), "progress": str(spec.out_dir / "progress.jsonl"),
             "html": str(spec.out_dir / "locust.html")}
    distributed = bool(spec.expect_workers or local_workers)
    if distributed:
        host, _, port = spec.master_bind.rpartition(":")
        expected = spec.expect_workers or local_workers
        master = _spawn([*common, "--master", "--expect-workers", str(expected),
                         "--expect-workers-max-wait", str(spec.workers_wait_s),
                         "--master-bind-host", host or "127.0.0.1", "--master-bind-port", port],
                        spec.out_dir / "master.log")
        processes.append(("master", master))
        for i in range(local_workers):
            worker = _spawn(["--worker", "--master-host", "127.0.0.1", "--master-port", port],
                            spec.out_dir / f"worker-{i + 1}.log")
            processes.append((f"worker-{i + 1}", worker))
        if spec.expect_workers:
            report(f"load {p.name}: waiting up to {spec.workers_wait_s} s for {spec.expect_workers} worker(s) at "
                   f"{spec.master_bind} (locust -f load/locustfile.py --worker --master-host HOST --master-port {port})")
    else:
        processes.append(("locust", _spawn(common, spec.out_dir / "locust.log")))
    files.update({name: str(spec.out_dir / f"{name}.log") for name, _ in processes})
    main = processes[0][1]
    started = time.monotonic()
    deadline = started + p.duration_s + DRAIN_S + GRACE_S + (spec.workers_wait_s if distributed else 0)
    progress_path, seen_lines, next_report = spec.out_dir / "progress.jsonl", 0, started + PROGRESS_EVERY_S
    interrupted, problem = False, None

    def terminated(*_: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (a CI job cancelled) stops the run as Ctrl-C does

    # Only the main thread may handle signals; a background run leaves SIGTERM to its caller.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if in_main else None
    stopped = False
    try:
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
            if now >= next_report:
                next_report = now + PROGRESS_EVERY_S
                lines = progress_path.read_text().splitlines() if progress_path.exists() else []
                if len(lines) > seen_lines:
                    seen_lines = len(lines)
                    report(progress_line(json.loads(lines[-1]), spec))
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
            _stop(process)
    elapsed = time.monotonic() - started
    results = json.loads(Path(files["results"]).read_text()) if Path(files["results"]).exists() else None
    if results is None and problem is None:
        log = Path(files[processes[0][0]])
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        if distributed and any("workers" in line.lower() for line in tail):
            problem = (f"{spec.expect_workers or local_workers} worker(s) were expected and did not all connect "
                       f"within {spec.workers_wait_s} s; start them, or check that they reach {spec.master_bind}")
        else:
            problem = f"Locust wrote no results ({(tail or ['no output'])[0]}); see {log}"
    complete = bool(results and (results.get("complete") or stopped)) and not interrupted and problem is None
    if results is not None:
        results["complete"] = complete
        results["interrupted"] = interrupted
    return RunResult(results, complete, interrupted, elapsed, files, problem)
