"""How a load run stops: its brakes (the profile's stop conditions, CloudWatch alarms), the harness ending
in any way (SIGKILL included: no Locust process outlives it), a worker whose master is gone, and Locust
run by hand without the options its journeys need. The endpoints are servers of the tests' own on
loopback that record when each request arrived."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import boto3
import psutil
import pytest
from harness.util.net import free_port
from harness.util.wait import WaitTimeout, until
from support.servers import JsonHandler
from support.suites import ROOT, run_suite
from moto import mock_aws

from harness.load import judges, runner
from harness.load.profile import Profile, resolve
from harness.load.stop import Figures, Stop, alarm_check, alarms_in_alarm, fired
from harness.plan import PlanError, load_plan

pytestmark = pytest.mark.locust

HEALTH_PROFILE_END = "mix = { health = 1 }\n"


# -- the decision, pure: per-second figures and the stop settings in, the condition that fired out -----------

def seconds(*rows: tuple[int, int, float]) -> list[Figures]:
    """(requests, failures, p99_ms) per second from 0."""
    return [Figures(t, requests, failures, p99) for t, (requests, failures, p99) in enumerate(rows)]


OK, FAILING, SLOW, EMPTY = (100, 1, 20.0), (100, 97, 20.0), (100, 0, 3000.0), (0, 0, 0.0)


@pytest.mark.parametrize(("series", "stop", "expected"), [
    (seconds(*[OK] * 30), Stop(), None),
    (seconds(*[OK] * 8, *[FAILING] * 10), Stop(), ("error_ratio", 8, 18, "error ratio 0.97 > 0.5 for 10 s")),
    (seconds(*[OK] * 8, *[FAILING] * 9), Stop(), None),  # 9 s is not 10 s yet
    (seconds(*[FAILING] * 5, OK, *[FAILING] * 9), Stop(), None),  # a good second ends the streak
    (seconds(*[OK] * 3, *[FAILING] * 4, *[EMPTY] * 6), Stop(), ("error_ratio", 3, 13, None)),  # failing, then silent
    (seconds(*[EMPTY] * 20), Stop(), None),  # no request at all is not a failure
    (seconds(*[OK] * 5, *[(100, 50, 20.0)] * 12), Stop(), None),  # at the bound is not beyond it
    (seconds(*[OK] * 2, *[(10, 6, 20.0)] * 3), Stop(for_s=3), ("error_ratio", 2, 5, "error ratio 0.60 > 0.5 for 3 s")),
    (seconds(*[OK] * 2, *[(10, 6, 20.0)] * 3), Stop(error_ratio=0.6, for_s=3), None),
    (seconds(*[SLOW] * 20), Stop(), None),  # no p99 bound unless the plan gives one
    (seconds(OK, *[SLOW] * 5), Stop(p99_ms=2000, for_s=5), ("p99_ms", 1, 6, "p99 3000 ms or more > 2000 ms for 5 s")),
    (seconds(*[SLOW] * 4, OK, *[SLOW] * 4), Stop(p99_ms=2000, for_s=5), None),
    # each condition keeps its own streak: slow, then failing, is neither for 4 s
    (seconds(*[SLOW] * 2, *[(100, 97, 3000.0)] * 1, *[FAILING] * 2), Stop(p99_ms=2000, for_s=4), None),
    (seconds(*[OK] * 3, *[FAILING] * 3), Stop(for_s=2.5), ("error_ratio", 3, 6, None)),  # 2.5 s: three seconds
])
def test_the_stop_decision(series: list[Figures], stop: Stop, expected: tuple[Any, ...] | None) -> None:
    got = fired(series, stop)
    if expected is None:
        assert got is None
        return
    assert (got.condition, got.start_s, got.end_s) == expected[:3]
    if expected[3]:
        assert got.reason == expected[3]


def test_the_decision_takes_seconds_in_any_order_and_missing_ones_as_silent() -> None:
    series = [Figures(12, 10, 9, 1.0), Figures(10, 10, 9, 1.0), Figures(14, 10, 9, 1.0)]
    assert fired(series, Stop(for_s=5)) == fired(sorted(series), Stop(for_s=5))
    assert fired(series, Stop(for_s=5)).end_s == 15


@pytest.mark.parametrize(("states", "expected"), [
    ({"a": "OK", "b": "INSUFFICIENT_DATA"}, None),
    ({"a": "OK", "b": "ALARM"}, "alarm b in ALARM"),
    ({"a": "ALARM", "b": "ALARM"}, "alarm a, b in ALARM"),
])
def test_alarm_states_give_the_stop_reason(states: dict[str, str], expected: str | None) -> None:
    assert alarms_in_alarm(states, ["a", "b"]) == expected


def test_an_alarm_that_cannot_be_read_is_an_error_not_a_pass() -> None:
    with pytest.raises(LookupError, match="stop alarm\\(s\\) b not found"):
        alarms_in_alarm({"a": "OK"}, ["a", "b"])


@mock_aws
def test_alarm_check_reads_cloudwatch() -> None:
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    cloudwatch.put_metric_alarm(AlarmName="dougust-prod-alb-5xx", MetricName="HTTPCode_ELB_5XX_Count",
                                Namespace="AWS/ApplicationELB", Statistic="Sum", Period=60, EvaluationPeriods=1,
                                Threshold=10, ComparisonOperator="GreaterThanThreshold")
    check = alarm_check(cloudwatch, ["dougust-prod-alb-5xx"])
    assert check() is None
    cloudwatch.set_alarm_state(AlarmName="dougust-prod-alb-5xx", StateValue="ALARM", StateReason="test")
    assert check() == "alarm dougust-prod-alb-5xx in ALARM"
    with pytest.raises(LookupError, match="no-such-alarm"):
        alarm_check(cloudwatch, ["dougust-prod-alb-5xx", "no-such-alarm"])()


# -- the plan's stop settings ---------------------------------------------------------------------------------

def plan_with(tmp_path: Path, health_stop: str | None, extra: str = "") -> Path:
    text = (ROOT / "plan" / "dougust.toml").read_text()
    assert text.count(HEALTH_PROFILE_END) == 1
    if health_stop is not None:
        text = text.replace(HEALTH_PROFILE_END, f"{HEALTH_PROFILE_END}stop = {health_stop}\n{extra}")
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("stop", "env", "expected"), [
    (None, "dev", Stop(0.5, None, 10.0, ())),
    ("{ for_s = 4 }", "dev", Stop(0.5, None, 4.0, ())),
    ('{ error_ratio = 0.2, p99_ms = 2000, for_s = 30, alarms = ["alb-5xx"] }', "dev", Stop(0.2, 2000.0, 30.0, ("alb-5xx",))),
    # an environment overrides single keys and keeps the others
    ("{ error_ratio = 0.2, for_s = 30 }", "prod", Stop(0.2, None, 5.0, ("prod-alb-5xx",))),
])
def test_a_profile_carries_its_stop_conditions_with_defaults(tmp_path: Path, stop: str | None, env: str,
                                                              expected: Stop) -> None:
    extra = 'env.prod = { stop = { for_s = 5, alarms = ["prod-alb-5xx"] } }\n' if env == "prod" else ""
    plan = load_plan(plan_with(tmp_path, stop, extra))
    assert resolve(plan, env, "health").stop == expected


@pytest.mark.parametrize(("stop", "says"), [
    ("{ error_ratio = 1.5 }", "error_ratio"),
    ("{ for_s = 0 }", "for_s"),
    ("{ p99 = 2000 }", "p99"),
])
def test_a_malformed_stop_is_a_plan_error(tmp_path: Path, stop: str, says: str) -> None:
    with pytest.raises(PlanError, match=says):
        load_plan(plan_with(tmp_path, stop))


def test_a_profile_without_stop_in_the_project_plan_gets_the_defaults() -> None:
    plan = load_plan(ROOT / "plan" / "dougust.toml")
    assert all(resolve(plan, "dev", name).stop == Stop() for name in ("local", "health", "launch"))


# -- the verdict on a stopped run ------------------------------------------------------------------------------

def results_with(stopped: dict[str, Any] | None, requests: int = 100, failures: int = 0) -> dict[str, Any]:
    row = {"requests": requests, "failures": failures, "error_ratio": failures / requests if requests else 0.0,
           "p95_ms": 10.0, "p99_ms": 20.0}
    return {"phases": [{"name": "steady", "start_s": 0, "end_s": 10}], "overall": {"steady": row},
            "endpoints": {"steady": {"GET /api/health": row}}, "stopped": stopped}


SLOS = {"p95_ms": 500, "p99_ms": 1000, "max_error_ratio": 0.01}
STOPPED = {"at_s": 23.4, "condition": "error_ratio", "reason": "error ratio 0.97 > 0.5 for 10 s"}


@pytest.mark.parametrize(("results", "status", "says"), [
    (results_with(None), "pass", "within the SLOs"),
    (results_with(STOPPED), "fail", "stopped at 23 s: error ratio 0.97 > 0.5 for 10 s"),
    (results_with(STOPPED, failures=97), "fail", "stopped at 23 s: error ratio 0.97 > 0.5 for 10 s; steady overall errors"),
    (results_with({"at_s": 5, "condition": "requested", "reason": "alarm alb-5xx in ALARM"}, requests=0), "fail",
     "stopped at 5 s: alarm alb-5xx in ALARM; no request completed after the ramp"),
])
def test_latency_verdict_of_a_stopped_run_fails_naming_the_condition(results: dict[str, Any], status: str,
                                                                     says: str) -> None:
    verdict = judges.latency(results, SLOS)
    assert verdict.status == status and verdict.message.startswith(says), verdict.message


@pytest.mark.parametrize(("content", "says"), [
    ('{"complete": true, "overall": {"steady": {"requests": 1', "results.json is incomplete (Expecting"),
    ("", "results.json is incomplete (Expecting value"),
    ("[1, 2]", "results.json is incomplete (not a results object)"),
])
def test_a_truncated_results_file_is_one_line(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    results, problem = runner.read(path)
    assert results is None and problem.startswith(says) and "\n" not in problem


# -- end to end: servers of the tests' own ---------------------------------------------------------------------

class Endpoint:
    """GET /api/health on loopback: 200, or 500 to everything from `fail_after_s` after its first request;
    records when each request arrived."""

    def __init__(self, fail_after_s: float | None = None) -> None:
        self.fail_after_s = fail_after_s
        self.lock = threading.Lock()
        self.arrivals: list[float] = []
        endpoint = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802
                self.send_json(endpoint.arrived(time.time()), b'{"status":"ok"}')

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # users stopped mid-request drop their connections

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def arrived(self, now: float) -> int:
        with self.lock:
            self.arrivals.append(now)
            failing = self.fail_after_s is not None and now - self.arrivals[0] >= self.fail_after_s
        return 500 if failing else 200

    @property
    def failing_since(self) -> float:
        assert self.fail_after_s is not None and self.arrivals
        return self.arrivals[0] + self.fail_after_s

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint_factory() -> Iterator[Any]:
    made: list[Endpoint] = []

    def make(fail_after_s: float | None = None) -> Endpoint:
        made.append(Endpoint(fail_after_s))
        return made[-1]
    yield make
    for endpoint in made:
        endpoint.close()


FOR_S = 4
FAIL_AFTER_S = 8


def load_args(plan: Path, endpoint: Endpoint, duration_s: float, workers: int, *extra: str) -> list[str]:
    return ["--plan", str(plan), "--waivers", str(plan.parent / "no-waivers.toml"), "--env", "dev",
            "--base-url", endpoint.url, "--load-profile", "health", "--load-users", "8", "--load-rate", "150",
            "--load-duration", str(duration_s), "--load-workers", str(workers),
            "--load-master-bind", f"127.0.0.1:{free_port()}", *extra]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_against_a_system_that_falls_over_stops(endpoint_factory, tmp_path: Path, workers: int) -> None:
    """The server answers 200, then 500 to everything: the run stops within for_s + 5 s of the failures
    starting, LOAD-01 fails naming the condition and when, the summary marks it stopped, exit non-zero."""
    endpoint = endpoint_factory(fail_after_s=FAIL_AFTER_S)
    plan = plan_with(tmp_path, f"{{ for_s = {FOR_S} }}")
    began = time.monotonic()
    run = run_suite(*load_args(plan, endpoint, 40, workers), reports=tmp_path / "reports", suite="load",
                    timeout=120)
    took = time.monotonic() - began
    load = run.summary["load"]
    assert run.returncode == 1, run.stdout[-2000:]
    stopped = load["stopped"]
    assert stopped and stopped["condition"] == "error_ratio", load
    last = max(endpoint.arrivals)
    assert last - endpoint.failing_since <= FOR_S + 5, (last - endpoint.failing_since, stopped)
    verdict = load["verdicts"]["LOAD-01"]
    assert verdict["status"] == "fail", verdict
    assert verdict["message"].startswith(f"stopped at {stopped['at_s']:.0f} s: error ratio "), verdict
    assert f"> 0.5 for {FOR_S} s" in verdict["message"]
    assert run.status("LOAD-01") == "fail"
    assert took < 40, took  # stopped, not run out
    assert load["workers"] == workers
    assert f"harness: load health: stopped at {stopped['at_s']:.0f} s" in run.stdout
    print(json.dumps({"workers": workers, "stopped": stopped,
                      "last_request_after_failing_s": round(last - endpoint.failing_since, 2)}))


def test_a_stopped_run_exits_non_zero_even_without_the_latency_check(endpoint_factory, tmp_path: Path) -> None:
    """LOAD-01 deselected, LOAD-02 judged on the part that ran: the brakes still make the run fail."""
    endpoint = endpoint_factory(fail_after_s=FAIL_AFTER_S)
    plan = plan_with(tmp_path, f"{{ for_s = {FOR_S} }}")
    run = run_suite(*load_args(plan, endpoint, 40, 1), "-k", "not latency", reports=tmp_path / "reports",
                    suite="load", timeout=120)
    assert run.summary["load"]["stopped"], run.summary["load"]
    assert "LOAD-01" not in run.summary["load"]["verdicts"]
    assert run.returncode == 1, run.stdout[-2000:]


def test_a_run_against_a_healthy_system_is_not_stopped(endpoint_factory, tmp_path: Path) -> None:
    endpoint = endpoint_factory()
    plan = plan_with(tmp_path, f"{{ for_s = {FOR_S} }}")
    run = run_suite(*load_args(plan, endpoint, 12, 2), reports=tmp_path / "reports", suite="load", timeout=120)
    load = run.summary["load"]
    assert load["stopped"] is None and load["complete"], load
    assert load["verdicts"]["LOAD-01"]["status"] == "pass", load["verdicts"]
    # a machine busy with other tests may saturate the generator: LOAD-02 then says so, and nothing else fails
    assert run.returncode == 0 or load["verdicts"]["LOAD-02"]["status"] == "inconclusive", run.stdout[-2000:]


def test_a_stop_check_stops_the_run_and_says_why(endpoint_factory, tmp_path: Path) -> None:
    """A stop check (CloudWatch alarms on AWS) that says "stop" 4 s in: Locust stops every user and writes
    the results, which carry the reason; a check that fails meanwhile is reported, not taken for a pass."""
    endpoint = endpoint_factory()
    profile = Profile(name="health", users=4, spawn_rate=4, duration_s=30, ramp_s=1, rate_per_s=40,
                      mix={"health": 1.0}, workers=2)
    spec = runner.RunSpec(endpoint.url, profile, tmp_path / "no-accounts.json", tmp_path / "out",
                          master_bind=f"127.0.0.1:{free_port()}")
    calls, lines = [], []

    def check() -> str | None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("ThrottlingException")
        return "alarm dougust-alb-5xx in ALARM" if len(calls) >= 2 and calls[-1] - calls[0] >= 3 else None

    result = runner.run(spec, report=lines.append, stop_check=check)
    asked = calls[-1]
    assert result.stopped and result.stopped["condition"] == "requested", result
    assert result.stopped["reason"] == "alarm dougust-alb-5xx in ALARM"
    assert max(endpoint.arrivals) - (time.time() - (time.monotonic() - asked)) <= 5
    assert result.elapsed_s < 20
    assert result.notes == ["the stop check failed: ThrottlingException"]
    assert any("the stop check failed: ThrottlingException" in line for line in lines), lines
    assert judges.latency(result.results, SLOS).message.startswith(
        f"stopped at {result.stopped['at_s']:.0f} s: alarm dougust-alb-5xx in ALARM")


# -- the generator's lifetime is the harness's -----------------------------------------------------------------

def locust_processes(marker: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line holds `marker`."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if marker in " ".join(process.info["cmdline"] or []) and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except OSError:
        return None


def test_a_sigkilled_harness_leaves_no_locust_process_and_no_load(endpoint_factory, tmp_path: Path) -> None:
    """`pytest load` (profile health, 2 workers) SIGKILLed mid-run, as an OOM kill or a cancelled CI job
    does: within 5 s no Locust process is left, nor the private file of the load accounts, and the endpoint
    receives nothing later than 5 s after."""
    endpoint = endpoint_factory()
    reports = tmp_path / "reports"
    port = free_port()
    args = [sys.executable, "-m", "pytest", "load", "-q", "-p", "no:cacheprovider", "--reports-dir", str(reports),
            "--env", "dev", "--base-url", endpoint.url, "--load-profile", "health", "--load-users", "8",
            "--load-duration", "60", "--load-workers", "2", "--load-master-bind", f"127.0.0.1:{port}"]
    scratch = tmp_path / "tmp"  # the harness's TMPDIR, where the accounts file is written
    scratch.mkdir()
    harness = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TMPDIR": str(scratch)})
    try:
        with suppress(WaitTimeout):
            until(lambda: endpoint.arrivals and time.time() - endpoint.arrivals[0] > 6, 60, "6 s of load",
                  poll_s=0.2)
        assert endpoint.arrivals, "the load never reached the endpoint"
        assert [p.name for p in scratch.glob("harness-load-accounts-*")], list(scratch.iterdir())
        results = str(reports / "load" / "results.json")
        master = locust_processes(results)
        workers = locust_processes(f"--master-port {port}")
        assert len(master) == 1 and len(workers) == 2, (master, workers)
        groups = {os.getpgid(p.pid) for p in master + workers}
        harness.send_signal(signal.SIGKILL)
        killed = time.time()
        harness.wait(10)
        with suppress(WaitTimeout):
            until(lambda: not any(alive(p) for p in master + workers), 5, "Locust to exit")
        gone_after = time.time() - killed
        assert not [p for p in master + workers if alive(p)], "Locust outlived the harness by more than 5 s"
        assert not locust_processes(results) and not locust_processes(f"--master-port {port}")
        assert not [p for p in psutil.process_iter() if alive(p) and pgid(p) in groups]  # nothing they forked
        with suppress(WaitTimeout):
            until(lambda: not list(scratch.glob("harness-load-accounts-*")), 5, "the accounts file to go")
        assert not list(scratch.glob("harness-load-accounts-*")), "the accounts file outlived the harness"
        time.sleep(6)
        late = [t - killed for t in endpoint.arrivals if t > killed + 5]
        assert not late, f"{len(late)} requests reached the endpoint more than 5 s after the kill"
        print(json.dumps({"locust_gone_after_s": round(gone_after, 2),
                          "last_request_after_kill_s": round(max(endpoint.arrivals) - killed, 2)}))
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait(10)


def test_an_interrupt_while_the_processes_start_stops_those_started(endpoint_factory, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or SIGTERM, which the runner turns into it) arriving after the master started and before the
    workers did: the master is stopped too, and the run says it was interrupted."""
    endpoint = endpoint_factory()
    started: list[subprocess.Popen[bytes]] = []
    spawn = runner._spawn

    def interrupted_spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        if started:
            raise KeyboardInterrupt
        started.append(spawn(args, log))
        return started[-1]

    monkeypatch.setattr(runner, "_spawn", interrupted_spawn)
    profile = Profile(name="health", users=4, spawn_rate=4, duration_s=30, ramp_s=1, rate_per_s=0,
                      mix={"health": 1.0}, workers=2)
    spec = runner.RunSpec(endpoint.url, profile, tmp_path / "no-accounts.json", tmp_path / "out",
                          master_bind=f"127.0.0.1:{free_port()}")
    result = runner.run(spec, report=lambda line: None)
    assert result.interrupted and not result.complete
    assert len(started) == 1 and started[0].poll() is not None


