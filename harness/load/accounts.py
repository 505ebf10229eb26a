"""The accounts the simulated users log in with, prepared before the run.

Elsewhere they come from `--accounts-file` or the secret `<env>/dougust/load-accounts` (a JSON list of
{"email", "password"}, read only). On the local stand-in the harness makes them: it registers them
through the API and keeps them in that same secret in the emulator, so both paths read the same way.
Locust gets them in a private file (mode 0600) that is removed after the run, or by the harness's
watchdog when the harness is killed first (SIGKILL included); they never reach a report.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from harness.load.credentials import usable_accounts
from harness.plan import Plan
from harness.target import Target, TargetError
from harness.util import proc

SECRET = "load-accounts"
LOCAL_ACCOUNTS = 20


def validate(accounts: Any, source: str) -> list[dict[str, str]]:
    usable = usable_accounts(accounts)
    if usable is None:
        raise TargetError(f'{source}: expected a JSON list of {{"email", "password"}} accounts; fix its content')
    return usable


def from_file(path: Path) -> list[dict[str, str]]:
    try:
        return validate(json.loads(Path(path).read_text(encoding="utf-8")), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"--accounts-file {path}: cannot be read ({exc}); pass an existing JSON file") from None
    except json.JSONDecodeError as exc:
        raise TargetError(f"--accounts-file {path}: not JSON ({exc}); fix the file") from None


def secret_name(plan: Plan, env: str) -> str:
    return plan.secret_prefix(env) + SECRET


def from_secret(target: Target, plan: Plan, env: str) -> list[dict[str, str]]:
    name = secret_name(plan, env)
    try:
        value = target.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
        return validate(json.loads(value), f"secret {name}")
    except json.JSONDecodeError:
        raise TargetError(f"secret {name} is not JSON; store a list of {{\"email\", \"password\"}}") from None
    except TargetError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read it is the same problem for the operator
        raise TargetError(f"the load accounts secret {name} could not be read ({type(exc).__name__}); create it "
                          f"or pass --accounts-file") from None


def for_stand_in(target: Target, plan: Plan, env: str, base_url: str, ca_file: str) -> list[dict[str, str]]:
    """The stand-in's load accounts: kept in the emulator's secret, (re-)registered through the API, since
    a fresh database may not know accounts an earlier stand-in made."""
    sm = target.client("secretsmanager")
    name = secret_name(plan, env)
    try:
        accounts = validate(json.loads(sm.get_secret_value(SecretId=name)["SecretString"]), name)
    except sm.exceptions.ResourceNotFoundException:
        run = secrets.token_hex(4)
        accounts = [{"email": f"load-{run}-{i:03d}@dougust.local", "password": secrets.token_urlsafe(18)}
                    for i in range(LOCAL_ACCOUNTS)]
        sm.create_secret(Name=name, SecretString=json.dumps(accounts),
                         Tags=[{"Key": k, "Value": v} for k, v in plan.tags(env).items()])
    with requests.Session() as session:
        for account in accounts:
            response = session.post(f"{base_url}/api/auth/register", json=account, verify=ca_file, timeout=10)
            if response.status_code not in (201, 409):
                raise TargetError(f"registering load accounts on the stand-in failed: {response.status_code} "
                                  f"{response.text[:120]}; see 'harness local status'")
    return accounts


@dataclass(frozen=True)
class AccountsFile:
    """The accounts in a file only this user can read, for the Locust processes."""

    path: Path
    token: int  # the watchdog's removal, should the harness die before `remove()`

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        proc.cancel(self.token)


def private_file(accounts: list[dict[str, str]]) -> AccountsFile:
    """The accounts in a private file; the caller calls `remove()` when the run is over."""
    fd, path = tempfile.mkstemp(prefix="harness-load-accounts-", suffix=".json")
    token = proc.on_death(["rm", "-f", path])
    with os.fdopen(fd, "w") as out:
        json.dump(accounts, out)
    return AccountsFile(Path(path), token)
