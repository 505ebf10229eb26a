"""The deployed image in ECR: where to pull it from, with which credentials, and what ECR's scan found.
Read calls only (ecr:GetAuthorizationToken, ecr:DescribeImageScanFindings; the pull itself needs
ecr:BatchGetImage and ecr:GetDownloadUrlForLayer).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.util.files import write_atomic
from harness.target import Target

ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


@dataclass(frozen=True)
class EcrImage:
    """`ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY(:TAG|@DIGEST)`, as a task definition names it."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, uri: str) -> EcrImage | None:
        registry, _, rest = uri.partition("/")
        if not ECR_HOST.match(registry) or not rest:
            return None
        rest, _, digest = rest.partition("@")
        repository, _, tag = rest.partition(":")
        return cls(registry, repository, tag or (None if digest else "latest"), digest or None)

    @property
    def image_id(self) -> dict[str, str]:
        return {"imageDigest": self.digest} if self.digest else {"imageTag": self.tag or "latest"}

    def reference(self, registry: str | None = None) -> str:
        """The pull reference, at `registry` instead of ECR's host when the ECR data plane is elsewhere
        (the stand-in's registry on loopback)."""
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"{registry or self.registry}/{self.repository}{suffix}"


def write_authfile(target: Target, registry: str, dest: Path) -> Path:
    """An auth file (as `docker login` writes one) for `registry`, from ECR's authorization token; the
    token never appears on a command line. Owner-readable only."""
    data = target.client("ecr").get_authorization_token()["authorizationData"][0]
    return write_atomic(dest, json.dumps({"auths": {registry: {"auth": data["authorizationToken"]}}}), mode=0o600)


def scan_findings(target: Target, image: EcrImage) -> dict[str, Any]:
    """ECR's scan of the image: its status and severity counts, with every finding of every page."""
    client = target.client("ecr")
    merged: dict[str, Any] = {}
    findings: list[dict[str, Any]] = []
    for page in client.get_paginator("describe_image_scan_findings").paginate(
            registryId=image.registry.split(".")[0], repositoryName=image.repository, imageId=image.image_id):
        merged = page
        findings += (page.get("imageScanFindings") or {}).get("findings", [])
    merged.pop("ResponseMetadata", None)
    merged.setdefault("imageScanFindings", {})["findings"] = findings
    return merged
