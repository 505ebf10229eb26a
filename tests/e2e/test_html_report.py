"""The nightly HTML report, opened in a browser the way its reader opens it in the morning.

Two nights are replayed from the recorded compliant snapshot: a compliant one, then one where the database
lost Multi-AZ (DB-02) and the container runs as root (ECS-07), with a waived and an optional failure beside
them. After each night `harness report --html --history` renders the report; headless Chromium opens it
from the file and must show the failing requirements with their plan sentences and evidence, and the
second night must know the first. The page as a reader first sees it is kept in reports/html-report.png.
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.suites import GOLDEN, ROOT, run_suite
from harness import cli
from harness.drills import history as drill_history
from harness.report import html as html_report
from harness.report.html import (ReportToolError, enrich, nodeid_of, requirement_case_id, same_run,
                                 without_analytics)
from harness.plan import load_plan

pytestmark = pytest.mark.node

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "reports" / "html-report.png"
PLAN = load_plan(ROOT / "plan" / "dougust.toml")
NEXT_YEAR = (dt.date.today() + dt.timedelta(days=365)).isoformat()


def harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def chromium(url: str, profile: Path, screenshot: Path | None = None, timeout: float = 120) -> str:
    """The page's DOM once its scripts have rendered it (and a screenshot of the same moment). Only files
    are opened and every host name resolves to nothing, so the browser reaches no network."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run make setup (scripts/system-deps installs it)"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1400,1000",
           "--virtual-time-budget=20000", "--dump-dom", url]
    if screenshot is not None:
        cmd.insert(-2, f"--screenshot={screenshot}")
    # Its own process group: on a timeout the renderer and GPU helpers go with the browser.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, f"chromium exited {proc.returncode} on {url}"
    return out


def rendered(url: str, tmp: Path, expect: str, screenshot: Path | None = None) -> str:
    """The page's visible text once `expect` is in it; the report renders from data it decodes after load,
    so a slow machine gets a second look, with a fresh profile."""
    for attempt in range(3):
        text = visible_text(chromium(url, tmp / f"profile-{attempt}", screenshot))
        if expect in text:
            return text
    raise AssertionError(f"{url} never showed {expect!r}; it showed: {text[:2000]}")


def visible_text(dom: str) -> str:
    """The text a reader sees, with the frames Allure shows a description in (as srcdoc) inlined."""
    dom = re.sub(r'<iframe\b[^>]*?\bsrcdoc="([^"]*)"[^>]*>', lambda m: html.unescape(m.group(1)), dom)
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def break_the_night(snapshot: dict[str, Any]) -> dict[str, Any]:
    broken = copy.deepcopy(snapshot)
    parts = broken["parts"]
    parts["db_instances"][0]["MultiAZ"] = False                                          # DB-02 fails
    parts["task_definitions"][0]["containerDefinitions"][0]["user"] = "root"             # ECS-07 fails
    next(iter(parts["lb_attributes"].values()))["access_logs.s3.enabled"] = "false"      # ALB-07, waived
    parts["web_acls"].update({arn: None for arn in parts["web_acls"]})                   # ALB-08, optional
    return broken


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two nights' results, each rendered into one report directory with one history file."""
    tmp = tmp_path_factory.mktemp("nights")
    report, history = tmp / "html", tmp / "history.jsonl"
    waivers = tmp / "waivers.toml"
    waivers.write_text(f'[[waiver]]\nid = "ALB-07"\nreason = "bucket from the logging account"\n'
                       f'owner = "platform-team"\nexpires = {NEXT_YEAR}\n')
    broken = tmp / "broken.json"
    broken.write_text(json.dumps(break_the_night(json.loads(GOLDEN.read_text()))))
    out: dict[str, Any] = {"html": report, "history": history, "tmp": tmp}
    for night, snapshot in (("first", GOLDEN), ("second", broken)):
        results, reports = tmp / f"{night}-results", tmp / f"{night}-reports"
        run = run_suite("--snapshot", str(snapshot), "--waivers", str(waivers), "--alluredir", str(results),
                        reports=reports)
        assert run.summary is not None, run.stdout[-2000:] + run.stderr[-2000:]
        done = harness("report", "--html", str(report), "--history", str(history), "--results", str(results),
                       "--reports-dir", str(reports))
        assert done.returncode == 0, done.stderr
        out[night] = {"run": run, "results": results, "reports": reports, "stdout": done.stdout,
                      "summary": json.loads((report / "summary.json").read_text()),
                      "history": history.read_text().splitlines()}
    return out


