"""Secret values never leave the harness: names that carry credentials have their values masked."""
from __future__ import annotations

import re
from typing import Any

MASK = "***redacted***"
SENSITIVE_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|PRIVATE|API_KEY|ACCESS_KEY|CREDENTIAL|DATABASE_URL|_DSN$|TOKEN$",
                            re.IGNORECASE)


def redact_environment(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mask the value of every `{"name", "value"}` pair whose name looks like a credential."""
    return [{**p, "value": MASK} if SENSITIVE_NAME.search(str(p.get("name", ""))) else p for p in pairs]
