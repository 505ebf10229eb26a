"""The load engine measures what the server saw: Locust runs in subprocesses (it patches its process with
gevent) against a server of this test's own, whose handling times are the truth the reported percentiles
must match within 5 %."""
from __future__ import annotations

import json
import math
import random
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest

from harness.load import exact
from harness.load.tokens import refresh_due_at

ROOT = Path(__file__).resolve().parents[1]
# 1000 handling times spread geometrically over 20..400 ms: neighbouring values differ by 0.3 %, so a
# percentile never sits on a jump of the distribution, and the generator's own millisecond or two on
# loopback stays well inside the 5 % tolerance.
LATENCIES_S = [0.02 * 20 ** (i / 999) for i in range(1000)]
SLOW_EXTRA_S = 0.15
ERROR_EVERY = 100
ERRORS_PER_HUNDRED = 3
TOLERANCE = 0.05
# Locust runs this much longer than the measurement window: the requests in flight when it closes finish,
# and the workers' next reports (every 3 s) carry them to the master before it stops.
DRAIN_S = 5


class Truth:
    """What the server handled: route template, handling time (ms), status."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(7)
        self.records: list[tuple[str, float, int]] = []
        self.writes = 0

    def latency(self) -> float:
        with self.lock:
            return LATENCIES_S[self.rng.randrange(len(LATENCIES_S))]

    def write_fails(self) -> bool:
        with self.lock:
            self.writes += 1
            return self.writes % ERROR_EVERY < ERRORS_PER_HUNDRED

    def add(self, name: str, ms: float, status: int) -> None:
        with self.lock:
            self.records.append((name, ms, status))


def serve(truth: Truth) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the body would wait for a delayed ACK.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def answer(self) -> None:
            began = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            name, status, body, delay = self.route()
            time.sleep(delay)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            truth.add(name, (time.perf_counter() - began) * 1000, status)

        def route(self) -> tuple[str, int, Any, float]:
            method, path = self.command, self.path
            tokens = {"accessToken": "opaque-access", "refreshToken": "opaque-refresh"}
            if (method, path) == ("POST", "/api/auth/login"):
                return "POST /api/auth/login", 201, tokens, 0.0
            if (method, path) == ("POST", "/api/auth/refresh"):
                return "POST /api/auth/refresh", 201, tokens, 0.0
            if (method, path) == ("GET", "/api/health"):
                return "GET /api/health", 200, {"status": "ok"}, truth.latency()
            if (method, path) == ("GET", "/api/auth/me"):
                return "GET /api/auth/me", 200, {"id": 1, "email": "a@b.c"}, truth.latency()
            if (method, path) == ("GET", "/api/notes"):
                return "GET /api/notes", 200, [{"id": 1}, {"id": 2}], truth.latency()
            if (method, path) == ("POST", "/api/notes"):
                if truth.write_fails():
                    return "POST /api/notes", 500, {"statusCode": 500, "message": "boom"}, truth.latency()
                return "POST /api/notes", 201, {"id": 3, "title": "t"}, truth.latency()
            if method == "GET" and path.startswith("/api/notes/"):
                return "GET /api/notes/:id", 200, {"id": 1}, truth.latency() + SLOW_EXTRA_S
            return "other", 404, {"statusCode": 404, "message": "Not Found"}, 0.0

        do_GET = do_POST = answer

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # Users stopped at the end of a run drop their in-flight requests; that is not a server fault.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[str, Truth, Path]]:
    truth = Truth()
    server = serve(truth)
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"email": f"u{i}@load.test", "password": "pw"} for i in range(3)]))
    yield f"http://127.0.0.1:{server.server_address[1]}", truth, accounts
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def locust(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "locust", "-f", "load/locustfile.py", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen[str], timeout_s: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"locust did not finish in {timeout_s} s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    return output


def common(host: str, accounts: Path, results: Path, *extra: str) -> list[str]:
    return ["--headless", "--host", host, "--accounts-file", str(accounts), "--results-file", str(results),
            "--exit-code-on-error", "0", "--only-summary", "--ramp-s", "2", *extra]


def nearest_rank(values: list[float], percentile: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(percentile / 100 * len(ordered)) - 1, 0)]


def merged(results: dict[str, Any], endpoint: str | None) -> tuple[str, int, int]:
    """Histogram, requests and failures of an endpoint (None: all) over both phases."""
    cells = [results["overall"][p] if endpoint is None else results["endpoints"][p][endpoint]
             for p in results["overall"] if endpoint is None or endpoint in results["endpoints"][p]]
    return (exact.merge_encoded(c["hist"] for c in cells), sum(c["requests"] for c in cells),
            sum(c["failures"] for c in cells))


def assert_matches_truth(results: dict[str, Any], truth: Truth) -> dict[str, dict[float, tuple[float, float]]]:
    """Reported percentiles per endpoint and overall within 5 % of the server's; returns both for the record."""
    seen: dict[str, dict[float, tuple[float, float]]] = {}
    for endpoint in [None, "GET /api/notes/:id", "GET /api/notes", "POST /api/notes"]:
        times = [ms for name, ms, _ in truth.records if endpoint is None or name == endpoint]
        hist, requests, _ = merged(results, endpoint)
        # Every request the server handled is in the results: the window closed before Locust stopped.
        assert requests == len(times), (endpoint, requests, len(times))
        reported = exact.percentiles_ms(hist)
        seen[endpoint or "overall"] = {p: (reported[p], nearest_rank(times, p)) for p in reported}
        for p, (got, want) in seen[endpoint or "overall"].items():
            assert abs(got - want) <= TOLERANCE * want, (endpoint, p, got, want)
    return seen


