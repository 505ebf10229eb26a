"""Secret values never leave the harness.

Deny by default: every value of a container's `environment` is masked unless the plan names the variable as
plain (`plain` in ECS-05's expected values), and a plain variable whose value looks like a credential is
masked as well. A password inside a URL (scheme://user:PASSWORD@host) is masked in every string that reaches
a snapshot or a report. What a masked value looked like ("a URL with a password", "an AWS access key id")
is kept beside it as `credential`, so ECS-05 can judge a value that nobody can read afterwards.
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection
from typing import Any

MASK = "***redacted***"
# Names that carry credentials, for places that see names only (an image's config, a key of a resource).
SENSITIVE_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|PRIVATE|API_KEY|ACCESS_KEY|CREDENTIAL|DATABASE_URL|_DSN$|TOKEN$",
                            re.IGNORECASE)
# ECS-05's names of a credential in a plain variable: *PASS*, *SECRET*, *TOKEN*, *_KEY, *PAT.
CREDENTIAL_NAME = re.compile(r"PASS|SECRET|TOKEN|_KEY$|PAT$", re.IGNORECASE)
# The requirement whose expected values name the plain (non-secret) container variables.
PLAIN_REQUIREMENT = "ECS-05"

URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?P<password>[^\s/@]+)(?=@)")
CREDENTIAL_VALUES = (
    ("a URL with a password", URL_PASSWORD),
    ("an AWS access key id", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("a Stripe live key", re.compile(r"\b[sr]k_live_[A-Za-z0-9]{8,}")),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    ("a Slack webhook", re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/]+", re.IGNORECASE)),
    ("a PEM private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")),
)
# Three base64url segments; a JWT when the first decodes to a JSON header naming its algorithm.
JWT_SHAPE = re.compile(r"(?<![A-Za-z0-9_\-])([A-Za-z0-9_\-]{10,})\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*")


def mask_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it masked: redis://:pw@host -> redis://:***redacted***@host."""
    return URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def _is_jwt(text: str) -> bool:
    for match in JWT_SHAPE.finditer(text):
        header = match.group(1)
        try:
            decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        except ValueError:  # not base64, not UTF-8 or not JSON
            continue
        if isinstance(decoded, dict) and "alg" in decoded:
            return True
    return False


def credential_kind(value: str) -> str | None:
    """What credential `value` holds, in words ("a GitHub token"), or None when it looks like none."""
    for kind, pattern in CREDENTIAL_VALUES:
        if pattern is URL_PASSWORD:  # a password masked already is none
            if any(m.group("password") != MASK for m in pattern.finditer(value)):
                return kind
        elif pattern.search(value):
            return kind
    return "a JWT" if _is_jwt(value) else None


def secret_variable(name: str, value: str) -> str | None:
    """Why a variable where no plan names what is plain (an image's config) holds a secret, or None: its value
    looks like a credential, or a non-empty value sits under a credential's name."""
    if not value:
        return None
    kind = credential_kind(value)
    if kind:
        return f"its value is {kind}"
    return "its name is a credential's" if SENSITIVE_NAME.search(name) or CREDENTIAL_NAME.search(name) else None


def plain_variables(plan: Any, env: str) -> frozenset[str]:
    """The container variables the plan names as plain (shown in reports); every other value is masked."""
    req = plan.requirements.get(PLAIN_REQUIREMENT)
    return frozenset(req.expected(env).get("plain", ())) if req else frozenset()


def redact_environment(pairs: list[dict[str, Any]], plain: Collection[str] = frozenset()) \
        -> list[dict[str, Any]]:
    """Mask the value of every `{"name", "value"}` pair, except a variable of `plain` whose value looks like
    no credential (and an empty value, which holds nothing). A masked value that looked like a credential
    says which kind under `credential`. Masking a masked list changes nothing."""
    out = []
    for pair in pairs:
        value = pair.get("value")
        if value is None or value == "" or value == MASK:
            out.append(pair)
            continue
        kind = credential_kind(str(value))
        if pair.get("name") in plain and kind is None:
            out.append(pair)
        else:
            out.append({**pair, "value": MASK, **({"credential": kind} if kind else {})})
    return out


def _environment_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(e, dict) and "name" in e for e in value)


def redact(value: Any, plain: Collection[str] | None = frozenset()) -> Any:
    """`value` (a snapshot, a summary, evidence: JSON-shaped data) as it may be written anywhere: every
    `environment` list of name/value pairs masked but for `plain`, every URL's password masked. With `plain`
    None, the URLs' passwords only (for data already masked with the plan's plain variables)."""
    if isinstance(value, str):
        return mask_url_passwords(value)
    if isinstance(value, dict):
        if plain is not None and _environment_list(value.get("environment")):
            value = {**value, "environment": redact_environment(value["environment"], plain)}
        return {key: redact(item, plain) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, plain) for item in value]
    return value


def plain_credentials(environment: list[dict[str, Any]], plain: Collection[str] = frozenset()) \
        -> dict[str, str]:
    """ECS-05: the plain variables that hold a credential, each with why, never with its value. By value: a
    value that looks like a credential (or, masked, says it did). By name: a non-empty value under a
    credential's name (CREDENTIAL_NAME), unless the plan names the variable as plain."""
    found = {}
    for pair in environment:
        name, value = str(pair.get("name", "")), pair.get("value")
        kind = pair.get("credential") or (credential_kind(str(value)) if value not in (None, "", MASK) else None)
        if kind:
            found[name] = f"its value is {kind}"
        elif value not in (None, "") and name not in plain and CREDENTIAL_NAME.search(name):
            found[name] = "its name is a credential's"
    return found
