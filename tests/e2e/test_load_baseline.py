"""LOAD-04 end to end: load runs against a small server whose answers take a set time, each compared with
the first run's results (`--load-baseline`): the same server again passes; the server twice as slow fails
naming the endpoint; a run of another profile is refused as incomparable; a file that is not a run's
results is one line before any load."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.servers import JsonHandler, serving
from support.suites import ROOT, SuiteRun, run_suite

DELAY = {"s": 0.02}


class Handler(JsonHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        time.sleep(DELAY["s"])
        self.send_json(200, {"status": "ok", "info": {"database": {"status": "up"}}})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(Handler) as url:
        yield url


def load(server: str, reports: Path, *extra: str) -> SuiteRun:
    """40 requests a second for 15 s: about 500 samples in the steady phase, enough to bound a p95 well
    inside the samples (with a hundred, its interval reaches the slowest one)."""
    return run_suite("--env", "dev", "--base-url", server, "--load-profile", "health", "--load-users", "4",
                     "--load-rate", "40", "--load-duration", "15", *extra, suite="load", reports=reports, timeout=120)


def test_a_run_is_compared_with_its_baseline(server, tmp_path):
    DELAY["s"] = 0.02
    first = load(server, tmp_path / "first")
    assert first.status("LOAD-04") == "skip" and "pass --load-baseline FILE" in first.message("LOAD-04"), first.stdout
    baseline = tmp_path / "baseline.json"
    shutil.copy(tmp_path / "first" / "load" / "results.json", baseline)
    assert json.loads(baseline.read_text())["run"]["profile"] == "health"

    again = load(server, tmp_path / "again", "--load-baseline", str(baseline))
    assert again.status("LOAD-04") == "pass", again.message("LOAD-04") + again.stdout[-2000:]
    section = again.summary["load"]["baseline"]
    assert section["status"] == "pass" and Path(section["chart"]).stat().st_size > 10_000
    assert {(r["endpoint"], r["metric"]) for r in section["rows"]} >= {("GET /api/health", "p95"), ("overall", "rps")}
    assert "against the baseline" in again.stdout and "GET /api/health" in again.stdout

    DELAY["s"] = 0.04
    slower = load(server, tmp_path / "slower", "--load-baseline", str(baseline))
    assert slower.returncode == 1 and slower.status("LOAD-04") == "fail", slower.stdout[-3000:]
    assert "GET /api/health p95" in slower.message("LOAD-04"), slower.message("LOAD-04")
    DELAY["s"] = 0.02

    # Another profile is refused before any load is sent, naming the difference.
    plan = tmp_path / "plan.toml"
    plan.write_text((ROOT / "plan" / "dougust.toml").read_text().replace("[load.health]", "[load.health-again]"))
    other = run_suite("--env", "dev", "--base-url", server, "--load-profile", "health-again", "--load-users", "4",
                      "--load-rate", "40", "--load-duration", "15", "--plan", str(plan), "--waivers",
                      str(ROOT / "plan" / "waivers.toml"), "--load-baseline", str(baseline), suite="load",
                      reports=tmp_path / "other", timeout=120)
    assert other.returncode == 4 and len(other.error_lines) == 1, other.stderr[-2000:]
    assert "is not comparable with this run: profile: 'health' in the baseline, 'health-again' now" \
        in other.error_lines[0], other.error_lines
    assert not (tmp_path / "other" / "load").exists()  # no load was sent


@pytest.mark.parametrize("content, says", [
    (None, "file not found"), ("{not json", "not a load run's results (JSONDecodeError)"),
    ('{"requirements": []}', "not a load run's results (no endpoints)"),
    ('{"endpoints": {}, "complete": true, "stopped": "error ratio 0.6 for 10 s"}', "its brakes stopped it"),
    ('{"endpoints": {}, "complete": false}', "it did not run to its end"),
], ids=["missing", "not JSON", "a summary, not results", "a braked run", "an incomplete run"])
def test_a_baseline_that_is_not_a_runs_results_is_one_line_before_any_load(content, says, tmp_path):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    run = run_suite("--env", "dev", "--base-url", "http://127.0.0.1:9", "--load-profile", "health",
                    "--load-baseline", str(path), suite="load", reports=tmp_path / "r", timeout=60)
    assert run.returncode == 4 and len(run.error_lines) == 1 and says in run.error_lines[0], run.stderr
    assert not (tmp_path / "r" / "load").exists()  # no load was sent
