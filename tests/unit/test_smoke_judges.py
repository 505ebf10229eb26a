"""The smoke gate's pure parts as tables, in-process: the forged token made from each kind of real token,
and the version judge on responses with and without the version header.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path

import jwt
import pytest

from harness.smoke.probes import Endpoint, Exchange, Observations, Probe
from harness.plan import load_plan
from harness.smoke.gate import JUDGES, GateInput, judge, judge_version, observe, tamper
from harness.smoke.tasks import ServiceTasks, StoppedTask

KEY = b"signing-key-of-the-backend-under-test"
VERSION = {"path": "/api/version", "header": "X-App-Version", "task_header": "X-Task-Id", "every_response": False}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def opaque(claims: dict) -> str:
    body = b64(json.dumps(claims).encode())
    return f"{body}.{b64(hmac.new(KEY, body.encode(), hashlib.sha256).digest())}"


def mac_holds(token: str) -> bool:
    body, _, mac = token.rpartition(".")
    return hmac.compare_digest(mac, b64(hmac.new(KEY, body.encode(), hashlib.sha256).digest()))


def test_a_jwt_is_re_signed_with_another_key_and_keeps_its_claims():
    real = jwt.encode({"sub": "smoke", "typ": "access"}, KEY, algorithm="HS256")
    forged, how = tamper(real)
    assert how == "the JWT re-signed with another key"
    assert jwt.decode(forged, options={"verify_signature": False}) == {"sub": "smoke", "typ": "access"}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, KEY, algorithms=["HS256"])


@pytest.mark.parametrize("claims", [{"sub": "smoke"}, {"sub": "x" * 40, "exp": 1}, {}])
def test_an_opaque_token_keeps_its_body_and_loses_its_mac(claims):
    real = opaque(claims)
    forged, how = tamper(real)
    assert "opaque token" in how and forged != real and len(forged) == len(real)
    body, _, mac = forged.rpartition(".")
    assert body == real.rpartition(".")[0], "the body must stay readable: a server that skips the MAC trusts it"
    assert mac_holds(real) and not mac_holds(forged)
    # Still in the base64url alphabet, and not only padding bits changed: the decoded MAC differs.
    padded = mac + "=" * (-len(mac) % 4)
    assert base64.urlsafe_b64decode(padded) != base64.urlsafe_b64decode(real.rpartition(".")[2] + "=")


@pytest.mark.parametrize("real, alphabet", [
    ("9f86d081884c7d659a2feaa0c55ad015", set("0123456789abcdef")),  # a hex session id
    ("A1B2C3D4", set("0123456789ABCDEF")),
    ("s3ss10n-t0k3n_", set("s3ss10n-t0k3n_") | set("0123456789abcdefghijklmnopqrstuvwxyz")),  # no dot
    ("zz", set("abcdefghijklmnopqrstuvwxyz")),
])
def test_other_tokens_change_in_their_own_alphabet(real, alphabet):
    forged, _ = tamper(real)
    assert forged != real and len(forged) == len(real)
    assert set(forged) <= alphabet


def exchange(name: str, status: int, version: str | None, task: str | None = "task-1",
             path: str = "/api/version") -> Exchange:
    headers = {k: v for k, v in {"X-App-Version": version, "X-Task-Id": task}.items() if v is not None}
    return Exchange(name, "GET", f"https://alb.example{path}", status=status, headers=headers)


def version_verdict(exchanges: list[Exchange], expected: str | None = "2.0.0", **expect: object):
    given = GateInput(expects={}, expected_version=expected)
    return judge_version(Observations(exchanges=exchanges), {**VERSION, **expect}, given)


INTERCEPTOR_STYLE = [exchange("health", 200, "2.0.0"), exchange("protected", 401, None, None, "/api/auth/me"),
                     exchange("unknown route", 404, None, None, "/api/no-such-route"),
                     exchange("version", 200, "2.0.0", "task-2")]


@pytest.mark.parametrize("case, exchanges, expected, expect, ok, message", [
    ("interceptor style: no header on 401/404", INTERCEPTOR_STYLE, "2.0.0", {}, True,
     "all 2 responses that carry X-App-Version are version 2.0.0"),
    ("the plan asks for the header everywhere", INTERCEPTOR_STYLE, "2.0.0", {"every_response": True}, False,
     "2 of 4 responses carry no X-App-Version: GET /api/auth/me 401, GET /api/no-such-route 404"),
    ("one task behind", [exchange("a", 200, "2.0.0", "task-1"), exchange("b", 200, "1.9.0", "task-2"),
                         exchange("c", 200, "1.9.0", "task-2")], "2.0.0", {}, False,
     "2 of 3 responses are not version 2.0.0: seen ['1.9.0', '2.0.0']; 1.9.0 from task-2; 2.0.0 from task-1"),
    ("a success without the header: a task that does not set it", [
        *INTERCEPTOR_STYLE, exchange("version", 200, None, "task-old")], "2.0.0", {}, False,
     "1 of 5 responses carry no X-App-Version: GET /api/version 200 (from task-old)"),
    ("no response carries the header", [exchange("protected", 401, None)], "2.0.0", {}, False,
     "no response carries X-App-Version (1 read)"),
    ("no expected version: one consistent version", INTERCEPTOR_STYLE, None, {}, True,
     "report version 2.0.0 (no --expect-version given)"),
    ("no expected version: two versions", [exchange("a", 200, "2.0.0", "t1"), exchange("b", 200, "1.0", "t2")],
     None, {}, False, "responses report versions ['1.0', '2.0.0']: 1.0 from t2; 2.0.0 from t1"),
    ("a task without a task header", [exchange("a", 200, "1.0", None)], "2.0.0", {}, False,
     "1.0 from (no X-Task-Id)"),
])
def test_version_judge(case, exchanges, expected, expect, ok, message):
    verdict = version_verdict(exchanges, expected, **expect)
    assert verdict.ok is ok, verdict.message
    assert message in verdict.message, verdict.message


def test_a_judge_that_raises_errors_its_own_check_only():
    """A health body in a shape nobody foresaw ("info": null) must not take the other checks down with it."""
    expects = {"SMK-01": {"path": "/api/health", "dependency": "database"}, "SMK-08": VERSION}
    health = Exchange("health", "GET", "https://alb.example/api/health", status=200,
                      headers={"X-App-Version": "2.0.0", "X-Task-Id": "t1"}, body={"status": "ok", "info": None})
    obs, given = Observations(exchanges=[health]), GateInput(expects=expects, expected_version="2.0.0")
    verdict = judge(obs, "SMK-01", given)
    assert not verdict.observed and verdict.message.startswith("SMK-01 could not be judged: AttributeError")
    assert judge(obs, "SMK-08", given).ok


def latency(*elapsed_ms: float | None) -> list[Exchange]:
    return [Exchange("latency", "GET", "https://alb.example/api/health", status=None if ms is None else 200,
                     elapsed_ms=ms or 0.0, error=None if ms is not None else "timed out") for ms in elapsed_ms]


@pytest.mark.parametrize("samples, status, message", [
    (latency(*[100.0] * 19, 900.0), "pass", "p95 100 ms over 20 requests"),
    (latency(*[100.0] * 18, 900.0, 900.0), "fail", "p95 900 ms over 20 requests, the budget is 500 ms"),
    (latency(*[100.0] * 19, None), "fail", "1 of 20 health requests got no answer: GET https://alb.example"),
    ([], "fail", "0 of 0 health requests got no answer"),
], ids=["one slow of twenty", "two slow of twenty", "one unanswered", "none sent"])
def test_latency_judge(samples, status, message):
    given = GateInput(expects={"SMK-05": {"p95_ms": 500}})
    verdict = judge(Observations(exchanges=samples), "SMK-05", given)
    assert (verdict.status, message in verdict.message) == (status, True), verdict.message


def test_every_judge_fails_on_a_round_that_observed_nothing():
    """Nothing answered: each check is a failure of the deployment, said in its own words; none is an error
    of the judge (a judge that breaks on its own failure path would be one)."""
    plan = load_plan(Path(__file__).resolve().parents[2] / "plan" / "dougust.toml")
    expects = {rid: plan.requirements[rid].expected("prod") for rid in JUDGES}
    given = GateInput(expects=expects, expected_version="2.0.0", account=("a@b.c", "secret"))
    verdicts = {rid: judge(Observations(), rid, given) for rid in JUDGES}
    # SMK-10 reads ECS, not the load balancer: its tasks not read is not something the deployment did.
    assert {rid: v.status for rid, v in verdicts.items()} == {**dict.fromkeys(JUDGES, "fail"), "SMK-10": "error"}, \
        verdicts


# --- SMK-10: stopped tasks of the current deployment -------------------------------------------------------

BEGAN = dt.datetime(2026, 12, 6, 10, 0, 0, tzinfo=dt.timezone.utc)
REVISION = "arn:aws:ecs:eu-west-1:1:task-definition/dougust-prod-backend:42"
ROUTINE = {"not_counted": ["ServiceSchedulerInitiated: Scaling activity initiated by"]}


def stopped(after_s: float | None, revision: str = REVISION, code: str = "EssentialContainerExited",
            reason: str = "Essential container in task exited", exit_code: int | None = 137) -> StoppedTask:
    when = None if after_s is None else BEGAN + dt.timedelta(seconds=after_s)
    return StoppedTask("5e0c9a", revision, code, reason, exit_code, "backend", BEGAN, when)


@pytest.mark.parametrize("tasks, status, message", [
    ([], "pass", "no task of dougust-prod-backend's deployment dougust-prod-backend:42 stopped since it began 120 s "
     "ago"),
    ([stopped(89)], "fail", "1 task(s) of dougust-prod-backend's deployment dougust-prod-backend:42 stopped since "
     "it began at 10:00:00Z: 5e0c9a of dougust-prod-backend:42 stopped at 10:01:29Z (89 s in), container backend "
     "exit code 137: Essential container in task exited [EssentialContainerExited]"),
    ([stopped(-30)], "pass", "stopped since it began 120 s ago"),
    ([stopped(30, revision=REVISION[:-2] + "41")], "pass", "stopped since it began 120 s ago"),
    ([stopped(30, code="ServiceSchedulerInitiated", reason="Scaling activity initiated by (deployment ecs-svc/1)",
              exit_code=0)], "pass", "1 stopped by routine scaling, not counted"),
    ([stopped(30, code="ServiceSchedulerInitiated", reason="Task failed ELB health checks in (target-group x)",
              exit_code=143)], "fail", "exit code 143: Task failed ELB health checks"),
    ([stopped(30, code="UserInitiated", reason="Task stopped by user")], "fail", "Task stopped by user [UserInitiated]"),
    ([stopped(None, exit_code=None)], "fail", "stopping now, container backend no exit code"),
    ([stopped(30, code="", reason="", exit_code=None)], "fail", "no reason given [no stop code]"),
    ([stopped(10), stopped(-10), stopped(20, code="ServiceSchedulerInitiated",
                                         reason="Scaling activity initiated by (deployment ecs-svc/1)")],
     "fail", "1 task(s) of"),
], ids=["none stopped", "one crashed", "stopped before the deployment", "another revision's", "scale-in",
        "failed health checks", "stopped by hand", "still stopping", "no reason", "one of three counts"])
def test_stopped_tasks_judge(tasks, status, message):
    obs = Observations(tasks=ServiceTasks("dougust-prod-backend", REVISION, BEGAN, BEGAN + dt.timedelta(seconds=120),
                                          tuple(tasks)))
    verdict = judge(obs, "SMK-10", GateInput(expects={"SMK-10": ROUTINE}))
    assert (verdict.status, message in verdict.message) == (status, True), verdict.message


def test_a_deployment_older_than_ecs_keeps_stopped_tasks_is_inconclusive_not_a_pass():
    read_at = BEGAN + dt.timedelta(seconds=5000)
    obs = Observations(tasks=ServiceTasks("svc", REVISION, BEGAN, read_at, (), kept_s=3600))
    verdict = judge(obs, "SMK-10", GateInput(expects={"SMK-10": ROUTINE}))
    assert verdict.status == "inconclusive" and "began 5000 s ago and ECS keeps a stopped task about 3600 s" \
        in verdict.message, verdict.message
    recent = Observations(tasks=ServiceTasks("svc", REVISION, BEGAN, BEGAN + dt.timedelta(seconds=600), (), kept_s=3600))
    assert judge(recent, "SMK-10", GateInput(expects={"SMK-10": ROUTINE})).ok


def test_times_from_boto3_in_the_machines_zone_are_read_in_utc():
    from harness.smoke.tasks import _aware

    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert _aware(dt.datetime(2026, 12, 6, 12, 0, tzinfo=plus_two)) == dt.datetime(2026, 12, 6, 10, 0,
                                                                                   tzinfo=dt.timezone.utc)
    assert _aware("2026-12-06T10:00:00.000+00:00").tzinfo == dt.timezone.utc and _aware("") is None


def test_stopped_tasks_not_read_is_an_error_naming_why():
    given = GateInput(expects={"SMK-10": ROUTINE}, tasks_problem="--base-url on --target local: name the stand-in")
    probe = Probe(Endpoint.of("https://127.0.0.1:9", None, None))  # never asked: SMK-10 is the only check
    try:
        obs = observe(probe, given)
    finally:
        probe.close()
    verdict = judge(obs, "SMK-10", given)
    assert verdict.status == "error" and "name the stand-in" in verdict.message, verdict.message
