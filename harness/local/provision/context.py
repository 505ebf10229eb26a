"""What every provisioning step shares: the run (clients, plan, environment, what earlier steps built),
the report, and the two ways a step stops without failing the run.

A step never checks whether the endpoint offers a service: its client raises `ServiceMissing` at the first
call, and a step that needs what a skipped step would have built raises `Blocked` from `Run.need`. Both are
caught between steps (see `order.provision`), so the rest of the environment still gets built.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from harness.plan import Plan
from harness.target import is_unavailable

T = TypeVar("T")


@dataclass
class ProvisionReport:
    """What one run did, one "<service> <kind> <id>" entry per resource, so a re-run can be judged by
    comparing reports; `skipped` maps a service (or a step that needed it) to the reason."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class ServiceMissing(Exception):
    """The endpoint lacks a service: the step stops, and the report records the reason once."""

    def __init__(self, service: str, reason: str):
        super().__init__(reason)
        self.service = service
        self.reason = reason


class Blocked(Exception):
    """A step needs something an earlier, skipped step would have built."""


class _Service:
    """A boto3 client whose calls raise `ServiceMissing` once the service proved absent, so a step stops
    at its first call to it and the rest of the environment still gets built."""

    def __init__(self, name: str, client: Any, skipped: dict[str, str]):
        self._name = name
        self._client = client
        self._skipped = skipped

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._client, attr)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._name in self._skipped:
                raise ServiceMissing(self._name, self._skipped[self._name])
            try:
                return target(*args, **kwargs)
            except ClientError as exc:
                if not is_unavailable(exc):
                    raise
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                raise ServiceMissing(
                    self._name, f"{self._name} is not available at this endpoint (HTTP {status})"
                ) from exc

        return call


@dataclass
class Run:
    """One provisioning of one environment: every resource's name, tags and expected values come from
    here, so all steps agree on them."""

    clients: Callable[[str], Any]
    plan: Plan
    env: str
    report: ProvisionReport
    built: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, _Service] = field(default_factory=dict)

    def client(self, service: str) -> _Service:
        if service not in self._cache:
            self._cache[service] = _Service(service, self.clients(service), self.report.skipped)
        return self._cache[service]

    def expect(self, requirement_id: str) -> dict[str, Any]:
        return self.plan.requirements[requirement_id].expected(self.env)

    def name(self, suffix: str) -> str:
        return f"{self.plan.project}-{self.env}-{suffix}"

    def need(self, key: str) -> Any:
        if key not in self.built:
            raise Blocked(key)
        return self.built[key]

    @property
    def region(self) -> str:
        return self.plan.environment(self.env).region

    @property
    def account(self) -> str:
        return self.need("account")

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    # Tags in the shapes the different APIs take.
    def tag_list(self, key: str = "Key", value: str = "Value", **extra: str) -> list[dict[str, str]]:
        return [{key: k, value: v} for k, v in {**self.plan.tags(self.env), **extra}.items()]

    def tag_specs(self, resource_type: str, name: str) -> list[dict[str, Any]]:
        return [{"ResourceType": resource_type, "Tags": self.tag_list(Name=name)}]

    def tag_filters(self) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.plan.tags(self.env).items()]

    def ensure(self, label: str, find: Callable[[], T | None], create: Callable[[], T],
               ident: Callable[[T], str]) -> T:
        """Find-then-create, recording which of the two happened: the whole idempotency contract."""
        found = find()
        if found is not None:
            self.report.existing.append(f"{label} {ident(found)}")
            return found
        made = create()
        self.report.created.append(f"{label} {ident(made)}")
        return made


def absent_on(call: Callable[[], T], *codes: str) -> T | None:
    """The result of a lookup, or None when the API says "no such thing" with one of these codes."""
    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in codes:
            return None
        raise


def first(items: list[T]) -> T | None:
    return items[0] if items else None


def account(run: Run) -> None:
    """ARNs and globally unique bucket names need the account id of whatever credentials the caller uses."""
    run.built["account"] = run.client("sts").get_caller_identity()["Account"]
