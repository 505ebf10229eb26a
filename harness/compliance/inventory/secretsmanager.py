"""The secrets part (Secrets Manager): the secrets whose names start with the plan's prefix for the
environment (secrets are found by name, not by tags)."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import Fetcher


def fetch(f: Fetcher) -> None:
    def secrets() -> list[dict[str, Any]]:
        return [s for s in f.paginate("secretsmanager", "list_secrets", "SecretList",
                                      Filters=[{"Key": "name", "Values": [f.secret_prefix]}])
                if s["Name"].startswith(f.secret_prefix)]

    f.run("secrets", (), secrets)
