"""The post-deploy gate (REQUIREMENTS.md, Smoke): the new version serving correctly through the ALB.

Each check holds when the gate's last round saw it hold; its message says what was seen otherwise.
"""
from __future__ import annotations

import pytest


def _holds(verdict, evidence):
    evidence("observed", verdict.evidence)
    assert verdict.ok, verdict.message


@pytest.mark.requirement("SMK-01")
def test_health_reports_app_and_database_up(verdict, evidence):
    _holds(verdict, evidence)


@pytest.mark.requirement("SMK-02")
def test_http_redirects_to_https(verdict, evidence):
    _holds(verdict, evidence)


@pytest.mark.requirement("SMK-03")
def test_tls_certificate_and_protocol(verdict, evidence):
    _holds(verdict, evidence)


@pytest.mark.requirement("SMK-04")
def test_security_headers(verdict, evidence):
    _holds(verdict, evidence)


@pytest.mark.requirement("SMK-05")
def test_latency_budget(verdict, evidence):
    _holds(verdict, evidence)


@pytest.mark.requirement("SMK-06")
def test_auth_round_trip(verdict, evidence):
    _holds(verdict, evidence)


@pytest.mark.requirement("SMK-07")
def test_stickiness(verdict, evidence):
    _holds(verdict, evidence)


@pytest.mark.requirement("SMK-08")
def test_expected_version_answers(verdict, evidence):
    _holds(verdict, evidence)


@pytest.mark.requirement("SMK-09")
def test_unknown_route_is_json_404(verdict, evidence):
    _holds(verdict, evidence)