def test_the_second_night_reports_its_failures_to_a_reader(nights, tmp_path):
    second = nights["second"]
    assert second["run"].ids_with("fail") == {"DB-02", "ECS-07"}
    index = nights["html"] / "index.html"
    assert "googletagmanager" not in index.read_text(), "the page must not call out to analytics"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    db02, ecs07 = PLAN.requirements["DB-02"], PLAN.requirements["ECS-07"]
    text = rendered(index.as_uri(), tmp_path, f"DB-02 {db02.text}", screenshot=SCREENSHOT)
    # The tree opens on the failures, each named by its id and plan sentence under the plan's severity;
    # the passing requirements come after them.
    failing = text[text.index("Failing 2"):text.index("Passing 58")]
    assert f"DB-02 {db02.text}" in failing and f"ECS-07 {ecs07.text}" in failing
    assert re.search(r"critical 1 (?:(?!high ).)*DB-02", failing)
    assert re.search(r"high 1 (?:(?!critical ).)*ECS-07", failing)
    # The plan coverage, first block of the page.
    for name, value in (("requirements", "69"), ("fail", "2"), ("waived", "1"), ("optional-fail", "1"),
                        ("pass", "58"), ("skip", "7"), ("database", "1 fail, 12 pass"), ("not covered", "none")):
        assert re.search(rf"\b{re.escape(name)} {re.escape(value)}\b", text), f"coverage {name}: {value} not shown"
    assert "Failed 2" in text and "Skipped 9" in text  # waived, optional-fail, and the image checks (no image)
    png = SCREENSHOT.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[16:24] == (1400).to_bytes(4, "big") + (1000).to_bytes(4, "big")


def test_a_failing_requirement_opens_on_its_plan_sentence_and_evidence(nights, tmp_path):
    by_id = json.loads((nights["html"] / "test-results.json").read_text())["byId"]
    db02 = next(rid for rid, tr in by_id.items() if tr["name"].startswith("DB-02 "))
    assert by_id[db02]["status"] == "failed"
    url = f"{(nights['html'] / 'index.html').as_uri()}#/{db02}"
    text = rendered(url, tmp_path, "Multi-AZ is off")
    assert "DB-02 (critical): Multi-AZ deployment enabled" in text          # the description: the plan's sentence
    assert "db instance" in text and "application/json" in text             # the evidence attachment
    assert "Category: Failing requirements" in text
    assert re.search(r"History\s*1\b", text), "the second night's report must know the first night's DB-02"


def test_history_keeps_one_line_per_night_keyed_by_requirement(nights):
    first, second = nights["first"], nights["second"]
    assert len(first["history"]) == 1 and len(second["history"]) == 2
    assert len(first["summary"]["newTests"]) == 69, "the first night: every requirement is new"
    assert second["summary"]["newTests"] == [], "the second night knows every requirement from the first"
    one, two = (json.loads(line) for line in second["history"])
    assert one["testResults"].keys() == two["testResults"].keys()
    statuses = {night: {item["name"].split()[0]: item["status"] for item in point["testResults"].values()}
                for night, point in (("first", one), ("second", two))}
    assert statuses["first"]["DB-02"] == "passed" and statuses["second"]["DB-02"] == "failed"
    assert statuses["second"]["ALB-07"] == statuses["second"]["ALB-08"] == "skipped"
    assert "history" in second["stdout"] and "2 run(s)" in second["stdout"]


def test_rendering_the_same_night_again_does_not_count_it_twice(nights, tmp_path):
    second = nights["second"]
    history = tmp_path / "history.jsonl"
    shutil.copyfile(nights["history"], history)
    done = harness("report", "--html", str(tmp_path / "html"), "--history", str(history),
                   "--results", str(second["results"]), "--reports-dir", str(second["reports"]))
    assert done.returncode == 0, done.stderr
    lines = history.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == second["history"][0]
    assert "earlier entry replaced" in done.stdout


def test_report_without_html_still_prints_the_summary(nights):
    done = harness("report", "--reports-dir", str(nights["second"]["reports"]))
    assert done.returncode == 0
    assert "2 fail" in done.stdout and "DB-02" in done.stdout and "index.html" not in done.stdout


