"""The nightly HTML report: the suites' Allure results, made to read as plan coverage, rendered by Allure 3.

Allure 3 (the npm package `allure`, installed by `make setup` into `allure3/node_modules`, run with Node.js)
renders the report; `allure3/allurerc.mjs` says how it looks. This module prepares what it renders:

- a copy of the results (the suite's own directory is never changed), each result named after its
  requirement ("DB-02 Multi-AZ deployment enabled"), its status reconciled with `summary.json` (the
  harness's verdict: an error is Allure's "broken" even when pytest raised `Failed`), waived and optional
  failures tagged as such (allure-pytest writes them as skipped with an XFAIL message), and a test case
  id that is the requirement's, so a requirement keeps its trend when its test is renamed or moved;
- the plan coverage from `summary.json` as report variables (the first block of the report) and, with the
  run's facts (endpoint, snapshot, API calls), as a Markdown global attachment;
- the history: Allure 3 appends one JSON line per report to `--history`. It works on a copy that replaces
  the file only when the report was written, and rendering the same results again replaces their line
  instead of adding a second one, so a retried nightly job does not count the night twice.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report.allure import DRIFT_RESULT
from harness.util.files import write_atomic
from harness.util.redact import mask_url_passwords

TOOL_DIR = Path(__file__).resolve().parents[2] / "allure3"
CONFIG = TOOL_DIR / "allurerc.mjs"
CLI = TOOL_DIR / "node_modules" / "allure" / "cli.js"
NODE_MAJOR = 20
GENERATE_TIMEOUT_S = 600

# The harness's statuses in Allure's words. Allure has no xfail: allure-pytest writes an xfailed test as
# skipped with "XFAIL <reason>", so waived and optional failures stay skipped and carry a tag saying which.
ALLURE_STATUS = {"pass": "passed", "fail": "failed", "error": "broken", "skip": "skipped",
                 "waived": "skipped", "optional-fail": "skipped"}
TAGGED = {"waived": "waived", "optional-fail": "optional-fail"}
# The labels the report's tree groups by. First the verdict: Allure orders sibling groups by their counts
# (failed, then broken, then passed), so "Failing" always comes first and holds only the failures; then the
# plan's own severity words (Allure's severity label keeps its vocabulary, blocker/critical/normal/minor,
# for its filter, charts and categories).
VERDICT, PLAN_SEVERITY = "verdict", "plan severity"
VERDICTS = {"fail": "Failing", "error": "Could not be judged (error)", "waived": "Waived",
            "optional-fail": "Optional, failing", "skip": "Not observable on this target", "pass": "Passing"}
COVERAGE_FILE = "plan-coverage.md"


class ReportInputError(Exception):
    """Input the report cannot be made from; the message is one line naming the fix."""


class ReportToolError(Exception):
    """Allure itself failed; the message is one line."""


@dataclass
class Rendered:
    index: Path
    seconds: float
    results: int
    history_runs: int | None
    replaced_same_run: bool


# -- pure parts ----------------------------------------------------------------------------------------------


def counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "none"


def coverage_variables(summary: dict[str, Any]) -> dict[str, str]:
    """The report's first block, the plan coverage: requirements checked, how many in each status, the plan
    requirements no test carries, then each plan area. Allure shows a variable's value on one short line,
    so each holds one figure or one area."""
    variables = {"requirements": str(summary["requirements_checked"])}
    variables.update({status: str(n) for status, n in summary["counts"].items() if n})
    variables["not covered"] = ", ".join(summary.get("uncovered") or []) or "none"
    if summary.get("waivers_can_go"):
        variables["waivers can go"] = ", ".join(summary["waivers_can_go"])
    # Areas with something failing or erroring first: Allure shows the first few variables and folds the rest.
    areas = sorted(summary.get("by_area", {}).items(), key=lambda item: not (item[1].get("fail") or item[1].get("error")))
    for area, counts in areas:
        variables[area] = counts_line(counts)
    return variables


def report_name(summary: dict[str, Any]) -> str:
    """The report's title. Its date line is when the suite ran; a replayed snapshot was taken earlier, so
    the title says when. (The run's other facts are in plan-coverage.md: a taller header pushes the first
    failure below the fold, and Allure then scrolls the header away to show it.)"""
    name = f"{str(summary.get('project', '')).capitalize()} {summary.get('env', '')} on {summary.get('target', '')}"
    name += ": plan compliance"
    taken = summary.get("snapshot_taken_at")
    if summary.get("replayed_snapshot") and taken:
        try:
            taken = dt.datetime.fromisoformat(taken).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            pass
        name += f" (snapshot taken {taken})"
    return name


def coverage_markdown(summary: dict[str, Any]) -> str:
    """The plan coverage in full: the run's facts, a table per plan area, every requirement that did not pass."""
    statuses = list(summary["counts"])
    facts = {"endpoint": summary.get("endpoint"), "snapshot taken at": summary.get("snapshot_taken_at"),
             "replayed snapshot": "yes" if summary.get("replayed_snapshot") else "no",
             "AWS API calls": summary.get("api_calls"), "suite duration (s)": summary.get("duration_s")}
    lines = [f"# Plan coverage: {summary.get('project', '')} {summary.get('env', '')} on {summary.get('target', '')}",
             "", f"{summary['requirements_checked']} requirements: {counts_line(summary['counts'])}", "",
             *(f"- {k}: {v}" for k, v in facts.items() if v not in (None, "")), "",
             "| area | " + " | ".join(statuses) + " |", "|---|" + "---:|" * len(statuses)]
    for area, counts in summary.get("by_area", {}).items():
        lines.append(f"| {area} | " + " | ".join(str(counts.get(s, 0)) for s in statuses) + " |")
    lines.append("| **all** | " + " | ".join(f"**{summary['counts'][s]}**" for s in statuses) + " |")
    if summary.get("uncovered"):
        lines += ["", "Plan requirements no test carries: " + ", ".join(summary["uncovered"])]
    open_rows = [r for r in summary.get("requirements", []) if r["status"] != "pass"]
    if open_rows:
        lines += ["", "| requirement | severity | status | plan | what was seen |", "|---|---|---|---|---|"]
        for row in open_rows:
            cells = [row["id"], row["severity"], row["status"], row["text"], row["message"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def nodeid_of(result: dict[str, Any]) -> str | None:
    """pytest's node id of an allure-pytest result: its title path (directories, the file, classes) and name."""
    path = result.get("titlePath") or []
    name = result.get("name")
    if not path or not name:
        return None
    files = [i for i, part in enumerate(path) if part.endswith(".py")]
    if not files:
        return None
    cut = files[-1] + 1
    return "::".join(["/".join(path[:cut]), *path[cut:], name])


def label(result: dict[str, Any], name: str) -> str | None:
    return next((lb.get("value") for lb in result.get("labels", []) if lb.get("name") == name), None)


def requirement_case_id(project: str, env: str, rid: str, full_name: str | None, shared: bool) -> str:
    """The test case identity Allure 3 keys history by: the requirement, not the test function, so a rename
    keeps the trend; the function too when several tests carry one requirement, so they stay apart."""
    base = f"{project}:{env}:{rid}"
    return f"{base}:{full_name}" if shared else base


def enrich(result: dict[str, Any], row: dict[str, Any], test: dict[str, Any] | None, project: str, env: str,
           shared: bool) -> dict[str, Any]:
    """One result as the report shows it: named after its requirement, with the harness's verdict."""
    out = dict(result)
    rid = row["id"]
    out["name"] = f"{rid} {row['text']}"
    out["testCaseId"] = requirement_case_id(project, env, rid, result.get("fullName"), shared)
    verdict = test or row
    status = verdict["status"]
    labels = [lb for lb in result.get("labels", []) if lb.get("name") not in (VERDICT, PLAN_SEVERITY)]
    labels += [{"name": VERDICT, "value": VERDICTS[status]}, {"name": PLAN_SEVERITY, "value": row["severity"]}]
    if status in TAGGED or (status == "pass" and row.get("waiver_can_go")):
        tag = TAGGED.get(status, "waiver can go")
        if {"name": "tag", "value": tag} not in labels:
            labels.append({"name": "tag", "value": tag})
    out["labels"] = labels
    out["status"] = ALLURE_STATUS[status]
    details = statement(result.get("statusDetails") or {}, status, verdict.get("message") or "")
    if details:
        out["statusDetails"] = details
    return out


def statement(details: dict[str, Any], status: str, message: str) -> dict[str, Any]:
    """The error block of a result: the harness's one-line message (what was seen), pytest's own message
    kept at the head of the trace. A waived or optional failure says both why it is accepted and what
    was seen ("XFAIL <reason>" then the assertion, in allure-pytest's message)."""
    details = dict(details)
    original = details.get("message") or ""
    if status in ("pass", "skip") or not message or message == original:
        return details
    if status in TAGGED:
        seen = original.split("\n\n", 1)[1] if "\n\n" in original else ""
        seen = seen.strip().splitlines()[0].removeprefix("AssertionError: ") if seen.strip() else ""
        details["message"] = f"{message}; seen: {seen}" if seen else message
    else:
        details["message"] = message
    if original:
        details["trace"] = original + ("\n\n" + details["trace"] if details.get("trace") else "")
    return details


# Allure's report pages load Google's tag manager and report each opening to Google Analytics (the awesome
# plugin has no switch for it). A compliance report names accounts and resources; it stays on the reader's
# machine.
ANALYTICS = re.compile(r'\s*<script async src="https://www\.googletagmanager\.com/[^"]*"></script>'
                       r'\s*<script>\s*window\.dataLayer = .*?</script>', re.DOTALL)


def without_analytics(html: str) -> str:
    stripped = ANALYTICS.sub("", html, count=1)
    if "googletagmanager" in stripped:
        raise ReportToolError("the report page still loads Google's tag manager; the Allure version changed its "
                              "page, so update ANALYTICS in harness/report/html.py")
    return stripped


def same_run(point: dict[str, Any], starts: list[int]) -> bool:
    """Whether a history line was written for these very results (their start times, to the millisecond)."""
    seen = sorted(int(item.get("start") or 0) for item in (point.get("testResults") or {}).values())
    return bool(starts) and seen == sorted(starts)


# -- staging the results -------------------------------------------------------------------------------------


def load_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReportInputError(f"{path} does not exist; run a suite first (make verify)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportInputError(f"{path} is not JSON ({exc}); run a suite again") from None
    if not (isinstance(summary, dict) and isinstance(summary.get("requirements"), list)
            and isinstance(summary.get("counts"), dict)):
        raise ReportInputError(f"{path} is not a harness summary; run a suite again")
    return summary


def read_results(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    if not results_dir.is_dir():
        raise ReportInputError(f"{results_dir} is not a directory of Allure results; run the suite with "
                               f"--alluredir {results_dir} --clean-alluredir")
    results = []
    for path in sorted(results_dir.glob("*-result.json")):
        try:
            results.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except ValueError:
            raise ReportInputError(f"{path} is not valid JSON; run the suite again") from None
    if not results:
        raise ReportInputError(f"{results_dir} holds no Allure results; run the suite with --alluredir {results_dir}")
    return results


def stage(results_dir: Path, summary: dict[str, Any], staging: Path) -> list[int]:
    """Copy the results into `staging` as the report shows them; returns the results' start times."""
    results = read_results(results_dir)
    rows = {row["id"]: row for row in summary["requirements"]}
    carried = [(path, r, label(r, "requirement")) for path, r in results]
    in_results = {rid for _, _, rid in carried if rid}
    if in_results != set(rows):
        only_results = sorted(in_results - set(rows))
        only_summary = sorted(set(rows) - in_results)
        raise ReportInputError(
            f"{results_dir} and the summary are not of the same run (only in the results: "
            f"{', '.join(only_results) or 'none'}; only in the summary: {', '.join(only_summary) or 'none'}); "
            f"run the suite with --alluredir {results_dir} --clean-alluredir")
    per_test = Counter(nodeid_of(r) or r.get("fullName") or "" for _, r, rid in carried if rid)
    repeated = sorted(k for k, n in per_test.items() if n > 1)
    if repeated:
        raise ReportInputError(f"{results_dir} holds more than one run ({repeated[0]} twice); run the suite with "
                               f"--alluredir {results_dir} --clean-alluredir")
    shutil.copytree(results_dir, staging)
    project, env = summary.get("project", ""), summary.get("env", "")
    tests_per_rid = Counter(rid for _, _, rid in carried if rid)
    starts = []
    for path, result, rid in carried:
        if result.get("start") is not None:
            starts.append(int(result["start"]))
        if not rid:
            # A result of the run that is not a requirement (the drift since last night) gets a group of
            # its own, named by its feature, instead of trailing the tree ungrouped.
            group = label(result, "feature")
            if group and not label(result, VERDICT):
                result = {**result, "labels": [*result.get("labels", []), {"name": VERDICT, "value": group}]}
                (staging / path.name).write_text(json.dumps(result), encoding="utf-8")
            continue
        row = rows[rid]
        tests = row.get("tests") or []
        test = tests[0] if len(tests) == 1 else next((t for t in tests if t["nodeid"] == nodeid_of(result)), None)
        enriched = enrich(result, row, test, project, env, shared=tests_per_rid[rid] > 1)
        (staging / path.name).write_text(json.dumps(enriched), encoding="utf-8")
    _without_url_passwords(staging)
    return starts


def _without_url_passwords(directory: Path) -> None:
    """Every text file of the staged results (results, attachments) with no URL's password in it, as every
    output of the harness (harness.util.redact); binary attachments (PNG charts) are left as they are."""
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        masked = mask_url_passwords(text)
        if masked != text:
            path.write_text(masked, encoding="utf-8")


def stage_history(history: Path, starts: list[int], staged: Path) -> bool:
    """Copy the history for Allure to append to, without a line these same results wrote before; returns
    whether there was such a line."""
    lines: list[str] = []
    if history.exists():
        for n, line in enumerate(history.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError:
                raise ReportInputError(f"{history}:{n} is not a JSON line of Allure history; "
                                       f"restore the file or remove that line") from None
            lines.append(line)
    dropped = bool(lines) and same_run(json.loads(lines[-1]), starts)
    if dropped:
        lines.pop()
    staged.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return dropped


# -- running Allure ------------------------------------------------------------------------------------------


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise ReportInputError(f"Node.js is not on PATH; the HTML report needs Node.js {NODE_MAJOR}+, "
                               f"then run make setup")
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ReportInputError(f"{node} does not run ({exc}); install Node.js {NODE_MAJOR}+, then run make setup") from None
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < NODE_MAJOR:
        raise ReportInputError(f"{node} is {version or 'of an unknown version'}; the HTML report needs Node.js "
                               f"{NODE_MAJOR}+, then run make setup")
    if not CLI.is_file():
        raise ReportInputError(f"Allure 3 is not installed in {TOOL_DIR}; run make setup")
    return [node, str(CLI)]


def _check_output_dir(html: Path, protected: list[Path]) -> None:
    target = html.resolve()
    for path in protected:
        p = path.resolve()
        if target == p or target in p.parents:
            raise ReportInputError(f"--html {html} would replace {path}; choose a directory of its own")
    if target == Path.cwd().resolve() or target == TOOL_DIR.parent or target == Path(target.anchor):
        raise ReportInputError(f"--html {html} would replace {target}; choose a directory of its own")
    if html.exists() and (not html.is_dir() or (any(html.iterdir()) and not (html / "index.html").exists())):
        raise ReportInputError(f"{html} exists and is not an HTML report; choose another --html")


def drill_history_charts(path: Path | None, out_dir: Path) -> list[Path]:
    """Per drill in the drill history, a chart of its RTO and RPO over the runs (none without a history)."""
    if path is None or not path.is_file():
        return []
    from harness.drills import chart, history

    entries, _ = history.read(path)  # `harness drills history` names the lines it skips
    drills = sorted({line["drill"] for line in entries})
    return [chart.draw_history(drill, [line for line in entries if line["drill"] == drill],
                               out_dir / f"{drill} history.png") for drill in drills]


def render(results_dir: Path, summary_path: Path, html: Path, history: Path | None = None,
           reports_dir: Path | None = None, drill_history: Path | None = None) -> Rendered:
    """Render `html`/index.html (one self-contained file) from the results and their summary; with
    `history`, read the earlier runs from it and append this one; with `drill_history`, a chart per drill
    of its runs."""
    summary = load_summary(summary_path)
    protected = [results_dir, summary_path] + ([history] if history else [])
    _check_output_dir(html, protected)
    command = node_command()
    html.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="harness-report-") as tmp:
        work = Path(tmp)
        staging = work / "results"
        starts = stage(results_dir, summary, staging)
        (work / COVERAGE_FILE).write_text(coverage_markdown(summary), encoding="utf-8")
        attachments = [str(work / COVERAGE_FILE)]
        drift = (reports_dir or summary_path.parent) / "drift.md"
        # Only this run's drift: a drift.md left by an earlier run with --baseline is not tonight's.
        if summary.get("drift") and drift.is_file() and not _has_drift_result(staging):
            attachments.append(str(drift.resolve()))
        attachments += [str(chart) for chart in drill_history_charts(drill_history, work / "drill-history")]
        history_runs, replaced = None, False
        staged_history = work / "history.jsonl"
        if history is not None:
            replaced = stage_history(history, starts, staged_history)
        run = {
            "name": report_name(summary),
            "historyPath": str(staged_history) if history is not None else None,
            "variables": coverage_variables(summary),
            "globalAttachments": attachments,
        }
        (work / "run.json").write_text(json.dumps(run), encoding="utf-8")
        out = work / "html"
        env = {**os.environ, "HARNESS_ALLURE_RUN": str(work / "run.json"), "NO_COLOR": "1"}
        started = time.perf_counter()
        try:
            proc = subprocess.run([*command, "generate", "--config", str(CONFIG), "--output", str(out), str(staging)],
                                  cwd=work, env=env, capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ReportToolError(f"allure generate did not finish in {GENERATE_TIMEOUT_S} s") from None
        seconds = time.perf_counter() - started
        if proc.returncode != 0 or not (out / "index.html").is_file():
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise ReportToolError(f"allure generate failed (exit {proc.returncode}): {last[:300]}")
        index = out / "index.html"
        index.write_text(without_analytics(index.read_text(encoding="utf-8")), encoding="utf-8")
        _replace_dir(out, html)
        if history is not None:
            write_atomic(history, staged_history.read_bytes())
            # Allure keeps at most the config's historyLimit lines.
            history_runs = sum(1 for line in staged_history.read_text(encoding="utf-8").splitlines() if line.strip())
    return Rendered(html / "index.html", seconds, len(starts), history_runs, replaced)


def _has_drift_result(staging: Path) -> bool:
    for path in staging.glob("*-result.json"):
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("fullName") == DRIFT_RESULT:
                return True
        except ValueError:
            continue
    return False


def _replace_dir(new: Path, html: Path) -> None:
    """Put the new report in place; the old one is removed only once the new one is beside it."""
    incoming = html.with_name(f".{html.name}.new")
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.copytree(new, incoming)
    if html.exists():
        old = html.with_name(f".{html.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        html.rename(old)
        incoming.rename(html)
        shutil.rmtree(old, ignore_errors=True)
    else:
        incoming.rename(html)
