"""The smoke gate's part of the pytest plugin: its options, where the gate looks and with which account, and
the session's one gate run that every smoke check reads."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

import botocore.exceptions
import pytest

from harness.session import Session
from harness.smoke.gate import GateInput, GateResult, run_gate
from harness.smoke.probes import Endpoint
from harness.smoke.tasks import EcsTasks, ServiceTasks, StandInTasks
from harness.target import Target, TargetError
from harness.verdict import Verdict

if TYPE_CHECKING:
    from harness.local.stand_in import StandIn


def add_options(parser: pytest.Parser) -> None:
    smoke = parser.getgroup("harness-smoke", "Dougust smoke gate")
    smoke.addoption("--base-url", default=None,
                    help="HTTPS URL of the load balancer (default on --target local: the local stand-in's)")
    smoke.addoption("--http-url", default=None, help="plain-HTTP URL of the same host (default: derived)")
    smoke.addoption("--stand-in", default=None, metavar="DIR",
                    help="--target local: use the running stand-in whose state is in DIR (default: bring up, or "
                         "reuse, the project's own in .stand-in)")
    smoke.addoption("--ca-bundle", default=None, help="CA file to trust for the HTTPS URL (default: the system's)")
    smoke.addoption("--expect-version", default=None,
                    help="the version the deploy shipped; every response must report it")
    smoke.addoption("--smoke-user", default=None, help="smoke account e-mail (default: the plan's secret)")
    smoke.addoption("--smoke-password", default=None,
                    help="smoke account password (default: the plan's secret); write --smoke-password=VALUE")
    smoke.addoption("--deadline", type=float, default=0.0,
                    help="seconds to keep re-checking until every check holds (default 0: one round)")
    smoke.addoption("--stable-for", type=float, default=0.0, metavar="S",
                    help="after the first round in which every check holds, keep checking every 2 s for S "
                         "seconds; any failing round then fails the gate, naming the check and when (default 0)")


KEY = pytest.StashKey["SmokeSuite"]()


class SmokeSuite:
    """Where the gate looks (the load balancer's URLs) and what it expects; the gate's result once run."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.endpoint: Endpoint | None = None
        self.given: GateInput | None = None
        self.gate: GateResult | None = None

    def prepare(self, smoke_ids: set[str]) -> None:
        """Where the gate looks and with which account; on --target local, the stand-in is brought up."""
        opt, plan = self.session.option, self.session.plan
        expects = {rid: plan.expected(rid) for rid in sorted(smoke_ids)}
        if not 0 <= opt.stable_for < math.inf:  # NaN too
            raise TargetError(f"--stable-for {opt.stable_for:g}: give the stability window in seconds, 0 or more")
        if bool(opt.smoke_user) != bool(opt.smoke_password):
            raise TargetError("pass both --smoke-user and --smoke-password, or neither (the plan's secret is used)")
        secrets_at = None  # where the smoke account's secret is: the target's, or the stand-in's emulator
        plane = None  # the stand-in behind the URL, whose ECS agent SMK-10 reads
        if opt.base_url:
            self.endpoint = Endpoint.of(opt.base_url, opt.http_url, opt.ca_bundle)
            plane = self.session.stand_in() if opt.target == "local" and opt.stand_in else None
        elif opt.target == "local":
            plane = self.session.stand_in()
            self.endpoint = Endpoint.of(plane.urls["https"], plane.urls["http"], str(plane.ca_file))
            secrets_at = plane.target
        else:
            raise TargetError(f"smoke checks on --target {opt.target} need --base-url (the load balancer's HTTPS URL)")
        account = (opt.smoke_user, opt.smoke_password) if opt.smoke_user else None
        problem = None
        if account is None and "SMK-06" in expects:
            account, problem = self._account(expects["SMK-06"]["account_secret"], secrets_at)
        tasks, tasks_problem = self._tasks(plane) if "SMK-10" in expects else (None, None)
        self.given = GateInput(expects, opt.expect_version, account, problem, tasks, tasks_problem)

    def _tasks(self, plane: StandIn | None) -> tuple[Callable[[], ServiceTasks] | None, str | None]:
        """Where SMK-10 reads the service's stopped tasks: the stand-in's ECS agent, or the target's ECS."""
        if plane is not None:
            return StandInTasks(plane.task_state, plane.root), None
        if self.session.option.target == "local":
            return None, ("--base-url on --target local: name the stand-in serving it (--stand-in DIR) for its "
                          "ECS agent's stopped tasks, or deselect SMK-10")
        try:
            target = self.session.target()
        except TargetError as exc:
            return None, f"no ECS to read the service's tasks from: {exc}"
        return EcsTasks(target, self.session.plan.plan, self.session.plan.env), None

    def _account(self, secret: str, target: Target | None) -> tuple[tuple[str, str] | None, str | None]:
        """The smoke account from the plan's secret, read (never written) from the target's Secrets Manager."""
        plan = self.session.plan
        name = plan.plan.secret_prefix(plan.env) + secret
        try:
            secrets = (target or self.session.target()).client("secretsmanager")
            value = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])
            return (value["email"], value["password"]), None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, TargetError,
                ValueError, KeyError, TypeError) as exc:
            return None, f"the smoke account secret {name} could not be read ({exc})"

    def run(self) -> GateResult:
        """One run of the gate: re-checked until every check holds or --deadline passes."""
        assert self.endpoint is not None and self.given is not None
        opt = self.session.option
        self.gate = run_gate(self.endpoint, self.given, deadline_s=opt.deadline, stable_for_s=opt.stable_for,
                             report=self.session.say, binding=self.session.plan.binding)
        return self.gate

    def failing(self, version: str | None, deadline_s: float) -> list[tuple[str, Verdict]]:
        """The checks that fail (optional and waived ones aside), expecting `version` if given: what a drill
        asks before it injects anything, after a rollout and after its rollback. SMK-10 is left out: it
        judges a deploy (no task stopped since it began), and drills stop tasks on purpose."""
        assert self.endpoint is not None and self.given is not None
        expects = {rid: expect for rid, expect in self.given.expects.items() if rid != "SMK-10"}
        gate = run_gate(self.endpoint, replace(self.given, expects=expects,
                                               expected_version=version or self.given.expected_version),
                        deadline_s=deadline_s)
        return [(rid, v) for rid, v in sorted(gate.verdicts.items()) if not v.ok and self.session.plan.binding(rid)]

    def red(self, version: str | None, deadline_s: float) -> list[str]:
        """`failing` as lines, "SMK-0N: what was seen"."""
        return [f"{rid}: {v.message}" for rid, v in self.failing(version, deadline_s)]

    def section(self) -> dict | None:
        """What summary.json says of the gate."""
        if self.gate is None or self.endpoint is None:
            return None
        return {"base_url": self.endpoint.base_url, "expected_version": self.session.option.expect_version,
                "elapsed_s": round(self.gate.elapsed_s, 3), "rounds": self.gate.rounds,
                "stable_for_s": self.session.option.stable_for, "stable_s": self.gate.stable_s}


@pytest.fixture(scope="session")
def smoke_gate(request: pytest.FixtureRequest) -> GateResult:
    """One run of the smoke gate for the session: re-checked until every check holds or --deadline passes."""
    return request.config.stash[KEY].run()

