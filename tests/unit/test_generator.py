"""The load generator's parts in this process, without starting Locust: the state each Environment holds,
the exact statistics merged across workers, the phase marks, the journeys' requests, and the options the
runner passes.

Importing Locust monkey-patches the importing process with gevent (socket, ssl, threading, time ...).
Inside pytest that is not harmless: it would happen during collection, turn every later test's threads
into greenlets and patch ssl after it was imported. So Locust is imported here with
LOCUST_SKIP_MONKEY_PATCH, set for that import only (the Locust processes other tests start must patch
themselves). Unpatched, gevent still runs greenlets and geventhttpclient's sockets; the loopback server
below runs in a real thread.
"""
from __future__ import annotations

import importlib
import os

_SKIP = "LOCUST_SKIP_MONKEY_PATCH"
_preset = _SKIP in os.environ
os.environ[_SKIP] = "1"
try:
    importlib.import_module("locust")  # unpatched, before anything below imports it
finally:
    if not _preset:
        del os.environ[_SKIP]

import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from argparse import Namespace  # noqa: E402
from http.server import ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402
from gevent import monkey  # noqa: E402
from locust.argument_parser import get_empty_argument_parser, setup_parser_arguments  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.event import Events  # noqa: E402
from locust.rpc.protocol import Message  # noqa: E402

from harness.load import exact  # noqa: E402
from harness.load.generator import journeys, stats  # noqa: E402
from harness.load.generator.state import MARKS_MESSAGE, MASTER, WORKER, Run, attach, run_of  # noqa: E402
from harness.load.profile import Profile  # noqa: E402
from harness.load.runner import RunSpec, locust_args  # noqa: E402
from harness.plan import JOURNEYS  # noqa: E402
from support.servers import JsonHandler  # noqa: E402


def environment(role: str | None = None, **options: Any) -> Environment:
    """An Environment of its own (fresh events, as Locust makes one per process) with its Run attached."""
    env = Environment(events=Events(), parsed_options=Namespace(**{"ramp_s": 0.0, "window_s": 0.0, **options}))
    attach(env, role)
    return env


def request(env: Environment, name: str, start_time: float, response_ms: float, **extra: Any) -> None:
    env.events.request.fire(request_type="GET", name=name, response_time=response_ms, response_length=0,
                            start_time=start_time, **extra)


def nearest_rank_ms(samples_us: list[int], percentile: float) -> float:
    ordered = sorted(samples_us)
    return ordered[max(1, math.ceil(percentile * len(ordered) / 100)) - 1] / 1000


def test_importing_locust_here_left_the_process_unpatched() -> None:
    assert not any(monkey.is_module_patched(m) for m in ("socket", "ssl", "threading", "time", "select"))
    assert _SKIP not in os.environ or _preset


# -- state on the Environment -----------------------------------------------------------------------------------

def test_each_environment_starts_with_an_empty_run_of_its_own() -> None:
    first, second = environment(), environment()
    assert run_of(first) is not run_of(second)
    for env in (first, second):
        run = run_of(env)
        assert (run.tally.requests(), run.started, run.marks, run.window_end, run.stop) == (0, None, [], math.inf, None)
    first.events.test_start.fire(environment=first)
    request(first, "GET /x", time.time(), 12.0)
    assert run_of(first).tally.requests() == 1 and run_of(first).started is not None
    assert run_of(second).tally.requests() == 0 and run_of(second).started is None
    assert run_of(environment()).tally.requests() == 0  # a third starts empty too
    assert not hasattr(first, journeys.POOL)  # the users' pool is made at the test's start, per environment


def test_a_master_counts_only_what_its_workers_report() -> None:
    """The master's own request events (none in Locust, whose master runs no users) are not its figures."""
    master = environment(MASTER)
    master.events.test_start.fire(environment=master)
    request(master, "GET /x", time.time(), 5.0)
    assert run_of(master).tally.requests() == 0


