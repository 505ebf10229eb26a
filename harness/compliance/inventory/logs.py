"""The log parts (CloudWatch Logs): the log groups the discovered task definitions write to, found through
their awslogs configuration."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import Fetcher


def fetch(f: Fetcher) -> None:
    def log_groups() -> list[dict[str, Any]]:
        names = {c.get("logConfiguration", {}).get("options", {}).get("awslogs-group")
                 for td in f.inv.parts["task_definitions"] for c in td.get("containerDefinitions", [])}
        found = []
        for name in sorted(n for n in names if n):
            found += [g for g in f.paginate("logs", "describe_log_groups", "logGroups", logGroupNamePrefix=name)
                      if g["logGroupName"] == name]
        return found

    f.run("log_groups", ("task_definitions",), log_groups)