def test_a_worker_started_elsewhere_stops_when_its_master_is_gone(endpoint_factory, tmp_path: Path) -> None:
    """A worker as an operator starts one on another machine; its master SIGKILLed mid-run. Locust 2.47's
    worker would go on sending for MASTER_HEARTBEAT_TIMEOUT (60 s); this one quits after a few silent
    heartbeats."""
    endpoint = endpoint_factory()
    port = free_port()
    locust = [sys.executable, "-m", "locust", "-f", "harness/load/generator/locustfile.py"]
    master = subprocess.Popen([*locust, "--headless", "--host", endpoint.url, "-u", "4", "-r", "4", "-t", "60s",
                               "--mix", '{"health": 1}', "--rate-per-s", "40", "--only-summary", "--master",
                               "--expect-workers", "1", "--master-bind-host", "127.0.0.1",
                               "--master-bind-port", str(port), "--results-file", str(tmp_path / "results.json")],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = subprocess.Popen([*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        with suppress(WaitTimeout):
            until(lambda: endpoint.arrivals and time.time() - endpoint.arrivals[0] > 4, 60, "4 s of load",
                  poll_s=0.2)
        assert endpoint.arrivals, "the load never reached the endpoint"
        master.kill()
        killed = time.time()
        output, _ = worker.communicate(timeout=30)
        exited = time.time() - killed
        last = max(endpoint.arrivals) - killed
        print(json.dumps({"worker_exit_after_master_kill_s": round(exited, 2), "last_request_after_s": round(last, 2)}))
        assert exited <= 8, exited
        assert last <= 8, last
        assert "no heartbeat from the master for 5 s" in output, output[-2000:]
    finally:
        for process in (master, worker):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


# -- Locust by hand ---------------------------------------------------------------------------------------------

def test_plain_locust_without_accounts_is_refused_in_one_line(endpoint_factory) -> None:
    """`locust -f harness/load/generator/locustfile.py --host URL` as a new user types it: one line naming --accounts-file and
    the health-only mix, before any user starts; the health-only mix runs without accounts."""
    endpoint = endpoint_factory()
    locust = [sys.executable, "-m", "locust", "-f", "harness/load/generator/locustfile.py", "--host", endpoint.url]
    refused = subprocess.run([*locust, "--headless", "-t", "5s"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    output = refused.stdout + refused.stderr
    assert refused.returncode == 1, output
    problems = [line for line in output.splitlines() if "ERROR" in line or "Error" in line or "Traceback" in line]
    assert len(problems) == 1, output
    assert "--accounts-file" in problems[0] and """--mix '{"health": 1}'""" in problems[0], problems
    assert not endpoint.arrivals
    health = subprocess.run([*locust, "--headless", "-t", "3s", "-u", "2", "-r", "2", "--mix", '{"health": 1}',
                             "--only-summary"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert health.returncode == 0, health.stderr[-2000:]
    assert "Traceback" not in health.stdout + health.stderr and len(endpoint.arrivals) > 10
