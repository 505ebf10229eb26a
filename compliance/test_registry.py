"""§5 Container Registry: the private ECR repository, its scanning and lifecycle, the service's image, and what
ECR's scan found in it."""
from __future__ import annotations

import json

import pytest

from harness.compliance.facts import container, the_one
from harness.image import judges


def _repo(repositories, evidence):
    repo = the_one(repositories, "ECR repository")
    evidence("repository", repo)
    return repo


@pytest.mark.requirement("ECR-01")
def test_private_repository(repositories, evidence):
    repo = _repo(repositories, evidence)
    assert ".dkr.ecr." in repo["repositoryUri"], f"{repo['repositoryUri']} is not a private ECR repository"


@pytest.mark.requirement("ECR-02")
def test_scan_on_push(repositories, evidence):
    repo = _repo(repositories, evidence)
    assert (repo.get("imageScanningConfiguration") or {}).get("scanOnPush") is True, "scan on push is off"


def _rules(policy_text):
    return json.loads(policy_text).get("rules", []) if policy_text else []


@pytest.mark.requirement("ECR-03")
def test_lifecycle_policy(repositories, expect, evidence):
    repo = _repo(repositories, evidence)
    rules = _rules(repo.get("lifecyclePolicyText"))
    assert rules, "the repository has no lifecycle policy"
    keep = [r for r in rules if r.get("selection", {}).get("countType") == "imageCountMoreThan"
            and r.get("selection", {}).get("tagStatus") in ("any", "tagged")
            and r.get("action", {}).get("type") == "expire"]
    assert any(r["selection"].get("countNumber") == expect["keep_last"] for r in keep), \
        f"no rule keeps the last {expect['keep_last']} images: {[r.get('selection') for r in keep]}"
    untagged = [r for r in rules if r.get("selection", {}).get("tagStatus") == "untagged"
                and r["selection"].get("countType") == "sinceImagePushed"
                and r["selection"].get("countUnit") == "days" and r.get("action", {}).get("type") == "expire"]
    assert any(r["selection"].get("countNumber") == expect["untagged_days"] for r in untagged), \
        f"no rule expires untagged images after {expect['untagged_days']} days"


@pytest.mark.requirement("ECR-04")
def test_service_image_comes_from_the_repository(repositories, task_definitions, app_port, evidence):
    repo = _repo(repositories, evidence)
    image = container(the_one(task_definitions, "task definition of the service"), app_port).get("image", "")
    evidence("image", image)
    assert image.startswith(repo["repositoryUri"] + ":") or image.startswith(repo["repositoryUri"] + "@"), \
        f"the service runs {image!r}, not an image of {repo['repositoryUri']}"


@pytest.mark.requirement("IMG-07")
def test_deployed_image_scan_findings_within_budget(image_scan, expect, settle):
    settle(judges.scan_findings(image_scan, expect))
