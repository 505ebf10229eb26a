"""The audit part (CloudTrail): the account's trails and whether each one is logging; trails are
account-wide, so they are read whole rather than found by tags."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import Fetcher


def fetch(f: Fetcher) -> None:
    def trails() -> list[dict[str, Any]]:
        out = []
        for trail in f.call("cloudtrail", "describe_trails", includeShadowTrails=False).get("trailList", []):
            status = f.call("cloudtrail", "get_trail_status", Name=trail["TrailARN"])
            out.append({**trail, "IsLogging": status.get("IsLogging")})
        return out

    f.run("trails", (), trails)