def test_standalone_percentiles_errors_and_slow_endpoint_match_the_server(target, tmp_path: Path) -> None:
    host, truth, accounts = target
    results_file, progress_file = tmp_path / "results.json", tmp_path / "progress.jsonl"
    finish(locust(*common(host, accounts, results_file, "-u", "8", "-r", "8", "--window-s", "8",
                          "-t", f"{8 + DRAIN_S}s", "--progress-file", str(progress_file))), 60)
    results = exact.read_results(results_file)
    print(json.dumps(assert_matches_truth(results, truth)))

    assert results["complete"] and results["workers"] == 0
    assert [p["name"] for p in results["phases"]] == ["ramp", "steady"]
    _, writes, failed = merged(results, "POST /api/notes")
    assert failed / writes == pytest.approx(ERRORS_PER_HUNDRED / ERROR_EVERY, abs=0.01)
    assert all(s["failures"] == 0 for p in results["endpoints"].values()
               for name, s in p.items() if name != "POST /api/notes")
    steady = results["endpoints"]["steady"]
    slowest = max(steady, key=lambda name: steady[name]["p50_ms"])
    assert slowest == "GET /api/notes/:id"
    assert sum(t["requests"] for t in results["timeline"]) == sum(s["requests"] for s in results["overall"].values())
    lines = [json.loads(line) for line in progress_file.read_text().splitlines()]
    assert lines and {"t_s", "phase", "users", "rps", "p95_ms", "error_ratio"} <= set(lines[-1])


def test_master_merges_both_workers_histograms(target, tmp_path: Path) -> None:
    host, truth, accounts = target
    results_file, port = tmp_path / "results.json", free_port()
    master = locust(*common(host, accounts, results_file, "-u", "8", "-r", "8", "--window-s", "8",
                            "-t", f"{8 + DRAIN_S}s"), "--master",
                    "--expect-workers", "2", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port))
    workers = [locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port)) for _ in range(2)]
    try:
        finish(master, 90)
        for worker in workers:
            finish(worker, 30)
    finally:
        for process in [master, *workers]:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    results = exact.read_results(results_file)
    print(json.dumps(assert_matches_truth(results, truth)))

    assert results["complete"] and results["workers"] == 2
    assert len(results["worker_requests"]) == 2 and all(n > 0 for n in results["worker_requests"].values())
    assert sum(results["worker_requests"].values()) == merged(results, None)[1]


