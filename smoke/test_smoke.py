"""The post-deploy gate (SMK-01 to SMK-10 in docs/requirements.md): the new version serving correctly through the ALB.

Each check holds when the gate's last round saw it hold; its message says what was seen otherwise.
"""
from __future__ import annotations

import pytest

CHECKS = {
    "SMK-01": "health reports the app and its database up",
    "SMK-02": "HTTP redirects to HTTPS",
    "SMK-03": "TLS certificate and protocol",
    "SMK-04": "security headers",
    "SMK-05": "latency budget",
    "SMK-06": "auth round trip",
    "SMK-07": "stickiness",
    "SMK-08": "the expected version answers",
    "SMK-09": "an unknown route is a JSON 404",
    "SMK-10": "no task of the deployment stopped",
}


@pytest.mark.parametrize("rid", [pytest.param(rid, marks=pytest.mark.requirement(rid), id=f"{rid} {what}")
                                 for rid, what in CHECKS.items()])
def test_smoke_check(rid, verdict, evidence):
    evidence("observed", verdict.evidence)
    assert verdict.ok, verdict.message