def test_two_workers_merge_to_exact_percentiles(tmp_path: Path) -> None:
    """Each worker counts its own requests and ships them with its report (through msgpack, as Locust sends
    it); the master's results hold every request, with the percentiles of all of them together."""
    rng = random.Random(7)
    master = environment(MASTER, results_file=str(tmp_path / "results.json"))
    master.events.test_start.fire(environment=master)
    started = run_of(master).started
    workers = {f"w{i}": environment(WORKER, load_started_at=master.parsed_options.load_started_at) for i in (1, 2)}
    samples: dict[str, list[int]] = {"GET /a": [], "POST /b": []}
    per_worker = {"w1": 0, "w2": 0}
    for client_id, env in workers.items():
        env.events.test_start.fire(environment=env)
        assert run_of(env).started == started  # the master's start: every worker cuts the ramp at one instant
        for _ in range(600 if client_id == "w1" else 150):
            name = rng.choice(list(samples))
            us = rng.randint(1, 2047)  # below 2048 us the histograms keep every microsecond
            samples[name].append(us)
            per_worker[client_id] += 1
            request(env, name, started + rng.uniform(0, 9), us / 1000)
        env.events.test_stop.fire(environment=env)
        data: dict[str, Any] = {}
        env.events.report_to_master.fire(client_id=client_id, data=data)
        assert data["exact_final"] and run_of(env).tally.requests() == 0  # shipped once, then counted afresh
        wired = Message.unserialize(Message("stats", data, client_id).serialize()).data
        master.events.worker_report.fire(client_id=client_id, data=wired)
    master.events.test_stop.fire(environment=master)
    stats.write_results(master)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] and results["workers"] == 2 and results["worker_requests"] == per_worker
    for name, values in samples.items():
        row = results["endpoints"]["steady"][name]
        assert row["requests"] == len(values)
        assert [row["p50_ms"], row["p95_ms"], row["p99_ms"], row["max_ms"]] == \
            [nearest_rank_ms(values, 50), nearest_rank_ms(values, 95), nearest_rank_ms(values, 99), max(values) / 1000]
    everything = samples["GET /a"] + samples["POST /b"]
    assert results["overall"]["steady"]["p99_ms"] == nearest_rank_ms(everything, 99)


def test_a_worker_that_never_sent_its_final_report_leaves_the_results_incomplete(tmp_path: Path) -> None:
    master = environment(MASTER, results_file=str(tmp_path / "results.json"))
    master.events.test_start.fire(environment=master)
    master.events.worker_report.fire(client_id="w1", data={"exact": Run().tally.to_wire(), "exact_final": False})
    master.events.test_stop.fire(environment=master)
    stats.write_results(master)
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is False


# -- phases -----------------------------------------------------------------------------------------------------

def phases_by_request(run: Run) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for phase, name, _ in run.tally.counts:
        found.setdefault(name, set()).add(phase)
    return found


def test_a_marked_phase_files_the_requests_answered_in_it(tmp_path: Path) -> None:
    """The master (or standalone process) follows the phase file another component appends to; a request
    in flight at the mark belongs to the new phase, since it was answered in it."""
    env = environment(ramp_s=2.0)
    env.events.test_start.fire(environment=env)
    run = run_of(env)
    marks = tmp_path / "phases.jsonl"
    exact.mark_phase(marks, "LOAD-X during", run.started + 5)
    follower = gevent.spawn(stats.follow_marks, env, marks)
    try:
        for _ in range(100):
            if run.marks:
                break
            gevent.sleep(0.05)
    finally:
        follower.kill()
    assert [name for _, name in run.marks] == ["LOAD-X during"]
    for name, at_s, response_ms in (("in ramp", 1.0, 10.0), ("steady", 3.0, 10.0), ("in flight", 4.5, 1000.0),
                                    ("after mark", 6.0, 10.0)):
        request(env, name, run.started + at_s, response_ms)
    assert phases_by_request(run) == {"in ramp": {"ramp"}, "steady": {"steady"}, "in flight": {"LOAD-X during"},
                                      "after mark": {"LOAD-X during"}}


def test_a_worker_takes_its_masters_marks() -> None:
    worker = environment(WORKER, load_started_at=time.time())
    worker.events.test_start.fire(environment=worker)
    run = run_of(worker)
    run.on_marks(worker, Message(MARKS_MESSAGE, [[2.0, "DR-1 during"]], "master"))
    request(worker, "GET /x", run.started + 1, 5.0)
    request(worker, "GET /y", run.started + 3, 5.0)
    assert phases_by_request(run) == {"GET /x": {"steady"}, "GET /y": {"DR-1 during"}}


# -- journeys ---------------------------------------------------------------------------------------------------

class Api(JsonHandler):
    """The smoke API contract's routes the journeys use, answering at once."""
    protocol_version = "HTTP/1.1"
    routes = {("POST", "/api/auth/login"): (201, {"accessToken": "opaque", "refreshToken": "r"}),
              ("GET", "/api/health"): (200, {"status": "ok"}), ("GET", "/api/auth/me"): (200, {"id": 1}),
              ("GET", "/api/notes"): (200, [{"id": 1}, {"id": 2}]), ("POST", "/api/notes"): (201, {"id": 3})}

    def answer(self, method: str) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.routes.get((method, self.path), (404, {}))
        if method == "GET" and self.path.startswith("/api/notes/"):
            status, body = 200, {"id": int(self.path.rsplit("/", 1)[1])}
        self.send_json(status, body)

    def do_GET(self) -> None:  # noqa: N802 (the handler's naming)
        self.answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.answer("POST")


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def user_run(url: str, accounts: Path, journeys_made: int, **options: Any) -> list[dict[str, Any]]:
    """One user's requests (Locust's request events) over `journeys_made` journeys."""
    settings = {"mix": "", "accounts_file": str(accounts), "rate_per_s": 0.0, "refresh_interval_s": 300.0,
                "ca_bundle": "", "num_users": 1, **options}
    env = Environment(events=Events(), parsed_options=Namespace(ramp_s=0.0, window_s=0.0, **settings))
    stats_run = attach(env)
    seen: list[dict[str, Any]] = []
    env.events.request.add_listener(lambda **event: seen.append(event))
    env.events.test_start.add_listener(journeys.configure)
    env.events.test_start.fire(environment=env)
    user = type("LoopbackUser", (journeys.ApiUser,), {"host": url})(env)  # Locust's runner sets a class's host
    user.on_start()
    for _ in range(journeys_made):
        user.journey()
    assert stats_run.tally.requests() == len(seen)  # the statistics saw every request
    return seen


