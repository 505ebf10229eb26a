"""The pytest plugin's composition root: the common options, the requirement marker, the session plan, the
outcomes and the summary; each suite's own part (options, fixtures, what it settles before the first test)
is its package's plugin module, registered here.

Nothing happens unless the collected tests carry `@pytest.mark.requirement(...)`: a run of the project's
own tests never touches a target. When they do, everything that can stop the run (plan, waivers, marker
ids, environment, target, snapshot) is settled after collection and before the first test, and any
problem is one `pytest.UsageError` line.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import allure
import pytest

from harness.compliance import plugin as compliance
from harness.drills import plugin as drills
from harness.image import plugin as image
from harness.load import plugin as load
from harness.plan import Plan, PlanError, Requirement
from harness.report.summary import Outcome, summarize, write_summary
from harness.report.text import render
from harness.session import SESSION, Session, SessionPlan
from harness.smoke import plugin as smoke
from harness.target import TargetError

# Each suite's plugin module (add_options, KEY, its fixtures) and the object it keeps in the config's stash.
SUITES = ((compliance, compliance.ComplianceSuite), (smoke, smoke.SmokeSuite), (load, load.LoadSuite),
          (drills, drills.DrillsSuite), (image, image.ImageSuite))
ALLURE_SEVERITY = {"critical": "blocker", "high": "critical", "medium": "normal", "low": "minor"}
OUTCOMES = pytest.StashKey[dict[str, Outcome]]()
EVIDENCE = pytest.StashKey[list]()
SUMMARY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "Dougust deployment verification")
    group.addoption("--target", choices=("local", "localstack", "aws"), default="local",
                    help="local: embedded emulator on 127.0.0.1:4566 (default); localstack: --endpoint-url, else "
                         "LocalStack's conventions (AWS_ENDPOINT_URL, LOCALSTACK_HOST); aws: a real account, read-only")
    group.addoption("--env", default="prod", help="environment of the plan to verify (default: prod)")
    group.addoption("--plan", default=None, help="plan file (default: plan/dougust.toml under the rootdir)")
    group.addoption("--waivers", default=None, help="waiver file (default: waivers.toml beside the plan)")
    group.addoption("--endpoint-url", default=None,
                    help="AWS-compatible endpoint (local default http://127.0.0.1:4566; localstack default from "
                         "AWS_ENDPOINT_URL or LOCALSTACK_HOST, else http://localhost:4566)")
    group.addoption("--region", default=None, help="AWS region (default: the plan's region for --env)")
    group.addoption("--profile", default=None,
                    help="AWS profile: the account's on aws; on an emulator, one that enforces IAM")
    group.addoption("--reports-dir", default="reports", help="where summary.json goes (default: reports)")
    for module, _ in SUITES:
        module.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(id): the plan requirement this test verifies, e.g. DB-02")
    session = config.stash[SESSION] = Session(config)
    config.stash[OUTCOMES] = {}
    for module, suite in SUITES:
        config.stash[module.KEY] = suite(session)
        config.pluginmanager.register(module, f"harness-{module.__name__.split('.')[1]}")


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[SESSION].close()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before -k/-m deselect anything: validate the plan and every marker against it."""
    if not any(item.get_closest_marker("requirement") for item in items):
        return
    try:
        plan = SessionPlan.settle(config, items)
    except PlanError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION].settle(plan)
    for item in items:
        req = plan.requirement(item)
        if req is not None:
            _label(item, req, plan.env)


