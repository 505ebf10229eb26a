"""The post-deploy smoke gate: probe the deployment through the load balancer, judge each SMK check,
and repeat until every check holds or the deadline passes (a rollout converging is not a failure); with a
stability window, keep checking for that long after the first green round.

`observe` fetches one round of observations; the `judge_*` functions are pure and one per requirement;
`run_gate` is the loop. The smoke tests only read the gate's final verdicts. A step of the round that
raises (a backend answering in a shape nobody foresaw, a bug here) costs only the check it observes for:
that check's verdict is "could not be observed" (an ERROR), and the other checks are judged as usual.
"""
from __future__ import annotations

import datetime as dt
import math
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable
from urllib.parse import urlsplit

import jwt

from harness.verdict import Verdict, failed, passed
from harness.smoke.probes import Endpoint, Exchange, Observations, Probe, days_left, tls_report
from harness.smoke.tasks import ServiceTasks, StoppedTask

STABLE_REPORT_S = 5.0  # a progress line this often during the stability window
TLS_ORDER = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


@dataclass(frozen=True)
class GateInput:
    """What the judges compare with: the plan's values per requirement, and the deploy's facts."""

    expects: dict[str, dict[str, Any]]
    expected_version: str | None = None
    account: tuple[str, str] | None = None
    account_problem: str | None = None
    # SMK-10: reads the service's deployment and stopped tasks (ECS, or the stand-in's agent); None: nothing to
    # read them from, and `tasks_problem` says why
    tasks: Callable[[], ServiceTasks] | None = None
    tasks_problem: str | None = None


@dataclass
class GateResult:
    verdicts: dict[str, Verdict]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    stable_s: float | None = None  # how long the stability window ran (--stable-for), None without one

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.verdicts.values())


# -- one round of observations ---------------------------------------------------------------------------


def observe(probe: Probe, given: GateInput) -> Observations:
    """One round: each step probes for one check (the first wanted of `ids`); a step that raises is noted
    against that check, and the round goes on."""
    obs = Observations(base_url=probe.endpoint.base_url, started=time.monotonic())
    for ids, step in _STEPS:
        wanted = [rid for rid in ids if rid in given.expects]
        if not wanted:
            continue
        try:
            step(probe, obs, given)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it must not cost the other checks their verdict
            obs.broken[wanted[0]] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return obs


def _expect(given: GateInput, *ids: str) -> dict[str, Any]:
    return next((given.expects[i] for i in ids if i in given.expects), {})


def _tls(probe: Probe, obs: Observations, given: GateInput) -> None:
    obs.tls = tls_report(probe.endpoint)


def _health(probe: Probe, obs: Observations, given: GateInput) -> None:
    probe.get(obs, "health", _expect(given, "SMK-01", "SMK-04").get("path", "/api/health"))


def _redirect(probe: Probe, obs: Observations, given: GateInput) -> None:
    probe.request(obs, "redirect", "GET", probe.endpoint.http_url + given.expects["SMK-02"]["path"])


def _latency(probe: Probe, obs: Observations, given: GateInput) -> None:
    expect = given.expects["SMK-05"]
    for _ in range(int(expect["requests"])):
        probe.get(obs, "latency", expect["path"])


def _auth_round_trip(probe: Probe, obs: Observations, given: GateInput) -> None:
    expect, account = given.expects["SMK-06"], given.account
    if account is None:
        return
    login = probe.request(obs, "login", "POST", probe.endpoint.base_url + expect["login"],
                          json={"email": account[0], "password": account[1]})
    access, refresh_token = _tokens(login)
    if not access:
        return
    probe.get(obs, "protected", expect["protected"], headers={"Authorization": f"Bearer {access}"})
    refreshed = probe.request(obs, "refresh", "POST", probe.endpoint.base_url + expect["refresh"],
                              json={"refreshToken": refresh_token})
    new_access, _ = _tokens(refreshed)
    if new_access:
        probe.get(obs, "protected after refresh", expect["protected"], headers={"Authorization": f"Bearer {new_access}"})
    forged, obs.forgery = tamper(access)
    probe.get(obs, "forged token", expect["protected"], headers={"Authorization": f"Bearer {forged}"})
    probe.get(obs, "no token", expect["protected"])


