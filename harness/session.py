"""What one pytest session settled before its first test, and the services its suites share.

`SessionPlan` is frozen: the plan, the environment, the waivers and which tests carry which requirement
never change once collection is over. `Session` is what every suite's plugin reaches through the config's
stash: the options, the plan, the target, the local stand-in (brought up once, taken down at the end, also
by the watchdog if the harness is killed), a progress line, and what must be closed when the session ends.
"""
from __future__ import annotations

import datetime as dt
import sys
import threading
from collections.abc import Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pytest

from harness.plan import Plan, PlanError, Requirement, Waiver, load_plan, load_waivers
from harness.target import LOCAL_ENDPOINT, Target, TargetError, default_endpoint
from harness.util import proc

if TYPE_CHECKING:
    from harness.local.stand_in import StandIn


@dataclass(frozen=True)
class SessionPlan:
    """The plan, the environment under test, its valid waivers, and requirement id -> the tests carrying it."""

    plan: Plan
    path: Path
    env: str
    waivers: Mapping[str, Waiver]
    carried: Mapping[str, tuple[str, ...]]

    @classmethod
    def settle(cls, config: pytest.Config, items: list[pytest.Item]) -> SessionPlan:
        """Plan, environment, waivers and markers: a `PlanError` naming the first problem, else all of them."""
        opt = config.option
        path = Path(opt.plan) if opt.plan else config.rootpath / "plan" / "dougust.toml"
        plan = load_plan(path)
        plan.environment(opt.env)
        waiver_path = Path(opt.waivers) if opt.waivers else path.parent / "waivers.toml"
        today = dt.datetime.now(dt.timezone.utc).date()
        waivers = {w.id: w for w in load_waivers(waiver_path, plan, today) if w.env in (None, opt.env)}
        carried: dict[str, list[str]] = {}
        for item in items:
            marker = item.get_closest_marker("requirement")
            if marker is None:
                continue
            if len(marker.args) != 1 or not isinstance(marker.args[0], str):
                raise PlanError(f"{item.nodeid}: write the marker as @pytest.mark.requirement(\"ID\")")
            rid = marker.args[0]
            if rid not in plan.requirements:
                raise PlanError(f"{item.nodeid} carries requirement '{rid}', which {path} lacks; "
                                f"add it to the plan or fix the marker")
            carried.setdefault(rid, []).append(item.nodeid)
        return cls(plan, path, opt.env, MappingProxyType(waivers),
                   MappingProxyType({rid: tuple(ids) for rid, ids in carried.items()}))

    def requirement(self, item: pytest.Item) -> Requirement | None:
        marker = item.get_closest_marker("requirement")
        return None if marker is None else self.plan.requirements[marker.args[0]]

    def expected(self, rid: str) -> dict[str, Any]:
        return self.plan.requirements[rid].expected(self.env)

    def binding(self, rid: str) -> bool:
        """Whether a failure of `rid` turns a gate red: it is neither waived nor optional here."""
        return rid not in self.waivers and not self.plan.requirements[rid].optional_in(self.env)

    def unenforced(self, req: Requirement) -> bool:
        """An optional requirement the plan does not enforce: its failure is reported, not failed."""
        return req.optional_in(self.env) and not self.plan.plan.enforce_optional


SESSION = pytest.StashKey["Session"]()


class Session:
    """The services the suites share for one session (see the module's docstring)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.option = config.option
        self.resources = ExitStack()
        self.started: float | None = None  # when the measured work began (perf_counter)
        self._plan: SessionPlan | None = None
        self._stand_in: StandIn | None = None

    @property
    def active(self) -> bool:
        """Whether the collected tests carry requirements: a run of other tests never touches a target."""
        return self._plan is not None

    @property
    def plan(self) -> SessionPlan:
        if self._plan is None:
            raise RuntimeError("the session's plan is settled after collection")
        return self._plan

    def settle(self, plan: SessionPlan) -> None:
        self._plan = plan

    def say(self, line: str) -> None:
        """A progress line on the terminal, readable in a CI log; also from inside a fixture or a test,
        whose output pytest otherwise captures until the test ends."""
        capture = self.config.pluginmanager.getplugin("capturemanager")
        # pytest's capture is the main thread's to suspend: another thread (a drill's background load) writes
        # as it is, captured or not.
        main = threading.current_thread() is threading.main_thread()
        with capture.global_and_fixture_disabled() if capture is not None and main else nullcontext():
            self.config.get_terminal_writer().line(f"harness: {line}")

    def close(self) -> None:
        self.resources.close()

    def target(self) -> Target:
        """A fresh client factory for the target the options name (each counts its own calls)."""
        opt = self.option
        region = opt.region or self.plan.plan.environment(self.plan.env).region
        if opt.target == "aws":
            if opt.provision:
                raise TargetError("--provision is refused on --target aws: the harness never writes to a real "
                                  "account; drop --provision")
            return Target("aws", region, endpoint_url=opt.endpoint_url, profile=opt.profile)
        return Target(opt.target, region, endpoint_url=opt.endpoint_url or default_endpoint(opt.target),
                      profile=opt.profile)

    def stand_in(self) -> StandIn:
        """The local stand-in: the running one --stand-in names, used as it is, or the project's own, brought
        up for this session if it is not running (and then taken down when the session ends)."""
        if self._stand_in is None:
            self._stand_in = self._attach() if self.option.stand_in else self._bring_up()
        return self._stand_in

    def _attach(self) -> StandIn:
        from harness.local.stand_in import StandIn, StandInError

        try:
            plane = StandIn.attach(Path(self.option.stand_in), self.plan.path)
        except StandInError as exc:
            raise TargetError(f"--stand-in: {exc}") from None
        if plane.env != self.plan.env:
            raise TargetError(f"the stand-in in {plane.root} runs environment '{plane.env}'; pass --env {plane.env}")
        # Used as it is: `up` would provision the emulator again, undoing what its owner changed there.
        if not (plane.status()["tasks"]["supervisor"] and plane.alb.status().get("running")):
            raise TargetError(f"the stand-in in {plane.root} is not running; bring it up with 'harness local up'")
        return plane

    def _bring_up(self) -> StandIn:
        from harness.local.stand_in import StandIn, StandInError, StandInRefused

        plane = StandIn.for_project(self.config.rootpath, self.plan.path, self.plan.env,
                                    self.option.endpoint_url or LOCAL_ENDPOINT)
        # Whatever this session starts goes when it ends, killed included: the watchdog then runs `down`.
        token = proc.on_death([sys.executable, "-c", "import sys; from pathlib import Path; "
                               "from harness.local.stand_in import StandIn; "
                               "StandIn.attach(Path(sys.argv[1]), Path(sys.argv[2])).down()",
                               str(plane.root), str(self.plan.path.resolve())], cwd=self.config.rootpath)
        try:
            started = plane.up()
        except StandInRefused as exc:  # nothing was started or stopped: the running stand-in stays as found
            proc.cancel(token)
            raise TargetError(f"the local stand-in: {exc}") from None
        except StandInError as exc:
            plane.down()
            proc.cancel(token)
            raise TargetError(f"the local stand-in did not come up: {exc}") from None
        if started:
            self.resources.callback(proc.cancel, token)
            self.resources.callback(plane.down)
        else:
            proc.cancel(token)
        return plane
