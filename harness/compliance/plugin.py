"""The compliance suite's part of the pytest plugin: its options, the session's one snapshot (fetched, or a
saved one replayed), a fixture per part of it, and at the end the night's verdicts saved with the snapshot
and the drift since a baseline."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from harness.compliance.inventory import PARTS, Inventory, PartUnavailable, take_snapshot
from harness.report.allure import DRIFT_RESULT, Attachment, write_result
from harness.report.drift import diff, summary_line
from harness.report.summary import drift_section, write_drift
from harness.session import Session
from harness.target import TargetError
from harness.util.redact import plain_variables, redact


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness")
    group.addoption("--provision", action="store_true",
                    help="localstack: provision the plan's environment first (never allowed on aws)")
    group.addoption("--baseline", default=None, metavar="FILE",
                    help="an earlier snapshot (--snapshot-out of another night): write what changed since, and "
                         "which requirements newly fail, to drift.json and drift.md in --reports-dir")
    group.addoption("--snapshot", default=None, metavar="FILE",
                    help="judge a saved snapshot offline instead of fetching one")
    group.addoption("--snapshot-out", default=None, metavar="FILE", help="save the session's snapshot as JSON")


KEY = pytest.StashKey["ComplianceSuite"]()


class ComplianceSuite:
    """The session's snapshot, the baseline it is compared with, and what provisioning the emulator cost."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.inventory: Inventory | None = None
        self.baseline: dict[str, Any] | None = None
        self.provision_calls = 0

    def prepare(self) -> None:
        session, opt = self.session, self.session.option
        plan, env = session.plan.plan, session.plan.env
        if opt.baseline:
            try:
                baseline = Inventory.load(Path(opt.baseline))
            except ValueError as exc:
                raise TargetError(f"--baseline: {exc}") from None
            if baseline.meta.get("env") != env:
                raise TargetError(f"baseline {opt.baseline} is of environment '{baseline.meta.get('env')}' but --env "
                                  f"is '{env}'; pass a baseline of {env}")
            self.baseline = baseline.to_json()
        if opt.snapshot:
            try:
                inventory = Inventory.load(Path(opt.snapshot))
            except ValueError as exc:
                raise TargetError(str(exc)) from None
            # A snapshot saved by an older harness may hold values the plan does not name as plain.
            inventory.parts = redact(inventory.parts, plain_variables(plan, env))
            if inventory.meta.get("env") != env:
                raise TargetError(f"snapshot {opt.snapshot} is of environment '{inventory.meta.get('env')}' "
                                  f"but --env is '{env}'; pass --env {inventory.meta.get('env')}")
            session.started = time.perf_counter()
            self.inventory = inventory
            return
        target = session.target()
        if target.kind == "local":
            from harness.local.emulator import running_emulator

            session.resources.enter_context(running_emulator(target.endpoint_url))
        target.check_reachable()
        if target.kind == "local" or opt.provision:
            from harness.local.provision import provision

            mark = target.recorder.mark()
            try:
                report = provision(target.client, plan, env)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                raise TargetError(f"provisioning {env} at {target.endpoint_url} failed: {exc}; "
                                  f"check the endpoint or run without --provision") from None
            self.provision_calls = len(target.recorder.since(mark))
            for service, reason in sorted(report.skipped.items()):
                session.say(f"provisioning skipped {service}: {reason}")
        session.started = time.perf_counter()
        self.inventory = take_snapshot(target, plan, env)

    def finish(self, summary: dict[str, Any]) -> None:
        """The night's verdicts travel with its snapshot, so tomorrow's run can say what newly fails; the
        drift since the baseline goes into the summary, the reports and Allure."""
        if self.inventory is None:
            return
        opt, plan = self.session.option, self.session.plan.plan
        self.inventory.meta["results"] = {row["id"]: row["status"] for row in summary["requirements"]
                                          if plan.requirements[row["id"]].suite == "compliance"}
        if opt.snapshot_out:
            self.inventory.save(Path(opt.snapshot_out))
        if self.baseline is not None:
            summary["drift"] = self._drift(Path(opt.reports_dir))

    def _drift(self, reports_dir: Path) -> dict[str, Any]:
        """drift.json and drift.md in the reports, and in Allure as a result of its own beside the checks."""
        assert self.baseline is not None and self.inventory is not None
        found = diff(self.baseline, self.inventory.to_json())
        json_path, md_path = write_drift(reports_dir, found, self.session.plan.plan)
        results_dir = getattr(self.session.option, "allure_report_dir", None)
        if results_dir:
            lists = found.requirements or {}
            # Failed when something newly fails or newly cannot be judged: what `harness diff --fail-on` gates on.
            worse = lists.get("newly_failing", []) + lists.get("newly_erroring", [])
            write_result(Path(results_dir), f"Drift since {found.baseline_taken_at}", DRIFT_RESULT,
                         "failed" if worse else "passed", summary_line(found),
                         {"epic": "compliance", "feature": "Drift", "story": "drift since the baseline"},
                         [Attachment("drift.md", md_path.read_text(encoding="utf-8"), "text/markdown", "md"),
                          Attachment("drift.json", json_path.read_text(encoding="utf-8"), "application/json", "json")])
        return {**drift_section(found), "files": [str(json_path), str(md_path)]}


@pytest.fixture(scope="session")
def inventory(request: pytest.FixtureRequest) -> Inventory:
    taken = request.config.stash[KEY].inventory
    if taken is None:
        pytest.fail("no snapshot was taken for this session")
    return taken


def _part_fixture(key: str) -> Any:
    @pytest.fixture(name=key, scope="session")
    def fixture(inventory: Inventory) -> Any:
        try:
            return inventory.need(key)
        except PartUnavailable as exc:
            pytest.skip(str(exc))
    fixture.__doc__ = f"The snapshot's '{key}' part; ERROR when it could not be fetched."
    return fixture


for _key in PARTS:
    globals()[f"_part_{_key}"] = _part_fixture(_key)