def tamper(token: str) -> tuple[str, str]:
    """A token the backend must refuse, made from the real one, and how it was made. The token's format is
    the backend's business: a JWT is re-signed with another key (what a server that skips verification
    accepts); any other token has one character of its last part changed: an opaque `<body>.<mac>`
    keeps its body and loses its MAC, so a server that trusts the body without checking the MAC accepts it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        pass
    else:
        if isinstance(claims, dict):
            return jwt.encode(claims, secrets.token_urlsafe(32), algorithm="HS256"), "the JWT re-signed with another key"
    start = token.rfind(".") + 1
    part = token[start:]
    # Not the part's last character: in base64 it may carry only padding bits, which decoders ignore.
    middle = start + max(0, (len(part) - 2) // 2)
    position = next((i for i in [*range(middle, len(token) - 1), *range(start, middle), len(token) - 1]
                     if token[i].isalnum()), None)
    if position is None:
        return token + "x", "the opaque token with a character appended"
    hexadecimal = all(c in "0123456789abcdefABCDEF" for c in part)
    return (token[:position] + _next_char(token[position], hexadecimal) + token[position + 1:],
            f"the opaque token with character {position + 1} of {len(token)} changed")


def _next_char(char: str, hexadecimal: bool) -> str:
    """The next character of the same kind, so the altered token stays in the token's own alphabet."""
    for alphabet in ("0123456789", "abcdef" if hexadecimal else "abcdefghijklmnopqrstuvwxyz",
                     "ABCDEF" if hexadecimal else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
        if char in alphabet:
            return alphabet[(alphabet.index(char) + 1) % len(alphabet)]
    return "0"


def _tokens(exchange: Exchange) -> tuple[str | None, str | None]:
    raw = exchange.raw if isinstance(exchange.raw, dict) else {}
    access, refresh = raw.get("accessToken"), raw.get("refreshToken")
    return (access if isinstance(access, str) else None), (refresh if isinstance(refresh, str) else None)


def _sticky(probe: Probe, obs: Observations, given: GateInput) -> None:
    expect = given.expects["SMK-07"]
    first = probe.get(obs, "sticky", expect["path"])
    cookie = first.cookie(expect["cookie"])
    if cookie is None:
        return
    for _ in range(int(expect["requests"])):
        probe.get(obs, "sticky", expect["path"], headers={"Cookie": f"{expect['cookie']}={cookie}"})


def _version(probe: Probe, obs: Observations, given: GateInput) -> None:
    probe.get(obs, "version", given.expects["SMK-08"]["path"])


def _unknown_route(probe: Probe, obs: Observations, given: GateInput) -> None:
    probe.get(obs, "unknown route", given.expects["SMK-09"]["path"])


def _stopped_tasks(probe: Probe, obs: Observations, given: GateInput) -> None:
    if given.tasks is None:
        raise LookupError(given.tasks_problem or "no ECS to read the service's tasks from")
    obs.tasks = given.tasks()


# The round's steps in order, each with the checks it observes for (its failure is the first one's).
_STEPS: list[tuple[tuple[str, ...], Callable[[Probe, Observations, GateInput], None]]] = [
    (("SMK-03",), _tls), (("SMK-01", "SMK-04", "SMK-08"), _health), (("SMK-02",), _redirect),
    (("SMK-05",), _latency), (("SMK-06",), _auth_round_trip), (("SMK-07",), _sticky),
    (("SMK-08",), _version), (("SMK-09",), _unknown_route), (("SMK-10",), _stopped_tasks),
]


# -- the judges ------------------------------------------------------------------------------------------


def _seen(exchange: Exchange | None) -> str:
    if exchange is None:
        return "no request was made"
    if exchange.error:
        return f"{exchange.method} {exchange.url} failed: {exchange.error}"
    return f"{exchange.method} {exchange.url} answered {exchange.status}"


def judge_health(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    health = obs.first("health")
    if health is None or health.status != 200:
        return failed(f"{_seen(health)} with {health.body if health else None}", health and health.evidence())
    body = health.body if isinstance(health.body, dict) else {}
    dependency = body.get("info", {}).get(expect["dependency"], {}).get("status")
    if body.get("status") != "ok" or dependency != "up":
        return failed(f"health says status {body.get('status')!r}, {expect['dependency']} {dependency!r}",
                       health.evidence())
    return passed("app and database up", health.evidence())


def judge_redirect(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    redirect = obs.first("redirect")
    if redirect is None or redirect.status not in expect["statuses"]:
        return failed(f"{_seen(redirect)}, not a redirect ({expect['statuses']})",
                       redirect and redirect.evidence())
    location = redirect.header("location") or ""
    got, asked, base = urlsplit(location), urlsplit(redirect.url), urlsplit(obs.base_url)
    if (got.scheme, got.hostname, got.port or 443, got.path, got.query) != \
            ("https", asked.hostname, base.port or 443, asked.path, asked.query):
        return failed(f"HTTP redirects to {location!r}, not to the HTTPS URL of the same path",
                       redirect.evidence())
    return passed(f"{redirect.status} to {location}", redirect.evidence())


def judge_tls(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    tls = obs.tls
    if tls is None:
        return failed("no TLS handshake was made")
    evidence = tls.__dict__
    if not tls.verified:
        return failed(f"certificate of {tls.host}:{tls.port} not valid: {tls.error} "
                              f"(names {tls.subject_names})", evidence)
    if TLS_ORDER.index(tls.protocol or "SSLv3") < TLS_ORDER.index(expect["min_tls"]):
        return failed(f"negotiated {tls.protocol}, the plan wants {expect['min_tls']} or later", evidence)
    left = days_left(tls.not_after) if tls.not_after else -1
    if left < expect["min_days"]:
        return failed(f"certificate expires in {left:.1f} days ({tls.not_after}), "
                              f"the margin is {expect['min_days']} days", evidence)
    return passed(f"{tls.protocol}, {left:.0f} days left, valid for {tls.host}", evidence)


def _app_responses(obs: Observations) -> list[Exchange]:
    """Responses that went through to the app: everything over HTTPS that got an answer."""
    return [e for e in obs.exchanges if e.url.startswith("https://") and e.status is not None]


def judge_headers(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    responses = _app_responses(obs)
    if not responses:
        return failed(f"no API response to read headers from: {_seen(obs.first('health'))}")
    problems = set()
    for e in responses:
        problems |= {f"{name} missing" for name in expect["present"] if not e.header(name)}
        problems |= {f"{name} is {e.header(name)!r}, not {value!r}" for name, value in expect["values"].items()
                     if (e.header(name) or "").lower() != value.lower()}
        problems |= {f"{name} present ({e.header(name)!r})" for name in expect["absent"] if e.header(name)}
    headers = {e.name: {k: v for k, v in e.headers.items()} for e in responses[:3]}
    if problems:
        return failed("security headers: " + "; ".join(sorted(problems)), headers)
    return passed(f"security headers right on {len(responses)} responses", headers)


def judge_latency(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    samples = obs.named("latency")
    # Latency only: an answer of any status counts (whether health is right is SMK-01's question).
    unanswered = [e for e in samples if e.status is None]
    if not samples or unanswered:
        return failed(f"{len(unanswered)} of {len(samples)} health requests got no answer: "
                      f"{_seen(unanswered[0] if unanswered else None)}")
    times = sorted(e.elapsed_ms for e in samples)
    p95 = times[max(0, math.ceil(0.95 * len(times)) - 1)]
    evidence = {"p95_ms": round(p95, 1), "median_ms": round(times[len(times) // 2], 1), "max_ms": round(times[-1], 1),
                "requests": len(times)}
    if p95 > expect["p95_ms"]:
        return failed(f"p95 {p95:.0f} ms over {len(times)} requests, the budget is {expect['p95_ms']} ms", evidence)
    return passed(f"p95 {p95:.0f} ms over {len(times)} requests", evidence)


def judge_auth(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    if given.account is None:
        return failed(f"no smoke account: {given.account_problem or 'none given'}; pass "
                              f"--smoke-user/--smoke-password or create the secret <env>/dougust/{expect['account_secret']}")
    steps = [("login", (200, 201)), ("protected", (200,)), ("refresh", (200, 201)),
             ("protected after refresh", (200,)), ("forged token", (401,)), ("no token", (401,))]
    evidence = [e.evidence() for e in obs.exchanges if e.name in dict(steps)]
    for name, statuses in steps:
        exchange = obs.first(name)
        if exchange is None:
            return failed(f"the round trip stopped before '{name}': {_seen(obs.first('login'))} "
                                  f"/ {_seen(obs.first('refresh'))}", evidence)
        if exchange.status not in statuses:
            forged = f" ({obs.forgery})" if name == "forged token" and obs.forgery else ""
            return failed(f"{name}{forged}: {_seen(exchange)}, expected {statuses}", evidence)
    return passed("login, protected call, refresh, protected call; forged and missing tokens get 401", evidence)


def judge_stickiness(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    sticky = obs.named("sticky")
    if not sticky or sticky[0].status is None:
        return failed(_seen(sticky[0] if sticky else None))
    if len(sticky) == 1:
        return failed(f"no {expect['cookie']} cookie was set: Set-Cookie {sticky[0].header('set-cookie')!r}",
                       sticky[0].evidence())
    tasks = [e.header("x-task-id") for e in sticky[1:]]
    evidence = {"cookie": expect["cookie"], "tasks": tasks}
    if len(set(tasks)) != 1 or None in tasks:
        return failed(f"requests carrying {expect['cookie']} reached tasks {tasks}", evidence)
    return passed(f"{len(tasks)} requests with {expect['cookie']} all reached {tasks[0]}", evidence)


def judge_version(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    """The version is judged on the responses that carry the header: a NestJS interceptor that sets it does
    not run when a guard answers 401 or no route matches (404). A response without it is a finding only
    when the plan asks for the header on every response (`every_response`)."""
    responses = _app_responses(obs)
    carrying = [e for e in responses if e.header(expect["header"])]
    bare = [e for e in responses if not e.header(expect["header"])]
    # A route that matched runs the interceptor: a success without the header is a task that does not set it
    # (an old version?), not an error response an interceptor never saw.
    unexplained = bare if expect.get("every_response") else [e for e in bare if 200 <= (e.status or 0) < 300]
    served = _served_by(carrying, expect)
    evidence = {"expected": given.expected_version, "responses": len(responses), "without_header": len(bare),
                "served": served}
    if unexplained:
        tasks = sorted({e.header(expect["task_header"]) or f"(no {expect['task_header']})" for e in unexplained})
        return failed(f"{len(unexplained)} of {len(responses)} responses carry no {expect['header']}: "
                              + ", ".join(sorted({f'{e.method} {urlsplit(e.url).path} {e.status}'
                                                  for e in unexplained})) + f" (from {', '.join(tasks)})", evidence)
    if not carrying:
        return failed(f"no response carries {expect['header']} ({len(responses)} read): "
                              f"{_seen(obs.first('version'))}", evidence)
    seen = sorted(served)
    by_task = "; ".join(f"{version} from {', '.join(tasks)}" for version, tasks in sorted(served.items()))
    if given.expected_version is not None:
        wrong = [e for e in carrying if e.header(expect["header"]) != given.expected_version]
        if wrong:
            return failed(f"{len(wrong)} of {len(carrying)} responses are not version "
                                  f"{given.expected_version}: seen {seen}; {by_task}", evidence)
        return passed(f"all {len(carrying)} responses that carry {expect['header']} are version "
                             f"{given.expected_version} ({by_task})", evidence)
    if len(seen) != 1:
        return failed(f"responses report versions {seen}: {by_task}", evidence)
    return passed(f"all {len(carrying)} responses that carry {expect['header']} report version {seen[0]} "
                         f"(no --expect-version given)", evidence)


def _served_by(responses: list[Exchange], expect: dict[str, Any]) -> dict[str, list[str]]:
    """Version -> the tasks (by their task header) that answered with it."""
    served: dict[str, set[str]] = {}
    for e in responses:
        served.setdefault(str(e.header(expect["header"])), set()).add(
            e.header(expect["task_header"]) or f"(no {expect['task_header']})")
    return {version: sorted(tasks) for version, tasks in served.items()}


def judge_unknown_route(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    unknown = obs.first("unknown route")
    if unknown is None or unknown.status != 404:
        return failed(f"{_seen(unknown)}, not 404", unknown and unknown.evidence())
    content_type = unknown.header("content-type") or ""
    if "json" not in content_type or not isinstance(unknown.body, dict) or unknown.body.get("statusCode") != 404:
        return failed(f"404 without the JSON error body ({content_type}): {str(unknown.body)[:120]!r}",
                       unknown.evidence())
    return passed("404 with a JSON error body", unknown.evidence())


def judge_stopped_tasks(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    """No task of the current deployment stopped since it began. A task stopped with a reason the plan lists
    as routine (`not_counted`: "stopCode: reason" prefixes, a scale-in by default) is reported, not counted;
    every other stop (its essential container exited, failed health checks, stopped by hand) fails."""
    seen = obs.tasks
    if seen is None:
        return Verdict("error", "the service's stopped tasks were not read")
    ours = [t for t in seen.stopped if t.task_definition == seen.task_definition
            and (t.stopped_at is None or t.stopped_at >= seen.began)]
    routine = [t for t in ours if f"{t.stop_code}: {t.reason}".startswith(tuple(expect["not_counted"]))]
    counted = [t for t in ours if t not in routine]
    revision = seen.task_definition.rsplit("/", 1)[-1]
    evidence = {"service": seen.service, "deployment": seen.task_definition, "began": seen.began.isoformat(),
                "stopped": [_stop_evidence(t) for t in counted],
                "not_counted": [_stop_evidence(t) for t in routine]}
    aside = f"; {len(routine)} stopped by routine scaling, not counted" if routine else ""
    if counted:
        return failed(f"{len(counted)} task(s) of {seen.service}'s deployment {revision} stopped since it began "
                      f"at {seen.began:%H:%M:%S}Z: " + "; ".join(_stop_line(t, seen.began) for t in counted) + aside,
                      evidence)
    age = (seen.read_at - seen.began).total_seconds()
    if seen.kept_s is not None and age > seen.kept_s:  # the deployment's first stops may be gone already
        return Verdict("inconclusive", f"no task of {seen.service}'s deployment {revision} stopped in the last "
                       f"{seen.kept_s:.0f} s, but it began {age:.0f} s ago and ECS keeps a stopped task about "
                       f"{seen.kept_s:.0f} s: run the gate within that of the deploy" + aside, evidence)
    return passed(f"no task of {seen.service}'s deployment {revision} stopped since it began {age:.0f} s ago"
                  + aside, evidence)


def _stop_line(task: StoppedTask, began: dt.datetime) -> str:
    """task, its revision, when, its exit and ECS's reason: what the on-call engineer looks up next."""
    container = f"container {task.container} " if task.container else ""
    exit_ = f"{container}exit code {task.exit_code}" if task.exit_code is not None else f"{container}no exit code"
    when = (f"stopped at {task.stopped_at:%H:%M:%S}Z ({(task.stopped_at - began).total_seconds():.0f} s in)"
            if task.stopped_at else "stopping now")
    return (f"{task.task} of {task.task_definition.rsplit('/', 1)[-1]} {when}, {exit_}: "
            f"{task.reason or 'no reason given'} [{task.stop_code or 'no stop code'}]")


def _stop_evidence(task: StoppedTask) -> dict[str, Any]:
    return {"task": task.task, "task_definition": task.task_definition, "stop_code": task.stop_code,
            "stopped_reason": task.reason, "container": task.container, "exit_code": task.exit_code,
            "started_at": task.started_at.isoformat() if task.started_at else None,
            "stopped_at": task.stopped_at.isoformat() if task.stopped_at else None}


JUDGES: dict[str, Callable[[Observations, dict[str, Any], GateInput], Verdict]] = {
    "SMK-01": judge_health, "SMK-02": judge_redirect, "SMK-03": judge_tls, "SMK-04": judge_headers,
    "SMK-05": judge_latency, "SMK-06": judge_auth, "SMK-07": judge_stickiness, "SMK-08": judge_version,
    "SMK-09": judge_unknown_route, "SMK-10": judge_stopped_tasks,
}


def judge(obs: Observations, rid: str, given: GateInput) -> Verdict:
    """The verdict on one check for one round; a check whose step or judge broke is an ERROR of its own."""
    if rid in obs.broken:
        return Verdict("error", f"{rid} could not be observed: {obs.broken[rid]}")
    try:
        return JUDGES[rid](obs, given.expects[rid], given)
    except Exception as exc:  # noqa: BLE001 - an answer in a shape the judge did not foresee: this check only
        return Verdict("error", f"{rid} could not be judged: {type(exc).__name__}: {exc}".splitlines()[0][:300])


def run_gate(endpoint: Endpoint, given: GateInput, deadline_s: float = 0.0, interval_s: float = 2.0,
             stable_for_s: float = 0.0, report: Callable[[str], None] | None = None,
             binding: Callable[[str], bool] = lambda rid: True) -> GateResult:
    """Observe and judge until every check holds or the deadline passes; the last round's verdicts stand.
    With `stable_for_s`, a round in which every `binding` check holds (a waived or optional one never
    decides the gate) is followed by a round every `interval_s` for that long (a revision that crashes
    after it started passes one round): the first round in which a binding check fails stands, each
    failing check saying when in the window it failed; `report` gets a line every few seconds."""
    start = time.monotonic()
    probe = Probe(endpoint)
    result = GateResult(verdicts={})

    def one_round(window_s: float | None = None) -> None:
        obs = observe(probe, given)
        result.verdicts = {rid: judge(obs, rid, given) for rid in given.expects}
        result.rounds.append({"at_s": round(time.monotonic() - start, 2),
                              "failing": sorted(r for r, v in result.verdicts.items() if not v.ok),
                              **({"window_s": round(window_s, 1)} if window_s is not None else {})})

    def green() -> bool:
        return all(v.ok for rid, v in result.verdicts.items() if binding(rid))

    def look_again_at_stopped_tasks() -> None:
        """A task that crashes can fail a request of the round (the one in flight on it) before ECS, or the
        stand-in's agent, has recorded it as stopped: SMK-10 is read once more a round's interval later, so
        the failing window names the task when there is one."""
        if "SMK-10" in given.expects and result.verdicts["SMK-10"].ok:
            time.sleep(interval_s)
            only = replace(given, expects={"SMK-10": given.expects["SMK-10"]})
            result.verdicts["SMK-10"] = judge(observe(probe, only), "SMK-10", only)
            result.rounds[-1]["failing"] = sorted(r for r, v in result.verdicts.items() if not v.ok)

    try:
        while True:
            one_round()
            remaining = deadline_s - (time.monotonic() - start)
            if result.passed or remaining <= 0:
                break
            time.sleep(min(interval_s, remaining))
        if stable_for_s > 0 and green():
            opened = said = next_round = time.monotonic()
            while (into := time.monotonic() - opened) < stable_for_s:
                next_round += interval_s  # rounds start every interval_s, however long one takes
                time.sleep(max(0.0, min(next_round, opened + stable_for_s) - time.monotonic()))
                into = time.monotonic() - opened
                one_round(into)
                if not green():
                    look_again_at_stopped_tasks()
                    result.verdicts = {rid: v if v.ok else replace(
                        v, message=f"{into:.0f} s into the {stable_for_s:g} s stability window: {v.message}")
                        for rid, v in result.verdicts.items()}
                    break
                if report is not None and time.monotonic() - said >= STABLE_REPORT_S:
                    report(f"smoke gate stable for {into:.0f} of {stable_for_s:g} s: every check holds")
                    said = time.monotonic()
            result.stable_s = round(time.monotonic() - opened, 1)
    finally:
        probe.close()
    result.elapsed_s = time.monotonic() - start
    return result
