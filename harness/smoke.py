"""The post-deploy smoke gate: probe the deployment through the load balancer, judge each SMK check,
and repeat until every check holds or the deadline passes (a rollout converging is not a failure).

`observe` fetches one round of observations; the `judge_*` functions are pure and one per requirement;
`run_gate` is the loop. The smoke tests only read the gate's final verdicts.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import jwt

from harness.probes import Endpoint, Exchange, Observations, Probe, days_left, tls_report

TLS_ORDER = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    evidence: Any = None


@dataclass(frozen=True)
class GateInput:
    """What the judges compare with: the plan's values per requirement, and the deploy's facts."""

    expects: dict[str, dict[str, Any]]
    expected_version: str | None = None
    account: tuple[str, str] | None = None
    account_problem: str | None = None


@dataclass
class GateResult:
    verdicts: dict[str, Verdict]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.verdicts.values())


# -- one round of observations ---------------------------------------------------------------------------


def observe(probe: Probe, given: GateInput) -> Observations:
    obs = Observations(base_url=probe.endpoint.base_url, started=time.monotonic())
    wanted = given.expects
    if "SMK-03" in wanted:
        obs.tls = tls_report(probe.endpoint)
    if wanted.keys() & {"SMK-01", "SMK-04", "SMK-08"}:
        probe.get(obs, "health", _expect(given, "SMK-01", "SMK-04").get("path", "/api/health"))
    if "SMK-02" in wanted:
        probe.request(obs, "redirect", "GET", probe.endpoint.http_url + wanted["SMK-02"]["path"])
    if "SMK-05" in wanted:
        for _ in range(int(wanted["SMK-05"]["requests"])):
            probe.get(obs, "latency", wanted["SMK-05"]["path"])
    if "SMK-06" in wanted:
        _auth_round_trip(probe, obs, wanted["SMK-06"], given.account)
    if "SMK-07" in wanted:
        _sticky(probe, obs, wanted["SMK-07"])
    if "SMK-08" in wanted:
        probe.get(obs, "version", wanted["SMK-08"]["path"])
    if "SMK-09" in wanted:
        probe.get(obs, "unknown route", wanted["SMK-09"]["path"])
    return obs


def _expect(given: GateInput, *ids: str) -> dict[str, Any]:
    return next((given.expects[i] for i in ids if i in given.expects), {})


def _auth_round_trip(probe: Probe, obs: Observations, expect: dict[str, Any],
                     account: tuple[str, str] | None) -> None:
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
    claims = jwt.decode(access, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-signing-key-of-this-deployment", algorithm="HS256")
    probe.get(obs, "forged token", expect["protected"], headers={"Authorization": f"Bearer {forged}"})
    probe.get(obs, "no token", expect["protected"])


def _tokens(exchange: Exchange) -> tuple[str | None, str | None]:
    raw = exchange.raw if isinstance(exchange.raw, dict) else {}
    return raw.get("accessToken"), raw.get("refreshToken")


def _sticky(probe: Probe, obs: Observations, expect: dict[str, Any]) -> None:
    first = probe.get(obs, "sticky", expect["path"])
    cookie = first.cookie(expect["cookie"])
    if cookie is None:
        return
    for _ in range(int(expect["requests"])):
        probe.get(obs, "sticky", expect["path"], headers={"Cookie": f"{expect['cookie']}={cookie}"})


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
        return Verdict(False, f"{_seen(health)} with {health.body if health else None}", health and health.evidence())
    body = health.body if isinstance(health.body, dict) else {}
    dependency = body.get("info", {}).get(expect["dependency"], {}).get("status")
    if body.get("status") != "ok" or dependency != "up":
        return Verdict(False, f"health says status {body.get('status')!r}, {expect['dependency']} {dependency!r}",
                       health.evidence())
    return Verdict(True, "app and database up", health.evidence())


def judge_redirect(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    redirect = obs.first("redirect")
    if redirect is None or redirect.status not in expect["statuses"]:
        return Verdict(False, f"{_seen(redirect)}, not a redirect ({expect['statuses']})",
                       redirect and redirect.evidence())
    location = redirect.header("location") or ""
    got, asked, base = urlsplit(location), urlsplit(redirect.url), urlsplit(obs.base_url)
    if (got.scheme, got.hostname, got.port or 443, got.path, got.query) != \
            ("https", asked.hostname, base.port or 443, asked.path, asked.query):
        return Verdict(False, f"HTTP redirects to {location!r}, not to the HTTPS URL of the same path",
                       redirect.evidence())
    return Verdict(True, f"{redirect.status} to {location}", redirect.evidence())


def judge_tls(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    tls = obs.tls
    if tls is None:
        return Verdict(False, "no TLS handshake was made")
    evidence = tls.__dict__
    if not tls.verified:
        return Verdict(False, f"certificate of {tls.host}:{tls.port} not valid: {tls.error} "
                              f"(names {tls.subject_names})", evidence)
    if TLS_ORDER.index(tls.protocol or "SSLv3") < TLS_ORDER.index(expect["min_tls"]):
        return Verdict(False, f"negotiated {tls.protocol}, the plan wants {expect['min_tls']} or later", evidence)
    left = days_left(tls.not_after) if tls.not_after else -1
    if left < expect["min_days"]:
        return Verdict(False, f"certificate expires in {left:.1f} days ({tls.not_after}), "
                              f"the margin is {expect['min_days']} days", evidence)
    return Verdict(True, f"{tls.protocol}, {left:.0f} days left, valid for {tls.host}", evidence)


def _app_responses(obs: Observations) -> list[Exchange]:
    """Responses that went through to the app: everything over HTTPS that got an answer."""
    return [e for e in obs.exchanges if e.url.startswith("https://") and e.status is not None]


def judge_headers(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    responses = _app_responses(obs)
    if not responses:
        return Verdict(False, f"no API response to read headers from: {_seen(obs.first('health'))}")
    problems = set()
    for e in responses:
        problems |= {f"{name} missing" for name in expect["present"] if not e.header(name)}
        problems |= {f"{name} is {e.header(name)!r}, not {value!r}" for name, value in expect["values"].items()
                     if (e.header(name) or "").lower() != value.lower()}
        problems |= {f"{name} present ({e.header(name)!r})" for name in expect["absent"] if e.header(name)}
    headers = {e.name: {k: v for k, v in e.headers.items()} for e in responses[:3]}
    if problems:
        return Verdict(False, "security headers: " + "; ".join(sorted(problems)), headers)
    return Verdict(True, f"security headers right on {len(responses)} responses", headers)


def judge_latency(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    samples = obs.named("latency")
    # Latency only: an answer of any status counts (whether health is right is SMK-01's question).
    failed = [e for e in samples if e.status is None]
    if not samples or failed:
        return Verdict(False, f"{len(failed)} of {len(samples)} health requests got no answer: "
                              f"{_seen(failed[0] if failed else None)}")
    times = sorted(e.elapsed_ms for e in samples)
    p95 = times[max(0, math.ceil(0.95 * len(times)) - 1)]
    evidence = {"p95_ms": round(p95, 1), "median_ms": round(times[len(times) // 2], 1), "max_ms": round(times[-1], 1),
                "requests": len(times)}
    if p95 > expect["p95_ms"]:
        return Verdict(False, f"p95 {p95:.0f} ms over {len(times)} requests, the budget is {expect['p95_ms']} ms", evidence)
    return Verdict(True, f"p95 {p95:.0f} ms over {len(times)} requests", evidence)


def judge_auth(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    if given.account is None:
        return Verdict(False, f"no smoke account: {given.account_problem or 'none given'}; pass "
                              f"--smoke-user/--smoke-password or create the secret <env>/dougust/{expect['account_secret']}")
    steps = [("login", (200, 201)), ("protected", (200,)), ("refresh", (200, 201)),
             ("protected after refresh", (200,)), ("forged token", (401,)), ("no token", (401,))]
    evidence = [e.evidence() for e in obs.exchanges if e.name in dict(steps)]
    for name, statuses in steps:
        exchange = obs.first(name)
        if exchange is None:
            return Verdict(False, f"the round trip stopped before '{name}': {_seen(obs.first('login'))} "
                                  f"/ {_seen(obs.first('refresh'))}", evidence)
        if exchange.status not in statuses:
            return Verdict(False, f"{name}: {_seen(exchange)}, expected {statuses}", evidence)
    return Verdict(True, "login, protected call, refresh, protected call; forged and missing tokens get 401", evidence)


def judge_stickiness(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    sticky = obs.named("sticky")
    if not sticky or sticky[0].status is None:
        return Verdict(False, _seen(sticky[0] if sticky else None))
    if len(sticky) == 1:
        return Verdict(False, f"no {expect['cookie']} cookie was set: Set-Cookie {sticky[0].header('set-cookie')!r}",
                       sticky[0].evidence())
    tasks = [e.header("x-task-id") for e in sticky[1:]]
    evidence = {"cookie": expect["cookie"], "tasks": tasks}
    if len(set(tasks)) != 1 or None in tasks:
        return Verdict(False, f"requests carrying {expect['cookie']} reached tasks {tasks}", evidence)
    return Verdict(True, f"{len(tasks)} requests with {expect['cookie']} all reached {tasks[0]}", evidence)


def judge_version(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    responses = _app_responses(obs)
    versions = [(e.name, e.header(expect["header"])) for e in responses]
    seen = sorted({v or "(none)" for _, v in versions})
    evidence = {"expected": given.expected_version, "seen": seen,
                "tasks": sorted({e.header(expect["task_header"]) or "(none)" for e in responses})}
    if not versions:
        return Verdict(False, f"no response to read {expect['header']} from: {_seen(obs.first('version'))}", evidence)
    if given.expected_version is not None:
        wrong = [f"{name}: {v}" for name, v in versions if v != given.expected_version]
        if wrong:
            return Verdict(False, f"{len(wrong)} of {len(versions)} responses are not version "
                                  f"{given.expected_version}: seen {seen}", evidence)
        return Verdict(True, f"all {len(versions)} responses are version {given.expected_version}", evidence)
    if len(seen) != 1 or seen == ["(none)"]:
        return Verdict(False, f"responses report versions {seen}", evidence)
    return Verdict(True, f"all {len(versions)} responses report version {seen[0]} (no --expect-version given)", evidence)


def judge_unknown_route(obs: Observations, expect: dict[str, Any], given: GateInput) -> Verdict:
    unknown = obs.first("unknown route")
    if unknown is None or unknown.status != 404:
        return Verdict(False, f"{_seen(unknown)}, not 404", unknown and unknown.evidence())
    content_type = unknown.header("content-type") or ""
    if "json" not in content_type or not isinstance(unknown.body, dict) or unknown.body.get("statusCode") != 404:
        return Verdict(False, f"404 without the JSON error body ({content_type}): {str(unknown.body)[:120]!r}",
                       unknown.evidence())
    return Verdict(True, "404 with a JSON error body", unknown.evidence())


JUDGES: dict[str, Callable[[Observations, dict[str, Any], GateInput], Verdict]] = {
    "SMK-01": judge_health, "SMK-02": judge_redirect, "SMK-03": judge_tls, "SMK-04": judge_headers,
    "SMK-05": judge_latency, "SMK-06": judge_auth, "SMK-07": judge_stickiness, "SMK-08": judge_version,
    "SMK-09": judge_unknown_route,
}


def run_gate(endpoint: Endpoint, given: GateInput, deadline_s: float = 0.0, interval_s: float = 2.0) -> GateResult:
    """Observe and judge until every check holds or the deadline passes; the last round's verdicts stand."""
    start = time.monotonic()
    probe = Probe(endpoint)
    result = GateResult(verdicts={})
    try:
        while True:
            obs = observe(probe, given)
            result.verdicts = {rid: JUDGES[rid](obs, expect, given) for rid, expect in given.expects.items()}
            result.rounds.append({"at_s": round(time.monotonic() - start, 2),
                                  "failing": sorted(r for r, v in result.verdicts.items() if not v.ok)})
            remaining = deadline_s - (time.monotonic() - start)
            if result.passed or remaining <= 0:
                break
            time.sleep(min(interval_s, remaining))
    finally:
        probe.close()
    result.elapsed_s = time.monotonic() - start
    return result
