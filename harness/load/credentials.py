"""The shape of the load accounts, defined once for both sides of a load run: the harness checks the
accounts it fetched (a file, a secret) with it, and each Locust process checks the file it logs in from.
It imports nothing, as Locust's processes import it."""
from __future__ import annotations

from typing import Any


def usable_accounts(value: Any) -> list[dict[str, str]] | None:
    """The accounts in a parsed JSON document, each reduced to its email and password; None unless it is
    a non-empty list of {"email", "password"} whose values are non-empty strings."""
    if not isinstance(value, list) or not value or not all(
            isinstance(a, dict) and isinstance(a.get("email"), str) and isinstance(a.get("password"), str)
            and a["email"] and a["password"] for a in value):
        return None
    return [{"email": a["email"], "password": a["password"]} for a in value]
