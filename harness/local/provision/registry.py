"""The ECR repository the service's image comes from: scanned on push, with the plan's lifecycle
(ECR-03)."""
from __future__ import annotations

import json
from typing import Any

from harness.local.provision.context import Run, absent_on


def repository(run: Run) -> None:
    ecr = run.client("ecr")
    name = run.name("backend")
    expect = run.expect("ECR-03")

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: ecr.describe_repositories(repositoryNames=[name])["repositories"][0],
                         "RepositoryNotFoundException")

    def create() -> dict[str, Any]:
        repo = ecr.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": True},
                                     tags=run.tag_list())["repository"]
        rules = [
            {"rulePriority": 1, "description": f"Expire untagged images after {expect['untagged_days']} days",
             "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                           "countNumber": expect["untagged_days"]}, "action": {"type": "expire"}},
            {"rulePriority": 2, "description": f"Keep the last {expect['keep_last']} images",
             "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                           "countNumber": expect["keep_last"]}, "action": {"type": "expire"}},
        ]
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=json.dumps({"rules": rules}))
        return repo

    run.built["repository"] = run.ensure("ecr repository", find, create, lambda r: r["repositoryName"])["repositoryUri"]
