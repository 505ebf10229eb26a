"""§6 Secrets Management."""
from __future__ import annotations

import pytest


@pytest.mark.requirement("SEC-01")
def test_secrets_exist(secrets, plan, env_name, expect, evidence):
    names = {s["Name"] for s in secrets if not s.get("DeletedDate")}
    evidence("secrets", sorted(names))
    missing = [plan.secret_prefix(env_name) + n for n in expect["names"] if plan.secret_prefix(env_name) + n not in names]
    assert not missing, f"missing secrets: {missing}"


@pytest.mark.requirement("SEC-02")
def test_database_secret_rotation(secrets, plan, env_name, expect, evidence):
    name = plan.secret_prefix(env_name) + expect["secret"]
    secret = next((s for s in secrets if s["Name"] == name), None)
    evidence("database secret", secret and {k: secret.get(k) for k in ("Name", "RotationEnabled", "RotationRules",
                                                                      "RotationLambdaARN")})
    assert secret, f"secret {name} does not exist"
    assert secret.get("RotationEnabled") is True, f"rotation is not configured for {name}"