def test_the_journeys_name_their_requests_by_route(api: str, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"email": "a@example.com", "password": "pw", "note": "not sent"}]))
    random.seed(3)
    seen = user_run(api, accounts, 80)
    assert seen[0]["name"] == "POST /api/auth/login"
    assert {e["name"] for e in seen} == {"POST /api/auth/login", "GET /api/health", "GET /api/auth/me",
                                         "GET /api/notes", "GET /api/notes/:id", "POST /api/notes"}
    assert [e for e in seen if e["exception"]] == []
    assert all(not e["context"] for e in seen)  # unpaced: no intended start to correct for


def test_the_health_mix_logs_in_nowhere_and_a_paced_user_carries_its_intended_start(api: str, tmp_path: Path) -> None:
    seen = user_run(api, tmp_path / "none.json", 5, mix='{"health": 1}', rate_per_s=200.0)
    assert [e["name"] for e in seen] == ["GET /api/health"] * 5
    intended = [e["context"]["intended_start"] for e in seen]
    assert intended == sorted(intended) and intended[-1] - intended[0] == pytest.approx(4 / 200, abs=1e-6)


def test_a_pool_picks_only_the_journeys_its_mix_weighs() -> None:
    mix = journeys.parse_mix('{"health": 0, "me": 1, "write": 3}')
    pool = journeys.Pool(accounts=[{}], turn=iter(()), mix=mix, user_interval_s=0.0, refresh_interval_s=300.0)
    random.seed(1)
    picks = [pool.pick() for _ in range(2000)]
    assert set(picks) == {"me", "write"} and 0.7 < picks.count("write") / len(picks) < 0.8
    assert set(journeys.DEFAULT_MIX) == set(JOURNEYS)


# -- options ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "refused"), [
    ({"mix": '{"health": 1}', "accounts_file": ""}, None),
    ({"mix": "", "accounts_file": ""}, "no --accounts-file: the journeys browse, me, write log in"),
    ({"mix": '{"fly": 1}', "accounts_file": ""}, "--mix '{\"fly\": 1}' is not a JSON object of journey weights"),
    ({"mix": "", "accounts_file": "ACCOUNTS", "accounts": [{"email": "a@x"}]},
     "need a JSON list of {\"email\", \"password\"}"),
    ({"mix": "", "accounts_file": "ACCOUNTS", "accounts": [{"email": "a@x", "password": "p"}]}, None),
])
def test_options_the_journeys_cannot_run_with_are_refused_in_one_line(tmp_path: Path, options: dict[str, Any],
                                                                       refused: str | None) -> None:
    if "accounts" in options:
        path = tmp_path / "accounts.json"
        path.write_text(json.dumps(options.pop("accounts")))
        options["accounts_file"] = str(path)
    why = journeys.refusal(Namespace(**options))
    assert why == refused if refused is None else refused in why


def test_every_option_the_runner_passes_is_one_the_generator_defines(tmp_path: Path) -> None:
    parser = get_empty_argument_parser(add_help=False, default_config_files=[])
    setup_parser_arguments(parser)
    stats.add_arguments(parser)
    journeys.add_arguments(parser)
    profile = Profile(name="t", users=4, spawn_rate=2, duration_s=30, ramp_s=5, rate_per_s=40,
                      mix={"health": 1.0, "browse": 2.0})
    spec = RunSpec("https://api.example", profile, tmp_path / "accounts.json", tmp_path / "out",
                   ca_bundle=str(tmp_path / "ca.pem"), phase_file=tmp_path / "phases.jsonl")
    parsed = parser.parse_args(locust_args(spec))
    assert (parsed.ramp_s, parsed.window_s, parsed.rate_per_s) == (5.0, 30.0, 40.0)
    assert journeys.parse_mix(parsed.mix) == {"health": 1.0, "browse": 2.0}
    assert parsed.results_file == str(tmp_path / "out" / "results.json")
    assert parsed.stop_file == str(tmp_path / "out" / "stop.json") and parsed.ca_bundle == str(tmp_path / "ca.pem")
