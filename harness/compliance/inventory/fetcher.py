"""The guard every fetch module runs its parts under, and the calls they make through it.

A part whose call fails is recorded as a `Failure` (and so are the parts that depend on it) instead of an
empty result, so a check that needs it reports ERROR (or SKIP when the endpoint does not offer the service),
never a pass. Each part's calls are counted, for the snapshot's `discovery` figures.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import botocore.exceptions

from harness.compliance.inventory.model import Failure, Inventory, tag_dict
from harness.plan import Plan
from harness.target import Target, is_unavailable
from harness.util.redact import plain_variables


class CallFailed(Exception):
    """A service answered a call with an error; carries which service, for the part's failure message."""

    def __init__(self, service: str, error: botocore.exceptions.ClientError) -> None:
        super().__init__(str(error))
        self.service = service
        self.error = error

    @property
    def code(self) -> str | None:
        return self.error.response.get("Error", {}).get("Code")


class Fetcher:
    """Runs each part under a guard and records what failed, and why, and what each part cost."""

    def __init__(self, target: Target, plan: Plan, env: str) -> None:
        self.target = target
        self.wanted = plan.tags(env)
        self.secret_prefix = plan.secret_prefix(env)
        self.plain = plain_variables(plan, env)
        self.inv = Inventory(meta={})
        self.step_failures: dict[str, Failure] = {}  # steps that are not parts (the tagging call)
        self.part_calls: dict[str, int] = {}
        self.tag_index: dict[str, list[dict[str, Any]]] = {}  # resource type -> the tagging API's mappings
        self.tagging: dict[str, Any] = {}  # the tagging step's own figures
        self.tagging_missing: str | None = None  # why no type can be found through the tagging API here
        self.fallbacks: dict[str, str] = {}  # resource type -> why it was listed instead

    def tagged(self, tags: Any) -> bool:
        """Whether a resource carries every one of the plan's tags."""
        have = tag_dict(tags)
        return all(have.get(k) == v for k, v in self.wanted.items())

    def run(self, key: str, deps: tuple[str, ...], fetch: Callable[[], Any]) -> None:
        """Fetch part `key`, unless a part or step it depends on failed: then it fails the same way."""
        for dep in deps:
            failure = self.inv.failures.get(dep) or self.step_failures.get(dep)
            if failure is not None:
                self.inv.failures[key] = failure
                return
        mark = self.target.recorder.mark()
        try:
            self.inv.parts[key] = fetch()
        except CallFailed as failed:
            self.inv.failures[key] = self.failure(failed)
        except botocore.exceptions.BotoCoreError as exc:
            self.inv.failures[key] = Failure("error", f"fetching {key} failed: {exc}")
        finally:
            self.part_calls[key] = len(self.target.recorder.since(mark))

    def failure(self, failed: CallFailed) -> Failure:
        """An endpoint other than AWS that does not offer the service makes the part unavailable; any other
        error makes it failed."""
        err = failed.error.response.get("Error", {})
        if is_unavailable(failed.error) and self.target.kind != "aws":
            status = failed.error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return Failure("unavailable", f"{failed.service} is not available at this endpoint (HTTP {status})")
        return Failure("error", f"{failed.service}:{failed.error.operation_name} failed: "
                                f"{err.get('Code')}: {err.get('Message')}")

    def by_tags(self, rtype: str) -> list[dict[str, Any]] | None:
        """The tagging API's mappings (ResourceARN, Tags) of this type; None when it returned none of the
        type, and then the caller lists the type itself: that fallback is recorded with its reason."""
        found = self.tag_index.get(rtype)
        if found:
            return found
        self.fallbacks[rtype] = self.fallback_reason(rtype)
        return None

    def fallback_reason(self, rtype: str) -> str:
        return self.tagging_missing or f"the tagging API returned no {rtype} with the plan's tags"

    def paginate(self, service: str, operation: str, result_key: str, **kwargs: Any) -> list[Any]:
        """Every page's `result_key` items of a paginated operation."""
        out: list[Any] = []
        try:
            for page in self.target.client(service).get_paginator(operation).paginate(**kwargs):
                out.extend(page.get(result_key, []))
        except botocore.exceptions.ClientError as exc:
            raise CallFailed(service, exc) from exc
        return out

    def call(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.target.client(service), operation)(**kwargs)
        except botocore.exceptions.ClientError as exc:
            raise CallFailed(service, exc) from exc


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def by_ids(ids: list[str], size: int, not_found: tuple[str, ...],
           describe: Callable[[list[str]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Describe resources by id in batches of `size`. The tagging API may still list a resource for a while
    after it is deleted, and these describe calls refuse a whole batch for one unknown id: such a batch is
    asked again one id at a time, and the unknown ones are left out."""
    found = []
    for batch in batches(ids, size):
        try:
            found += describe(batch)
        except CallFailed as exc:
            if exc.code not in not_found:
                raise
            if len(batch) > 1:
                found += by_ids(batch, 1, not_found, describe)
    return found
