"""Load before launch: the plan's SLOs at the profile's load (LOAD-01), the planned throughput with a
generator that was not the bottleneck (LOAD-02), scale-out under sustained load (LOAD-03), and no
regression against an earlier run (LOAD-04)."""
from __future__ import annotations

from pathlib import Path

import allure
import pytest

from harness.load import baseline, judges
from harness.load.session import table
from harness.verdict import Verdict


@pytest.mark.requirement("LOAD-01")
def test_latency_and_errors_within_the_slos(load_run, expect, evidence, conclude) -> None:
    verdict = judges.latency(load_run.results, expect)
    evidence("figures per phase and endpoint", verdict.evidence)
    allure.attach("\n".join(table(load_run.section())), name="endpoints (steady phase)",
                  attachment_type=allure.attachment_type.TEXT)
    if load_run.chart:
        allure.attach.file(str(load_run.chart), name="latency and throughput over time",
                           attachment_type=allure.attachment_type.PNG)
    html = load_run.result.files.get("html")
    if html and Path(html).exists():
        allure.attach.file(html, name="Locust report", attachment_type=allure.attachment_type.HTML)
    conclude(verdict)


@pytest.mark.requirement("LOAD-02")
def test_planned_throughput_reached_by_an_unsaturated_generator(load_run, expect, evidence, conclude) -> None:
    verdict = judges.throughput(load_run.results, load_run.profile.rate_per_s, expect)
    evidence("throughput and generator", verdict.evidence)
    conclude(verdict)


@pytest.mark.requirement("LOAD-03")
def test_service_scales_out_under_sustained_load(load_run, expect, evidence, conclude) -> None:
    observer = load_run.scaling
    if observer is None:
        conclude(Verdict("skip", "the service's scaling cannot be observed on this target"))
    if observer.problem:
        conclude(Verdict("error", observer.problem))
    budget = float(expect["scale_out_within_s"]) * load_run.time_scale
    steady_s = load_run.profile.steady_s
    verdict = judges.scale_out(observer.samples, load_run.load_start_s, budget, steady_s, load_run.cpu_target,
                               observer.cpu_peak())
    evidence("desired and running counts", {"samples": observer.samples, **(verdict.evidence or {})})
    conclude(verdict)


@pytest.mark.requirement("LOAD-04")
def test_no_regression_against_the_baseline(load_run, compared, evidence, conclude) -> None:
    verdict = compared
    evidence("this run against the baseline", {"file": load_run.baseline["file"], **(verdict.evidence or {})})
    allure.attach("\n".join(baseline.table(load_run.baseline["rows"])), name="against the baseline",
                  attachment_type=allure.attachment_type.TEXT)
    allure.attach.file(load_run.baseline["chart"], name="baseline and this run over time",
                       attachment_type=allure.attachment_type.PNG)
    conclude(verdict)
