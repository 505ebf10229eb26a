"""Running `pytest dr` against a stand-in for the drill self-tests, and reading what it left."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil

from support.suites import ROOT, SuiteRun, run_suite

PLAN = ROOT / "plan" / "dougust.toml"


def drill(plane: Any, tmp_path: Path, ids: str, *extra: str,
          env: dict[str, str | None] | None = None) -> tuple[SuiteRun, dict[str, Any]]:
    """`pytest dr --drill ids` against the stand-in `plane`: the run and its summary's drills section."""
    run = run_suite("--env", "dev", "--stand-in", str(plane.root), "--drill", ids, *extra, suite="dr",
                    reports=tmp_path / "reports", timeout=240, env=env)
    assert run.summary is not None, run.stdout[-3000:] + run.stderr[-2000:]
    return run, run.summary.get("drills", {})


def journal(section: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(section["journal"]).read_text())


def strict_plan(tmp_path: Path, rid: str, expect: str) -> list[str]:
    """A plan whose drill `rid` has `expect`, and the options that use it."""
    text = PLAN.read_text()
    start = text.index(f'id = "{rid}"')
    line = text.index("expect = ", start)
    end = text.index("\n", line)
    path = tmp_path / "plan.toml"
    path.write_text(text[:line] + f"expect = {expect}" + text[end:])
    return ["--plan", str(path), "--waivers", str(ROOT / "plan" / "waivers.toml")]


def session_of(process: psutil.Process) -> int | None:
    """The session of a process that still runs (an exited one its dead parent left for init to reap does
    nothing: it has no session to speak of)."""
    try:
        return None if process.status() == psutil.STATUS_ZOMBIE else os.getsid(process.pid)
    except (OSError, psutil.Error):
        return None
