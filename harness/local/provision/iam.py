"""IAM roles: the ECS task's two (ECS-08) and the service roles other steps need (RDS export, secret
rotation), plus the policy documents every step writes."""
from __future__ import annotations

import json
from typing import Any

from harness.local.provision.context import Run, absent_on


def policy_document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _trust(service: str) -> str:
    return policy_document({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def role(run: Run, purpose: str, service: str, inline_policy: str | None) -> str:
    """Inline policies only: moto has no AWS-managed policies to attach (ECS-08)."""
    iam = run.client("iam")
    name = run.name(purpose)

    def find() -> dict[str, Any] | None:
        return absent_on(lambda: iam.get_role(RoleName=name)["Role"], "NoSuchEntity")

    def create() -> dict[str, Any]:
        made = iam.create_role(RoleName=name, AssumeRolePolicyDocument=_trust(service), Tags=run.tag_list())["Role"]
        if inline_policy:
            iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=inline_policy)
        return made

    return run.ensure("iam role", find, create, lambda r: r["RoleName"])["Arn"]


def task_roles(run: Run) -> None:
    """The execution role pulls the image, writes logs and reads exactly this environment's secrets; the
    task role gets nothing, as the app calls no AWS API."""
    repository = run.arn("ecr", f"repository/{run.name('backend')}")
    log_group = run.arn("logs", f"log-group:{run.name('app')}:*")
    secrets_arn = run.arn("secretsmanager", f"secret:{run.plan.secret_prefix(run.env)}*")
    execution = role(run, "task-execution", "ecs-tasks.amazonaws.com", policy_document(
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Effect": "Allow", "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
                                       "ecr:BatchGetImage"], "Resource": repository},
        {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": log_group},
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secrets_arn},
    ))
    task = role(run, "task", "ecs-tasks.amazonaws.com", None)
    run.built["task roles"] = {"execution": execution, "task": task}
