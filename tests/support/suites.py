"""A suite run the way a user runs it: `pytest <suite> ARGS` from the project's root as a process of its own,
and what it reported (exit code, output, summary.json)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.zygote import Zygote

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "golden-prod.json"


@dataclass
class SuiteRun:
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any] | None

    def status(self, rid: str) -> str | None:
        for row in (self.summary or {}).get("requirements", []):
            if row["id"] == rid:
                return row["status"]
        return None

    def message(self, rid: str) -> str:
        return next((r["message"] for r in (self.summary or {}).get("requirements", []) if r["id"] == rid), "")

    def ids_with(self, *statuses: str) -> set[str]:
        return {r["id"] for r in (self.summary or {}).get("requirements", []) if r["status"] in statuses}

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("ERROR:")]


def run_suite(*args: str, reports: Path, suite: str = "compliance", env: dict[str, str | None] | None = None,
              timeout: float = 300) -> SuiteRun:
    """`pytest <suite> ARGS` as a process of its own from the project root (forked from a warm one, see
    support/zygote.py), its summary read from `reports`; `env` adds variables to the environment, or removes
    those it maps to None."""
    environ = {**os.environ, **(env or {})}
    environ.pop("PYTEST_XDIST_WORKER", None)
    environ.pop("PYTEST_CURRENT_TEST", None)
    cmd = [suite, "-q", "-p", "no:cacheprovider", "--reports-dir", str(reports), *args]
    returncode, stdout, stderr = SUITES.run(cmd, ROOT, {k: v for k, v in environ.items() if v is not None}, timeout)
    path = reports / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else None
    return SuiteRun(returncode, stdout, stderr, summary)


SUITES = Zygote()