def _label(item: pytest.Item, req: Requirement, env: str) -> None:
    """JUnit property and Allure labels from the requirement, set on the item so an errored test has them
    too: suite as epic, plan section as feature, id as story and label, severity, the plan sentence."""
    item.user_properties.append(("requirement", req.id))
    severity = req.severity_in(env)
    labels = {"epic": item.path.parent.name, "feature": req.section, "story": req.id, "requirement": req.id,
              "tag": req.area, "severity": ALLURE_SEVERITY[severity]}
    for label_type, value in labels.items():
        item.add_marker(pytest.mark.allure_label(value, label_type=label_type))
    item.add_marker(pytest.mark.allure_description(f"{req.id} ({severity}): {req.text}"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Each suite settles what its checks read, in an order that puts the stand-in's bring-up before any
    measured work and the snapshot before the image it names."""
    config = session.config
    state = config.stash[SESSION]
    if not state.active or config.option.collectonly:
        return
    marked = [(item, req) for item in session.items if (req := state.plan.requirement(item))]

    def using(*fixtures: str) -> set[str]:
        return {req.id for item, req in marked if any(f in getattr(item, "fixturenames", ()) for f in fixtures)}

    try:
        if smoke_ids := using("smoke_gate"):
            config.stash[smoke.KEY].prepare(smoke_ids)
        if load_ids := using("load_run"):
            config.stash[load.KEY].prepare(load_ids)
        if drill_ids := using("drill_result"):
            config.stash[drills.KEY].prepare(drill_ids)
        # The image checks by their fixtures, on the plan's tests only (another test may name an argument so).
        image_checks = bool(using("image", "image_scan"))
        if image_checks:
            config.stash[image.KEY].prepare()
        if any("inventory" in getattr(item, "fixturenames", ()) for item in session.items) \
                or (image_checks and not config.option.image):
            config.stash[compliance.KEY].prepare()
        elif config.option.baseline:
            raise TargetError("--baseline compares snapshots, and no selected test judges one; run it with "
                              "the compliance suite (pytest compliance --baseline FILE)")
        if using("image"):
            # Before the first test, so its progress lines reach the terminal.
            config.stash[image.KEY].fetch_deployed(config.stash[compliance.KEY].inventory)
    except (TargetError, PlanError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if state.started is None:
        state.started = time.perf_counter()


# -- fixtures every suite uses ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def harness_session(request: pytest.FixtureRequest) -> Session:
    state = request.config.stash[SESSION]
    if not state.active:
        pytest.fail("harness fixtures need tests marked with @pytest.mark.requirement")
    return state


@pytest.fixture(scope="session")
def plan(harness_session: Session) -> Plan:
    return harness_session.plan.plan


@pytest.fixture(scope="session")
def env_name(harness_session: Session) -> str:
    return harness_session.plan.env


@pytest.fixture
def expect(request: pytest.FixtureRequest, harness_session: Session) -> dict[str, Any]:
    """The expected values of the test's own requirement, for the environment under test."""
    req = harness_session.plan.requirement(request.node)
    if req is None:
        pytest.fail("the 'expect' fixture needs a @pytest.mark.requirement marker on the test")
    return req.expected(harness_session.plan.env)


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """Record what the judgement was based on: shown in Allure and in the summary, never a secret."""
    def record(label: str, data: Any) -> None:
        request.node.stash.setdefault(EVIDENCE, []).append({"label": label, "data": data})
        allure.attach(json.dumps(data, indent=2, default=str), name=label,
                      attachment_type=allure.attachment_type.JSON)
    return record


# -- outcomes, waivers, the summary -------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    result = yield
    report: pytest.TestReport = result.get_result()
    state = item.config.stash[SESSION]
    req = state.plan.requirement(item) if state.active else None
    if req is None:
        return
    if report.skipped and isinstance(report.longrepr, tuple):
        # Show a skip at the check it skipped, not at the helper that raised it.
        path, line, _ = item.reportinfo()
        report.longrepr = (str(path), (line or 0) + 1, report.longrepr[2])
    waiver = state.plan.waivers.get(req.id)
    optional = state.plan.unenforced(req)
    if report.when == "call" and report.failed and waiver:
        report.outcome = "skipped"
        report.wasxfail = f"waived until {waiver.expires} by {waiver.owner}: {waiver.reason}"
    elif report.when == "call" and report.failed and optional:
        report.outcome = "skipped"
        report.wasxfail = f"optional requirement {req.id} failed (not enforced by the plan)"
    elif report.when == "call" and report.passed and waiver:
        report.wasxfail = f"waiver for {req.id} can go: the requirement passes"
    outcome = classify(report, waiver is not None, optional)
    if outcome is not None:
        outcome.evidence = item.stash.get(EVIDENCE, [])
        outcomes = item.config.stash[OUTCOMES]
        previous = outcomes.get(item.nodeid)
        if previous is None or outcome.rank > previous.rank:
            outcomes[item.nodeid] = outcome


def classify(report: pytest.TestReport, waived: bool, optional: bool) -> Outcome | None:
    """The outcome one phase of a test contributes; None when the phase says nothing yet (a passed setup)."""
    xfail = getattr(report, "wasxfail", None)
    if report.when != "call":
        if report.failed:
            return Outcome("error", _message(report))
        if report.skipped:
            return Outcome("skip", _message(report))
        return None
    if report.passed:
        return Outcome("pass", xfail or "", waiver_can_go=waived)
    if report.skipped and xfail:
        return Outcome("waived" if waived else "optional-fail", xfail)
    if report.skipped:
        return Outcome("skip", _message(report))
    return Outcome("fail", _message(report))


def _message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        # The assertion's (or pytest.fail's) own message, without pytest's "assert ..." explanation under it.
        return crash.message.split("\n", 1)[0].removeprefix("AssertionError: ").removeprefix("Failed: ")
    return str(report.longrepr or "")


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = config.stash[SESSION]
    if not state.active or state.started is None:
        return
    opt, checked = config.option, config.stash[compliance.KEY]
    summary = summarize(state.plan.plan, state.plan.env, state.plan.carried, config.stash[OUTCOMES],
                        target=opt.target, snapshot_meta=checked.inventory.meta if checked.inventory else {},
                        replayed=bool(opt.snapshot), provision_calls=checked.provision_calls,
                        duration_s=time.perf_counter() - state.started, gate=config.stash[smoke.KEY].section())
    checked.finish(summary)
    if (section := config.stash[load.KEY].finish(session)) is not None:
        summary["load"] = section
    if (section := config.stash[drills.KEY].section()) is not None:
        summary["drills"] = section
    config.stash[SUMMARY] = summary
    write_summary(Path(opt.reports_dir), summary)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summary = config.stash.get(SUMMARY, None)
    if summary is None:
        return
    terminalreporter.section("plan coverage")
    for line in render(summary):
        terminalreporter.line(line)
