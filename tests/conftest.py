"""Helpers for the harness's own tests: run a suite the way a user does, and read what it reported."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[1]
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
    """`pytest <suite> ARGS` in a subprocess from the project root, its summary read from `reports`;
    `env` adds variables to the environment, or removes those it maps to None."""
    environ = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider", "--reports-dir", str(reports),
           *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in environ.items() if v is not None})
    path = reports / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else None
    return SuiteRun(proc.returncode, proc.stdout, proc.stderr, summary)


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return tmp_path / "reports"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server in this process for one test module. moto keeps its state per process and account,
    so a module that shares the process with another uses an account of its own or a distinct env."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per call would bury failures
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