def test_the_drift_result_keeps_its_place_and_the_suites_results_are_not_changed(nights, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(nights["second"]["results"], results)
    drift = {"uuid": "0d0d0d0d-0000-4000-8000-000000000000", "name": "Drift since 2026-11-24T02:17:09+00:00",
             "fullName": "compliance.drift", "status": "failed", "start": 1, "stop": 1,
             "labels": [{"name": "epic", "value": "compliance"}, {"name": "feature", "value": "Drift"}]}
    (results / f"{drift['uuid']}-result.json").write_text(json.dumps(drift))
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    summary = json.loads((nights["second"]["reports"] / "summary.json").read_text())
    html_report.stage(results, summary, tmp_path / "staged")
    assert {p.name: p.read_bytes() for p in results.iterdir()} == before
    staged = {r["name"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "staged").glob("*-result.json"))}
    assert {"name": "verdict", "value": "Drift"} in staged[drift["name"]]["labels"]
    assert staged[drift["name"]]["status"] == "failed"
    db02 = staged["DB-02 Multi-AZ deployment enabled"]
    assert {"name": "verdict", "value": "Failing"} in db02["labels"] and db02["testCaseId"] == "dougust:prod:DB-02"
    alb07 = next(r for name, r in staged.items() if name.startswith("ALB-07 "))
    assert alb07["status"] == "skipped" and {"name": "tag", "value": "waived"} in alb07["labels"]


def embedded(index: Path) -> bytes:
    """What the single-file report carries base64-encoded (its data and attachments' metadata), decoded."""
    blobs = re.findall(r'"([A-Za-z0-9+/=]{200,})"', index.read_text(encoding="utf-8"))
    decoded = []
    for blob in blobs:
        try:
            decoded.append(base64.b64decode(blob, validate=True))
        except ValueError:
            continue
    return b"\n".join(decoded)


def test_the_drill_history_is_charted_per_drill_in_the_report(nights, tmp_path):
    """Two DRILL-01 runs and one DRILL-03 run in the drill history: one chart per drill among the report's
    global attachments; a report without a drill history has none."""
    reports = tmp_path / "reports"
    shutil.copytree(nights["second"]["reports"], reports)
    at = dt.datetime(2026, 12, 6, tzinfo=dt.timezone.utc)
    section = {"verdict": "pass", "rto_s": 5.0, "rto_target_s": 120, "rpo_s": 0.0, "rpo_target_s": 300,
               "lost_writes": 0}
    drill_history.append(reports / "drills" / "history.jsonl", [
        drill_history.entry(rid, {**section, "run_id": f"{rid}-{i}"}, "prod", "aws", at, None)
        for i, rid in enumerate(("DRILL-01", "DRILL-01", "DRILL-03"))])
    done = harness("report", "--html", str(tmp_path / "html"), "--results", str(nights["second"]["results"]),
                   "--reports-dir", str(reports))
    assert done.returncode == 0, done.stderr
    data = embedded(tmp_path / "html" / "index.html")
    assert b'"name":"DRILL-01 history.png"' in data and b'"name":"DRILL-03 history.png"' in data
    assert b"plan-coverage.md" in data and b"history.png" not in embedded(nights["html"] / "index.html")


# -- bad input: one line, exit 2 -----------------------------------------------------------------------------


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: "), err
    return err[0]


def test_no_results_directory(nights, tmp_path, capsys):
    code = cli.main(["report", "--html", str(tmp_path / "html"), "--results", str(tmp_path / "nothing"),
                     "--reports-dir", str(nights["second"]["reports"])])
    assert code == 2 and "--alluredir" in _one_line(capsys)


def test_results_of_another_run(nights, tmp_path, capsys):
    other = tmp_path / "results"
    shutil.copytree(nights["second"]["results"], other)
    for path in other.glob("*-result.json"):
        if '"DB-02"' in path.read_text():
            path.unlink()
    code = cli.main(["report", "--html", str(tmp_path / "html"), "--results", str(other),
                     "--reports-dir", str(nights["second"]["reports"])])
    assert code == 2 and "not of the same run" in _one_line(capsys)


def test_allure_or_node_missing_says_run_make_setup(nights, tmp_path, capsys, monkeypatch):
    args = ["report", "--html", str(tmp_path / "html"), "--results", str(nights["second"]["results"]),
            "--reports-dir", str(nights["second"]["reports"])]
    monkeypatch.setattr(html_report, "CLI", tmp_path / "no-allure" / "cli.js")
    assert cli.main(args) == 2 and "run make setup" in _one_line(capsys)
    monkeypatch.undo()
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(args) == 2 and "Node.js is not on PATH" in _one_line(capsys)
    assert not (tmp_path / "html").exists()


