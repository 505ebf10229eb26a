"""What a run leaves behind: Allure results and JUnit carry the requirement, the summary the figures."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from support.suites import GOLDEN, run_suite


def test_allure_junit_and_summary_carry_the_requirement(tmp_path):
    allure_dir, junit = tmp_path / "allure", tmp_path / "junit.xml"
    run = run_suite("--snapshot", str(GOLDEN), "--alluredir", str(allure_dir), "--junitxml", str(junit),
                    reports=tmp_path / "reports")
    assert run.returncode == 0

    results = [json.loads(p.read_text()) for p in allure_dir.glob("*-result.json")]
    assert len(results) == 69  # the image checks skip: a saved snapshot does not hold the image
    db02 = next(r for r in results if {"name": "requirement", "value": "DB-02"} in r["labels"])
    labels = {(label["name"], label["value"]) for label in db02["labels"]}
    assert {("epic", "compliance"), ("feature", "2 Database"), ("story", "DB-02"), ("severity", "blocker"),
            ("tag", "database")} <= labels
    assert db02["description"] == "DB-02 (critical): Multi-AZ deployment enabled"
    attachment = db02["attachments"][0]
    evidence = json.loads((allure_dir / attachment["source"]).read_text())
    assert evidence["MultiAZ"] is True and attachment["type"] == "application/json"

    cases = ET.parse(junit).getroot().iter("testcase")
    requirements = {p.get("value") for case in cases for p in case.iter("property") if p.get("name") == "requirement"}
    assert len(requirements) == 69 and "NET-08" in requirements

    summary = run.summary
    assert summary["counts"]["pass"] == 62 and summary["by_area"]["database"]["pass"] == 13
    assert set(summary) >= {"api_calls", "duration_s", "counts", "by_area", "uncovered", "requirements"}
    row = next(r for r in summary["requirements"] if r["id"] == "ALB-03")
    assert (row["section"], row["severity"], row["area"]) == ("4 Load Balancing, Domain & SSL", "high", "load balancing")
    assert "api_calls 0, duration_s" in run.stdout and "69 requirements: 7 skip, 62 pass" in run.stdout
