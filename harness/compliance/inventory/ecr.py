"""The registry part (ECR): the repositories that carry the plan's tags, with their tags and lifecycle
policy."""
from __future__ import annotations

from typing import Any

from harness.compliance.inventory.fetcher import CallFailed, Fetcher, by_ids
from harness.compliance.inventory.tagging import TAGGING
from harness.image.ecr import EcrImage


def fetch(f: Fetcher) -> None:
    def describe(names: list[str]) -> list[dict[str, Any]]:
        return by_ids(names, 100, ("RepositoryNotFoundException",), lambda batch: f.call(
            "ecr", "describe_repositories", repositoryNames=batch)["repositories"])

    def with_tags(repos: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
        return [(repo, f.call("ecr", "list_tags_for_resource", resourceArn=repo["repositoryArn"]).get("tags", []))
                for repo in repos]

    def listed() -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
        """The fallback: ECR gives a repository's tags one call at a time, so the repositories the service's
        task definitions pull from are asked first; only when none of them carries the plan's tags is every
        repository of the account read (so a service running another repository's image is still judged
        against the tagged one). A tagged repository that no task definition names is missed when another one
        is found: the tagging API, where it knows ECR, finds both."""
        pulled = _pulled_repositories(f)
        found = [(repo, tags) for repo, tags in with_tags(describe(pulled)) if f.tagged(tags)] if pulled else []
        if found:
            f.fallbacks["ecr:repository"] += "; looked up the repositories the task definitions pull from"
            return found
        f.fallbacks["ecr:repository"] += "; read every repository's tags"
        return [(repo, tags) for repo, tags in with_tags(f.paginate("ecr", "describe_repositories", "repositories"))
                if f.tagged(tags)]

    def repositories() -> list[dict[str, Any]]:
        tagged = f.by_tags("ecr:repository")
        if tagged is None:
            pairs = listed()
        else:
            tags = {m["ResourceARN"].split(":repository/", 1)[1]: m.get("Tags", []) for m in tagged}
            pairs = [(repo, tags[repo["repositoryName"]]) for repo in describe(list(tags))]
        found = []
        for repo, repo_tags in pairs:
            try:
                policy = f.call("ecr", "get_lifecycle_policy", repositoryName=repo["repositoryName"])
                repo["lifecyclePolicyText"] = policy.get("lifecyclePolicyText")
            except CallFailed as exc:
                if exc.code != "LifecyclePolicyNotFoundException":
                    raise
                repo["lifecyclePolicyText"] = None
            found.append({**repo, "tags": repo_tags})
        return found

    f.run("repositories", (TAGGING,), repositories)


def _pulled_repositories(f: Fetcher) -> list[str]:
    """The names of the ECR repositories the discovered task definitions' images come from
    (<account>.dkr.ecr.<region>.amazonaws.com/<name>[:tag|@digest]), when those are known."""
    images = (EcrImage.parse(str(container.get("image", ""))) for td in f.inv.parts.get("task_definitions") or []
              for container in td.get("containerDefinitions", []))
    return sorted({image.repository for image in images if image is not None})