def test_history_needs_html_and_html_never_replaces_something_else(nights, tmp_path, capsys):
    reports = str(nights["second"]["reports"])
    assert cli.main(["report", "--history", str(tmp_path / "h.jsonl"), "--reports-dir", reports]) == 2
    assert "--html" in _one_line(capsys)
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine")
    assert cli.main(["report", "--html", str(keep), "--results", str(nights["second"]["results"]),
                     "--reports-dir", reports]) == 2
    assert "is not an HTML report" in _one_line(capsys) and (keep / "todo.txt").read_text() == "mine"


# -- the pure parts ------------------------------------------------------------------------------------------


ROW = {"id": "DB-02", "text": "Multi-AZ deployment enabled", "severity": "critical", "status": "fail",
       "message": "Multi-AZ is off", "waiver_can_go": False, "tests": []}
RESULT = {"name": "test_multi_az", "status": "failed", "fullName": "compliance.test_database#test_multi_az",
          "titlePath": ["compliance", "test_database.py"], "start": 5, "labels": [{"name": "severity", "value": "blocker"}],
          "statusDetails": {"message": "AssertionError: Multi-AZ is off\nassert False is True", "trace": "tb"}}


def test_enrich_names_the_requirement_and_keeps_pytests_message_in_the_trace():
    out = enrich(RESULT, ROW, {**ROW, "nodeid": "compliance/test_database.py::test_multi_az"}, "dougust", "prod", False)
    assert out["name"] == "DB-02 Multi-AZ deployment enabled" and out["status"] == "failed"
    assert out["testCaseId"] == "dougust:prod:DB-02"
    assert out["statusDetails"] == {"message": "Multi-AZ is off",
                                    "trace": "AssertionError: Multi-AZ is off\nassert False is True\n\ntb"}
    assert {"name": "plan severity", "value": "critical"} in out["labels"]
    assert RESULT["name"] == "test_multi_az", "the suite's own result is not changed"


@pytest.mark.parametrize("status, allure, tag", [("pass", "passed", None), ("error", "broken", None),
                                                 ("skip", "skipped", None), ("waived", "skipped", "waived"),
                                                 ("optional-fail", "skipped", "optional-fail")])
def test_statuses_map_to_allures(status, allure, tag):
    details = {"message": "XFAIL waived until 2099-01-01 by ops: r\n\nAssertionError: access logs are off\nassert x"}
    out = enrich({**RESULT, "statusDetails": details}, {**ROW, "status": status, "message": "why"}, None, "d", "p", False)
    assert out["status"] == allure
    assert ({"name": "tag", "value": tag} in out["labels"]) == (tag is not None)
    if tag:
        assert out["statusDetails"]["message"] == "why; seen: access logs are off"


def test_a_requirement_carried_by_several_tests_keeps_them_apart():
    assert requirement_case_id("d", "prod", "SMK-01", "smoke.test_smoke#test_smoke_check", shared=False) == "d:prod:SMK-01"
    assert requirement_case_id("d", "prod", "X-01", "a#t1", True) != requirement_case_id("d", "prod", "X-01", "a#t2", True)


def test_nodeid_of_an_allure_pytest_result():
    assert nodeid_of(RESULT) == "compliance/test_database.py::test_multi_az"
    smoke = {"name": "test_smoke_check[SMK-01 health]", "titlePath": ["smoke", "test_smoke.py"]}
    assert nodeid_of(smoke) == "smoke/test_smoke.py::test_smoke_check[SMK-01 health]"
    assert nodeid_of({"name": "t", "titlePath": ["a", "b", "test_x.py", "TestC"]}) == "a/b/test_x.py::TestC::t"


def test_same_run_compares_start_times():
    point = {"testResults": {"a": {"start": 1}, "b": {"start": 2}}}
    assert same_run(point, [2, 1]) and not same_run(point, [1, 3]) and not same_run({"testResults": {}}, [])


def test_a_history_line_that_is_not_json_stops_the_report(tmp_path):
    history = tmp_path / "history.jsonl"
    history.write_text('{"testResults": {}}\n{"testRes\n')
    with pytest.raises(html_report.ReportInputError, match=r"history\.jsonl:2 is not a JSON line"):
        html_report.stage_history(history, [1], tmp_path / "staged.jsonl")


def test_analytics_are_removed_or_the_report_is_refused():
    page = ('<body>\n    <script async src="https://www.googletagmanager.com/gtag/js?id=G-X"></script>\n'
            '    <script>\n        window.dataLayer = window.dataLayer || [];\n        gtag("config");\n'
            '    </script>\n    <script>data()</script></body>')
    assert without_analytics(page) == "<body>\n    <script>data()</script></body>"
    with pytest.raises(ReportToolError):
        without_analytics('<script src="https://www.googletagmanager.com/x.js" defer></script>')