def test_paced_run_holds_its_rate_and_charges_lateness(target, tmp_path: Path) -> None:
    host, _, accounts = target
    results_file = tmp_path / "results.json"
    finish(locust(*common(host, accounts, results_file, "-u", "4", "-r", "4", "--window-s", "7",
                          "-t", f"{7 + DRAIN_S}s", "--rate-per-s", "20",
                          "--mix", json.dumps({"health": 1, "me": 1}))), 60)
    results = exact.read_results(results_file)
    steady = results["overall"]["steady"]
    logins = results["endpoints"]["steady"].get("POST /api/auth/login", {"requests": 0})["requests"]
    assert (steady["requests"] - logins) / (7 - 2) == pytest.approx(20, rel=0.15)
    intended = exact.percentiles_ms(steady["hist_intended"])
    assert intended[99] >= exact.percentiles_ms(steady["hist"])[99]
    assert set(results["schedule"]) == {"late_starts", "lag_p99_ms"}


def jwt_with(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, "any key: the generator never verifies", algorithm="HS256")


@pytest.mark.parametrize(("values_ms", "percentile", "expected_ms"), [
    ([10.0] * 99 + [1000.0], 50, 10.0),
    ([10.0] * 99 + [1000.0], 99, 10.0),
    ([10.0] * 98 + [1000.0] * 2, 99, 1000.0),
    (list(range(1, 101)), 95, 95.0),
    (list(range(1, 74)), 95, 70.0),  # nearest rank: ceil(0.95 * 73) = 70, not HDR's rounded 69
    ([0.0005, 90_000_000.0], 100, 60_000.0),  # clamped into the range, not dropped
])
def test_percentiles_of_an_encoded_histogram(values_ms: list[float], percentile: float, expected_ms: float) -> None:
    hist = exact.new_histogram()
    for value in values_ms:
        exact.record_ms(hist, value)
    assert exact.percentiles_ms(exact.encode(hist), [percentile])[percentile] == pytest.approx(expected_ms, rel=0.001)


def test_merging_and_wire_round_trip_keep_every_sample() -> None:
    a, b = exact.Tally(), exact.Tally()
    a.record("GET /x", 0.5, 1.0, 10.0, False)
    a.record("GET /x", 1.5, 1.0, 20.0, True, lag_s=0.1)
    b.record("GET /x", 2.5, 1.0, 30.0, False, lag_s=0.001)
    total = exact.Tally()
    total.add_wire(a.to_wire())
    total.add_wire(b.to_wire())
    out = exact.results(total, complete=True, started_at="s", ended_at="e", duration_s=3.0, ramp_s=1.0, workers=2)
    assert out["endpoints"]["ramp"]["GET /x"]["requests"] == 1
    steady = out["endpoints"]["steady"]["GET /x"]
    assert (steady["requests"], steady["failures"], steady["max_ms"]) == (2, 1, pytest.approx(30.0, rel=0.001))
    assert exact.percentiles_ms(steady["hist_intended"], [100])[100] == pytest.approx(120.0, rel=0.001)
    assert out["schedule"]["late_starts"] == 1
    assert [t["t_s"] for t in out["timeline"]] == [0, 1, 2]
    both = exact.decode(exact.merge_encoded([steady["hist"], out["endpoints"]["ramp"]["GET /x"]["hist"]]))
    assert both.get_total_count() == 3


@pytest.mark.parametrize(("elapsed_s", "ramp_s", "phase"), [(0.0, 0.0, "steady"), (0.9, 1.0, "ramp"),
                                                            (1.0, 1.0, "steady"), (5.0, 10.0, "ramp")])
def test_phase_of_time(elapsed_s: float, ramp_s: float, phase: str) -> None:
    assert exact.phase_of(elapsed_s, ramp_s) == phase


def test_phases_listed_for_a_run() -> None:
    assert exact.phases(0, 10) == [{"name": "steady", "start_s": 0, "end_s": 10}]
    assert [p["name"] for p in exact.phases(30, 10)] == ["ramp"]


@pytest.mark.parametrize(("token", "expected"), [
    (jwt_with({"exp": 1100}), 1000 + 0.8 * 100),
    (jwt_with({"sub": "1"}), 1000 + 60),
    ("opaque.body.mac-but-not-json", 1000 + 60),
    ("opaque-token", 1000 + 60),
])
def test_refresh_ahead_of_jwt_expiry_else_on_interval(token: str, expected: float) -> None:
    assert refresh_due_at(token, 1000.0, 60.0) == pytest.approx(expected)
